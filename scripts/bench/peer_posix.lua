-- peer_posix.lua -- the lock cycle with lua-posix, for `make bench`:
--   LUA scripts/bench/peer_posix.lua lockcycle PATH N
-- lua-posix has no flock(2); its whole-file lock is a classic fcntl F_SETLK
-- record lock over the whole file, which is what this times: open +
-- F_SETLK(F_WRLCK) + F_SETLK(F_UNLCK) + close.  run.lua runs it only with a
-- Lua that can load posix.fcntl (Debian bookworm ships it for 5.1-5.3 only).
local fcntl = require "posix.fcntl"
local unistd = require "posix.unistd"
local ptime = require "posix.time"

local function now()
  local ts = ptime.clock_gettime(ptime.CLOCK_MONOTONIC)
  return ts.tv_sec + ts.tv_nsec / 1e9
end

local function cycle(path)
  local fd = assert(fcntl.open(path, fcntl.O_RDWR | fcntl.O_CREAT | fcntl.O_CLOEXEC, 438))
  assert(fcntl.fcntl(fd, fcntl.F_SETLK,
    { l_type = fcntl.F_WRLCK, l_whence = unistd.SEEK_SET, l_start = 0, l_len = 0 }))
  assert(fcntl.fcntl(fd, fcntl.F_SETLK,
    { l_type = fcntl.F_UNLCK, l_whence = unistd.SEEK_SET, l_start = 0, l_len = 0 }))
  unistd.close(fd)
end

if arg[1] ~= "lockcycle" or not arg[3] then
  io.stderr:write("usage: peer_posix.lua lockcycle PATH N\n")
  os.exit(2)
end
local path, n = arg[2], math.tointeger(tonumber(arg[3]))
for _ = 1, math.min(n // 10, 1000) do cycle(path) end
local t, c = now(), os.clock()
for _ = 1, n do cycle(path) end
io.write(string.format("%.9e %.9e\n", (now() - t) / n, (os.clock() - c) / n))
