-- scripts/bench/run.lua -- the `make bench` driver, run by the atomrun binary
-- (scripts/bench/run.sh compiles the C references first).
--
--   atomrun scripts/bench/run.lua --build DIR [--out FILE] [--quick] [--before DIR2]
--
-- Every benchmark runs atomrun, the raw-syscall limit (ref.c) and the peers
-- (peer.py with Debian's python3-filelock, flock(1), lua5.4, lua-posix when it
-- exists for some Lua) in the same run, several rounds, rotating their order
-- so that background load falls on all of them alike.  Each round gives one
-- number per contender; the table shows medians.  Latencies are pooled over
-- the rounds and shown as p50 and p99.  Ratios compare costs (time per
-- operation, latency, memory): atomrun/raw above 1 means atomrun is slower
-- than the raw syscalls; peer/atomrun above 1 means the peer is slower.
--
-- --before DIR2 adds DIR2/atomrun (another build: the code before a change)
-- as one more contender in the benchmarks a change to the hot paths moves
-- (lock cycle, range pair, hand-off, start-up), so that before and after
-- are measured side by side in one run, under the same load; a second
-- table gives both ratios to raw.
local atomrun = require "atomrun"
local json = atomrun.json

-- ------------------------------------------------------------ arguments

local build, out_path, quick, before = "build", "build/bench/results.json", false, nil
do
  local i = 1
  while arg[i] do
    local a = arg[i]
    if a == "--build" then build = assert(arg[i + 1], "--build needs a directory"); i = i + 1
    elseif a == "--out" then out_path = assert(arg[i + 1], "--out needs a file"); i = i + 1
    elseif a == "--quick" then quick = true
    elseif a == "--before" then before = assert(arg[i + 1], "--before needs a directory"); i = i + 1
    else io.stderr:write("run.lua: unknown argument ", a, "\n"); os.exit(64) end
    i = i + 1
  end
end

-- Counts.  Full: enough rounds and iterations for stable medians on a busy
-- machine, a minute or two in all.  Quick: every code path once, in seconds.
local C = quick and {
  rounds = 1, lock_n = 300, range_n = 500, create_n = 50, create_durable_n = 3,
  replace_4k_n = 2, replace_1m_n = 1,
  handoff_rounds = 1, handoff_n = 2, hold_ms = { 5, 10 },
  counter_rounds = 1, counter_total = 16, counter_procs = { 1, 4, 16 },
  spawn_n = 3,
} or {
  rounds = 11, lock_n = 20000, range_n = 100000, create_n = 2000, create_durable_n = 40,
  replace_4k_n = 25, replace_1m_n = 8,
  handoff_rounds = 5, handoff_n = 16, hold_ms = { 10, 60 },
  counter_rounds = 3, counter_total = 160, counter_procs = { 1, 4, 16 },
  spawn_n = 300,
}

-- ------------------------------------------------------------ helpers

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function abspath(p)
  if p:sub(1, 1) == "/" then return p end
  local cwd = assert(io.popen("pwd")):read("l")
  return cwd .. "/" .. p
end

build = abspath(build)
local ATOMRUN = build .. "/atomrun"
local BEFORE = before and abspath(before) .. "/atomrun"
local REF = build .. "/bench/ref"
local HARNESS = build .. "/bench/harness"
local WORK = abspath("scripts/bench/work.lua")
local PEER_PY = abspath("scripts/bench/peer.py")
local PEER_POSIX = abspath("scripts/bench/peer_posix.lua")
local PYTHON = "/usr/bin/python3"      -- Debian's, with python3-filelock
local DIR = build .. "/bench/work"     -- the repository's filesystem, not /tmp

-- Run a shell command, return its standard output; fail loudly.
local function sh(cmd)
  local p = assert(io.popen(cmd, "r"))
  local text = p:read("a")
  local ok, how, code = p:close()
  if not ok then
    error(string.format("benchmark command failed (%s %s):\n  %s", how, code, cmd), 0)
  end
  return text
