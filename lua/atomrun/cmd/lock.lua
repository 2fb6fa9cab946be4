-- atomrun lock -- run a command holding a lock: util-linux flock(1), also by that name
--
--   atomrun lock [options] FILE|DIR [--] CMD [ARGS...]
--   atomrun lock [options] FILE|DIR -c CMDSTRING
--   atomrun lock [options] N                    (lock the caller's descriptor N)
--   atomrun lock [options] --fd N CMD [ARGS...] | --fd N -c CMDSTRING
--
-- Every form, option, message, stream and exit status of flock(1) at
-- util-linux master.  Where Debian's 2.38 and master word a message
-- differently, 2.38's words are kept (scripts and their tests meet it);
-- options 2.38 lacks (--fcntl, --start, --length, --fd) use master's.
-- Beyond flock: the holder named in one more stderr line after flock's
-- --verbose ones, a note on a terminal while waiting, signals passed on.
-- Under its own name it also takes `--` between FILE and CMD and creates a
-- lock file's missing parent directories; called `flock` it does neither.
local atomrun = require "atomrun"
local cli = require "atomrun.cli"

local prog, as_flock = cli.invoked_as("lock", "flock")

local HELP = [[

Usage:
 %1$s [options] <file>|<directory> <command> [<argument>...]
 %1$s [options] <file>|<directory> -c <command>
 %1$s [options] <file descriptor number>
 %1$s [options] --fd <file descriptor number> -c <command>
 %1$s [options] --fd <file descriptor number> <command> [<argument>...]

Manage file locks from shell scripts.

Options:
 -s, --shared             get a shared lock
 -x, --exclusive          get an exclusive lock (default)
 -u, --unlock             remove a lock
 -n, --nb, --nonblocking  fail rather than wait
 -w, --timeout <secs>     wait for a limited amount of time
 -E, --conflict-exit-code <number>  exit code after conflict or timeout
 -o, --close              close file descriptor before running command
 -c, --command <command>  run a single command string through the shell
 -F, --no-fork            execute command without forking
     --wait               same as --timeout
     --fcntl              use fcntl(F_OFD_SETLK) rather than flock()
     --start <offset>     starting offset for lock (implies --fcntl)
     --length <number>    number of bytes to lock (implies --fcntl)
     --fd <number>        use the file descriptor number to wrap the
                          lock around the command execution
     --verbose            increase verbosity

 -h, --help               display this help
 -V, --version            display version
%2$s
For more details see %3$s.
]]

local ATOMRUN_NOTES = [[

Beyond flock(1): `--` may separate FILE from CMD; missing parent
directories of FILE are created; --verbose (or a terminal) names the holder.
FILE may be an etcd name (etcd://HOST:PORT[,...]/NAME): the lock is then held
on the cluster, CMD gets ATOMRUN_LOCK_TOKEN, and if the lock is lost CMD's
process group gets SIGTERM, then SIGKILL, and atomrun exits 75.
     --ttl <secs>         etcd names: the lease's seconds (default 10)
     --kill-after <secs>  etcd names: SIGKILL this long after SIGTERM (default 5)
]]

-- util-linux's optstring "+sexnoFuw:E:hV" and its long options, in its
-- order (getopt_long lists ambiguous candidates in this order).  -c is not
-- an option to flock's getopt: master recognizes "-c"/"--command" as typed
-- (never a prefix), and only the --fd form may give it before the operands.
local SPEC = {
  short = "sexnoFuw:E:hVc:",
  long = {
    { "shared", "s" }, { "exclusive", "x" }, { "unlock", "u" },
    { "nonblocking", "n" }, { "nb", "n" },
    { "timeout", "w", arg = true }, { "wait", "w", arg = true },
    { "conflict-exit-code", "E", arg = true },
    { "close", "o" }, { "no-fork", "F" }, { "verbose", "verbose" },
    { "fcntl", "fcntl" }, { "start", "start", arg = true },
    { "length", "length", arg = true }, { "fd", "fd", arg = true },
    { "help", "h" }, { "version", "V" },
    { "command", "c", arg = true, exact = true },
  },
}
-- Not flock(1)'s: options for etcd names, only under atomrun's own name.
if not as_flock then
  table.insert(SPEC.long, { "ttl", "ttl", arg = true })
  table.insert(SPEC.long, { "kill-after", "kill-after", arg = true })
end

local USEC = 1000000

local o = { mode = "exclusive", conflict = 1, start = 0, length = 0 }

local function timeout_value(s)
  local v = cli.seconds(s)
  if not v then prog:fail(cli.EX_USAGE, "invalid timeout value: '%s'", s) end
  -- flock keeps whole microseconds (a timeval); a zero one means -n, and
  -- a negative or non-finite one is refused by setitimer.
  if v ~= v or v == math.huge or v == -math.huge or math.floor(v * USEC) < 0 then
    prog:fail(cli.EX_OSERR, "cannot set up timer: %s", cli.strerror("EINVAL"))
  end
  return math.floor(v * USEC) / USEC
end

local function size_value(s, what)
  local v = cli.size(s)
  if not v then prog:fail(cli.EX_USAGE, "%s: '%s'", what, s) end
  return v
end

local function fd_value(s, what)
  local v, why = cli.integer(s)
  if why == "range" or (v and (v < -2147483648 or v > 2147483647)) then
    prog:fail(cli.EX_USAGE, "%s: '%s': %s", what, s, "Numerical result out of range")
  elseif not v then
    prog:fail(cli.EX_USAGE, "%s: '%s'", what, s)
  end
  return v
end

local handlers = {
  s = function() o.mode = "shared" end,
  x = function() o.mode = "exclusive" end,
  e = function() o.mode = "exclusive" end,
  u = function() o.unlock = true end,
  n = function() o.nonblock = true end,
  o = function() o.close = true end,
  F = function() o.nofork = true end,
  w = function(v) o.timeout = timeout_value(v) end,
  E = function(v) o.conflict = prog:exit_code(v) end,
  c = function(v, written) o.command, o.command_flag = v, written end,
  verbose = function() o.verbose = true end,
  ttl = function(v)
    o.ttl = math.tointeger(tonumber(v))
    if not o.ttl or o.ttl < 1 then
      prog:fail(cli.EX_USAGE, "invalid --ttl: '%s' (a whole number of seconds >= 1)", v)
    end
  end,
  ["kill-after"] = function(v)
    o.kill_after = cli.seconds(v)
    if not o.kill_after or o.kill_after ~= o.kill_after or o.kill_after < 0 then
      prog:fail(cli.EX_USAGE, "invalid --kill-after value: '%s'", v)
    end
  end,
  fcntl = function() o.fcntl = true end,
  start = function(v) o.start = size_value(v, "invalid as start offset") o.fcntl = true end,
  length = function(v) o.length = size_value(v, "invalid as length of lock range") o.fcntl = true end,
  fd = function(v)
    o.fd = fd_value(v, "invalid file descriptor")
    -- master takes a negative one here and then finds no descriptor
    if o.fd < 0 then prog:fail(cli.EX_USAGE, "requires file descriptor, file or directory") end
  end,
  h = function()
    io.stdout:write((HELP:gsub("%%1%$s", prog.cmd)
      :gsub("%%2%$s", as_flock and "" or ATOMRUN_NOTES:sub(2))
      :gsub("%%3%$s", as_flock and "flock(1)" or "atomrun(1)")))
    os.exit(0)
  end,
  V = function()
    io.stdout:write(as_flock and string.format("flock from atomrun %s\n", atomrun.version)
      or string.format("atomrun %s\n", atomrun.version))
    os.exit(0)
  end,
}

local args = { ... }
if #args == 0 then prog:usage_error("not enough arguments") end
local operands = prog:getopt(args, SPEC, function(key, value, written)
  handlers[key](value, written)
end)

if o.nofork and o.close then
  prog:fail(cli.EX_USAGE, "the --no-fork and --close options are incompatible")
end

local function shell_argv(cmd) return { cli.shell(), "-c", cmd } end

-- Which form: a file and a command, a descriptor and a command (--fd), or
-- a bare descriptor.
if o.command then
  if #operands ~= 0 then
    prog:fail(cli.EX_USAGE, "%s requires exactly one command argument", o.command_flag)
  end
  if not o.fd then prog:fail(cli.EX_USAGE, "requires file descriptor, file or directory") end
  o.argv = shell_argv(o.command)
elseif o.fd then
  if #operands == 0 then prog:fail(cli.EX_USAGE, "missing command") end
  o.argv = operands
elseif #operands > 1 then
  local second = operands[2]
  if second == "-c" or second == "--command" then
    if #operands ~= 3 then
      prog:fail(cli.EX_USAGE, "%s requires exactly one command argument", second)
    end
    o.argv = shell_argv(operands[3])
  elseif second == "--" and not as_flock then
    o.argv = table.move(operands, 3, #operands, 1, {})
    if #o.argv == 0 then prog:fail(cli.EX_USAGE, "missing command") end
  else
    o.argv = table.move(operands, 2, #operands, 1, {})
  end
  o.file = operands[1]
elseif #operands == 1 then
  o.fd = fd_value(operands[1], "bad file descriptor")
else
  prog:fail(cli.EX_USAGE, "requires file descriptor, file or directory")
end

if o.nonblock or o.timeout == 0 then o.timeout = 0 end
-- etcd://.../NAME: the lock lives on a cluster (lua/atomrun/remote.lua)
if not as_flock and cli.is_url(o.file) then
  os.exit(require("atomrun.cli_etcd").lock_remote(prog, o))
end
local started = atomrun.now()

-- ------------------------------------------------------------ failures

-- Opening the lock file: flock(1)'s statuses for each reason.
local function open_failed(code)
  prog:say("cannot open lock file %s: %s", o.file, cli.strerror(code))
  if code == "EACCES" then
    -- Beyond flock, which would follow it: why this symlink was not.
    local st = atomrun.stat(o.file, false)
    if st and st.type == "link" and st.uid ~= atomrun.uid() then
      prog:say("%s is a symlink of uid %d in a sticky world-writable directory: not followed",
        o.file, st.uid)
    end
  end
  if code == "ENOMEM" or code == "EMFILE" or code == "ENFILE" then os.exit(cli.EX_OSERR) end
  if code == "EROFS" or code == "ENOSPC" then os.exit(cli.EX_CANTCREAT) end
  os.exit(cli.EX_NOINPUT)
end

-- flock(2)/fcntl(2) itself refused: "flock: FILE: REASON" (or the
-- descriptor's number), 71 when the kernel is out of locks or memory.
local LOCK_STAGE = { ENOLCK = true, EBADF = true, EIO = true, EINVAL = true,
                     EOPNOTSUPP = true, EDEADLK = true }
local function lock_failed(code)
  prog:say("%s: %s", o.file or tostring(o.fd), cli.strerror(code))
  os.exit((code == "ENOLCK" or code == "ENOMEM") and cli.EX_OSERR or cli.EX_DATAERR)
end

-- Busy or timed out: flock's exit status, silent as flock is unless
-- --verbose; then flock's line and, beyond flock, the holder.
local function conflict(code, holder)
  if o.verbose then
    prog:say(code == "timeout" and "timeout while waiting to get lock" or "failed to get lock")
    prog:say("%s is held by %s", o.file or ("descriptor " .. o.fd), cli.holder_text(holder))
  end
  os.exit(o.conflict)
end

local function failed(code, holder)
  if code == "busy" or code == "timeout" then conflict(code, holder) end
  if o.file and not LOCK_STAGE[code] then open_failed(code) end
  lock_failed(code)
end

-- ------------------------------------------------------------ locking

-- A symlink at the lock path is followed as flock(1) follows it, except
-- another user's in a sticky world-writable directory (see atomrun(1)).
local function lock_opts(wait, timeout, holder)
  local opts = { mode = o.mode, wait = wait, timeout = timeout, holder = holder }
  if o.file then opts.follow = "protected" end
  if o.fcntl then opts.fcntl, opts.start, opts.length = true, o.start, o.length end
  return opts
end

local function take(wait, timeout, holder)
  local opts = lock_opts(wait, timeout, holder)
  if o.file then return atomrun.lock(o.file, opts) end
  return atomrun.lockfd(o.fd, opts)
end

-- Called flock, never create directories (flock fails with 66); the Lua
-- lock() would make the missing parents.
if as_flock and o.file then
  local parent = o.file:match("^(.*)/[^/]*$")
  if parent and parent ~= "" then
    local st, _, code = atomrun.stat(parent)
    if not st and code == "ENOENT" then open_failed("ENOENT") end
  end
end

-- A negative descriptor is EBADF to flock(2); say so as flock does.
if o.fd and o.fd < 0 then lock_failed("EBADF") end

local lk, code, holder
if o.unlock then
  -- -u: drop the lock on the descriptor (the file form only opens the file,
  -- as flock's LOCK_UN on a fresh descriptor drops nothing).
  local ok, ucode
  if o.file then
    local f
    f, _, ucode = atomrun.open(o.file)
    ok = f ~= nil
    if f then f:close() end
    if not ok then failed(ucode) end
  else
    ok, _, ucode = atomrun.unlockfd(o.fd, { fcntl = o.fcntl or nil,
      start = o.fcntl and o.start or nil, length = o.fcntl and o.length or nil })
    if not ok then failed(ucode) end
  end
elseif o.timeout == 0 then
  -- The holder is looked up only when it will be named (cheap -n).
  lk, _, code, holder = take(false, nil, o.verbose or false)
  if not lk then failed(code, holder) end
elseif atomrun.isatty(2) then
  -- A person is watching: after a second of waiting, say once for whom.
  lk, _, code, holder = take(false, nil, true)
  if not lk and code == "busy" then
    local first = o.timeout and math.min(o.timeout, 1) or 1
    lk, _, code, holder = take(true, first, true)
    if not lk and code == "timeout" and (o.timeout == nil or o.timeout > first) then
      prog:say("waiting for %s, held by %s", o.file or ("descriptor " .. o.fd), cli.holder_text(holder))
      -- never 0 here: that would be a non-blocking try, "busy" not "timeout"
      local rest = o.timeout and math.max(1e-6, o.timeout - (atomrun.now() - started)) or nil
      lk, _, code, holder = take(true, rest, o.verbose or false)
    end
  end
  if not lk then failed(code, holder) end
else
  lk, _, code, holder = take(true, o.timeout, o.verbose or false)
  if not lk then failed(code, holder) end
end

if o.verbose then
  local took = atomrun.now() - started
  local sec = math.floor(took)
  io.stdout:write(string.format("%s: getting lock took %d.%06d seconds\n", prog.name, sec,
    math.floor((took - sec) * USEC)))
end

if not o.argv then os.exit(0) end           -- `flock N`: the lock stays on N

if o.verbose then
  io.stdout:write(string.format("%s: executing %s\n", prog.name, o.argv[1]))
end
if o.nofork then
  cli.exec_or_exit(prog, o.argv, { close_locks = false })
end
-- The file form's lock ends with us; the descriptor forms' lock is the
-- caller's and stays on its descriptor, as with flock.  -o with --fd: the
-- command runs without the caller's descriptor (ours keeps the lock).
cli.run_and_exit(prog, o.argv, { close_locks = o.close or false, forward_signals = true,
                                 close_fds = o.close and o.fd and { o.fd } or nil },
  function() if lk and o.file then lk:unlock() end end)
