-- work.lua -- the atomrun side of `make bench`, run by the atomrun binary:
--   atomrun scripts/bench/work.lua SUBCOMMAND ARGS...
-- Same subcommands, arguments and output as ref.c (the raw-syscall limit)
-- and peer.py, so the driver treats the three alike.  Each times its own
-- loop (start-up is not measured) and prints wall-clock seconds per
-- operation (atomrun.now(), CLOCK_MONOTONIC) and CPU seconds per operation
-- (os.clock(), the process's user + system time).
local atomrun = require "atomrun"

local now = atomrun.now
local cmd = arg[1]

local function warmup_of(n) return math.min(n // 10, 1000) end

local function out(fmt, ...) io.stdout:write(string.format(fmt, ...), "\n") end
local function report(wall, cpu, n) out("%.9e %.9e", wall / n, cpu / n) end

local function sleep_until(t)
  local d = t - now()
  if d > 0 then atomrun.sleep(d) end
end

local function data_of(size)
  local alphabet = "abcdefghijklmnopqrstuvwxyz"
  return alphabet:rep(size // 26 + 1):sub(1, size)
end

if cmd == "lockcycle" then
  -- lock(path) + unlock: the whole cycle, open and close included
  local path, n = arg[2], math.tointeger(tonumber(arg[3]))
  local lock = atomrun.lock
  for _ = 1, warmup_of(n) do
    local lk = lock(path) or error("lock failed")
    lk:unlock()
  end
  local t, c = now(), os.clock()
  for _ = 1, n do
    local lk = lock(path) or error("lock failed")
    lk:unlock()
  end
  report(now() - t, os.clock() - c, n)

elseif cmd == "range" then
  -- f:lock(start, length) + unlock on a handle opened once
  local path, n = arg[2], math.tointeger(tonumber(arg[3]))
  local f = assert(atomrun.open(path))
  for _ = 1, warmup_of(n) do
    local r = f:lock(0, 100) or error("range lock failed")
    r:unlock()
  end
  local t, c = now(), os.clock()
  for _ = 1, n do
    local r = f:lock(0, 100) or error("range lock failed")
    r:unlock()
  end
  report(now() - t, os.clock() - c, n)
  f:close()

elseif cmd == "create" or cmd == "create-durable" then
  -- create(path): an empty file, O_EXCL.  "create" passes durable = false,
  -- "create-durable" takes the default (the directory is fsynced).
  local dir, n = arg[2], math.tointeger(tonumber(arg[3]))
  local opts = cmd == "create" and { durable = false } or nil
  local create, total, total_cpu = atomrun.create, 0, 0
  for i = 0, n - 1 do
    local name = dir .. "/c." .. i
    local t, c = now(), os.clock()
    local ok, err = create(name, nil, opts)
    total, total_cpu = total + (now() - t), total_cpu + (os.clock() - c)
    if not ok then error(err) end
  end
  report(total, total_cpu, n)
  for i = 0, n - 1 do os.remove(dir .. "/c." .. i) end

elseif cmd == "replace" then
  -- replace(path, data): durable by default
  local path = arg[2]
  local size, n = math.tointeger(tonumber(arg[3])), math.tointeger(tonumber(arg[4]))
  local data = data_of(size)
  assert(atomrun.replace(path, data))            -- warm-up: the file exists
  local t, c = now(), os.clock()
  for _ = 1, n do
    local ok, err = atomrun.replace(path, data)
    if not ok then error(err) end
  end
  report(now() - t, os.clock() - c, n)

elseif cmd == "counter" then
  -- update(path, fn): lock on path..".lock", read, fn, durable replace
  local path, k, start_at = arg[2], math.tointeger(tonumber(arg[3])), tonumber(arg[4])
  local function incr(old) return tostring((math.tointeger(tonumber(old)) or 0) + 1) end
  sleep_until(start_at)
  local t0 = now()
  for _ = 1, k do
    local ok, err = atomrun.update(path, incr)
    if not ok then error(err) end
  end
  out("%.9f %.9f %d", t0, now(), k)

elseif cmd == "waiter" then
  -- hand-off: a waiter with a timeout set, woken by the kernel
  local path = arg[2]
  local opts = { timeout = 10 }
  out("ready")
  io.stdout:flush()
  for _ in io.lines() do
    local lk, err = atomrun.lock(path, opts)
    local t = now()
    if not lk then error(err) end
    out("%.9f", t)
    io.stdout:flush()
    lk:unlock()
  end

else
  io.stderr:write("usage: atomrun work.lua lockcycle|range|create|create-durable|replace|counter|waiter ARGS...\n")
  os.exit(2)
end
