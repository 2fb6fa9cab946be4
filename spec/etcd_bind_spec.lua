-- The etcd binding's own checks (src/bind/etcd.c, etcd_lock.c, etcd_kv.c):
-- the one refusal of an empty name, _etcd_call's endpoint option, the
-- canonical endpoint list of the deadlock check, _etcd_watch's TLS
-- options, against the spec's 3-member cluster (spec/etcd.lua) and a
-- one-member TLS cluster that asks for client certificates.
local H = require "spec.helper"
local E = require "spec.etcd"
local ar = H.ar

describe("the etcd binding", function()
  local C = E.cluster()
  if not C then return end
  after_each(E.teardown(C))

  it("an empty name is refused once, by the URL parser, for every call", function()
    -- read/create/replace, _etcd_key and _etcd_watch had a check of their
    -- own ("no key name after the endpoints") that could never fire
    local url = C:url("")
    local calls = {
      function() return ar.read(url) end,
      function() return ar.create(url, "x") end,
      function() return ar.replace(url, "x") end,
      function() return ar._etcd_key(url) end,
      function() return ar._etcd_watch(url, 1, 1, function() return true end) end,
      function() return ar._etcd_queue(url) end,
      function() return ar.lock(url, { wait = false }) end,
    }
    for i, call in ipairs(calls) do
      local ok, msg, code = call()
      assert.is_nil(ok, "call " .. i)
      assert.equal("EINVAL", code, "call " .. i)
      assert.matches("no lock or key name after the endpoints", msg)
    end
  end)

  it("_etcd_call: endpoint= is a whole number >= 1, or an error naming it", function()
    local url = C:url("bind/call")
    for _, bad in ipairs({ 1.5, 0, -1, 2 ^ 40 }) do
      local ok, err = pcall(ar._etcd_call, url, "/v3/maintenance/status", "{}", { endpoint = bad })
      assert.is_false(ok, tostring(bad))
      assert.matches("option 'endpoint' must be", err)
    end
    -- a whole number asks that member only
    local json = ar.json
    for i = 1, 3 do
      local text = assert(ar._etcd_call(url, "/v3/maintenance/status", "{}", { endpoint = i }))
      assert.equal(C.ids[i], json.decode(text).header.member_id)
    end
    local a = assert(ar._etcd_call(url, "/v3/maintenance/status", "{}", { endpoint = 2.0 }))
    assert.equal(C.ids[2], json.decode(a).header.member_id)
    local no, msg, code = ar._etcd_call(url, "/v3/maintenance/status", "{}", { endpoint = 4 })
    assert.is_nil(no)
    assert.equal("EINVAL", code)
    assert.matches("no endpoint #4", msg)
  end)

  it("two endpoint lists alike in a host's first 256 bytes are two clusters", function()
    -- "127.<300 zeros>.0.1" is 127.0.0.1 to curl (an IPv4 part in octal),
    -- "...0.2" is 127.0.0.2: loopback too, where no member listens.  The
    -- canonical list kept 256 bytes of a host (and read the port from
    -- byte 257 on: 0 here), so the two were one spelling: the second lock
    -- was "deadlock" without asking anyone.
    local zeros = ("0"):rep(300)
    local port = C.port
    local near = "etcd://127." .. zeros .. ".0.1:" .. port .. "/bind/long"
    local far = "etcd://127." .. zeros .. ".0.2:" .. port .. "/bind/long"
    local lk = assert(ar.lock(near, { timeout = 10 }))
    local l2, msg, code = ar.lock(far, { timeout = 1 })
    assert.is_nil(l2)
    assert.is_true(code == "unavailable" or code == "timeout", tostring(code) .. ": " .. msg)
    -- the same spelling is still this state's own lock
    local _, msg3, code3 = ar.lock(near, { timeout = 5 })
    assert.equal("deadlock", code3, msg3)
    assert.is_true(lk:unlock())
  end)

  it("the endpoint list's own limit is said when it refuses", function()
    local eps = {}
    for i = 1, 80 do eps[i] = "host-number-" .. i .. ":2379" end
    local ok, msg, code = ar.lock("etcd://" .. table.concat(eps, ",") .. "/bind/many")
    assert.is_nil(ok)
    assert.equal("EINVAL", code)
    assert.matches("endpoint list is too long %(at most 1023 bytes%)", msg)
  end)
end)

describe("the etcd binding over TLS", function()
  if not E.available() then
    pending("etcd is not installed")
    return
  end
  -- The certificates outlive each test (H.cleanup, in E.teardown, removes
  -- H.tmpdir's directories after every test): a directory of our own.
  local p = io.popen("mktemp -d /tmp/atomrun-spec-certs.XXXXXX")
  local certdir = p:read("l")
  p:close()
  local certs = E.make_certs(certdir)
  local t = { client_auth = true }
  for k, v in pairs(certs) do t[k] = v end
  local T = E.cluster({ members = 1, port = E.base + 30, tls = t, heartbeat = 100, election = 1000 })
  if not T then return end
  after_each(E.teardown(T))
  teardown(function() os.execute("rm -rf " .. H.q(certdir)) end)

  it("_etcd_watch takes ca, cert and key as the other calls do", function()
    local o = { ca = certs.ca, cert = certs.cert, key = certs.key }
    local url = T:url("bind/watched")
    assert.is_true(ar.replace(url, "v1", o))
    local _, kv = assert(ar.read(url, o))
    local seen
    local r, msg = ar._etcd_watch(url, kv.mod_revision, 20, function(events)
      for _, e in ipairs(events) do                 -- typed events: bytes, no base64
        if e.value == "v1" then seen = e return true end
      end
      return false
    end, o)
    assert.equal(1, r, msg)
    assert.equal("v1", seen.value)
    assert.equal(kv.mod_revision, seen.mod_revision)
    -- an unknown option is a mistake, as for the other calls
    assert.has_error(function() ar._etcd_watch(url, 1, 1, function() end, { cafile = certs.ca }) end)
    -- without them (and none in the environment) the cluster refuses us
    if not (os.getenv("ATOMRUN_ETCD_CA") or os.getenv("ATOMRUN_ETCD_CERT")) then
      local called = false
      local r2 = ar._etcd_watch(url, kv.mod_revision, 1, function() called = true return true end)
      assert.is_true(r2 ~= 1)
      assert.is_false(called)
    end
  end)
end)
