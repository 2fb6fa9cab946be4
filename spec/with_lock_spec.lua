-- atomrun.with_lock: fn's results, the lock released however fn ends.
local H = require "spec.helper"
local ar = H.ar
local gone = H.gone
local bg, ready_pid, hold, free = H.bg_lua, H.ready_pid, H.hold, H.free
local cleanup = H.cleanup_procs

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
    assert.matches("with_lock_spec%.lua:%d+: with position$", err)

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
