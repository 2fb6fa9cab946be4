-- atomrun.retry: backoff, attempts, deadlines, jitter.
local H = require "spec.helper"
local ar = H.ar
local gone = H.gone
local bg, ready_pid, hold, free = H.bg_lua, H.ready_pid, H.hold, H.free
local cleanup = H.cleanup_procs

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

  it("takes counts as integers only: attempts = 1.5 is an error, naming the option", function()
    local f = function() return 1 end
    for _, bad in ipairs({ 1.5, 2.000001, 1e300, -math.huge, 0 / 0 }) do
      local ok, err = pcall(ar.retry, f, { attempts = bad })
      assert.is_false(ok, tostring(bad))
      assert.matches("bad argument #2 to 'retry' %(option 'attempts' must be an integer >= 1", err)
    end
    -- an integral float counts as the integer, as in luaL_checkinteger;
    -- math.huge means no limit
    assert.equal(1, ar.retry(f, { attempts = 3.0 }))
    assert.equal(1, ar.retry(f, { attempts = math.huge }))
    local calls = 0
    ar.retry(function() calls = calls + 1 end, { attempts = 2.0, base = 0 })
    assert.equal(2, calls)
  end)
end)
