-- The etcd test harness itself (spec/etcd.lua): a 3-member loopback cluster
-- that the remote specs start, break and stop.
local H = require "spec.helper"
local E = require "spec.etcd"

describe("spec/etcd.lua cluster #harness", function()
  local C = E.cluster()
  if not C then return end

  it("has three healthy members on non-default ports and a leader", function()
    for i = 1, 3 do
      assert.is_true(C:healthy(i))
      assert.is_not.equal("127.0.0.1:2379", C:endpoint(i))
    end
    assert.is_truthy(C:leader())
    local st, out = C:etcdctl("member list")
    assert.equal(0, st)
    local n = 0
    for _ in out:gmatch("started") do n = n + 1 end
    assert.equal(3, n)
  end)

  it("elects a new leader when the leader is killed, and takes it back", function()
    local old = C:leader()
    C:kill(old)
    assert.is_true(H.wait_until(function()
      local l = C:leader()
      return l ~= nil and l ~= old
    end, 15))
    assert.is_true(C:restart(old))
    assert.is_true(C:healthy(old))
  end)

  it("pauses and resumes one member", function()
    C:pause(3)
    assert.is_false(C:healthy(3))
    C:cont(3)
    assert.is_true(H.wait_until(function() return C:healthy(3) end, 15))
  end)

  it("builds URLs for the lock names", function()
    assert.equal("etcd://127.0.0.1:" .. C.port .. ",127.0.0.1:" .. (C.port + 1) .. ",127.0.0.1:"
                 .. (C.port + 2) .. "/a/b", C:url("a/b"))
    assert.equal("etcd://u:p@127.0.0.1:" .. (C.port + 1) .. "/x",
                 C:url("x", { userinfo = "u:p", members = { 2 } }))
  end)
end)
