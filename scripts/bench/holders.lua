-- scripts/bench/holders.lua -- what a busy lock costs to report on a host
-- with many processes and descriptors (issue 14: bound the holder lookup).
--
--   atomrun scripts/bench/holders.lua [PROCS [FDS_EACH]]    (default 50 x 1000)
--
-- Starts PROCS python3 processes holding FDS_EACH descriptors each (files,
-- pipes, sockets), then times a non-blocking lock attempt on a held lock,
-- with the holder lookup and without it (holder = false):
--   ofd        an OFD byte-range lock held by another process (/proc/locks
--              says pid -1: the holder is found through /proc/PID/fdinfo)
--   flock      a flock lock whose taker is alive
--   flock-dead a flock lock whose taker died; its child holds the
--              description (the /proc/locks pid is dead)
local atomrun = require "atomrun"

-- Its arguments are counts: --help answers, and anything else that is not
-- one is refused (exit 64) before a single process is started.
local USAGE = [=[
usage: atomrun scripts/bench/holders.lua [PROCS [FDS_EACH]]

What a busy lock costs to report: start PROCS python3 processes (default
50) holding FDS_EACH descriptors each (default 1000), then time a
non-blocking lock attempt on a held lock (ofd, flock, flock-dead), with
the holder lookup and without it.

Example:
  atomrun scripts/bench/holders.lua 200 1000
]=]
for i = 1, #arg do
  if arg[i] == "--help" or arg[i] == "-h" then io.stdout:write(USAGE); os.exit(0) end
end
local function usage_error(msg)
  io.stderr:write("holders.lua: ", msg, "\n", USAGE:match("^[^\n]*\n"))
  os.exit(64)
end
local function count(i, default)
  if arg[i] == nil then return default end
  local n = math.tointeger(tonumber(arg[i]))
  if n and n >= 0 then return n end
  if arg[i]:sub(1, 1) == "-" and not tonumber(arg[i]) then
    usage_error("unknown option '" .. arg[i] .. "'")
  end
  usage_error("PROCS and FDS_EACH are whole numbers, not '" .. arg[i] .. "'")
end
local procs, each = count(1, 50), count(2, 1000)
if arg[3] ~= nil then usage_error("too many arguments: '" .. arg[3] .. "'") end
local dir = assert(io.popen("mktemp -d /tmp/atomrun-bench.XXXXXX")):read("l")

local function py(code, ...)
  local args = {}
  for _, a in ipairs({ ... }) do args[#args + 1] = "'" .. tostring(a) .. "'" end
  local p = io.popen("/usr/bin/python3 -c '" .. code:gsub("'", "'\\''") .. "' "
    .. table.concat(args, " ") .. " >/dev/null 2>&1 </dev/null & echo $!")
  local pid = tonumber(p:read("l")); p:close()
  return pid
end

local function wait_file(p)
  for _ = 1, 3000 do
    if atomrun.stat(p) then return true end
    atomrun.sleep(0.01)
  end
  error("timed out waiting for " .. p)
end

local pids = {}
local FILLER = [[
import os, socket, sys, time, resource
n = int(sys.argv[1]); d = sys.argv[2]; me = sys.argv[3]
resource.setrlimit(resource.RLIMIT_NOFILE, (2 * n + 64, 2 * n + 64))
keep = []
for i in range(n):
    k = i % 4
    if k == 0: keep.append(os.open(d + "/f%d" % (i % 16), os.O_RDWR | os.O_CREAT))
    elif k == 1: keep.append(os.open("/dev/null", os.O_RDONLY))
    elif k == 2: keep.append(os.pipe()[0] if i % 8 == 2 else os.open("/proc/self/stat", os.O_RDONLY))
    else: keep.append(socket.socket().detach())
open(d + "/ready." + me, "w").close()
time.sleep(3600)
]]
for i = 1, procs do pids[#pids + 1] = py(FILLER, each, dir, i) end
for i = 1, procs do wait_file(dir .. "/ready." .. i) end

local total = 0
for _, pid in ipairs(pids) do
  local p = io.popen("ls /proc/" .. pid .. "/fd | wc -l"); total = total + tonumber(p:read("l")); p:close()
end

-- the holders
local OFD = [[
import fcntl, os, struct, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hh4xqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0))
open(sys.argv[2], "w").close()
time.sleep(3600)
]]
local FLOCK = [[
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
if sys.argv[3] == "dead":
    if os.fork() != 0:
        os._exit(0)
open(sys.argv[2], "w").close()
time.sleep(3600)
]]
pids[#pids + 1] = py(OFD, dir .. "/ofd", dir .. "/ofd.ready"); wait_file(dir .. "/ofd.ready")
pids[#pids + 1] = py(FLOCK, dir .. "/fl", dir .. "/fl.ready", "alive"); wait_file(dir .. "/fl.ready")
py(FLOCK, dir .. "/fld", dir .. "/fld.ready", "dead"); wait_file(dir .. "/fld.ready")

local function time_it(fn, n)
  local best = math.huge
  for _ = 1, n do
    local t = atomrun.now()
    fn()
    best = math.min(best, atomrun.now() - t)
  end
  return best
end

-- The first lookup of a holder searches the host; a repeated one (a retry
-- loop, a second message) may start where the first found it.
local function report(name, attempt)
  local holder
  local first = time_it(function() holder = select(4, attempt(true)) end, 1)
  local again = time_it(function() attempt(true) end, 5)
  local without = time_it(function() attempt(false) end, 5)
  print(string.format("%-10s %8.2f ms first lookup, %7.2f ms again (%s), %6.3f ms with holder = false",
    name, first * 1e3, again * 1e3,
    holder and holder.pid and ("pid " .. holder.pid .. " " .. (holder.cmd or "")):sub(1, 30)
      or "unknown", without * 1e3))
end

print(string.format("%d processes, %d descriptors in all", procs, total))
local f = assert(atomrun.open(dir .. "/ofd"))
report("ofd", function(h) return f:lock(0, 0, { wait = false, holder = h }) end)
report("flock", function(h) return atomrun.lock(dir .. "/fl", { wait = false, holder = h }) end)
report("flock-dead", function(h) return atomrun.lock(dir .. "/fld", { wait = false, holder = h }) end)
f:close()

-- the dead taker's child is not in pids: find it by its lock file
os.execute("fuser -k " .. dir .. "/fld >/dev/null 2>&1")
for _, pid in ipairs(pids) do os.execute("kill " .. pid .. " 2>/dev/null") end
os.execute("rm -rf '" .. dir .. "'")
