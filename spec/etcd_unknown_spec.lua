-- update()'s unknown outcome on etcd keys (issue 16), driven with a real
-- fault: spec/faultproxy.py stands between the client and ONE real member of
-- the spec's cluster (spec/etcd.lua) and forwards a txn to etcd, waits for
-- etcd's answer (so the txn really is applied), then cuts the client's
-- connection instead of returning it -- or black-holes everything after
-- that, so that no answer comes at all.  What update must do then
-- (lua/atomrun/remote.lua, M.update): read its per-attempt nonce back and
-- return the new value exactly once, or nil, msg, "unknown"; never increment
-- twice.  Every count is read back from etcd itself (etcdctl), never through
-- the proxy, and every fault is checked in the proxy's log: a fault that did
-- not happen cannot pass as one that was resolved.
local H = require "spec.helper"
local E = require "spec.etcd"
local ar = H.ar

local function inc(old) return tostring((tonumber(old) or 0) + 1) end

describe("update's unknown outcome through a fault-injecting proxy", function()
  local C = E.cluster()
  if not C then return end
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function() H.cleanup_procs() end)

  -- A proxy in front of member `member` (1): spec/etcd.lua's.
  local function proxy(flags, member) return C:faultproxy(dir, flags, member) end

  -- The value of key as etcd holds it (etcdctl, all three members).
  local function value(key)
    local st, out, err = C:etcdctl("get --print-value-only " .. H.q(key))
    assert.equal(0, st, err)
    return (out:gsub("\n$", ""))
  end
  local function nonces(key)
    local _, out = C:etcdctl("get --prefix --print-value-only " .. H.q("atomrun/nonce/" .. key .. "/"))
    return (out:gsub("\n$", ""))
  end

  it("the answer to an applied increment is dropped: the new value, incremented once", function()
    local key = "unk/one"
    assert.is_true(ar.replace(C:url(key), "41"))
    local p = proxy("--drop 1")
    local calls = 0
    local v, msg, code = ar.update(p.url(key), function(old)
      calls = calls + 1
      return inc(old)
    end, { timeout = 10 })
    assert.equal("42", v, tostring(msg) .. " " .. tostring(code))
    assert.equal("42", value(key))            -- once, not twice
    assert.equal(1, calls)                     -- fn's result, committed once
    assert.equal(1, p.events("^txn 1 dropped %(etcd answered 200"))
    assert.equal(1, p.events("^txn 2 forwarded"))  -- the resend, answered "ours already"
    -- the nonce stays (one key per call site's state, overwritten by the
    -- next call), bound to this process's lease: gone when it exits
    local _, out = C:etcdctl("get --prefix -w json " .. H.q("atomrun/nonce/" .. key .. "/"))
    local a = require("atomrun.json").decode(out)
    assert.equal(1, #a.kvs)
    assert.is_true(tonumber(a.kvs[1].lease) > 0)
  end)

  it("40 increments, every 3rd answer dropped (cut with a RST): exactly 40", function()
    local key = "unk/loop"
    local p = proxy("--drop-every 3 --reset")
    local url = p.url(key)
    for i = 1, 40 do
      local v, msg, code = ar.update(url, inc, { timeout = 10 })
      assert.equal(tostring(i), v, tostring(msg) .. " " .. tostring(code))
    end
    assert.equal("40", value(key))
    assert.is_true(p.events("^txn %d+ dropped %(etcd answered 200") >= 10)
  end)

  it("4 processes x 20 increments through the proxy, every 5th answer dropped: exactly 80", function()
    -- contention and lost answers together: the resend of a dropped txn
    -- finds the key changed by the others, and only the nonce tells
    -- "mine, applied" from "theirs"
    local key = "unk/many"
    local p = proxy("--drop-every 5")
    local url = p.url(key)
    for i = 1, 4 do
      H.bg(dir, "u" .. i, H.cmd("-e", [[
        local url, n = ...
        for _ = 1, tonumber(n) do
          assert(atomrun.update(url, function(old) return tostring((tonumber(old) or 0) + 1) end,
                                { timeout = 60 }))
        end]], url, "20"))
    end
    for i = 1, 4 do
      local st, _, err = H.result(dir, "u" .. i, 120)
      assert.equal(0, st, err)
    end
    assert.equal("80", value(key))
    assert.is_true(p.events("^txn %d+ dropped %(etcd answered 200") >= 10)
  end)

  it("the answer is dropped and then nothing answers: nil, msg, 'unknown'; applied once", function()
    local key = "unk/hole"
    assert.is_true(ar.replace(C:url(key), "7"))
    local p = proxy("--drop 1 --then-blackhole")
    local t0 = ar.now()
    local v, msg, code = ar.update(p.url(key), inc, { timeout = 3 })
    local took = ar.now() - t0
    assert.is_nil(v)
    assert.equal("unknown", code)
    assert.matches("etcd://" .. H.pat(p.endpoint) .. "/unk/hole: outcome unknown", msg)
    assert.matches("no etcd member could tell before the deadline", msg)
    assert.is_true(took < 3 + 10, "took " .. took .. " s")   -- the timeout fired
    assert.equal(1, p.events("^txn 1 dropped %(etcd answered 200"))
    assert.is_true(p.events("^blackholed ") >= 1)      -- the resends and nonce reads went nowhere
    -- In this setup the txn is always applied (the proxy waited for etcd's
    -- answer before cutting): old + 1, never + 2.  The nonce this attempt
    -- wrote is still there -- nobody could read or remove it -- and is the
    -- proof a later reader of atomrun/nonce/KEY/ would have.
    assert.equal("8", value(key))
    assert.matches("^%d+%.1%.%d+$", nonces(key))
  end)

  it("dropped and black-holed, but the URL lists a real member too: resolved there, once", function()
    local key = "unk/other"
    assert.is_true(ar.replace(C:url(key), "100"))
    local p = proxy("--drop 1 --then-blackhole")
    local url = "etcd://" .. p.endpoint .. "," .. C:endpoint(2) .. "/" .. key
    local v, msg, code = ar.update(url, inc, { timeout = 10 })
    assert.equal("101", v, tostring(msg) .. " " .. tostring(code))
    assert.equal("101", value(key))
    assert.equal(1, p.events("^txn 1 dropped"))
    assert.equal(0, p.events("^txn 2 "))       -- the resend went to member 2
  end)

  it("from the command line (atomrun -e, its own process): 'unknown', applied once", function()
    -- The CLI has no update subcommand (lua/atomrun/cmd/); a script run by
    -- the binary is how a shell reaches update.
    local key = "unk/cli"
    assert.is_true(ar.replace(C:url(key), "1"))
    local p = proxy("--drop 1 --then-blackhole")
    local st, out, err = H.sh(H.cmd("-e", [[
      local v, msg, code = atomrun.update(..., function(old)
        return tostring(tonumber(old) + 1) end, { timeout = 2 })
      io.write(tostring(v), "\t", tostring(code), "\t", tostring(msg), "\n")
      os.exit(v and 0 or 3)]], p.url(key)))
    assert.equal(3, st, err)
    local v, code, msg = out:match("^([^\t]*)\t([^\t]*)\t([^\n]*)")
    assert.equal("nil", v)
    assert.equal("unknown", code)
    assert.matches("outcome unknown", msg)
    assert.equal("2", value(key))
    assert.equal(1, p.events("^txn 1 dropped"))
  end)

  -- A txn that reaches etcd LATE -- after a later look said its nonce was
  -- not in -- is applied, and the next attempt's read (or its txn's failure
  -- branch) sees the EARLIER attempt's nonce: that attempt is the call's
  -- result, never built on (found by this spec: the first version of the
  -- recipe compared only the current attempt's nonce and incremented twice).
  it("a txn delivered late, after the nonce said 'not in': still incremented once", function()
    local key = "unk/late"
    assert.is_true(ar.replace(C:url(key), "10"))
    local p = proxy("--late 1")
    local v, msg, code = ar.update(p.url(key), inc, { timeout = 10 })
    assert.equal(1, p.events("^txn 1 delivered late"))
    assert.equal("11", value(key), "returned " .. tostring(v) .. " " .. tostring(msg)
      .. " " .. tostring(code) .. "; proxy log:\n" .. H.slurp(p.log))
    assert.equal("11", v)
  end)
end)
