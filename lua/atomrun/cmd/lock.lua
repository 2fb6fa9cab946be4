-- atomrun lock -- run a command holding a lock (a drop-in for flock(1))
-- Same flags, same exit codes, and it tells you who holds the lock.
--
--   atomrun lock [-s|-x] [-n] [-w SECONDS] [-E CODE] [-o] [-F] [-c CMDSTRING]
--                [--verbose] FILE|DIR [--] CMD [ARGS...]
local atomrun = require "atomrun"

local cli = require "atomrun.cli"
local EX_NOINPUT, EX_UNAVAILABLE, EX_OSERR, EX_CANTCREAT =
  cli.EX_NOINPUT, cli.EX_UNAVAILABLE, cli.EX_OSERR, cli.EX_CANTCREAT

local USAGE = [[
usage: atomrun lock [options] FILE|DIR [--] CMD [ARGS...]
       atomrun lock [options] FILE|DIR -c CMDSTRING
  -s, --shared              shared lock
  -x, -e, --exclusive       exclusive lock (the default)
  -n, --nb, --nonblock      fail at once (exit 1) if the lock is held
  -w, --wait, --timeout S   give up after S seconds (fractions allowed; 0 = -n)
  -E, --conflict-exit-code N  exit code when the lock is busy (default 1)
  -o, --close               do not pass the lock to CMD
  -F, --no-fork             exec CMD in place of atomrun (it keeps the lock)
      --ttl S               etcd names: lease seconds (default 10)
      --kill-after S        etcd names: SIGKILL S s after SIGTERM when the
                            lock is lost (default 5; atomrun then exits 75)
  -c, --command CMDSTRING   run CMDSTRING with $SHELL -c (else /bin/sh)
      --verbose             say how long the lock took and what runs
  -h, --help                this text
]]

local say = cli.say
local function usage_error(...) cli.usage_error(USAGE, ...) end

local function parse(args)
  local o = { mode = "exclusive", conflict = 1 }
  local i = 1
  local function value(flag)
    i = i + 1
    if args[i] == nil then usage_error("option %s needs a value", flag) end
    return args[i]
  end
  while i <= #args do
    local a = args[i]
    local flag, inline = a:match("^(%-%-[^=]+)=(.*)$")
    if flag then a = flag end
    local function val(f)
      if inline then return inline end
      return value(f)
    end
    if a == "-s" or a == "--shared" then o.mode = "shared"
    elseif a == "-x" or a == "-e" or a == "--exclusive" then o.mode = "exclusive"
    elseif a == "-n" or a == "--nb" or a == "--nonblock" then o.nonblock = true
    elseif a == "-w" or a == "--wait" or a == "--timeout" then
      o.timeout = cli.seconds(USAGE, val(a))
    elseif a == "-E" or a == "--conflict-exit-code" then
      o.conflict = cli.exit_code(USAGE, val(a))
    elseif a == "-o" or a == "--close" then o.close = true
    elseif a == "-F" or a == "--no-fork" then o.nofork = true
    elseif a == "-c" or a == "--command" then o.command = val(a)
    elseif a == "--verbose" then o.verbose = true
    elseif a == "--ttl" then           -- etcd names: the lease's seconds
      o.ttl = math.tointeger(tonumber(val(a)))
      if not o.ttl or o.ttl < 1 then usage_error("invalid --ttl: a whole number of seconds >= 1") end
    elseif a == "--kill-after" then o.kill_after = cli.seconds(USAGE, val(a))
    elseif a == "-h" or a == "--help" then io.stdout:write(USAGE) os.exit(0)
    elseif a == "-u" or a == "--unlock" then
      usage_error("-u works on an inherited descriptor, which atomrun lock does not take; "
        .. "release by ending the command")
    elseif a == "--" then i = i + 1 break
    elseif a:match("^%-%a%a+$") then
      -- bundled short flags: -nx, -sw 5
      local expanded = {}
      for c in a:sub(2):gmatch(".") do expanded[#expanded + 1] = "-" .. c end
      for k = #expanded, 1, -1 do table.insert(args, i + 1, expanded[k]) end
    elseif a:sub(1, 1) == "-" and #a > 1 then usage_error("unknown option '%s'", a)
    else break end
    i = i + 1
  end
  o.file = args[i]
  if not o.file then usage_error("no lock file given") end
  if o.file:match("^%d+$") and not atomrun.stat(o.file) then
    usage_error("locking an inherited descriptor (%s) is not supported; give a file", o.file)
  end
  i = i + 1
  if args[i] == "-c" or args[i] == "--command" then
    o.command = args[i + 1]
    if not o.command then usage_error("-c needs a command string") end
    i = i + 2
  elseif args[i] == "--" then
    i = i + 1
  end
  if o.command then
    if args[i] then usage_error("-c takes one command string; unexpected '%s'", args[i]) end
    o.argv = { os.getenv("SHELL") or "/bin/sh", "-c", o.command }
  else
    o.argv = table.move(args, i, #args, 1, {})
    if #o.argv == 0 then usage_error("no command given to run while holding %s", o.file) end
  end
  if o.nonblock or o.timeout == 0 then o.timeout = 0 end
  return o
end

local function open_failure_status(code)
  if code == "ENOMEM" or code == "EMFILE" or code == "ENFILE" then return EX_OSERR end
  if code == "EROFS" or code == "ENOSPC" then return EX_CANTCREAT end
  return EX_NOINPUT
end

local o = parse({ ... })
-- etcd://.../NAME: the lock lives on a cluster (lua/atomrun/remote.lua)
if require("atomrun.remote").is_url(o.file) then os.exit(require("atomrun.remote").cli_lock(o)) end
local started = atomrun.now()

-- Try at once; then, if we must wait and a person is watching, say who
-- we are waiting for before settling in.
local lk, err, code, holder = atomrun.lock(o.file, { mode = o.mode, wait = false })
if not lk and code == "busy" and o.timeout ~= 0 then
  local first = o.timeout and math.min(o.timeout, 1) or 1
  lk, err, code, holder = atomrun.lock(o.file, { mode = o.mode, timeout = first })
  if not lk and code == "timeout" and (o.timeout == nil or o.timeout > 1) then
    if atomrun.isatty(2) then
      local who = holder and holder.pid and string.format(" (held by pid %d %s)", holder.pid,
        holder.cmd or "") or ""
      io.stderr:write(string.format("waiting for %s%s...\n", o.file, who))
    end
    local rest = o.timeout and math.max(0, o.timeout - (atomrun.now() - started)) or nil
    lk, err, code, holder = atomrun.lock(o.file, { mode = o.mode, timeout = rest })
  end
end
if not lk then
  if code == "busy" or code == "timeout" then
    if code == "timeout" then
      err = err:gsub("timed out after [^ ]+ s", "timed out after " .. tostring(o.timeout) .. " s")
    end
    say("%s", err)
    os.exit(o.conflict)
  end
  say("%s", err)
  os.exit(open_failure_status(code))
end
if o.verbose then
  say("getting lock took %.6f seconds", atomrun.now() - started)
  say("executing %s", table.concat(o.argv, " "))
end

if o.nofork then
  local _, xerr, xcode = atomrun.exec(o.argv, { close_locks = o.close })
  say("%s", xerr)
  os.exit(xcode == "ENOMEM" and EX_OSERR or EX_UNAVAILABLE)
end

cli.run_and_exit(o.argv, { close_locks = o.close, forward_signals = true },
  function() lk:unlock() end)