end

local function ok_sh(cmd)
  return os.execute(cmd .. " >/dev/null 2>&1") == true
end

-- "wall cpu" (seconds per operation) from a workload
local function numbers_of(text, cmd)
  local wall, cpu = text:match("^%s*(%S+)%s+(%S+)")
  wall, cpu = tonumber(wall), tonumber(cpu)
  if not wall or not cpu then error("no numbers from: " .. cmd .. "\n" .. text, 0) end
  return wall, cpu
end

local function sorted(t)
  local c = table.move(t, 1, #t, 1, {})
  table.sort(c)
  return c
end

local function median(t)
  if #t == 0 then return nil end
  local c = sorted(t)
  local m = #c // 2
  return #c % 2 == 1 and c[m + 1] or (c[m] + c[m + 1]) / 2
end

-- Percentile by linear interpolation between closest ranks.
local function percentile(t, p)
  if #t == 0 then return nil end
  local c = sorted(t)
  local x = 1 + (#c - 1) * p / 100
  local lo = math.floor(x)
  local hi = math.min(lo + 1, #c)
  return c[lo] + (c[hi] - c[lo]) * (x - lo)
end

local function fresh_dir(path)
  sh("rm -rf " .. q(path) .. " && mkdir -p " .. q(path))
  return path
end

-- Progress on stderr, with the time the previous step took.
local said_at
local function say(...)
  local t = atomrun.now()
  if said_at then io.stderr:write(string.format(" (%.1f s)\n", t - said_at)) end
  said_at = t
  io.stderr:write(string.format(...))
  io.stderr:flush()
end

-- ------------------------------------------------------------ who runs

local have = {
  python = ok_sh(PYTHON .. " -c 'import filelock'"),
  flock = ok_sh("command -v flock"),
  lua54 = ok_sh("command -v lua5.4"),
}
-- lua-posix: the first Lua interpreter (5.3 or later: peer_posix.lua uses
-- integer division and bitwise operators) that can load it.  Debian
-- bookworm's lua-posix 33.4 is built for Lua 5.1-5.3 only, and it has no
-- flock(2) at all: its nearest lock is a classic fcntl F_SETLK record lock.
local posix_lua
for _, lua in ipairs { "lua5.4", "lua5.3" } do
  if ok_sh(lua .. " -e 'require \"posix.fcntl\"'") then posix_lua = lua break end
end

local A = { key = "atomrun", cmd = q(ATOMRUN) .. " " .. q(WORK) }
-- the same workload (this tree's work.lua) in the build given by --before
local BF = BEFORE and { key = "before", cmd = q(BEFORE) .. " " .. q(WORK) } or nil
local R = { key = "raw", cmd = q(REF) }
local PY = { key = "peer", name = "python3-filelock", cmd = q(PYTHON) .. " " .. q(PEER_PY) }
local PY_LOCKF = { key = "peer", name = "python fcntl.lockf", cmd = PY.cmd }
local PY_REPLACE = { key = "peer", name = "python fsync+os.replace", cmd = PY.cmd }

-- ------------------------------------------------------------ results

local rows = {}
local function row(t) rows[#rows + 1] = t; return t end

-- A row that shares a base (one benchmark shown against several peers).
local function with(base, extra)
  local t = {}
  for k, v in pairs(base) do t[k] = v end
  for k, v in pairs(extra) do t[k] = v end
  return t
end

-- Rotate the order of the contenders each round.
local function rotation(list, r)
  local o = {}
  for k = 0, #list - 1 do o[#o + 1] = list[(r - 1 + k) % #list + 1] end
  return o
end

-- Time-per-operation benchmarks: each run prints wall-clock and CPU seconds
-- per operation; `metric` picks the one the table shows.  CPU time (user +
-- system) for work that never waits, so that other processes on a busy
-- machine do not count; wall-clock for work that waits on the disk.
local function timed(label, list, argv_of, metric)
  local wall, cpu = {}, {}
  for _, c in ipairs(list) do wall[c], cpu[c] = {}, {} end
  say("bench: %s", label)
  for r = 1, C.rounds do
    for _, c in ipairs(rotation(list, r)) do
      local cmd = c.cmd .. " " .. argv_of(c)
      local w, u = numbers_of(sh(cmd), cmd)
      table.insert(wall[c], w)
      table.insert(cpu[c], u)
    end
  end
  local res = {}
  for _, c in ipairs(list) do
    local shown = metric == "cpu" and cpu[c] or wall[c]
    res[c] = { median = median(shown), samples = shown,
               wall = median(wall[c]), cpu = median(cpu[c]) }
  end
  return res
end

-- The medians of the metric the table does not show, for the JSON.
local function other_metric(res, metric, list)
  local o = { metric = metric == "cpu" and "wall" or "cpu" }
  for _, c in ipairs(list) do
    o[c.key == "peer2" and "peer_lua_posix" or c.key] = metric == "cpu" and res[c].wall or res[c].cpu
  end
  return o
end

-- ------------------------------------------------------------ the benchmarks

fresh_dir(DIR)
local machine = {
  cores = tonumber(sh("nproc"):match("%d+")),
  kernel = sh("uname -r"):match("[^\n]+"),
  debian = (function()
    local f = io.open("/etc/debian_version")
    if not f then return "?" end
    local v = f:read("l")
    f:close()
    return v or "?"
  end)(),
  fstype = (atomrun.probe(DIR) or {}).fstype or "?",
  date = os.date("!%Y-%m-%dT%H:%M:%SZ"),
  quick = quick,
}
say("bench: %s run on %d cores, kernel %s, Debian %s, %s under %s",
  quick and "quick (smoke)" or "full", machine.cores, machine.kernel, machine.debian,
  machine.fstype, DIR)

local t_start = atomrun.now()

-- lock cycle -------------------------------------------------------------
do
  local path = DIR .. "/cycle.lock"
  local list = { A, R }
  if BF then list[#list + 1] = BF end
  if have.python then list[#list + 1] = PY end
  local posix = posix_lua and { key = "peer2", name = "lua-posix",
    cmd = q(posix_lua) .. " " .. q(PEER_POSIX) } or nil
  if posix then list[#list + 1] = posix end
  local res = timed("lock cycle", list, function() return "lockcycle " .. q(path) .. " " .. C.lock_n end, "cpu")
  local base = { bench = "lock cycle", kind = "time", metric = "cpu", what_atomrun = "lock(path) + unlock()",
    what_raw = "open + flock + flock(LOCK_UN) + close", goal = 1.2,
    atomrun = res[A].median, raw = res[R].median, other = other_metric(res, "cpu", list),
    before = BF and res[BF].median }
  row(with(base, { peer = have.python and res[PY].median or nil, peer_name = "python3-filelock",
    peer_missing = not have.python and "python3-filelock not installed" or nil,
    samples = { atomrun = res[A].samples, raw = res[R].samples, peer = have.python and res[PY].samples or nil } }))
  row(with(base, { peer = posix and res[posix].median or nil,
    peer_name = "lua-posix F_SETLK",
    peer_missing = not posix and "no module for Lua 5.4" or nil,
    samples = { peer = posix and res[posix].samples or nil } }))
end

-- range pair -------------------------------------------------------------
do
  local path = DIR .. "/range.dat"
  local list = { A, R }
  if BF then list[#list + 1] = BF end
  if have.python then list[#list + 1] = PY_LOCKF end
  local res = timed("range pair", list, function() return "range " .. q(path) .. " " .. C.range_n end, "cpu")
  row { bench = "range pair", kind = "time", metric = "cpu", other = other_metric(res, "cpu", list),
    what_atomrun = "f:lock(0, 100) + r:unlock()",
    what_raw = "fcntl F_OFD_SETLK lock + unlock", goal = 1.5,
    atomrun = res[A].median, raw = res[R].median, before = BF and res[BF].median,
    peer = have.python and res[PY_LOCKF].median or nil, peer_name = "python lockf",
    peer_missing = not have.python and "python3 not installed" or nil,
    samples = { atomrun = res[A].samples, raw = res[R].samples, peer = have.python and res[PY_LOCKF].samples or nil } }
end

-- hand-off latency -------------------------------------------------------
do
  local lockfile = DIR .. "/handoff.lock"
  local contenders = {
    { key = "atomrun", waiter = A.cmd .. " waiter " .. q(lockfile) },
    { key = "raw", waiter = R.cmd .. " waiter " .. q(lockfile) },
  }
  if BF then
    contenders[#contenders + 1] = { key = "before", waiter = BF.cmd .. " waiter " .. q(lockfile) }
  end
  if have.python then
    contenders[#contenders + 1] = { key = "python3-filelock", waiter = PY.cmd .. " waiter " .. q(lockfile) }
  end
  if have.flock then
    contenders[#contenders + 1] = { key = "flock -w", spawn = true,
      waiter = "flock -w 10 " .. q(lockfile) .. " " .. q(REF) .. " stamp" }
  end
  contenders[#contenders + 1] = { key = "atomrun lock -w", spawn = true,
    waiter = q(ATOMRUN) .. " lock -w 10 " .. q(lockfile) .. " " .. q(REF) .. " stamp" }
  local lat = {}
  for _, c in ipairs(contenders) do lat[c.key] = {} end
  say("bench: hand-off latency")
  -- One seed per round, the same for every contender: each then waits
  -- through the very same hold times.  How long a waiter slept changes
  -- how long its wake-up takes (deeper idle states, colder caches), so
  -- contenders held for different times are not compared fairly.
  for r = 1, C.handoff_rounds do
    local seed = r
    for _, c in ipairs(rotation(contenders, r)) do
      local cmd = string.format("%s handoff %s %d %d %d %d %s-- %s", q(HARNESS), q(lockfile),
        C.handoff_n, C.hold_ms[1], C.hold_ms[2], seed, c.spawn and "--spawn " or "", c.waiter)
      for line in sh(cmd):gmatch("[^\n]+") do table.insert(lat[c.key], tonumber(line)) end
    end
  end
  for _, p in ipairs { 50, 99 } do
    local function pc(key) return lat[key] and #lat[key] > 0 and percentile(lat[key], p) or nil end
    local base = { bench = "hand-off latency p" .. p, kind = "latency", metric = "wall",
      what_atomrun = "lock(path, {timeout = 10}) waiter", what_raw = "blocking flock(2) waiter",
      -- p99 is a machine's worst moments (another process on the CPU):
      -- looser, as it always was
      goal = p == 50 and 1.5 or 3, atomrun = pc("atomrun"), raw = pc("raw"), n = #lat.atomrun,
      before = pc("before") }
    row(with(base, { peer = pc("python3-filelock"), peer_name = "python3-filelock",
      peer_missing = not have.python and "python3-filelock not installed" or nil,
      samples = p == 50 and lat or nil }))
    row(with(base, { peer = pc("flock -w"), peer_name = "flock -w",
      peer_missing = not have.flock and "flock(1) not installed" or nil }))
    row { bench = "hand-off p" .. p .. ", command line", kind = "latency", metric = "wall",
      what_atomrun = "atomrun lock -w 10 F CMD (+ exec of CMD)", goal = nil,
      atomrun = pc("atomrun lock -w"), raw = nil, raw_missing = "—",
      peer = pc("flock -w"), peer_name = "flock -w",
      peer_missing = not have.flock and "flock(1) not installed" or nil }
  end
end

-- exclusive create -------------------------------------------------------
for _, durable in ipairs { false, true } do
  local sub = durable and "create-durable" or "create"
  local n = durable and C.create_durable_n or C.create_n
  local k = 0
  local metric = durable and "wall" or "cpu"
  local res = timed(durable and "exclusive create (durable)" or "exclusive create", { A, R }, function()
    k = k + 1
    return sub .. " " .. q(fresh_dir(DIR .. "/create." .. k)) .. " " .. n
  end, metric)
  row { bench = durable and "exclusive create, durable (default)" or "exclusive create, durable=false",
    kind = "time", goal = 1.5, metric = metric, other = other_metric(res, metric, { A, R }),
    what_atomrun = durable and "create(path)" or "create(path, nil, {durable = false})",
    what_raw = durable and "open O_EXCL + close + fsync(dir)" or "open O_EXCL + close",
    atomrun = res[A].median, raw = res[R].median, peer_missing = "—",
    samples = { atomrun = res[A].samples, raw = res[R].samples } }
end

-- durable replace --------------------------------------------------------
for _, size in ipairs { 4096, 1048576 } do
  local label = size == 4096 and "4 KiB" or "1 MiB"
  local path = DIR .. "/replace." .. size
  local list = { A, R }
  if have.python then list[#list + 1] = PY_REPLACE end
  local n = size == 4096 and C.replace_4k_n or C.replace_1m_n
  local res = timed("durable replace " .. label, list, function()
    return "replace " .. q(path) .. " " .. size .. " " .. n
  end, "wall")
  row { bench = "durable replace " .. label, kind = "time", goal = 1.15, metric = "wall",
    other = other_metric(res, "wall", list),
    what_atomrun = "replace(path, data)", what_raw = "temp + write + fsync + rename + fsync(dir)",
    atomrun = res[A].median, raw = res[R].median,
    peer = have.python and res[PY_REPLACE].median or nil,
    peer_name = "python os.replace",
    peer_missing = not have.python and "python3 not installed" or nil,
    samples = { atomrun = res[A].samples, raw = res[R].samples, peer = have.python and res[PY_REPLACE].samples or nil } }
end

-- counter update ---------------------------------------------------------
for _, procs in ipairs(C.counter_procs) do
  local k = math.max(1, C.counter_total // procs)
  local list = { A, R }
  if have.python then list[#list + 1] = PY end
  local tput, lost = {}, {}
  for _, c in ipairs(list) do tput[c] = {}; lost[c] = 0 end
  say("bench: counter update, %d process%s", procs, procs == 1 and "" or "es")
  for r = 1, C.counter_rounds do
    for _, c in ipairs(rotation(list, r)) do
      local dir = fresh_dir(DIR .. "/counter")
      local path = dir .. "/n"
      -- All workers start at one instant (interpreters need time to load).
      local allowance = (c == PY and 0.25 or 0.05) + procs * (c == PY and 0.04 or 0.005)
      if quick then allowance = 0.02 end
      local worker = c.cmd .. " counter " .. q(path) .. " " .. k .. " "
        .. string.format("%.6f", atomrun.now() + allowance)
      local text = sh("for i in $(seq " .. procs .. "); do " .. worker .. " & done; wait")
      local first, last, count, lines = math.huge, -math.huge, 0, 0
      for a, b, n in text:gmatch("(%S+) (%S+) (%d+)") do
        first = math.min(first, tonumber(a))
        last = math.max(last, tonumber(b))
        count = count + tonumber(n)
        lines = lines + 1
      end
      if lines ~= procs then error("counter: " .. lines .. " of " .. procs .. " workers reported:\n" .. text, 0) end
      local final = math.tointeger(tonumber(atomrun.read(path) or "0")) or -1
      lost[c] = lost[c] + (count - final)
      table.insert(tput[c], count / (last - first))
    end
  end
  local lost_text = string.format("lost %d/%d%s", lost[A], lost[R],
    have.python and "/" .. lost[PY] or "")
  row { bench = string.format("counter update, %d proc%s", procs, procs == 1 and "" or "s"),
    kind = "throughput", metric = "wall", what_atomrun = "update(path, fn)",
    what_raw = "flock(path.lock) + read + durable replace",
    atomrun = median(tput[A]), raw = median(tput[R]),
    peer = have.python and median(tput[PY]) or nil, peer_name = "python3-filelock",
    peer_missing = not have.python and "python3-filelock not installed" or nil,
    goal_text = "0 lost updates", holds = lost[A] == 0, lost_text = lost_text,
    lost = { atomrun = lost[A], raw = lost[R], peer = have.python and lost[PY] or nil },
    updates_per_run = k * procs,
    samples = { atomrun = tput[A], raw = tput[R], peer = have.python and tput[PY] or nil } }
end

-- start-up and memory ----------------------------------------------------
do
  say("bench: start-up and memory")
  local lockfile = DIR .. "/startup.lock"
  local lua = have.lua54 and "lua5.4" or nil
  local function spawn(cmds)
    local parts = { q(HARNESS), "spawn", C.spawn_n }
    for _, argv in ipairs(cmds) do
      parts[#parts + 1] = "--"
      for _, a in ipairs(argv) do parts[#parts + 1] = q(a) end
    end
    local cmd = table.concat(parts, " ")
    local res = {}
    for m, mn, cpu, rss in sh(cmd):gmatch("(%S+) (%S+) (%S+) (%S+)") do
      res[#res + 1] = { wall = tonumber(m), min = tonumber(mn), cpu = tonumber(cpu),
                        rss = tonumber(rss) * 1024 }
    end
    return res
  end
  -- One harness run per benchmark, the commands round-robin: atomrun, the
  -- reference when there is one, and the --before build when given.
  local function startup(argv_a, argv_ref, argv_before)
    local cmds, at = { argv_a }, {}
    if argv_ref then cmds[#cmds + 1] = argv_ref; at.ref = #cmds end
    if argv_before then cmds[#cmds + 1] = argv_before; at.before = #cmds end
    local res = spawn(cmds)
    return res[1], at.ref and res[at.ref], at.before and res[at.before]
  end
  local ea, er, eb = startup({ ATOMRUN, "-e", "" }, lua and { lua, "-e", "" },
    BEFORE and { BEFORE, "-e", "" })
  row { bench = "startup -e ''", kind = "time", goal = 1.3, metric = "cpu",
    what_atomrun = "atomrun -e ''", what_raw = "lua5.4 -e ''",
    atomrun = ea.cpu, raw = er and er.cpu, raw_missing = not lua and "lua5.4 not installed" or nil,
    before = eb and eb.cpu,
    peer_missing = "—", other = { metric = "wall", atomrun = ea.wall, raw = er and er.wall,
      min_atomrun = ea.min, min_raw = er and er.min } }
  local la, lr, lb = startup({ ATOMRUN, "lock", "-n", lockfile, "true" },
    have.flock and { "flock", "-n", lockfile, "true" },
    BEFORE and { BEFORE, "lock", "-n", lockfile, "true" })
  row { bench = "startup lock -n F true", kind = "time", goal = 1.0, metric = "cpu",
    what_atomrun = "atomrun lock -n F true", what_raw = "flock -n F true",
    atomrun = la.cpu, raw = lr and lr.cpu, raw_missing = not have.flock and "flock(1) not installed" or nil,
    before = lb and lb.cpu,
    peer_missing = "—", other = { metric = "wall", atomrun = la.wall, raw = lr and lr.wall,
      min_atomrun = la.min, min_raw = lr and lr.min } }
  row { bench = "memory (max RSS)", kind = "bytes", goal = 1.2,
    what_atomrun = "atomrun -e ''", what_raw = "lua5.4 -e ''",
    atomrun = ea.rss, raw = er and er.rss, raw_missing = not lua and "lua5.4 not installed" or nil,
    peer_missing = "—" }
end

local elapsed = atomrun.now() - t_start
say("bench: done\n")

-- ------------------------------------------------------------ the table

local function sig(v)
  if v >= 100 then return string.format("%.0f", v) end
  if v >= 10 then return string.format("%.1f", v) end
  return string.format("%.2f", v)
end

local function show(kind, v)
  if v == nil then return nil end
  if kind == "throughput" then return sig(v) .. " upd/s" end
  if kind == "bytes" then return sig(v / 1048576) .. " MiB" end
  if v < 1e-3 then return sig(v * 1e6) .. " µs" end
  if v < 1 then return sig(v * 1e3) .. " ms" end
  return sig(v) .. " s"
end

-- cost ratio x/y: for throughput the inverse (y's rate over x's)
local function cost_ratio(kind, x, y)
  if not x or not y or x == 0 or y == 0 then return nil end
  if kind == "throughput" then return y / x end
  return x / y
end

local header = { "benchmark", "atomrun", "raw C / limit", "peer", "atomrun/raw", "peer/atomrun", "goal", "holds?" }
local lines = {}
for _, r in ipairs(rows) do
  local ar = cost_ratio(r.kind, r.atomrun, r.raw)
  local pa = cost_ratio(r.kind, r.peer, r.atomrun)
  local holds, goal_text
  if r.goal_text then
    goal_text, holds = r.goal_text, r.holds
  elseif r.goal then
    goal_text = string.format("≤ %g× raw", r.goal)
    if ar then holds = ar <= r.goal end
  else
    goal_text = "report"
  end
  r.ratio_atomrun_raw, r.ratio_peer_atomrun, r.goal_text_out, r.holds_out = ar, pa, goal_text, holds
  local peer_cell
  if r.peer then peer_cell = show(r.kind, r.peer) .. " (" .. r.peer_name .. ")"
  elseif r.peer_missing == "—" or not r.peer_name then peer_cell = "—"
  else peer_cell = "n/a (" .. (r.peer_name or "") .. ": " .. (r.peer_missing or "did not run") .. ")" end
  lines[#lines + 1] = {
    r.bench .. (r.metric and " [" .. r.metric .. "]" or ""),
    show(r.kind, r.atomrun) or "n/a",
    show(r.kind, r.raw) or (r.raw_missing == "—" and "—" or "n/a (" .. tostring(r.raw_missing) .. ")"),
    peer_cell,
    ar and string.format("%.2f", ar) or "—",
    pa and string.format("%.2f", pa) or "—",
    goal_text .. (r.lost_text and " (" .. r.lost_text .. ")" or ""),
    holds == nil and "—" or (holds and "yes" or "NO"),
  }
end

local function ulen(s) return utf8.len(s) or #s end
local widths = {}
for i, h in ipairs(header) do widths[i] = ulen(h) end
for _, l in ipairs(lines) do
  for i, cell in ipairs(l) do widths[i] = math.max(widths[i], ulen(cell)) end
end
local function fmt_line(cells)
  local parts = {}
  for i, cell in ipairs(cells) do parts[i] = cell .. string.rep(" ", widths[i] - ulen(cell)) end
  return "| " .. table.concat(parts, " | ") .. " |"
end
local rule = {}
for i, w in ipairs(widths) do rule[i] = string.rep("-", w) end

print()
print(string.format("atomrun %s benchmarks%s: %d cores, Linux %s, Debian %s, %s; %s",
  atomrun.version, quick and " (QUICK smoke run: the numbers mean nothing)" or "",
  machine.cores, machine.kernel, machine.debian, machine.fstype, machine.date))
print(string.format("medians of %d rounds (counter: %d; hand-off: %d samples each, hold %d-%d ms; "
  .. "start-up: %d runs each), contenders alternated in every round", C.rounds, C.counter_rounds,
  C.handoff_rounds * C.handoff_n, C.hold_ms[1], C.hold_ms[2], C.spawn_n))
print("[cpu]: user+system CPU time per operation (a busy machine does not inflate it); "
  .. "[wall]: wall-clock (waits on the disk or another process)")
print("ratios compare costs: atomrun/raw > 1 means atomrun is slower than the raw syscalls, "
  .. "peer/atomrun > 1 means the peer is slower than atomrun")
print()
print(fmt_line(header))
print("|-" .. table.concat(rule, "-|-") .. "-|")
for _, l in ipairs(lines) do print(fmt_line(l)) end
print()
local missed = {}
for _, r in ipairs(rows) do
  if r.holds_out == false then missed[#missed + 1] = r.bench end
end
print(string.format("goals%s: %s; %.1f s in all", quick and " (smoke run, not meaningful)" or "",
  #missed == 0 and "all hold" or ("missed: " .. table.concat(missed, ", ")), elapsed))

-- --before: both builds, side by side, each as a ratio to raw of this run.
if BEFORE then
  local bh = { "benchmark", "before", "after", "before/raw", "after/raw", "after/before" }
  local bl, seen = {}, {}
  for _, r in ipairs(rows) do
    if r.before and r.atomrun and not seen[r.bench] then   -- one line per benchmark
      seen[r.bench] = true
      local rb, ra = cost_ratio(r.kind, r.before, r.raw), cost_ratio(r.kind, r.atomrun, r.raw)
      r.ratio_before_raw = rb
      bl[#bl + 1] = { r.bench .. (r.metric and " [" .. r.metric .. "]" or ""),
        show(r.kind, r.before), show(r.kind, r.atomrun),
        rb and string.format("%.2f", rb) or "—", ra and string.format("%.2f", ra) or "—",
        string.format("%.2f", cost_ratio(r.kind, r.atomrun, r.before)) }
    end
  end
  widths = {}
  for i, h in ipairs(bh) do widths[i] = ulen(h) end
  for _, l in ipairs(bl) do
    for i, cell in ipairs(l) do widths[i] = math.max(widths[i], ulen(cell)) end
  end
  rule = {}
  for i, w in ipairs(widths) do rule[i] = string.rep("-", w) end
  print()
  print("before (" .. BEFORE .. ") and after (" .. ATOMRUN .. "), same run:")
  print()
  print(fmt_line(bh))
  print("|-" .. table.concat(rule, "-|-") .. "-|")
  for _, l in ipairs(bl) do print(fmt_line(l)) end
end

-- ------------------------------------------------------------ JSON

local out_rows = {}
for _, r in ipairs(rows) do
  out_rows[#out_rows + 1] = {
    benchmark = r.bench, kind = r.kind, unit = r.kind == "throughput" and "updates/s"
      or r.kind == "bytes" and "bytes" or "seconds",
    metric = r.metric, atomrun = r.atomrun, raw = r.raw, peer = r.peer,
    peer_name = r.peer and r.peer_name or nil, other_metric = r.other,
    peer_missing = not r.peer and r.peer_missing ~= "—" and r.peer_missing
      and (r.peer_name or "peer") .. ": " .. r.peer_missing or nil,
    atomrun_does = r.what_atomrun, raw_does = r.what_raw,
    ratio_atomrun_raw = r.ratio_atomrun_raw, ratio_peer_atomrun = r.ratio_peer_atomrun,
    goal = r.goal_text_out, holds = r.holds_out, lost = r.lost, samples = r.samples,
    before = r.before, ratio_before_raw = r.ratio_before_raw,
    n_samples = r.n,
  }
end
local f = assert(io.open(out_path, "w"))
f:write(json.encode { machine = machine, counts = C, elapsed = elapsed, rows = out_rows,
  before = BEFORE }, "\n")
f:close()
print("results: " .. out_path)
