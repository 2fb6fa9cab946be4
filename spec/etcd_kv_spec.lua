-- create, replace, read and update on etcd keys (issue 16): src/bind/etcd.c
-- (create/replace/read), lua/atomrun/remote.lua (update), against the
-- spec's 3-member cluster (spec/etcd.lua).
local H = require "spec.helper"
local E = require "spec.etcd"
local ar = H.ar

describe("files on etcd keys", function()
  local C = E.cluster()
  if not C then return end
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(E.teardown(C))

  it("create, read, replace; read of a missing key is ENOENT; the key is the name", function()
    local url = C:url("kv/basic")
    assert.is_true(ar.create(url, "one\0two"))
    local v, kv = ar.read(url)
    assert.equal("one\0two", v)
    assert.is_true(kv.mod_revision > 0 and kv.create_revision == kv.mod_revision)
    local ok, msg, code, who = ar.create(url, "again")
    assert.is_nil(ok)
    assert.equal("exists", code)
    -- who created it and when: the creator record of the same txn
    assert.matches("it exists, created by pid " .. ar.pid() .. " on ", msg, 1, true)
    assert.matches(" at %d%d%d%d%-%d%d%-%d%dT[%d:]+Z %(revision " .. kv.create_revision, msg)
    assert.equal(ar.pid(), who.pid)
    assert.equal(kv.create_revision, who.create_revision)
    assert.is_string(who.host)
    assert.equal("integer", math.type(who.since))
    assert.is_true(math.abs(os.time() - who.since) < 120)
    assert.is_true(ar.replace(url, "three"))
    assert.equal("three", (ar.read(url)))
    local r, rmsg, rcode = ar.read(C:url("kv/none"))
    assert.is_nil(r)
    assert.equal("ENOENT", rcode)
    assert.matches("no such key", rmsg)
    -- the same key etcdctl sees
    assert.matches("three", select(2, C:etcdctl("get kv/basic")))
  end)

  it("a create race among 16 processes: one winner, 15 exists", function()
    local url = C:url("kv/race")
    for i = 1, 16 do
      H.bg(dir, "c" .. i, H.q(H.atomrun) .. " -e " .. H.q([[
        local url, me, go = ...
        while not atomrun.stat(go) do atomrun.sleep(0.005) end
        local ok, msg, code = atomrun.create(url, me)
        io.write(ok and ("won " .. atomrun.pid()) or (code .. " " .. msg))]]) .. " " .. H.q(url)
        .. " p" .. i .. " " .. H.q(dir .. "/go"))
    end
    H.write(dir .. "/go", "")
    local won, exists, winner, winner_pid, msgs = 0, 0, nil, nil, {}
    for i = 1, 16 do
      local st, out, err = H.result(dir, "c" .. i, 60)
      assert.equal(0, st, err)
      if out:find("^won ") then won, winner, winner_pid = won + 1, "p" .. i, out:match("%d+")
      elseif out:find("^exists ") then exists = exists + 1; msgs[#msgs + 1] = out end
    end
    assert.equal(1, won)
    assert.equal(15, exists)
    assert.equal(winner, (ar.read(url)))
    -- every loser is told who won
    for _, m in ipairs(msgs) do assert.matches("created by pid " .. winner_pid .. " on ", m, 1, true) end
  end)

  it("exists blames no one for a key atomrun.create did not make", function()
    -- made by etcdctl: no creator record
    local url = C:url("kv/foreign")
    C:etcdctl("put kv/foreign theirs")
    local ok, msg, code, who = ar.create(url, "mine")
    assert.is_nil(ok)
    assert.equal("exists", code)
    assert.matches("by a writer that left no creator record", msg, 1, true)
    assert.is_nil(who.pid)
    assert.is_true(who.create_revision > 0)
    -- made by create, deleted, made again by replace: the old record is not
    -- this key's creator
    local url2 = C:url("kv/remade")
    assert.is_true(ar.create(url2, "first"))
    C:etcdctl("del kv/remade")
    assert.is_true(ar.replace(url2, "second"))
    local _, msg2, code2, who2 = ar.create(url2, "third")
    assert.equal("exists", code2)
    assert.matches("left no creator record", msg2, 1, true)
    assert.is_nil(who2.pid)
    assert.equal("second", (ar.read(url2)))
  end)

  it("update: 8 processes x 100 increments = exactly 800, with a leader kill in the middle #heavy", function()
    local url = C:url("kv/counter")
    for i = 1, 8 do
      H.bg(dir, "u" .. i, H.q(H.atomrun) .. " -e " .. H.q([[
        local url, n, mark = ...
        for i = 1, tonumber(n) do
          assert(atomrun.update(url, function(old) return tostring((tonumber(old) or 0) + 1) end,
                                { timeout = 60 }))
          if i == 30 then atomrun.replace(mark, "") end
        end]]) .. " " .. H.q(url) .. " 100 " .. H.q(dir .. "/mark" .. i))
    end
    assert.is_true(H.wait_file(dir .. "/mark1", 60))
    C:kill(C:leader())
    for i = 1, 8 do
      local st, _, err = H.result(dir, "u" .. i, 120)
      assert.equal(0, st, err)
    end
    assert.equal("800", (ar.read(url)))
  end)

  it("update: fn's nil keeps the value; a missing key gives fn nil", function()
    local url = C:url("kv/upd")
    local seen = "unset"
    assert.is_false(ar.update(url, function(old) seen = old return nil end))
    assert.is_nil(seen)
    assert.equal("1", ar.update(url, function(old) return (old or "") .. "1" end))
    assert.equal("1", ar.update(url, function() return nil end))
    assert.equal("1", (ar.read(url)))
  end)

  -- atomrun's bookkeeping keys under prefix p, read with core.etcd.txn: {key = lease}
  local function internal_keys(p)
    local a = assert(ar.etcd.txn(C:url("kv"), { success = { { range = { key = p, prefix = true } } } }))
    local keys = {}
    for _, kv in ipairs(a.responses[1].kvs) do keys[kv.key] = kv.lease end
    return keys
  end

  it("update: ttl binds the key to the process's lease; its nonce is bound to one too", function()
    local url, nurl = C:url("kv/upd-ttl"), "atomrun/nonce/kv/upd-ttl/"
    local ready = dir .. "/ready"
    H.bg_lua([[
      local url, ready = ...
      require("atomrun.etcd").NONCE_TTL = 3
      for i = 1, 5 do
        assert(atomrun.update(url, function(old) return tostring((tonumber(old) or 0) + 1) end,
                              { ttl = 2 }))
      end
      atomrun.replace(ready, tostring(atomrun.pid()))
      atomrun.sleep(60)]], url, ready)
    local pid = H.ready_pid(ready)
    local v, kv = ar.read(url)
    assert.equal("5", v)
    assert.is_true(kv.lease > 0)
    -- one nonce key for the call's state, bound to a lease; a sentinel beside it
    local n, alive = 0, 0
    for k, lease in pairs(internal_keys(nurl)) do
      n = n + 1
      assert.is_true(tonumber(lease) > 0, k)
    end
    for _ in pairs(internal_keys("atomrun/alive/")) do alive = alive + 1 end
    assert.equal(1, n)
    assert.is_true(alive >= 1)
    -- a crashed updater leaves nothing behind: key and nonce go with the leases
    H.kill(pid, "KILL")
    assert.is_true(H.wait_until(function() return ar.read(url) == nil end, 2 + 5))
    assert.is_true(H.wait_until(function() return next(internal_keys(nurl)) == nil end, 3 + 5))
  end)

  it("update leaves no nonce key behind after its process exits", function()
    local url = C:url("kv/upd-exit")
    local st, _, err = H.run("-e", [[
      local url = ...
      for i = 1, 3 do
        assert(atomrun.update(url, function(old) return (old or "") .. "x" end))
      end]], url)
    assert.equal(0, st, err)
    assert.equal("xxx", (ar.read(url)))
    assert.is_nil(next(internal_keys("atomrun/nonce/kv/upd-exit/")))
  end)

  it("a SIGSTOPped holder resumed after its lease expired: its fenced replace is lost", function()
    local url, lurl = C:url("kv/fenced"), C:url("kv/fence-lock")
    local ready = dir .. "/ready"
    H.bg(dir, "holder", H.q(H.atomrun) .. " -e " .. H.q([[
      local url, lurl, ready, go = ...
      local lk = assert(atomrun.lock(lurl, { ttl = 2 }))
      assert(atomrun.replace(url, "first", { fence = lk }))
      atomrun.replace(ready, tostring(atomrun.pid()))
      while not atomrun.stat(go) do atomrun.sleep(0.01) end
      local ok, msg, code = atomrun.replace(url, "late", { fence = lk })
      local uok, umsg, ucode = atomrun.update(url, function() return "late2" end, { fence = lk })
      io.write(tostring(code), " ", tostring(ucode), " ", tostring(msg))]]) .. " " .. H.q(url) ..
      " " .. H.q(lurl) .. " " .. H.q(ready) .. " " .. H.q(dir .. "/go"))
    local pid = H.ready_pid(ready)
    H.kill(pid, "STOP")
    local lk = assert(ar.lock(lurl, { timeout = 15 }))
    assert.is_true(ar.replace(url, "second", { fence = lk }))
    H.write(dir .. "/go", "")
    H.kill(pid, "CONT")
    local st, out, err = H.result(dir, "holder", 20)
    assert.equal(0, st, err)
    assert.matches("^lost lost ", out)
    assert.equal("second", (ar.read(url)))
    lk:unlock()
    local ok, _, code = ar.replace(url, "x", { fence = lk })
    assert.is_nil(ok)
    assert.equal("lost", code)
  end)

  it("a ttl-bound key disappears within TTL + margin after its writer is SIGKILLed", function()
    local url = C:url("kv/alive")
    local ready = dir .. "/ready"
    H.bg_lua([[
      local url, ready = ...
      assert(atomrun.replace(url, "up", { ttl = 2 }))
      atomrun.replace(ready, tostring(atomrun.pid()))
      atomrun.sleep(60)]], url, ready)
    local pid = H.ready_pid(ready)
    assert.equal("up", (ar.read(url)))
    ar.sleep(3)   -- longer than the TTL: the keepalive keeps it
    assert.equal("up", (ar.read(url)))
    H.kill(pid, "KILL")
    local t0 = ar.now()
    assert.is_true(H.wait_until(function() return ar.read(url) == nil end, 2 + 5))
    assert.is_true(ar.now() - t0 < 2 + 5)
  end)

  it("values over the request limit are refused before sending; the server's own refusal says the same", function()
    local url = C:url("kv/big")
    local big = string.rep("x", 1536 * 1024)
    local ok, msg, code = ar.replace(url, big)
    assert.is_nil(ok)
    assert.equal("E2BIG", code)
    assert.matches("over the etcd request limit of 1572864 bytes", msg)
    local u, umsg, ucode = ar.update(url, function() return big end)
    assert.is_nil(u)
    assert.equal("E2BIG", ucode)
    assert.matches("over the etcd request limit", umsg)
    -- a raised limit lets it go; the server (1.5 MiB) refuses: the same words
    ok, msg, code = ar.replace(url, big, { max_request_bytes = 8 * 1024 * 1024 })
    assert.is_nil(ok)
    assert.equal("E2BIG", code)
    assert.matches("over the etcd request limit", msg)
    assert.is_nil((ar.read(url)))
  end)

  it("status on keys: JSON records int64-exact, read, and list() of every key under a prefix", function()
    local big = math.maxinteger - 7
    for i = 1, 3 do
      local st = ar.status(C:url("kv/fleet/web-" .. i))
      assert.is_true(st:write({ host = "web-" .. i, n = big - i, load = 0.25 }))
    end
    local st = ar.status(C:url("kv/fleet/web-2"))
    local rec = assert(st:read())
    assert.equal(big - 2, rec.n)
    assert.equal(math.type(big), math.type(rec.n))
    assert.equal(0.25, rec.load)
    assert.is_true(ar.replace(C:url("kv/fleet/junk"), "not json"))
    local list = assert(ar.status(C:url("kv/fleet/")):list())
    assert.equal(4, #list)
    assert.equal("junk", list[1].name)
    assert.matches("not a JSON status record", list[1].error)
    for i = 1, 3 do
      assert.equal("web-" .. i, list[i + 1].name)
      assert.equal(big - i, list[i + 1].status.n)
    end
    assert.is_true(list.revision > 0)
    local none = assert(ar.status(C:url("kv/nothing-here/")):list())
    assert.equal(0, #none)
    local r, _, code = ar.status(C:url("kv/fleet/none")):read()
    assert.is_nil(r)
    assert.equal("ENOENT", code)
    assert.has_error(function() st:write("x") end)
    assert.has_error(function() st:write({}, { nope = true }) end)
  end)

  it("status write{merge = true} on a key: the fields over the record, in one update", function()
    local st = ar.status(C:url("kv/merge/web-1"))
    assert.is_true(st:write({ host = "web-1", started = 100 }))
    assert.is_true(st:write({ state = "done" }, { merge = true, ttl = 10 }))
    assert.same({ host = "web-1", started = 100, state = "done" }, st:read())
    assert.is_true(ar.replace(C:url("kv/merge/junk"), "[1"))
    local ok, err, code = ar.status(C:url("kv/merge/junk")):write({ x = 1 }, { merge = true })
    assert.is_nil(ok)
    assert.equal("EINVAL", code)
    assert.matches("not a JSON status record to merge into", err)
  end)

  it("create and replace take a file or a reader function, as for files", function()
    local src = dir .. "/src"
    H.write(src, "from a file\0with a NUL")
    local f = assert(io.open(src, "rb"))
    assert.is_true(ar.replace(C:url("kv/fromfile"), f))
    f:close()
    assert.equal("from a file\0with a NUL", (ar.read(C:url("kv/fromfile"))))
    local parts = { "a", "b", "c" }
    local i = 0
    assert.is_true(ar.create(C:url("kv/fromreader"), function() i = i + 1 return parts[i] end))
    assert.equal("abc", (ar.read(C:url("kv/fromreader"))))
    -- a reader's error goes on, nothing written; a wrong type names it
    assert.has_error(function() ar.replace(C:url("kv/fromreader"), function() error("boom") end) end, "boom")
    assert.equal("abc", (ar.read(C:url("kv/fromreader"))))
    local ok, err = pcall(ar.replace, C:url("kv/fromreader"), function() return 7 end)
    assert.is_false(ok)
    assert.matches("the reader function must return strings", err, 1, true)
    -- over the limit: refused, reading stops at the limit
    local calls = 0
    local huge = string.rep("x", 64 * 1024)
    local ok2, msg, code = ar.replace(C:url("kv/fromreader"), function() calls = calls + 1 return huge end,
      { max_request_bytes = 200 * 1024 })
    assert.is_nil(ok2)
    assert.equal("E2BIG", code, msg)
    assert.is_true(calls <= 5)
    local closed = assert(io.open(src, "rb"))
    closed:close()
    assert.has_error(function() ar.replace(C:url("kv/fromfile"), closed) end)
  end)

  it("a reader that releases the fence lock: lost, nothing written", function()
    local url, lurl = C:url("kv/fence-reader"), C:url("kv/fence-reader-lock")
    assert.is_true(ar.replace(url, "before"))
    local lk = assert(ar.lock(lurl))
    local ok, msg, code = ar.replace(url, function()
      lk:unlock()
      collectgarbage()
      return nil
    end, { fence = lk })
    assert.is_nil(ok)
    assert.equal("lost", code, msg)
    assert.equal("before", (ar.read(url)))
  end)

  it("update: file options are accepted and ignored; one state cannot update a key twice at once", function()
    local url = C:url("kv/upd-opts")
    assert.equal("1", ar.update(url, function() return "1" end, { durable = true, mode = 420, follow = true }))
    -- fn yields, and the coroutine's caller updates the same key: refused, clearly
    local co = coroutine.wrap(function()
      return ar.update(url, function(old) coroutine.yield("in fn") return old .. "x" end)
    end)
    assert.equal("in fn", co())
    local ok, err = pcall(ar.update, url, function(old) return old end)
    assert.is_false(ok)
    assert.matches("is already being updated in this Lua state", err, 1, true)
    assert.equal("1x", co())
    -- the guard is released after an error in fn, too
    assert.has_error(function() ar.update(url, function() error("boom") end) end, "boom")
    assert.equal("1x!", ar.update(url, function(old) return old .. "!" end))
    -- errors point at the caller's line
    local _, perr = pcall(function() ar.update(url, function() end, { bogus = 1 }) end)
    assert.matches("etcd_kv_spec.lua:%d+: bad argument #3 to 'update'", perr)
    _, perr = pcall(function() ar.status(url, { bogus = 1 }) end)
    assert.matches("etcd_kv_spec.lua:%d+: bad argument #2 to 'status'", perr)
  end)

  it("bad input: clear errors naming what was wrong", function()
    local url = C:url("kv/bad")
    assert.has_error(function() ar.replace(url, 42) end,
      "bad argument #2 to 'replace' (string, file or reader function (an etcd value) expected, got number)")
    assert.has_error(function() ar.replace(url, "x", { ttl = 0 }) end)
    assert.has_error(function() ar.replace(url, "x", { fence = "lk" }) end)
    assert.has_error(function() ar.replace(url, "x", { nope = 1 }) end)
    assert.has_error(function() ar.update(url, "x") end)
    assert.has_error(function() ar.update(url, function() end, { fence = 1 }) end)
    assert.has_error(function() ar.update(url, function() return 1 end) end)
    local ok, msg, code = ar.read(C:url(""))
    assert.is_nil(ok)
    assert.equal("EINVAL", code)
    assert.matches("no lock or key name after the endpoints", msg)
    ok, _, code = ar.replace("etcd://127.0.0.1:1/", "x")
    assert.is_nil(ok)
    assert.equal("EINVAL", code)
  end)
end)
