-- The recipes: with_lock, retry, lock_all, once -- success and failure
-- paths, with real processes where two of them must meet.
local H = require "spec.helper"
local ar = H.ar
local gone = H.gone

local started = {}        -- pids to kill after each test

-- Run a Lua snippet in the background in the atomrun binary.
local function bg(code, ...)
  local parts = { H.q(H.atomrun), "-e", H.q(code) }
  for _, a in ipairs({ ... }) do parts[#parts + 1] = H.q(tostring(a)) end
  local pid = H.spawn(table.concat(parts, " "))
  started[#started + 1] = pid
  return pid
end

-- Wait for a child's "ready" file, which holds its pid.
local function ready_pid(path)
  assert(H.wait_file(path, 15), "child never got ready: " .. path)
  local pid
  H.wait_until(function()
    pid = math.tointeger(tonumber(H.slurp(path)))
    return pid ~= nil
  end, 5)
  started[#started + 1] = pid
  return pid
end

-- Hold a whole-file lock in another process until `stop` exists (or for
-- `stop` seconds when it is a number).  Returns the holder's pid.
local HOLD = [[
  local path, ready, stop, mode = ...
  local lk = assert(atomrun.lock(path, { mode = mode }))
  assert(atomrun.replace(ready, tostring(atomrun.pid())))
  if tonumber(stop) then atomrun.sleep(tonumber(stop)) return end
  while not atomrun.stat(stop) do atomrun.sleep(0.01) end
]]
local function hold(dir, path, stop, tag)
  local ready = dir .. "/ready." .. (tag or "h")
  bg(HOLD, path, ready, stop or (dir .. "/stop"), "exclusive")
  return ready_pid(ready)
end

local function free(path)                -- can somebody lock it right now?
  local lk = ar.lock(path, { wait = false })
  if lk then lk:unlock() return true end
  return false
end

local function cleanup()
  for _, pid in ipairs(started) do H.kill(pid, "KILL") end
  started = {}
  H.cleanup()
end

describe("atomrun.with_lock", function()
  local dir, path
  before_each(function() dir = H.tmpdir() path = dir .. "/l" end)
  after_each(cleanup)

  it("returns fn's results, all of them, and passes the extra arguments", function()
    local r = table.pack(ar.with_lock(path, nil, function(a, b)
      return a + b, nil, "three"
    end, 1, 2))
    assert.equal(3, r.n)
    assert.same({ 3, nil, "three" }, { r[1], r[2], r[3] })
    assert.equal(0, ar.held())
  end)

  it("holds the lock while fn runs and releases it on return", function()
    local inside
    ar.with_lock(path, { timeout = 5 }, function()
      inside = free(path)
      -- another process sees it held, too
      inside = inside or H.run("lock", "-n", path, "true") ~= 1
    end)
    assert.is_false(inside)
    assert.equal(0, ar.held())
    assert.is_true(free(path))
  end)

  it("releases the lock when fn errors; the error keeps its message and object", function()
    local ok, err = pcall(ar.with_lock, path, {}, function() error("boom", 0) end)
    assert.is_false(ok)
    assert.equal("boom", err)
    assert.equal(0, ar.held())
    assert.is_true(free(path))

    ok, err = pcall(ar.with_lock, path, {}, function() error("with position") end)
    assert.matches("recipes_spec%.lua:%d+: with position$", err)

    local obj = { code = 42 }
    ok, err = pcall(ar.with_lock, path, {}, function() error(obj) end)
    assert.equal(obj, err)
    assert.is_true(free(path))
  end)

  it("releases the lock when fn errors deep inside a nested call", function()
    local function deep(n) if n == 0 then error("deep", 0) end return deep(n - 1) end
    assert.has_error(function() ar.with_lock(path, nil, deep, 10) end, "deep")
    assert.equal(0, ar.held())
  end)

  it("on a lock failure returns nil, msg, code, holder and never calls fn", function()
    local pid = hold(dir, path)
    local called = false
    local r, msg, code, holder = ar.with_lock(path, { wait = false }, function() called = true end)
    assert.is_nil(r)
    assert.is_false(called)
    assert.equal("busy", code)
    assert.equal(pid, holder.pid)
    assert.truthy(msg:find(path, 1, true))
    assert.truthy(msg:find("pid " .. pid, 1, true))

    local t0 = ar.now()
    r, msg, code, holder = ar.with_lock(path, { timeout = 0.2 }, function() called = true end)
    assert.is_nil(r)
    assert.is_false(called)
    assert.equal("timeout", code)
    assert.is_true(ar.now() - t0 >= 0.2)
    assert.equal(pid, holder.pid)
    assert.equal(0, ar.held())
  end)

  it("passes lock options through (shared locks coexist)", function()
    local n = ar.with_lock(path, { mode = "shared" }, function()
      return ar.with_lock(path, { mode = "shared", wait = false }, function() return ar.held() end)
    end)
    assert.equal(2, n)
  end)

  it("raises a Lua error for programming mistakes", function()
    assert.has_error(function() ar.with_lock(42, nil, print) end)
    assert.has_error(function() ar.with_lock(path, nil, "not a function") end)
    assert.has_error(function() ar.with_lock(path, { timout = 5 }, print) end)
    assert.has_error(function() ar.with_lock(path, "exclusive", print) end)
    assert.equal(0, ar.held())
  end)
end)

describe("atomrun.retry", function()
  -- A virtual clock: retry reads atomrun.now and atomrun.sleep through the
  -- module table, so the backoff can be checked exactly and instantly.
  local function fake_clock(fn)
    local real_now, real_sleep = ar.now, ar.sleep
    local clock = { t = 1000.0, sleeps = {} }
    ar.now = function() return clock.t end
    ar.sleep = function(s)
      clock.sleeps[#clock.sleeps + 1] = s
      clock.t = clock.t + s
    end
    local ok, err = pcall(fn, clock)
    ar.now, ar.sleep = real_now, real_sleep
    if not ok then error(err, 0) end
  end

  local function near(a, b) return math.abs(a - b) < 1e-9 end

  it("returns fn's first non-nil results and passes the attempt number", function()
    local seen = {}
    local r = table.pack(ar.retry(function(n)
      seen[#seen + 1] = n
      if n < 3 then return nil, "not yet " .. n end
      return "ok", false, nil
    end, { base = 0.001 }))
    assert.same({ 1, 2, 3 }, seen)
    assert.equal(3, r.n)
    assert.equal("ok", r[1])
    assert.equal(false, r[2])
  end)

  it("takes false as a result (only nil is retried)", function()
    local calls = 0
    assert.equal(false, ar.retry(function() calls = calls + 1 return false end))
    assert.equal(1, calls)
  end)

  it("gives up after opts.attempts: nil, last message, 'timeout', last code", function()
    local calls = 0
    local r, msg, code, last = ar.retry(function(n)
      calls = calls + 1
      return nil, "failure " .. n, "EAGAIN"
    end, { attempts = 4, base = 0 })
    assert.is_nil(r)
    assert.equal(4, calls)
    assert.equal("timeout", code)
    assert.equal("EAGAIN", last)
    assert.matches("failure 4$", msg)
    assert.matches("4 attempts", msg)
  end)

  it("defaults to 5 attempts without a timeout, and names a bare nil", function()
    fake_clock(function()
      local calls = 0
      local r, msg = ar.retry(function() calls = calls + 1 end)
      assert.is_nil(r)
      assert.equal(5, calls)
      assert.matches("returned nil", msg)
    end)
  end)

  it("honours the timeout deadline for real: not before it, not long after", function()
    local t0 = ar.now()
    local calls = 0
    local r, msg, code = ar.retry(function()
      calls = calls + 1
      return nil, "still down"
    end, { timeout = 0.3, base = 0.01, max = 0.05 })
    local dt = ar.now() - t0
    assert.is_nil(r)
    assert.equal("timeout", code)
    assert.matches("still down", msg)
    assert.is_true(calls > 1)
    assert.is_true(dt >= 0.3, "returned before the deadline: " .. dt)
    assert.is_true(dt < 0.8, "overshot the deadline: " .. dt)
  end)

  it("never sleeps past the deadline, however long the backoff", function()
    local t0 = ar.now()
    local calls = 0
    ar.retry(function() calls = calls + 1 end, { timeout = 0.3, base = 30, jitter = "none" })
    local dt = ar.now() - t0
    assert.is_true(calls <= 2, calls)  -- one now, one at the deadline
    assert.is_true(dt >= 0.3 and dt < 0.8, dt)
  end)

  it("stops at whichever comes first, attempts or timeout", function()
    fake_clock(function(clock)
      local calls = 0
      ar.retry(function() calls = calls + 1 end, { attempts = 3, timeout = 100, base = 1, jitter = "none" })
      assert.equal(3, calls)
      assert.is_true(clock.t - 1000 < 100)
    end)
  end)

  it("backs off base * factor^(n-1), capped at max (jitter none)", function()
    fake_clock(function(clock)
      ar.retry(function() end, { attempts = 6, base = 0.1, factor = 3, max = 2, jitter = "none" })
      local want = { 0.1, 0.3, 0.9, 2, 2 }
      assert.equal(#want, #clock.sleeps)
      for i, w in ipairs(want) do assert.is_true(near(w, clock.sleeps[i]), i) end
    end)
  end)

  it("uses base 0.05, factor 2 and max 5 by default", function()
    fake_clock(function(clock)
      ar.retry(function() end, { attempts = 10, jitter = "none" })
      local want = { 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5, 5 }
      for i, w in ipairs(want) do assert.is_true(near(w, clock.sleeps[i]), i) end
    end)
  end)

  it("full jitter (the default) sleeps between 0 and the delay, and varies", function()
    fake_clock(function(clock)
      ar.retry(function() end, { attempts = 40, base = 1, factor = 1 })
      local distinct = {}
      for _, s in ipairs(clock.sleeps) do
        assert.is_true(s >= 0 and s <= 1, s)
        distinct[s] = true
      end
      assert.is_true(next(distinct, next(distinct)) ~= nil, "all sleeps equal")
    end)
  end)

  it("equal jitter sleeps between half the delay and the delay", function()
    fake_clock(function(clock)
      ar.retry(function() end, { attempts = 40, base = 1, factor = 2, max = 4, jitter = "equal" })
      for i, s in ipairs(clock.sleeps) do
        local d = math.min(4, 2 ^ (i - 1))
        assert.is_true(s >= d / 2 and s <= d, i .. ": " .. s)
      end
    end)
  end)

  it("cuts the last sleep to the deadline and makes a last attempt there", function()
    fake_clock(function(clock)
      local at = {}
      ar.retry(function() at[#at + 1] = clock.t - 1000 end,
        { timeout = 1, base = 0.3, factor = 2, jitter = "none" })
      -- attempts at 0, 0.3, 0.9, then the 1.2 s delay is cut to 0.1
      assert.equal(4, #at)
      assert.is_true(near(at[4], 1.0))
      assert.is_true(near(clock.sleeps[3], 0.1))
      assert.is_true(clock.t - 1000 <= 1.0 + 1e-9)
    end)
  end)

  it("counts slow attempts against the deadline", function()
    fake_clock(function(clock)
      local calls = 0
      ar.retry(function() calls = calls + 1; clock.t = clock.t + 0.4 end,
        { timeout = 1, base = 0.01, jitter = "none" })
      assert.equal(3, calls)           -- at 0, 0.41, 0.82: then 1.22 > deadline
    end)
  end)

  it("asks retry_on(msg, code) whether to go on; a refusal returns at once", function()
    local asked = {}
    local calls = 0
    local r, msg, code = ar.retry(function()
      calls = calls + 1
      if calls == 1 then return nil, "flaky", "EAGAIN" end
      return nil, "no such thing", "ENOENT"
    end, { base = 0, attempts = 10, retry_on = function(m, c)
      asked[#asked + 1] = m .. "/" .. c
      return c == "EAGAIN"
    end })
    assert.is_nil(r)
    assert.equal(2, calls)
    assert.same({ "flaky/EAGAIN", "no such thing/ENOENT" }, asked)
    assert.equal("no such thing", msg)
    assert.equal("ENOENT", code)
  end)

  it("lets an error in fn propagate, without retrying", function()
    local calls = 0
    assert.has_error(function()
      ar.retry(function() calls = calls + 1 error("bug", 0) end, { attempts = 3 })
    end, "bug")
    assert.equal(1, calls)
  end)

  it("raises a Lua error for bad arguments and options", function()
    local f = function() return 1 end
    for _, opts in ipairs({
      "fast", { attemps = 3 }, { attempts = 0 }, { attempts = "3" }, { timeout = -1 },
      { timeout = 0 / 0 }, { base = -0.1 }, { factor = 0.5 }, { max = -1 },
      { jitter = "half" }, { jitter = true }, { retry_on = "EAGAIN" },
    }) do
      assert.has_error(function() ar.retry(f, opts) end)
    end
    assert.has_error(function() ar.retry("f") end)
    assert.has_error(function() ar.retry(nil, {}) end)
  end)
end)

describe("atomrun.lock_all", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(cleanup)

  local function ident(p)
    local st = assert(ar.stat(p))
    return st.dev, st.ino
  end

  it("takes every lock, in (device, inode) order, and releases them all", function()
    local paths = { dir .. "/c", dir .. "/a", dir .. "/sub/b" }
    local g = assert(ar.lock_all(paths, { timeout = 5 }))
    assert.equal(3, #g.locks)
    assert.equal(3, ar.held())
    for i = 2, #g.paths do
      local d1, i1 = ident(g.paths[i - 1])
      local d2, i2 = ident(g.paths[i])
      assert.is_true(d1 < d2 or (d1 == d2 and i1 < i2))
    end
    for _, p in ipairs(paths) do assert.is_false(free(p)) end
    assert.equal(1, H.run("lock", "-n", paths[1], "true"))
    g:unlock()
    g:unlock()                         -- idempotent
    assert.equal(0, ar.held())
    for _, p in ipairs(paths) do assert.is_true(free(p)) end
  end)

  it("gives the same order whatever order the paths come in", function()
    local a, b, c = dir .. "/a", dir .. "/b", dir .. "/c"
    local g1 = assert(ar.lock_all({ a, b, c }))
    local order = g1.paths
    g1:unlock()
    local g2 = assert(ar.lock_all({ c, a, b }))
    assert.same(order, g2.paths)
    g2:unlock()
  end)

  it("is released by <close>", function()
    local a = dir .. "/a"
    do
      local g <close> = assert(ar.lock_all({ a }))
      assert.is_false(free(a))
    end
    assert.is_true(free(a))
  end)

  it("never deadlocks two processes locking the same set in opposite orders", function()
    local LOOP = [[
      local first, second, n, go, done = ...
      while not atomrun.stat(go) do atomrun.sleep(0.002) end
      for _ = 1, tonumber(n) do
        local g = assert(atomrun.lock_all({ first, second }))
        g:unlock()
      end
      assert(atomrun.replace(done, "ok"))
    ]]
    local a, b, go = dir .. "/a", dir .. "/b", dir .. "/go"
    local n = H.heavy and 3000 or 500
    bg(LOOP, a, b, n, go, dir .. "/done1")
    bg(LOOP, b, a, n, go, dir .. "/done2")
    H.write(go, "")
    assert.is_true(H.wait_file(dir .. "/done1", 30), "process 1 is stuck")
    assert.is_true(H.wait_file(dir .. "/done2", 30), "process 2 is stuck")
  end)

  it("is all or none: one busy lock and none is held", function()
    local a, b, c = dir .. "/a", dir .. "/b", dir .. "/c"
    local pid = hold(dir, b)
    local g, msg, code, holder = ar.lock_all({ a, b, c }, { wait = false })
    assert.is_nil(g)
    assert.equal("busy", code)
    assert.equal(pid, holder.pid)
    assert.truthy(msg:find(b, 1, true))
    assert.equal(0, ar.held())
    assert.is_true(free(a))
    assert.is_true(free(c))
  end)

  it("shares one deadline among all the locks", function()
    -- canonical order first, so we know which lock is taken first
    local g0 = assert(ar.lock_all({ dir .. "/x", dir .. "/y" }))
    local first, second = g0.paths[1], g0.paths[2]
    g0:unlock()
    -- the first lock frees after 0.8 s, the second never: with one
    -- deadline of 1.5 s the whole call gives up after 1.5 s; a timeout
    -- per lock would take 0.8 + 1.5 s
    local p1 = hold(dir, first, 0.8, "1")
    hold(dir, second, nil, "2")
    local t0 = ar.now()
    local g, _, code, holder = ar.lock_all({ second, first }, { timeout = 1.5 })
    local dt = ar.now() - t0
    assert.is_nil(g)
    assert.equal("timeout", code)
    assert.not_equal(p1, holder.pid)
    assert.is_true(dt >= 1.5 - 1e-3, dt)
    assert.is_true(dt < 2.3, "the deadline was not shared: " .. dt)
    assert.equal(0, ar.held())
  end)

  it("waits for busy locks within the deadline", function()
    local a, b = dir .. "/a", dir .. "/b"
    hold(dir, b, 0.3)
    local g = assert(ar.lock_all({ a, b }, { timeout = 10 }))
    assert.equal(2, #g.locks)
    g:unlock()
  end)

  it("takes a file named twice (or through a hard link) once", function()
    local a, b = dir .. "/a", dir .. "/b"
    H.write(a, "")
    assert(os.execute("ln " .. H.q(a) .. " " .. H.q(dir .. "/a2")))
    local g = assert(ar.lock_all({ a, b, a, dir .. "/a2" }, { timeout = 1 }))
    assert.equal(2, #g.locks)
    g:unlock()
    assert.equal(0, ar.held())
  end)

  it("says 'deadlock' at once if the script already holds one of them", function()
    local a, b = dir .. "/a", dir .. "/b"
    local lk = assert(ar.lock(b))
    local g, msg, code = ar.lock_all({ a, b })
    assert.is_nil(g)
    assert.equal("deadlock", code)
    assert.truthy(msg:find(b, 1, true))
    assert.equal(1, ar.held())
    lk:unlock()
  end)

  it("returns the errno code when a path cannot be opened, holding nothing", function()
    H.write(dir .. "/file", "")
    local g, msg, code = ar.lock_all({ dir .. "/a", dir .. "/file/x" })
    assert.is_nil(g)
    assert.equal("ENOTDIR", code)
    assert.truthy(msg:find("file/x", 1, true))
    assert.equal(0, ar.held())
  end)

  it("raises a Lua error for programming mistakes", function()
    assert.has_error(function() ar.lock_all(dir .. "/a") end)
    assert.has_error(function() ar.lock_all({ dir .. "/a", 42 }) end)
    assert.has_error(function() ar.lock_all({ dir .. "/a" }, { timout = 1 }) end)
    assert.has_error(function() ar.lock_all({ dir .. "/a" }, { mode = "both" }) end)
    assert.equal(0, ar.held())
  end)
end)

describe("atomrun.once", function()
  local dir
  before_each(function() dir = H.tmpdir() .. "/once" end)
  after_each(cleanup)

  local SINCE = "%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ"

  it("returns a guard and writes the record of who runs", function()
    local g = assert(ar.once("nightly", { dir = dir }))
    assert.equal("nightly", g.name)
    assert.is_true(H.exists(dir .. "/nightly.lock"))
    local rec = ar.json.decode(H.slurp(dir .. "/nightly.json"))
    assert.equal(ar.pid(), math.tointeger(rec.pid))
    assert.matches("^" .. SINCE .. "$", rec.since)
    assert.equal(H.slurp("/proc/sys/kernel/hostname"):gsub("\n$", ""), rec.host)
    assert.equal("table", type(rec.argv))
    g:release()
    g:release()                        -- idempotent
    assert.equal(0, ar.held())
    -- the lock file stays (deleting it would break the exclusion)
    assert.is_true(H.exists(dir .. "/nightly.lock"))
  end)

  it("refuses a second instance with 'running', the record and a message naming it", function()
    local g = assert(ar.once("job", { dir = dir, argv = { "backup.sh", "--full" } }))
    local r, msg, code, rec = ar.once("job", { dir = dir })
    assert.is_nil(r)
    assert.equal("running", code)
    assert.equal(ar.pid(), rec.pid)
    assert.equal(g.record.since, rec.since)
    assert.same({ "backup.sh", "--full" }, rec.argv)
    assert.equal(string.format("job is already running: pid %d since %s (backup.sh --full)",
      ar.pid(), rec.since), msg)
    g:release()
    assert(ar.once("job", { dir = dir })):release()
  end)

  it("lets exactly one of two instances started at the same moment run", function()
    local RACE = [[
      local name, dir, go, out, stop = ...
      while not atomrun.stat(go) do atomrun.sleep(0.001) end
      local g, msg, code, rec = atomrun.once(name, { dir = dir })
      local res = { won = g ~= nil, pid = atomrun.pid(), msg = msg, code = code, rec = rec }
      assert(atomrun.replace(out, atomrun.json.encode(res)))
      if g then
        while not atomrun.stat(stop) do atomrun.sleep(0.01) end
        g:release()
      end
    ]]
    local rounds = H.heavy and 10 or 3
    for round = 1, rounds do
      local base = dir .. "-r" .. round
      assert(ar.mkdir(base))
      local go, stop = base .. "/go", base .. "/stop"
      bg(RACE, "race", dir, go, base .. "/out1", stop)
      bg(RACE, "race", dir, go, base .. "/out2", stop)
      H.write(go, "")
      assert.is_true(H.wait_file(base .. "/out1", 15) and H.wait_file(base .. "/out2", 15))
      local r1 = ar.json.decode(H.slurp(base .. "/out1"))
      local r2 = ar.json.decode(H.slurp(base .. "/out2"))
      assert.is_true(r1.won ~= r2.won, "round " .. round .. ": both or neither ran")
      local winner, loser = r1.won and r1 or r2, r1.won and r2 or r1
      assert.equal("running", loser.code)
      assert.equal(winner.pid, loser.rec.pid)
      assert.matches("^" .. SINCE .. "$", loser.rec.since)
      assert.equal("string", type(loser.rec.host))
      assert.equal("table", type(loser.rec.argv))
      assert.matches("^race is already running: pid " .. math.tointeger(winner.pid)
        .. " since " .. SINCE .. " %(.+%)$", loser.msg)
      H.write(stop, "")
      assert.is_true(H.wait_until(function() return gone(math.tointeger(winner.pid)) end, 10))
    end
  end)

  it("runs the next instance at once after the holder was SIGKILLed", function()
    local HOLDER = [[
      local dir, ready = ...
      local g = assert(atomrun.once("victim", { dir = dir }))
      assert(atomrun.replace(ready, tostring(atomrun.pid())))
      atomrun.sleep(60)
    ]]
    bg(HOLDER, dir, dir .. ".ready")
    local pid = ready_pid(dir .. ".ready")
    local r, _, code, rec = ar.once("victim", { dir = dir })
    assert.is_nil(r)
    assert.equal("running", code)
    assert.equal(pid, rec.pid)
    H.kill(pid, "KILL")
    assert.is_true(H.wait_until(function() return gone(pid) end, 10))
    -- no waiting, no stale-pid guessing: the kernel freed the lock
    local g = assert(ar.once("victim", { dir = dir }))
    local new = ar.json.decode(H.slurp(dir .. "/victim.json"))
    assert.equal(ar.pid(), math.tointeger(new.pid))     -- the stale record is overwritten
    g:release()
  end)

  it("queues with opts.timeout and opts.wait instead of refusing", function()
    local HOLDER = [[
      local dir, ready, secs = ...
      local g = assert(atomrun.once("queue", { dir = dir }))
      assert(atomrun.replace(ready, tostring(atomrun.pid())))
      atomrun.sleep(tonumber(secs))
    ]]
    bg(HOLDER, dir, dir .. ".r1", 30)
    local pid = ready_pid(dir .. ".r1")
    local t0 = ar.now()
    local r, msg, code, rec = ar.once("queue", { dir = dir, timeout = 0.3 })
    assert.is_nil(r)
    assert.is_true(ar.now() - t0 >= 0.3)
    assert.equal("running", code)
    assert.equal(pid, rec.pid)
    assert.matches("gave up waiting", msg)
    H.kill(pid, "KILL")

    bg(HOLDER, dir, dir .. ".r2", 0.3)
    ready_pid(dir .. ".r2")
    assert(ar.once("queue", { dir = dir, wait = true })):release()

    bg(HOLDER, dir, dir .. ".r3", 0.3)
    ready_pid(dir .. ".r3")
    assert(ar.once("queue", { dir = dir, timeout = 20 })):release()
  end)

  it("keeps instances of different names and different dirs apart", function()
    local a = assert(ar.once("a", { dir = dir }))
    local b = assert(ar.once("b", { dir = dir }))
    local c = assert(ar.once("a", { dir = dir .. "2" }))
    a:release() b:release() c:release()
  end)

  it("creates opts.dir with its parents, private unless root", function()
    local d = dir .. "/deep/er"
    assert(ar.once("x", { dir = d })):release()
    local st = assert(ar.stat(d))
    assert.equal("directory", st.type)
    assert.equal(0, st.mode & tonumber("022", 8))
  end)

  it("is released by <close>", function()
    do
      local g <close> = assert(ar.once("scoped", { dir = dir }))
    end
    assert(ar.once("scoped", { dir = dir })):release()
  end)

  it("refuses a directory that belongs to another user", function()
    if ar.uid() ~= 0 then
      pending("needs root to chown the directory")
      return
    end
    assert(ar.mkdir(dir))
    assert.equal(0, (H.sh("chown 65534 " .. H.q(dir))))
    local r, msg, code = ar.once("x", { dir = dir })
    assert.is_nil(r)
    assert.equal("EPERM", code)
    assert.matches("belongs to uid 65534", msg)
    assert.is_false(H.exists(dir .. "/x.lock"))
  end)

  it("refuses a directory that is a symlink or not a directory", function()
    local real = H.tmpdir()
    assert(os.execute("ln -s " .. H.q(real) .. " " .. H.q(dir)))
    local r, _, code = ar.once("x", { dir = dir })
    assert.is_nil(r)
    assert.equal("ENOTDIR", code)
    local file = H.tmpdir() .. "/f"
    H.write(file, "")
    r, _, code = ar.once("x", { dir = file })
    assert.is_nil(r)
    assert.equal("ENOTDIR", code)
  end)

  it("uses $XDG_RUNTIME_DIR/atomrun for other users", function()
    local xdg = H.tmpdir()
    if ar.uid() ~= 0 or H.sh("command -v setpriv") ~= 0
        or H.sh("setpriv --reuid=65534 --regid=65534 --clear-groups test -x " .. H.q(H.atomrun)) ~= 0 then
      pending("needs root, setpriv and a binary user 65534 can run")
      return
    end
    os.execute("chown 65534 " .. H.q(xdg))
    local st, out, err = H.sh("XDG_RUNTIME_DIR=" .. H.q(xdg) .. " setpriv --reuid=65534 --regid=65534 "
      .. "--clear-groups " .. H.q(H.atomrun) .. " -e 'local g = assert(atomrun.once(\"mine\")) "
      .. "print(g.path)'")
    assert.equal(0, st, err)
    assert.equal(xdg .. "/atomrun/mine.lock\n", out)
    local d = assert(ar.stat(xdg .. "/atomrun"))
    assert.equal(65534, d.uid)
    assert.equal(tonumber("700", 8), d.mode & tonumber("777", 8))
  end)

  it("raises a Lua error for bad names and options", function()
    for _, name in ipairs({ "", "a/b", "../x", ".hidden", "-x", "a b", "x\0y" }) do
      assert.has_error(function() ar.once(name, { dir = dir }) end, nil, name)
    end
    assert.has_error(function() ar.once(42) end)
    assert.has_error(function() ar.once("ok", { dri = dir }) end)
    assert.has_error(function() ar.once("ok", { dir = 42 }) end)
    assert.has_error(function() ar.once("ok", "dir") end)
    assert.equal(0, ar.held())
  end)
end)
