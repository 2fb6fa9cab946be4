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

-- --help, the option values, the failures: atomrun.cli.lock, loaded only
-- when one of them is needed (the common run never does).
local function slow() return require "atomrun.cli.lock" end

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
  table.insert(SPEC.long, { "slots", "slots", arg = true })
end

local USEC = 1000000

local o = { mode = "exclusive", conflict = 1, start = 0, length = 0 }

-- An option whose handler is atomrun.cli.lock's.
local function later(key)
  return function(v) slow().option[key](prog, o, as_flock, v) end
end

local handlers = {
  s = function() o.mode = "shared" end,
  x = function() o.mode = "exclusive" end,
  e = function() o.mode = "exclusive" end,
  u = function() o.unlock = true end,
  n = function() o.nonblock = true end,
  o = function() o.close = true end,
  F = function() o.nofork = true end,
  c = function(v, written) o.command, o.command_flag = v, written end,
  verbose = function() o.verbose = true end,
  fcntl = function() o.fcntl = true end,
  w = later("w"), E = later("E"), ttl = later("ttl"), ["kill-after"] = later("kill-after"),
  slots = function(v)
    o.slots = math.tointeger(tonumber(v))
    if not o.slots or o.slots < 1 or o.slots > 1000000 then
      prog:fail(cli.EX_USAGE, "invalid --slots: '%s' (a whole number, 1 to 1000000)", v)
    end
  end,
  start = later("start"), length = later("length"), fd = later("fd"),
  h = later("h"), V = later("V"),
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
  o.fd = slow().fd_value(prog, operands[1], "bad file descriptor")
else
  prog:fail(cli.EX_USAGE, "requires file descriptor, file or directory")
end

-- A mistyped etcd name is a usage error, never a silent local lock (called
-- flock, a path is a path, as util-linux has it).
if not as_flock and o.file then
  local miss = require("atomrun.backend").near_miss(o.file)
  if miss then prog:fail(cli.EX_USAGE, "%s", miss) end
end
if o.nonblock or o.timeout == 0 then o.timeout = 0 end
-- --slots N: one of N slots of a semaphore (lua/atomrun/cli/slots.lua)
if o.slots then
  if not o.file or not o.argv then
    prog:fail(cli.EX_USAGE, "--slots needs a file or an etcd name and a command")
  end
  require("atomrun.cli.slots").run(prog, o)
end
-- etcd://.../NAME: the lock lives on a cluster (lua/atomrun/cli/etcd.lua)
if not as_flock and require("atomrun.backend").is_etcd(o.file) then
  os.exit(require("atomrun.cli.etcd").lock_remote(prog, o))
end
local started = atomrun.now()

-- ------------------------------------------------------------ failures

local function open_failed(code) slow().open_failed(prog, o, code) end
local function lock_failed(code) slow().lock_failed(prog, o, code) end
local function failed(code, holder, msg) slow().failed(prog, o, code, holder, msg) end

-- ------------------------------------------------------------ locking

-- A symlink at the lock path is followed as flock(1) follows it, except
-- another user's in a sticky world-writable directory (see atomrun(1)).
local function lock_opts(wait, timeout, holder)
  local opts = { mode = o.mode, wait = wait, timeout = timeout, holder = holder }
  if o.file then opts.follow = "protected" end
  if as_flock and o.file then opts.literal = true end   -- flock(1): "etcd:x" is a file
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

local lk, msg, code, holder
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
  lk, msg, code, holder = take(false, nil, o.verbose or false)
  if not lk then failed(code, holder, msg) end
elseif atomrun.isatty(2) then
  -- A person is watching: after a second of waiting, say once for whom.
  lk, msg, code, holder = take(false, nil, true)
  if not lk and code == "busy" then
    local first = o.timeout and math.min(o.timeout, 1) or 1
    lk, msg, code, holder = take(true, first, true)
    if not lk and code == "timeout" and (o.timeout == nil or o.timeout > first) then
      prog:say("waiting for %s, held by %s", o.file or ("descriptor " .. o.fd), cli.holder_text(holder))
      -- never 0 here: that would be a non-blocking try, "busy" not "timeout"
      local rest = o.timeout and math.max(1e-6, o.timeout - (atomrun.now() - started)) or nil
      lk, msg, code, holder = take(true, rest, o.verbose or false)
    end
  end
  if not lk then failed(code, holder, msg) end
else
  lk, msg, code, holder = take(true, o.timeout, o.verbose or false)
  if not lk then failed(code, holder, msg) end
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
