-- atomrun.cli.etcd -- the command line's part for etcd names: `atomrun
-- lock` and `atomrun once` with etcd://.../NAME.  Loaded only for such a
-- name, so that a plain path pays nothing for it.
local atomrun = require "atomrun.core"
local cli = require "atomrun.cli"

local M = {}

-- Exit statuses for an etcd lock that could not be had: a bad name or ttl
-- is the caller's mistake (64), a refused login 77, no answer 69, not etcd
-- at all 76; 75 (EX_TEMPFAIL) when a held one was lost and its command
-- killed.
local REMOTE_EXIT = { EINVAL = 64, ERANGE = 64, EACCES = 77, unavailable = 69, EPROTO = 76 }
M.EX_LOST = 75

--- exit_status(code) -> the exit status for an etcd lock not had for code.
function M.exit_status(code) return REMOTE_EXIT[code] or cli.EX_UNAVAILABLE end

--- run_held_remote(prog, lk, argv, opts) -> exit status.  Once an etcd lock
-- is held: run argv guarded by it (atomrun.run's guard option): with
-- ATOMRUN_LOCK_TOKEN in its environment, in its own process group, dying
-- with us (PDEATHSIG), and ended by a watchdog process before the lease can
-- expire -- SIGTERM, then SIGKILL opts.kill_after s later (the default for
-- the TTL when nil) -- even while this process is stopped; then say why and
-- return 75.  Otherwise the command's status (128+N for signal N), 69 when
-- it cannot start.
function M.run_held_remote(prog, lk, argv, opts)
  opts = opts or {}
  local ok, how, status = atomrun.run(argv, { guard = lk, kill_after = opts.kill_after,
    forward_signals = true, env = opts.env })
  if ok == nil and status == "lost" then
    prog:say("%s", how)
    lk:unlock()
    return M.EX_LOST
  end
  local _, uerr = lk:unlock()
  if ok == nil and how ~= "exit" and how ~= "signal" then
    prog:say("failed to execute %s: %s", argv[1], cli.strerror(status))
    return status == "ENOMEM" and cli.EX_OSERR or cli.EX_UNAVAILABLE
  end
  if uerr then prog:say("%s", uerr) end
  return how == "signal" and 128 + status or status
end

--- check_kill_after(prog, ttl, kill_after): a --kill-after that cannot end
-- the command before a lease of ttl s can expire is a usage error (64),
-- said before any lock is taken.
function M.check_kill_after(prog, ttl, kill_after)
  if kill_after == nil then return end
  local _, err = atomrun._etcd_kill_after(ttl or 10, kill_after)
  if err then prog:fail(cli.EX_USAGE, "--kill-after %s", err) end
end

--- lock_remote(prog, o) -> exit status, for `atomrun lock [opts]
-- etcd://.../NAME -- CMD`.  o is cmd/lock.lua's parse: file, argv, mode,
-- timeout, conflict, verbose, nofork, and the etcd options ttl and kill_after.
function M.lock_remote(prog, o)
  if o.nofork then
    prog:say("-F cannot be used with an etcd name: nothing would keep its lease alive")
    return cli.EX_USAGE
  end
  M.check_kill_after(prog, o.ttl, o.kill_after)
  local started = atomrun.now()
  local lk, err, code = atomrun.lock(o.file, { mode = o.mode, timeout = o.timeout,
    ttl = o.ttl })
  if not lk then
    if code == "busy" or code == "timeout" then
      -- silent on a conflict, as flock(1), unless asked or watched
      if o.verbose or atomrun.isatty(2) then prog:say("%s", err) end
      return o.conflict or 1
    end
    prog:say("%s", err)
    return M.exit_status(code)
  end
  if o.verbose then
    io.stdout:write(string.format("%s: getting lock took %.6f seconds (token %d)\n", prog.name,
      atomrun.now() - started, lk.token))
    io.stdout:write(string.format("%s: executing %s\n", prog.name, o.argv[1]))
    io.stdout:flush()
  end
  return M.run_held_remote(prog, lk, o.argv, { kill_after = o.kill_after })
end

return M
