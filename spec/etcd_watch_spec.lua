-- atomrun.watch on etcd keys and prefixes (lua/atomrun/remote.lua): every
-- value in order across a member restart; a forced compaction is reported
-- as a gap.
local H = require "spec.helper"
local E = require "spec.etcd"
local ar = H.ar

describe("atomrun.watch on etcd", function()
  local C = E.cluster()
  if not C then return end
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(E.teardown(C))

  local WRITER = [[
    local url, n, mark = ...
    for i = 1, tonumber(n) do
      assert(atomrun.replace(url, tostring(i)))
      if i == tonumber(n) // 2 then atomrun.replace(mark, "") end
      atomrun.sleep(0.01)
    end]]

  it("sees every value written, in order, across a member restart", function()
    local url = C:url("w/one")
    assert(ar.replace(url, "0"))
    local since = select(2, ar.read(url)).mod_revision
    local w = H.bg_lua(WRITER, url, 60, dir .. "/half")
    assert.is_true(H.wait_file(dir .. "/half", 30))
    C:restart(C:leader())
    assert.is_true(H.wait_exit(w, 60))
    -- A put whose answer the dying leader never sent is sent again to the
    -- next member (replace is at-least-once, like any blind put), so one
    -- value may come twice: at two revisions, one after the other.
    local seen, revs = {}, {}
    ar.watch(url, function(ev)
      assert.is_true(ev.revision > (revs[#revs] or since), "revisions in order")
      revs[#revs + 1] = ev.revision
      if ev.value ~= seen[#seen] then seen[#seen + 1] = ev.value end
      if ev.value == "60" then return false end
    end, { since = since, timeout = 30 })
    assert.equal(60, #seen, table.concat(seen, " "))
    assert.is_true(#revs <= 62, #revs .. " events for 60 values")
    for i = 1, 60 do assert.equal(tostring(i), seen[i]) end
  end)

  it("a prefix: each key's values in revision order, live while written", function()
    local url = C:url("w/pre/")
    local done = dir .. "/done"
    H.bg_lua([[
      local base, done = ...
      atomrun.sleep(0.5)
      for i = 1, 10 do
        assert(atomrun.replace(base .. (i % 2 == 0 and "a" or "b"), tostring(i)))
      end
      atomrun.replace(done, "")]], url, done)
    local seen = {}
    ar.watch(url, function(ev)
      seen[#seen + 1] = ev.name .. "=" .. ev.value
      if #seen == 10 then return false end
    end, { timeout = 30, interval = 0.05 })
    assert.equal(10, #seen)
    for i = 1, 10 do assert.equal((i % 2 == 0 and "a" or "b") .. "=" .. i, seen[i]) end
  end)

  it("after a forced compaction: a gap event, then the current value", function()
    local url = C:url("w/gap")
    assert(ar.replace(url, "a"))
    local since = select(2, ar.read(url)).mod_revision
    for _, v in ipairs({ "b", "c", "d" }) do assert(ar.replace(url, v)) end
    local head = select(2, ar.read(url)).mod_revision
    local st, out, err = C:etcdctl("compaction " .. head)
    assert.equal(0, st, out .. err)
    local evs = {}
    ar.watch(url, function(ev) evs[#evs + 1] = ev end, { since = since, timeout = 0.5 })
    assert.is_true(evs[1].gap)
    assert.equal(since + 1, evs[1].from)
    assert.is_true(evs[1].to >= head)
    assert.equal("d", evs[#evs].value)
  end)

  it("bad input", function()
    assert.has_error(function() ar.watch(C:url("w/x"), "f") end)
    assert.has_error(function() ar.watch(C:url("w/x"), function() end, { since = "1" }) end)
    local ok, _, code = ar.watch("/tmp/not-a-url", function() end, { timeout = 0 })
    assert.is_nil(ok)
    assert.equal("EINVAL", code)
  end)
end)
