-- core.etcd (src/bind/etcd_txn.c): txn(url, t [, opts]) on atomrun_etcd_txn,
-- lease, revoke and PREFIX, against the spec's 3-member cluster
-- (spec/etcd.lua).  Keys and values are Lua strings of any bytes;
-- revisions and leases integers.  Every key written here is read back by
-- etcdctl too where the bytes allow it: the typed call must be the same
-- key etcd's own client sees.
local H = require "spec.helper"
local E = require "spec.etcd"
local ar = H.ar

describe("core.etcd.txn", function()
  local C = E.cluster()
  if not C then return end
  after_each(E.teardown(C))

  local etcd = ar.etcd
  local function url() return C:url("txn") end
  local function txn(t, o) return etcd.txn(url(), t, o) end
  local function get(key, extra)
    local op = { key = key }
    for k, v in pairs(extra or {}) do op[k] = v end
    return { range = op }
  end
  local function put(key, value, lease) return { put = { key = key, value = value, lease = lease } } end
  -- the one kv of key, or nil
  local function read(key)
    local a = assert(txn({ success = { get(key) } }))
    return a.responses[1].kvs[1]
  end

  it("PREFIX is the key space of atomrun.h", function()
    assert.same({ lock = "", creator = "atomrun/creator/",
                  nonce = "atomrun/nonce/", alive = "atomrun/alive/" }, etcd.PREFIX)
    assert.equal(etcd.PREFIX.lock, require("atomrun.etcd").KEY_PREFIX)
  end)

  it("put and read back: revisions, version, the answer's shape", function()
    local a = assert(txn({ success = { put("t/one", "1") } }))
    assert.is_true(a.succeeded)
    assert.equal("integer", math.type(a.revision))
    assert.equal(1, #a.responses)
    assert.equal("put", a.responses[1].type)
    local kv = read("t/one")
    assert.equal("t/one", kv.key)
    assert.equal("1", kv.value)
    assert.equal(a.revision, kv.mod_revision)
    assert.equal(kv.create_revision, kv.mod_revision)
    assert.equal(1, kv.version)
    assert.equal(0, kv.lease)
    assert.equal("1", select(2, C:etcdctl("get --print-value-only t/one")):gsub("\n$", ""))
    -- a missing key: an empty kvs, count 0
    local r = assert(txn({ success = { get("t/none") } })).responses[1]
    assert.same({}, r.kvs)
    assert.equal(0, r.count)
    assert.is_false(r.more)
  end)

  it("a compare on mod, version, create, value and lease takes the right branch", function()
    assert(txn({ success = { put("t/c", "a") } }))
    assert(txn({ success = { put("t/c", "b") } }))
    local kv = read("t/c")
    local function branch(cmp)
      local a = assert(txn({ compare = { cmp }, success = { get("t/c") }, failure = {} }))
      return a.succeeded
    end
    local cases = {
      { { key = "t/c", target = "mod", result = "==", value = kv.mod_revision }, true },
      { { key = "t/c", target = "mod", result = "==", value = kv.mod_revision - 1 }, false },
      { { key = "t/c", target = "mod", result = "<", value = kv.mod_revision + 1 }, true },
      { { key = "t/c", target = "mod", result = ">", value = kv.mod_revision }, false },
      { { key = "t/c", target = "version", result = "==", value = 2 }, true },
      { { key = "t/c", target = "version", result = "~=", value = 2 }, false },
      { { key = "t/c", target = "create", result = "==", value = kv.create_revision }, true },
      { { key = "t/c", target = "create", result = ">", value = kv.create_revision }, false },
      { { key = "t/c", target = "value", result = "==", value = "b" }, true },
      { { key = "t/c", target = "value", result = "==", value = "a" }, false },
      { { key = "t/c", target = "value", result = ">", value = "a" }, true },
      { { key = "t/c", target = "lease", result = "==", value = 0 }, true },
      { { key = "t/c", target = "lease", result = "~=", value = 0 }, false },
      -- a missing key: version and create revision 0
      { { key = "t/absent", target = "version", result = "==", value = 0 }, true },
      { { key = "t/absent", target = "create", result = "==", value = 0 }, true },
    }
    for i, c in ipairs(cases) do
      assert.equal(c[2], branch(c[1]), "case " .. i .. ": " .. c[1].target .. " " .. c[1].result)
    end
    -- the failure branch's ops run, and answer, when a compare fails
    local a = assert(txn({ compare = { { key = "t/c", target = "version", result = "==", value = 9 } },
      success = { put("t/c", "never") }, failure = { get("t/c"), get("t/one") } }))
    assert.is_false(a.succeeded)
    assert.equal(2, #a.responses)
    assert.equal("b", a.responses[1].kvs[1].value)
    assert.equal("b", read("t/c").value)
  end)

  it("a put with a lease: the key goes when the lease is revoked", function()
    local id = assert(etcd.lease(url(), 30))
    assert.equal("integer", math.type(id))
    assert.equal(id, etcd.lease(url(), 30))          -- the process's one lease of that TTL
    assert.equal(id, etcd.lease("etcd://" .. C:endpoints(), 30))   -- any URL of the cluster
    local id2 = assert(etcd.lease(url(), 31))
    assert.is_true(id2 ~= id)
    assert(txn({ success = { put("t/leased", "x", id2) } }))
    assert.equal(id2, read("t/leased").lease)
    assert.is_true(assert(txn({ compare = { { key = "t/leased", target = "lease", result = "==",
      value = id2 } } })).succeeded)
    assert.is_true(etcd.revoke(url(), id2))
    assert.is_nil(read("t/leased"))
    -- a put on a revoked lease is refused; revoking it again is ENOENT
    local ok, msg, code = txn({ success = { put("t/leased", "y", id2) } })
    assert.is_nil(ok)
    assert.equal("ENOENT", code, msg)
    ok, msg, code = etcd.revoke(url(), id2)
    assert.is_nil(ok)
    assert.equal("ENOENT", code, msg)
  end)

  it("a range over a prefix: in key order, with revisions; limit, count_only, sort, revision", function()
    local revs = {}
    for _, k in ipairs({ "c", "a", "b", "d" }) do
      revs[k] = assert(txn({ success = { put("t/p/" .. k, "v" .. k) } })).revision
    end
    assert(txn({ success = { put("t/pz", "outside") } }))
    local r = assert(txn({ success = { get("t/p/", { prefix = true }) } })).responses[1]
    assert.equal(4, r.count)
    assert.is_false(r.more)
    local keys = {}
    for i, kv in ipairs(r.kvs) do
      keys[i] = kv.key
      assert.equal("v" .. kv.key:sub(-1), kv.value)
      assert.equal(revs[kv.key:sub(-1)], kv.mod_revision)
    end
    assert.same({ "t/p/a", "t/p/b", "t/p/c", "t/p/d" }, keys)
    -- limit: the first two, the count of all, more
    r = assert(txn({ success = { get("t/p/", { prefix = true, limit = 2 }) } })).responses[1]
    assert.equal(2, #r.kvs)
    assert.equal("t/p/b", r.kvs[2].key)
    assert.equal(4, r.count)
    assert.is_true(r.more)
    -- count_only: no kvs; keys_only: no values
    r = assert(txn({ success = { get("t/p/", { prefix = true, count_only = true }) } })).responses[1]
    assert.equal(4, r.count)
    assert.same({}, r.kvs)
    r = assert(txn({ success = { get("t/p/", { prefix = true, keys_only = true }) } })).responses[1]
    assert.equal("", r.kvs[1].value)
    -- sort by create revision, descending: the order written, backwards
    r = assert(txn({ success = { get("t/p/", { prefix = true, sort = "create", descend = true }) } }))
      .responses[1]
    keys = {}
    for i, kv in ipairs(r.kvs) do keys[i] = kv.key end
    assert.same({ "t/p/d", "t/p/b", "t/p/a", "t/p/c" }, keys)
    -- range_end: [key, range_end)
    r = assert(txn({ success = { get("t/p/b", { range_end = "t/p/d" }) } })).responses[1]
    assert.equal(2, r.count)
    -- a read as of a revision: the keys then
    r = assert(txn({ success = { get("t/p/", { prefix = true, revision = revs.a }) } })).responses[1]
    assert.equal(2, r.count)
  end)

  it("delete: one key, a prefix, with prev_kv", function()
    assert(txn({ success = { put("t/d/1", "one"), put("t/d/2", "two"), put("t/d/3", "three") } }))
    local a = assert(txn({ success = { { delete = { key = "t/d/1", prev_kv = true } } } }))
    local r = a.responses[1]
    assert.equal("delete", r.type)
    assert.equal(1, r.deleted)
    assert.equal("one", r.prev_kvs[1].value)
    r = assert(txn({ success = { { delete = { key = "t/d/", prefix = true, prev_kv = true } } } }))
      .responses[1]
    assert.equal(2, r.deleted)
    assert.equal(2, #r.prev_kvs)
    assert.equal("t/d/2", r.prev_kvs[1].key)
    r = assert(txn({ success = { { delete = { key = "t/d/", prefix = true } } } })).responses[1]
    assert.equal(0, r.deleted)
    assert.is_nil(r.prev_kvs)
    -- a put's prev_kv: the value it replaced
    assert(txn({ success = { put("t/d/x", "old") } }))
    r = assert(txn({ success = { { put = { key = "t/d/x", value = "new", prev_kv = true } } } }))
      .responses[1]
    assert.equal("old", r.prev_kvs[1].value)
  end)

  it("keys and values with NUL and non-UTF-8 bytes round-trip", function()
    local all = {}
    for b = 0, 255 do all[#all + 1] = string.char(b) end
    local value = table.concat(all) .. "\0\0"
    local key = "t/bin/\0\255\128\1"
    assert(txn({ success = { put(key, value) } }))
    local kv = read(key)
    assert.equal(key, kv.key)
    assert.equal(value, kv.value)
    -- the key under its prefix, the NUL-led key apart from "t/bin/"
    local r = assert(txn({ success = { get("t/bin/", { prefix = true }) } })).responses[1]
    assert.equal(1, r.count)
    assert.equal(key, r.kvs[1].key)
    -- a compare on those bytes; the empty value
    assert.is_true(assert(txn({ compare = { { key = key, target = "value", result = "==",
      value = value } } })).succeeded)
    assert(txn({ success = { put("t/bin/empty", "") } }))
    assert.equal("", read("t/bin/empty").value)
  end)

  it("bad arguments raise errors naming what was wrong", function()
    -- called from a Lua function (not a tail call, not pcall itself), so
    -- that the error names the function as a caller's code sees it
    local function err(t, o, u)
      local ok, e = pcall(function() local r = etcd.txn(u or url(), t, o) return r end)
      assert.is_false(ok)
      return e
    end
    local cmp = function(c) return { compare = { c } } end
    local cases = {
      { cmp({ key = "k", target = "x", result = "==", value = 1 }), "compare 1: unknown target 'x'" },
      { cmp({ key = "k", target = "mod", result = "=", value = 1 }), "compare 1: unknown result '='" },
      { cmp({ key = "k", target = "mod", value = 1 }), "compare 1: no result" },
      { cmp({ key = "k", result = "==", value = 1 }), "compare 1: no target" },
      { cmp({ target = "mod", result = "==", value = 1 }), "compare 1: no key" },
      { cmp({ key = "", target = "mod", result = "==", value = 1 }), "compare 1: empty key" },
      { cmp({ key = "k", target = "mod", result = "==" }), "compare 1: no value" },
      { cmp({ key = "k", target = "mod", result = "==", value = "1" }), "compare 1: 'value' must be an integer" },
      { cmp({ key = "k", target = "value", result = "==", value = 1 }), "compare 1: 'value' must be a string" },
      { cmp({ key = "k", target = "mod", result = "==", value = 1, vaule = 2 }), "compare 1: unknown field 'vaule'" },
      { { compare = { "k" } }, "compare 1: a compare must be a table" },
      { { success = { { get = { key = "k" } } } }, "success 1: an op is {put" },
      { { success = { { put = { key = "k" }, range = { key = "k" } } } }, "success 1: an op is" },
      { { success = { put("k", "v"), { range = { key = "k", rang_end = "z" } } } }, "success 2: unknown field 'rang_end'" },
      { { failure = { { range = { key = "k", prefix = true, range_end = "z" } } } }, "failure 1: range_end and prefix both given" },
      { { success = { { range = { key = "k", limit = -1 } } } }, "success 1: 'limit' must be an integer >= 0" },
      { { success = { { range = { key = "k", sort = "size" } } } }, "success 1: unknown sort 'size'" },
      { { success = { { put = { key = "k", value = 5 } } } }, "success 1: 'value' must be a string" },
      { { success = { { put = { key = "k", lease = 1.5 } } } }, "success 1: 'lease' must be an integer" },
      { { success = { { delete = { key = "k", prev_kv = 1 } } } }, "success 1: 'prev_kv' must be a boolean" },
      { { success = { { put = { key = "k", prefix = true } } } }, "success 1: unknown field 'prefix'" },
      { { success = { [2] = put("k", "v") } }, "'success' must be a list" },
      { { succes = {} }, "unknown field 'succes'" },
      { { compare = 5 }, "'compare' must be a table" },
    }
    for i, c in ipairs(cases) do
      local e = err(c[1])
      assert.matches("bad argument #2 to 'txn' (" .. c[2], e, 1, true)
      assert.is_truthy(e, i)
    end
    assert.matches("bad argument #2 to 'txn' %(table expected", err("k"))
    assert.matches("bad argument #3 to 'txn'", err({}, { timout = 1 }))
    assert.matches("max_request_bytes", err({}, { max_request_bytes = 10 }))
    assert.matches("bad argument #1 to 'txn'", err({}, nil, 5))
    assert.matches("bad argument #2 to 'lease'",
      select(2, pcall(function() local r = etcd.lease(url(), 0) return r end)))
    assert.matches("bad argument #2 to 'revoke'",
      select(2, pcall(function() local r = etcd.revoke(url(), 0) return r end)))
    -- not an etcd URL: a failure, as the other calls give
    local ok, msg, code = etcd.txn("/tmp/x", {})
    assert.is_nil(ok)
    assert.equal("EINVAL", code, msg)
    ok, msg, code = etcd.txn("http://h:1/x", {})
    assert.is_nil(ok)
    assert.equal("EINVAL", code)
    assert.matches("unsupported scheme", msg)
  end)

  it("the URL may name the cluster alone; the server's refusals are failures", function()
    local ep = C:endpoints()
    for _, u in ipairs({ "etcd://" .. ep, "etcd://" .. ep .. "/" }) do
      local a = assert(etcd.txn(u, { success = { get("t/one") } }))
      assert.is_true(a.succeeded)
    end
    -- one key written twice in a txn: etcd refuses it, EINVAL with its words
    local ok, msg, code = txn({ success = { put("t/twice", "1"), put("t/twice", "2") } })
    assert.is_nil(ok)
    assert.equal("EINVAL", code)
    assert.matches("^etcd://[^ ]*/txn: ", msg)
    assert.matches("duplicate key", msg)
  end)

  it("over the request limit: E2BIG, before sending or from the server", function()
    local big = string.rep("x", 1300 * 1024)        -- 1.7 MiB in base64
    local ok, msg, code = txn({ success = { put("t/big", big) } })
    assert.is_nil(ok)
    assert.equal("E2BIG", code)
    assert.matches("over the etcd request limit of 1572864 bytes", msg, 1, true)
    ok, msg, code = txn({ success = { put("t/big", string.rep("x", 3000)) } }, { max_request_bytes = 2048 })
    assert.is_nil(ok)
    assert.equal("E2BIG", code)
    assert.matches("over the etcd request limit of 2048 bytes", msg, 1, true)
    -- a raised limit lets it go: the cluster (1.5 MiB) refuses it itself
    big = string.rep("x", 1600 * 1024)
    ok, msg, code = txn({ success = { put("t/big", big) } }, { max_request_bytes = 8 * 1024 * 1024 })
    assert.is_nil(ok)
    assert.equal("E2BIG", code, msg)
    assert.matches("over the etcd request limit", msg, 1, true)
    assert.is_nil(read("t/big"))
  end)

  it("an unreachable endpoint: nil, msg, 'unavailable'", function()
    local t0 = ar.now()
    local ok, msg, code = etcd.txn("etcd://127.0.0.1:1/x", { success = { get("k") } }, { timeout = 1 })
    assert.is_nil(ok)
    assert.equal("unavailable", code, msg)
    assert.matches("127.0.0.1:1", msg, 1, true)
    assert.is_true(ar.now() - t0 < 10)
    ok, msg, code = etcd.revoke("etcd://127.0.0.1:1/x", 42, { timeout = 1 })
    assert.is_nil(ok)
    assert.equal("unavailable", code, msg)
  end)
end)
