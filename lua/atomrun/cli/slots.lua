-- atomrun.cli.slots -- `atomrun lock --slots N FILE|URL -- CMD`: run CMD
-- holding one of N slots (atomrun.semaphore): at most N such commands run
-- at once, on this machine for a file, across hosts for an etcd name.
-- The command gets ATOMRUN_SLOT (1..N); a file slot's byte-range lock is
-- inherited by the command, as lock's is, so it stays taken until the
-- command ends too; an etcd slot is guarded as an etcd lock is.
local atomrun = require "atomrun"
local cli = require "atomrun.cli"
local backend = require "atomrun.backend"

local M = {}

-- What --slots cannot be combined with, and why.
local function refuse_mix(prog, o)
  local why = o.fd and "a descriptor (a semaphore is a file or an etcd name)"
    or o.unlock and "-u" or o.mode == "shared" and "-s (a slot is exclusive)"
    or o.fcntl and "--fcntl, --start or --length (the slots are the file's first N bytes)"
    or o.close and "-o" or (o.nofork and "-F")
  if why then prog:fail(cli.EX_USAGE, "--slots cannot be used with %s", why) end
end

--- run(prog, o) -> never returns: o is cmd/lock.lua's parse (file, argv,
--- slots, timeout, conflict, verbose, ttl, kill_after).
function M.run(prog, o)
  refuse_mix(prog, o)
  local remote = backend.is_etcd(o.file)
  if not remote and (o.ttl or o.kill_after) then
    prog:fail(cli.EX_USAGE, "--%s is for etcd names", o.ttl and "ttl" or "kill-after")
  end
  if remote then require("atomrun.cli.etcd").check_kill_after(prog, o.ttl, o.kill_after) end
  local started = atomrun.now()
  local ok, sem = pcall(atomrun.semaphore, o.file, o.slots)
  if not ok then prog:fail(cli.EX_USAGE, "%s", tostring(sem):gsub("^[^:]*:%d+: ", "")) end
  local slot, err, code = sem:acquire({ wait = o.timeout ~= 0, timeout = o.timeout ~= 0
    and o.timeout or nil, ttl = remote and o.ttl or nil })
  if not slot then
    if code == "busy" or code == "timeout" then
      if o.verbose or atomrun.isatty(2) then prog:say("%s", err) end
      os.exit(o.conflict or 1)
    end
    prog:say("%s", err)
    os.exit(remote and require("atomrun.cli.etcd").exit_status(code) or cli.EX_NOINPUT)
  end
  if o.verbose then
    io.stdout:write(string.format("%s: getting slot %d of %d took %.6f seconds\n", prog.name,
      slot.index, o.slots, atomrun.now() - started))
    io.stdout:write(string.format("%s: executing %s\n", prog.name, o.argv[1]))
    io.stdout:flush()
  end
  local env = { ATOMRUN_SLOT = tostring(slot.index) }
  if remote then
    os.exit(require("atomrun.cli.etcd").run_held_remote(prog, slot.lock, o.argv,
      { kill_after = o.kill_after, env = env }))
  end
  cli.run_and_exit(prog, o.argv, { forward_signals = true, env = env },
    function() slot:release() end)
end

return M
