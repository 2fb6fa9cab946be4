-- atomrun.held() and the one "deadlock" check over files and etcd names
-- (src/core/held.c: one held set per Lua state), against the spec's
-- 3-member cluster.
local H = require "spec.helper"
local E = require "spec.etcd"
local ar = H.ar

describe("the held set with etcd names", function()
  local C = E.cluster()
  if not C then return end
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(E.teardown(C))

  it("held() counts a held etcd lock, and not after unlock", function()
    local held = ar.held()
    local lk = assert(ar.lock(C:url("held/one")))
    assert.equal(held + 1, ar.held())
    assert.is_true(lk:unlock())
    assert.equal(held, ar.held())
    do
      local _ <close> = assert(ar.lock(C:url("held/one")))
      assert.equal(held + 1, ar.held())
    end
    assert.equal(held, ar.held())
  end)

  it("a second lock of one name is deadlock, also with the endpoints in another order", function()
    local lk = assert(ar.lock(C:url("held/dead")))
    local other = C:url("held/dead", { members = { 3, 1, 2 } })
    assert.are_not.equal(C:url("held/dead"), other)
    local l2, msg, code = ar.lock(other, { timeout = 1 })
    assert.is_nil(l2)
    assert.equal("deadlock", code)
    assert.matches("already locked by this script", msg)
    -- one member only: the same cluster still (its id says so)
    l2, _, code = ar.lock(C:url("held/dead", { members = { 2 } }), { timeout = 1 })
    assert.is_nil(l2)
    assert.equal("deadlock", code)
    -- another name on the same cluster is no conflict
    assert.is_truthy(ar.lock(C:url("held/alive"), { timeout = 1 })):unlock()
    assert.is_true(lk:unlock())
    assert.is_truthy(ar.lock(other, { timeout = 1 })):unlock()
  end)

  it("shared locks of one name share; an exclusive one among them is deadlock", function()
    local url = C:url("held/rw")
    local a = assert(ar.lock(url, { mode = "shared" }))
    local b = assert(ar.lock(C:url("held/rw", { members = { 2, 3, 1 } }),
                             { mode = "shared", timeout = 1 }))
    local x, _, code = ar.lock(url, { timeout = 1 })
    assert.is_nil(x)
    assert.equal("deadlock", code)
    a:unlock()
    b:unlock()
    local e = assert(ar.lock(url, { timeout = 1 }))
    x, _, code = ar.lock(url, { mode = "shared", timeout = 1 })
    assert.is_nil(x)
    assert.equal("deadlock", code)
    e:unlock()
  end)

  it("a semaphore's slots: deadlock only once this state holds all of them", function()
    local url = C:url("held/sem")
    local held = ar.held()
    local s1 = assert(ar.lock(url, { slots = 2 }))
    local s2 = assert(ar.lock(url, { slots = 2, timeout = 5 }))
    local s3, _, code = ar.lock(url, { slots = 2, timeout = 1 })
    assert.is_nil(s3)
    assert.equal("deadlock", code)
    -- the kinds exclude each other: an exclusive lock waits for a slot
    local x
    x, _, code = ar.lock(url, { timeout = 1 })
    assert.is_nil(x)
    assert.equal("deadlock", code)
    s1:unlock()
    s2:unlock()
    assert.equal(held, ar.held())
  end)

  it("a file lock and an etcd lock are both held; neither is in the other's way", function()
    local path = dir .. "/x.lock"
    local held = ar.held()
    local f = assert(ar.lock(path))
    local e = assert(ar.lock(C:url("held" .. path)))
    assert.equal(held + 2, ar.held())
    local _, _, code = ar.lock(path, { timeout = 1 })
    assert.equal("deadlock", code)
    -- a child inherits the file lock's descriptor, not the etcd name
    assert.is_true((ar.run({ "true" })))
    e:unlock()
    assert.equal(held + 1, ar.held())
    f:unlock()
    assert.equal(held, ar.held())
  end)
end)
