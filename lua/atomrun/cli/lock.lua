-- atomrun.cli.lock -- the rarely taken paths of `atomrun lock`
-- (lua/atomrun/cmd/lock.lua): --help and --version, the values of the
-- options that take one, and every failure's message and exit status.
-- They are a separate chunk so that the common run (`lock -n F CMD`, no
-- mistake) does not load them: loading a chunk costs for each of its
-- constants, and these were half of lock.lua's.  Each function takes the
-- program (cli.program), the options table o of lock.lua, and as_flock
-- (called by the name flock) where it words something differently.
local atomrun = require "atomrun.core"
local cli = require "atomrun.cli"

local M = {}

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
     --slots <n>          hold one of n slots (a semaphore) instead of the lock: at
                          most n such commands at once; ATOMRUN_SLOT in theirs
]]

local USEC = 1000000

-- ------------------------------------------------------------ values

local function timeout_value(prog, s)
  local v = cli.seconds(s)
  if not v then prog:fail(cli.EX_USAGE, "invalid timeout value: '%s'", s) end
  -- flock keeps whole microseconds (a timeval); a zero one means -n, and
  -- a negative or non-finite one is refused by setitimer.
  if v ~= v or v == math.huge or v == -math.huge or math.floor(v * USEC) < 0 then
    prog:fail(cli.EX_OSERR, "cannot set up timer: %s", cli.strerror("EINVAL"))
  end
  return math.floor(v * USEC) / USEC
end

local function size_value(prog, s, what)
  local v = cli.size(s)
  if not v then prog:fail(cli.EX_USAGE, "%s: '%s'", what, s) end
  return v
end

-- --start and --length each fit a file offset, but the range they make
-- must end in one too: checked when the second of them is read (whichever
-- it is), so that the error names the option just given, and the other.
local function range_end_fits(prog, o, s, what, other, other_value)
  if o.length > 0 and o.start > math.maxinteger - o.length then
    prog:fail(cli.EX_USAGE, "%s: '%s' (with %s %d the range ends past the largest file "
      .. "offset, %d)", what, s, other, other_value, math.maxinteger)
  end
end

--- A descriptor number as flock(1) reads it (strtol, an int), or exit 64
-- with "WHAT: 'S'".
function M.fd_value(prog, s, what)
  local v, why = cli.integer(s)
  if why == "range" or (v and (v < -2147483648 or v > 2147483647)) then
    prog:fail(cli.EX_USAGE, "%s: '%s': %s", what, s, "Numerical result out of range")
  elseif not v then
    prog:fail(cli.EX_USAGE, "%s: '%s'", what, s)
  end
  return v
end

-- The getopt handlers of the options lock.lua does not handle itself:
-- M.option[key](prog, o, as_flock, value).
M.option = {
  w = function(prog, o, _, v) o.timeout = timeout_value(prog, v) end,
  E = function(prog, o, _, v) o.conflict = prog:exit_code(v) end,
  ttl = function(prog, o, _, v)
    o.ttl = math.tointeger(tonumber(v))
    if not (o.ttl and require("atomrun.check").fits("ttl", o.ttl)) then
      prog:fail(cli.EX_USAGE, "invalid --ttl: '%s' (a whole number of seconds, 1 to 1000000)", v)
    end
  end,
  ["kill-after"] = function(prog, o, _, v)
    o.kill_after = cli.seconds(v)
    if not o.kill_after or o.kill_after ~= o.kill_after or o.kill_after < 0 then
      prog:fail(cli.EX_USAGE, "invalid --kill-after value: '%s'", v)
    end
  end,
  start = function(prog, o, _, v)
    o.start = size_value(prog, v, "invalid as start offset")
    range_end_fits(prog, o, v, "invalid as start offset", "--length", o.length)
    o.fcntl = true
  end,
  length = function(prog, o, _, v)
    o.length = size_value(prog, v, "invalid as length of lock range")
    range_end_fits(prog, o, v, "invalid as length of lock range", "--start", o.start)
    o.fcntl = true
  end,
  fd = function(prog, o, _, v)
    o.fd = M.fd_value(prog, v, "invalid file descriptor")
    -- master takes a negative one here and then finds no descriptor
    if o.fd < 0 then prog:fail(cli.EX_USAGE, "requires file descriptor, file or directory") end
  end,
  h = function(prog, _, as_flock)
    io.stdout:write((HELP:gsub("%%1%$s", prog.cmd)
      :gsub("%%2%$s", as_flock and "" or ATOMRUN_NOTES:sub(2))
      :gsub("%%3%$s", as_flock and "flock(1)" or "atomrun(1)")))
    os.exit(0)
  end,
  V = function(_, _, as_flock)
    io.stdout:write(as_flock and string.format("flock from atomrun %s\n", atomrun.version)
      or string.format("atomrun %s\n", atomrun.version))
    os.exit(0)
  end,
}

-- ------------------------------------------------------------ failures

--- Opening the lock file failed: flock(1)'s statuses for each reason.
-- msg: lock()'s message, when there was one.
function M.open_failed(prog, o, code, msg)
  prog:say("cannot open lock file %s: %s", o.file, cli.strerror(code))
  -- Beyond flock, which would follow it (when fs.protected_symlinks is 0):
  -- which symlink on the way was not followed, and why (lock()'s words).
  local refusal = code == "EACCES" and msg and msg:match("refusing to follow the symlink .*$")
  if refusal then prog:say("%s", refusal) end
  if code == "ENOMEM" or code == "EMFILE" or code == "ENFILE" then os.exit(cli.EX_OSERR) end
  if code == "EROFS" or code == "ENOSPC" then os.exit(cli.EX_CANTCREAT) end
  os.exit(cli.EX_NOINPUT)
end

-- flock(2)/fcntl(2) itself refused: "flock: FILE: REASON" (or the
-- descriptor's number), 71 when the kernel is out of locks or memory.
local LOCK_STAGE = { ENOLCK = true, EBADF = true, EIO = true, EINVAL = true,
                     EOPNOTSUPP = true, EDEADLK = true }
function M.lock_failed(prog, o, code)
  local why = ""
  -- fcntl's EBADF is the descriptor's open mode, not a closed descriptor:
  -- say which mode the lock needed (flock(2) locks take either).
  if code == "EBADF" and o.fcntl then
    why = o.mode == "shared"
      and " (a shared --fcntl lock needs the file open for reading)"
      or " (an exclusive --fcntl lock needs the file open for writing: use -s for a shared"
        .. " lock, or leave out --fcntl)"
  end
  prog:say("%s: %s%s", o.file or tostring(o.fd), cli.strerror(code), why)
  os.exit((code == "ENOLCK" or code == "ENOMEM") and cli.EX_OSERR or cli.EX_DATAERR)
end

-- Busy or timed out: flock's exit status, silent as flock is unless
-- --verbose; then flock's line and, beyond flock, the holder.
local function conflict(prog, o, code, holder)
  if o.verbose then
    prog:say(code == "timeout" and "timeout while waiting to get lock" or "failed to get lock")
    prog:say("%s is held by %s", o.file or ("descriptor " .. o.fd), cli.holder_text(holder))
  end
  os.exit(o.conflict)
end

--- Taking the lock failed with code (and the holder when it was asked
-- for; msg: lock()'s message): say so as flock(1) does, and exit.
function M.failed(prog, o, code, holder, msg)
  if code == "busy" or code == "timeout" then conflict(prog, o, code, holder) end
  if o.file and not LOCK_STAGE[code] then M.open_failed(prog, o, code, msg) end
  M.lock_failed(prog, o, code)
end

return M
