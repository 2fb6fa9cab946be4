-- atomrun.cli_etcd -- the command line's part for etcd names: `atomrun
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

--- run_held_remote(prog, lk, argv, opts) -> exit status.  Once an etcd lock
-- is held: run argv with ATOMRUN_LOCK_TOKEN in its environment and in its
-- own process group; if the lock is lost meanwhile, TERM the group, KILL it
-- opts.kill_after (5) s later, say why and return 75.  Otherwise the
-- command's status (128+N for signal N), 69 when it cannot start.
-- The guard is started before the command (it ends every child of ours,
-- and this process has no other): no window in which a lost lock goes
-- unnoticed because the pid is not known yet.
function M.run_held_remote(prog, lk, argv, opts)
  opts = opts or {}
  assert(lk:guard(0, opts.kill_after or 5))
  local ok, how, status = atomrun.run(argv, { timeout = 1e300, forward_signals = true,
    env = { ATOMRUN_LOCK_TOKEN = tostring(lk.token) } })
  local fired = lk:unguard()
  local why = lk:lost()
  if fired or why then
    prog:say("lost the lock %s while %s ran (%s); %s", lk.path, argv[1], why or "lease expired",
      fired == "kill" and "sent SIGTERM, then SIGKILL" or fired and "sent SIGTERM"
      or "it had just finished")
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

--- lock_remote(prog, o) -> exit status, for `atomrun lock [opts]
-- etcd://.../NAME -- CMD`.  o is cmd/lock.lua's parse: file, argv, mode,
-- timeout, conflict, verbose, nofork, and the etcd options ttl and kill_after.
function M.lock_remote(prog, o)
  if o.nofork then
    prog:say("-F cannot be used with an etcd name: nothing would keep its lease alive")
    return cli.EX_USAGE
  end
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
    return REMOTE_EXIT[code] or cli.EX_UNAVAILABLE
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
