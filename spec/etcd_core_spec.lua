-- The C core's etcd locks (src/etcd/client.c, etcd/session.c, etcd/lock.c) and its
-- typed txn (etcd/txn.c), driven by
-- spec/etcd_core.c as real processes against a real 3-member cluster, with
-- real faults: killed and stopped holders, a killed leader, a killed member,
-- every member down.
local H = require "spec.helper"
local E = require "spec.etcd"
local ar = H.ar

local DRIVER = H.build .. "/spec_etcd_core"

-- The Makefile builds the driver with the library (make test-bins; the ASan
-- pass's with SAN_FLAGS into build/asan/): a missing one is a failure.
local function build_driver()
  assert(H.exists(DRIVER), DRIVER .. " not found: make test-bins builds it")
end

local bg = {}
local function env_prefix(env)
  local p = {}
  for k, v in pairs(env or {}) do p[#p + 1] = k .. "=" .. H.q(v) end
  return table.concat(p, " ") .. " "
end
--- Run the driver; status, first line, all output.
local function core(eps, env, ...)
  local parts = { env_prefix(env) .. H.q(DRIVER), H.q(eps) }
  for _, a in ipairs({ ... }) do parts[#parts + 1] = H.q(tostring(a)) end
  local st, out, err = H.sh(table.concat(parts, " "))
  return st, out:match("^[^\n]*"), out .. err
end
--- Start the driver in the background, output into file; its pid.
local function core_bg(file, eps, ...)
  local parts = { H.q(DRIVER), H.q(eps) }
  for _, a in ipairs({ ... }) do parts[#parts + 1] = H.q(tostring(a)) end
  local pid = H.spawn("exec " .. table.concat(parts, " ") .. " >" .. H.q(file))
  bg[#bg + 1] = pid
  return pid
end
local function first_line(file, timeout)
  local line
  H.wait_until(function()
    line = H.slurp(file):match("^([^\n]*)\n")
    return line ~= nil
  end, timeout or 15)
  return line
end
local function kill_bg()
  for _, pid in ipairs(bg) do H.kill(pid, "CONT"); H.kill(pid, "KILL") end
  bg = {}
end

local HOST = H.slurp("/proc/sys/kernel/hostname"):gsub("\n$", "")

describe("etcd core locks #child", function()
  local C = E.cluster()
  if not C then return end
  local eps, dir
  setup(function()
    build_driver()
    eps = C:endpoints()
  end)
  before_each(function() dir = H.tmpdir() end)
  after_each(function()
    kill_bg()
    H.cleanup()
    C:heal()                                  -- a failed fault test leaves no member down
  end)

  local function leases()
    local v = assert(C:post(1, "/v3/lease/leases", "{}"))
    return #(v.leases or {})
  end

  it("locks and unlocks, with a token that grows, and revokes its lease at exit", function()
    local st, line = core(eps, nil, "try", "plain", 0)
    assert.equal(0, st, line)
    local t1 = tonumber(line:match("^ok (%d+) 1$"))
    assert.is_truthy(t1, line)
    local _, line2 = core(eps, nil, "try", "plain", 0)
    local t2 = tonumber(line2:match("^ok (%d+) 1$"))
    assert.is_true(t2 > t1)
    assert.is_true(H.wait_until(function() return leases() == 0 end, 5))
  end)

  it("records host, pid, command and since in the key, readable with etcdctl", function()
    local stop = dir .. "/stop"
    local pid = core_bg(dir .. "/h", eps, "hold", "rec/job", stop)
    assert.matches("^ok %d+ 1$", first_line(dir .. "/h"))
    local st, out = C:etcdctl("get --prefix rec/job/")
    assert.equal(0, st)
    local key, val = out:match("^(rec/job/%x+)\n([^\n]+)")
    assert.is_truthy(key, out)
    local rec = ar.json.decode(val)
    assert.equal(pid, math.tointeger(rec.pid))
    assert.equal(HOST, rec.host)
    assert.equal("exclusive", rec.mode)
    assert.matches("hold rec/job", rec.cmd)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", rec.since)
    H.write(stop, "")
    assert.is_true(H.wait_exit(pid, 10))
    assert.matches("unlock OK", H.slurp(dir .. "/h"))
  end)

  it("busy and timeout name the holder's pid and host; a timed-out waiter leaves no key", function()
    local stop = dir .. "/stop"
    local pid = core_bg(dir .. "/h", eps, "hold", "bt", stop)
    assert.matches("^ok", first_line(dir .. "/h"))
    local st, line = core(eps, nil, "try", "bt", 0)
    assert.equal(1, st)
    assert.equal("busy|bt is locked by pid " .. pid .. " on " .. HOST .. "|" .. pid .. "|" .. HOST, line)
    local t0 = ar.now()
    st, line = core(eps, nil, "try", "bt", 1)
    local took = ar.now() - t0
    assert.equal(1, st)
    assert.matches("^timeout|bt is still locked after the timeout by pid " .. pid, line)
    assert.is_true(took >= 0.9 and took < 5, "took " .. took)
    local _, q = core(eps, nil, "queue", "bt")
    assert.equal("1", q)                      -- only the holder's key
    H.write(stop, "")
  end)

  it("keeps nested names apart: NAME and NAME/sub are different locks", function()
    local stop = dir .. "/stop"
    core_bg(dir .. "/h", eps, "hold", "nest", stop)
    assert.matches("^ok", first_line(dir .. "/h"))
    local st, line = core(eps, nil, "try", "nest/sub", 0)
    assert.equal(0, st, line)
    H.write(stop, "")
  end)

  it("excludes: 4 processes x 20 non-atomic increments lose none; tokens follow the grants", function()
    local cnt = dir .. "/count"
    H.write(cnt, "0\n")
    local pids = {}
    for i = 1, 4 do pids[i] = core_bg(dir .. "/incr." .. i, eps, "incr", "mx", cnt, 20) end
    for i = 1, 4 do assert.is_true(H.wait_exit(pids[i], 120)) end
    assert.equal("80", (H.slurp(cnt):gsub("%s", "")))
    local rows = {}
    for i = 1, 4 do
      for v, t in H.slurp(dir .. "/incr." .. i):gmatch("(%d+) (%d+)\n") do
        rows[#rows + 1] = { tonumber(v), tonumber(t) }
      end
    end
    assert.equal(80, #rows)
    table.sort(rows, function(a, b) return a[1] < b[1] end)
    for i = 2, #rows do
      assert.is_true(rows[i][2] > rows[i - 1][2], "token order at value " .. rows[i][1])
    end
  end)

  it("frees a SIGKILLed holder's lock within its TTL plus a margin", function()
    local pid = core_bg(dir .. "/h", eps, "hold", "killed", dir .. "/never", 2)
    assert.matches("^ok", first_line(dir .. "/h"))
    H.kill(pid, "KILL")
    local t0 = ar.now()
    local st, line = core(eps, nil, "try", "killed", 10)
    assert.equal(0, st, line)
    assert.is_true(ar.now() - t0 < 2 + 2.5, "took " .. (ar.now() - t0))
  end)

  it("a SIGSTOPped holder past its TTL: the next gets a higher token, the first reports lost", function()
    local stop = dir .. "/stop"
    local pid = core_bg(dir .. "/h", eps, "hold", "stopped", stop, 2)
    local t1 = tonumber(first_line(dir .. "/h"):match("^ok (%d+)"))
    H.kill(pid, "STOP")
    local st, line = core(eps, nil, "try", "stopped", 15)
    assert.equal(0, st, line)
    local t2 = tonumber(line:match("^ok (%d+)"))
    assert.is_true(t2 > t1)
    H.kill(pid, "CONT")
    assert.is_true(H.wait_until(function() return H.slurp(dir .. "/h"):find("lost|", 1, true) end, 5))
    H.write(stop, "")
    assert.is_true(H.wait_exit(pid, 10))
    assert.matches("unlock lost|", H.slurp(dir .. "/h"), 1, true)
  end)

  it("semaphore of 3 with 10 processes: never more than 3 inside", function()
    local pids = {}
    for i = 1, 10 do pids[i] = core_bg(dir .. "/s." .. i, eps, "slot", "sem3", 3, dir) end
    local max = 0
    for i = 1, 10 do
      assert.is_true(H.wait_exit(pids[i], 60))
      local k, idx = H.slurp(dir .. "/s." .. i):match("inside (%d+) index (%d+)")
      assert.is_truthy(k, H.slurp(dir .. "/s." .. i))
      max = math.max(max, tonumber(k))
      assert.is_true(tonumber(idx) >= 1 and tonumber(idx) <= 3)
    end
    assert.is_true(max >= 1 and max <= 3, "max inside " .. max)
  end)

  it("shared holders share; an exclusive waiter waits for all of them", function()
    local s1, s2 = dir .. "/s1", dir .. "/s2"
    core_bg(dir .. "/a", eps, "hold", "rw", s1, 10, "shared")
    core_bg(dir .. "/b", eps, "hold", "rw", s2, 10, "shared")
    assert.matches("^ok", first_line(dir .. "/a"))
    assert.matches("^ok", first_line(dir .. "/b"))
    local st, line = core(eps, nil, "try", "rw", 0)
    assert.equal(1, st)
    assert.matches("^busy", line)
    local w = core_bg(dir .. "/w", eps, "try", "rw", 20)
    ar.sleep(0.3)
    H.write(s1, "")
    ar.sleep(0.3)
    assert.equal("", H.slurp(dir .. "/w"))   -- one reader still in
    H.write(s2, "")
    assert.is_true(H.wait_exit(w, 10))
    assert.matches("^ok", H.slurp(dir .. "/w"))
  end)

  it("the leader is killed while a lock is held and others wait: held, then handed on in order", function()
    local stop = dir .. "/stop"
    local h = core_bg(dir .. "/h", eps, "hold", "lk", stop, 3)
    local t0 = tonumber(first_line(dir .. "/h"):match("^ok (%d+)"))
    local w = {}
    for i = 1, 3 do
      w[i] = core_bg(dir .. "/w" .. i, eps, "hold", "lk", stop, 3)
      ar.sleep(0.2)                          -- queue in this order
    end
    local leader = C:leader()
    C:kill(leader)
    ar.sleep(4)                              -- past the TTL: keepalives went elsewhere
    assert.is_nil(H.slurp(dir .. "/h"):find("lost", 1, true))
    for i = 1, 3 do assert.equal("", H.slurp(dir .. "/w" .. i)) end
    H.write(stop, "")
    local last = t0
    for i = 1, 3 do
      assert.is_true(H.wait_exit(w[i], 20), "waiter " .. i)
      local out = H.slurp(dir .. "/w" .. i)
      local t = tonumber(out:match("^ok (%d+)"))
      assert.is_truthy(t, out)
      assert.is_true(t > last, "waiter " .. i .. " token order")
      last = t
      assert.is_nil(out:find("lost", 1, true))
    end
    assert.is_true(H.wait_exit(h, 10))
    assert.is_nil(H.slurp(dir .. "/h"):find("lost", 1, true))
    assert.is_true(C:restart(leader))
  end)

  it("carries on through another member when the one it talks to is killed", function()
    local stop = dir .. "/stop"
    local first = C:leader() == 1 and 2 or 1     -- a follower, to keep it simple
    local order = { first }
    for _, i in ipairs({ 1, 2, 3 }) do if i ~= first then order[#order + 1] = i end end
    local h = core_bg(dir .. "/h", C:endpoints(order), "hold", "mk", stop, 3)
    assert.matches("^ok", first_line(dir .. "/h"))
    C:kill(first)
    ar.sleep(4)
    assert.is_nil(H.slurp(dir .. "/h"):find("lost", 1, true))
    local st, line = core(C:endpoints(order), nil, "try", "other", 5)
    assert.equal(0, st, line)
    H.write(stop, "")
    assert.is_true(H.wait_exit(h, 10))
    assert.matches("unlock OK", H.slurp(dir .. "/h"))
    assert.is_true(C:restart(first))
  end)

  it("every member down: unavailable within the caller's deadline, naming the endpoints", function()
    for i = 1, 3 do C:pause(i) end
    local t0 = ar.now()
    local st, line = core(eps, nil, "try", "down", 2)
    local took = ar.now() - t0
    for i = 1, 3 do C:cont(i) end
    assert.equal(1, st)
    assert.matches("^unavailable|no etcd endpoint of " .. eps:gsub("%.", "%%.") .. " answered", line)
    assert.is_true(took < 4, "took " .. took)
    assert.is_true(C:wait_healthy(20))
  end)

  it("keys: get, create-only put, a put guarded by the mod revision", function()
    local k = "spec/kv/" .. math.random(1e9)
    local st, line = core(eps, nil, "get", k)
    assert.equal(1, st)
    assert.matches("^ENOENT|", line)
    st, line = core(eps, nil, "put", k, "v1", "create")
    assert.equal(0, st, line)
    st, line = core(eps, nil, "put", k, "v2", "create")
    assert.equal(1, st)
    assert.matches("^exists|.* exists %(created at revision %d+%)", line)
    local _, got = core(eps, nil, "get", k)
    local rev = got:match("^(%d+) v1$")
    assert.is_truthy(rev, got)
    st, line = core(eps, nil, "put", k, "v3", "rev=" .. rev)
    assert.equal(0, st, line)
    st, line = core(eps, nil, "put", k, "v4", "rev=" .. rev)      -- a lost update, refused
    assert.equal(1, st)
    assert.matches("^ESTALE|.* changed since revision " .. rev, line)
    assert.matches(" v3$", select(2, core(eps, nil, "get", k)))
  end)

  it("fenced writes: a stopped holder resumed after its lease expired writes nothing", function()
    local k = "spec/fence/" .. math.random(1e9)
    local s1, s2 = dir .. "/s1", dir .. "/s2"
    local p1 = core_bg(dir .. "/f1", eps, "fenced", "fence", k, "first", s1, 2)
    local t1 = tonumber(first_line(dir .. "/f1"):match("^ok (%d+)"))
    H.kill(p1, "STOP")
    local p2 = core_bg(dir .. "/f2", eps, "fenced", "fence", k, "second", s2, 2)
    local t2 = tonumber(first_line(dir .. "/f2", 20):match("^ok (%d+)"))
    assert.is_true(t2 > t1)
    H.write(s2, "")
    assert.is_true(H.wait_exit(p2, 10))
    assert.matches("put OK|", H.slurp(dir .. "/f2"), 1, true)
    H.kill(p1, "CONT")
    H.write(s1, "")
    assert.is_true(H.wait_exit(p1, 10))
    assert.matches("put lost|not written", H.slurp(dir .. "/f1"), 1, true)
    assert.matches(" second$", select(2, core(eps, nil, "get", k)))
  end)

  it("fenced writes: etcd itself refuses when the lock's key is gone (broken from outside)", function()
    local k = "spec/fence2/" .. math.random(1e9)
    local s1 = dir .. "/s1"
    local p1 = core_bg(dir .. "/f1", eps, "fenced", "fence2", k, "late", s1, 10)
    assert.matches("^ok", first_line(dir .. "/f1"))
    local st, out = C:etcdctl("del --prefix fence2/")
    assert.equal(0, st, out)
    H.write(s1, "")
    assert.is_true(H.wait_exit(p1, 10))
    assert.matches("put lost|not written: the lock .* is no longer held with token", H.slurp(dir .. "/f1"))
    assert.matches("^ENOENT", select(2, core(eps, nil, "get", k)))
  end)

  it("a key bound to the process's lease goes within its TTL after the writer is SIGKILLed", function()
    local k = "spec/ttl/" .. math.random(1e9)
    local p = core_bg(dir .. "/t", eps, "put", k, "alive", "ttl=2")
    assert.matches("^ok", first_line(dir .. "/t"))
    ar.sleep(2.5)                                      -- kept alive past one TTL
    assert.matches(" alive$", select(2, core(eps, nil, "get", k)))
    H.kill(p, "KILL")
    local t0 = ar.now()
    assert.is_true(H.wait_until(function()
      return core(eps, nil, "get", k) == 1
    end, 2 + 2.5))
    assert.is_true(ar.now() - t0 < 4.5)
  end)

  it("bad input: endpoints, names, ttl, a server that is not etcd", function()
    local function code(l) return l:match("^([^|]*)|") end
    for _, bad in ipairs({ "", "host", "host:", ":2379", "h:0", "h:99999", "h:1,", "a b:1",
                           "http://h:1", "u:p@h:1" }) do
      local st, line = core(bad, nil, "try", "x", 0)
      assert.equal(1, st, bad)
      assert.equal("EINVAL", code(line), bad .. ": " .. line)
    end
    for _, name in ipairs({ "", "/x", "x/", "a//b", string.rep("n", 201) }) do
      local st, line = core(eps, nil, "try", name, 0)
      assert.equal(1, st)
      assert.equal("EINVAL", code(line), name)
    end
    local st, line = core(eps, nil, "try", "t", 0, 0)
    assert.equal(1, st)
    assert.equal("ERANGE", code(line))
    -- an HTTP server that is not etcd: a clear error, at once
    local port = C.port + 40
    local srv = H.spawn("exec " .. H.python .. " -m http.server --bind 127.0.0.1 " .. port)
    bg[#bg + 1] = srv
    assert.is_true(H.wait_until(function()
      return H.sh("curl -s -o /dev/null http://127.0.0.1:" .. port .. "/") == 0
    end, 10))
    local t0 = ar.now()
    st, line = core("127.0.0.1:" .. port, nil, "try", "x", 3)
    assert.equal(1, st)
    assert.equal("EPROTO", code(line), line)
    assert.matches("not etcd's JSON gateway", line)
    assert.is_true(ar.now() - t0 < 3)
  end)

  -- atomrun_etcd_txn (src/etcd/txn.c), through the driver's txn words.
  describe("the typed txn", function()
    local base
    before_each(function() base = "spec/txn/" .. math.random(1e9) .. "/" end)

    --- The driver's txn output as a table: succeeded, revision, ops[i] =
    --- {type, count, more, deleted, kvs = {...}, prev = {...}}.
    local function parse(out)
      local res = { ops = {} }
      for line in out:gmatch("[^\n]+") do
        local s, rev = line:match("^ok (%d) (%d+)$")
        local i, ty, count, more, deleted = line:match("^op (%d+) (%a+) (%d+) (%d) (%d+)$")
        local tag, k, v, c, m, ver, l = line:match("^(%a+) (%S+) (%S*) (%d+) (%d+) (%d+) (%d+)$")
        if s then
          res.succeeded, res.revision = s == "1", tonumber(rev)
        elseif i then
          res.ops[#res.ops + 1] = { type = ty, count = tonumber(count), more = more == "1",
                                    deleted = tonumber(deleted), kvs = {}, prev = {} }
        elseif tag then
          local op = res.ops[#res.ops]
          local list = tag == "kv" and op.kvs or op.prev
          list[#list + 1] = { key = k, value = v, create = tonumber(c), mod = tonumber(m),
                              version = tonumber(ver), lease = tonumber(l) }
        end
      end
      return res
    end
    local function txn(...)
      local st, _, out = core(eps, nil, "txn", ...)
      assert.equal(0, st, out)
      return parse(out)
    end
    local function keys(kvs)
      local t = {}
      for i, kv in ipairs(kvs) do t[i] = kv.key end
      return t
    end

    it("compares the mod revision: then when it holds, else (and its reads) when it does not", function()
      local k = base .. "k"
      local put = txn("then", "put", k, "v1")
      assert.is_true(put.succeeded)
      local rev = put.revision
      assert.equal(rev, txn("then", "get", k).ops[1].kvs[1].mod)
      local r = txn("cmp", k, "mod", "=", rev, "then", "put", k, "v2", "else", "get", k)
      assert.is_true(r.succeeded)
      assert.equal(1, #r.ops)
      assert.equal("put", r.ops[1].type)
      local rev2 = r.revision
      assert.is_true(rev2 > rev)
      -- the same revision again: someone wrote since, so else runs
      r = txn("cmp", k, "mod", "=", rev, "then", "put", k, "v3", "else", "get", k)
      assert.is_false(r.succeeded)
      assert.equal("range", r.ops[1].type)
      assert.same({ key = k, value = "v2", create = rev, mod = rev2, version = 2, lease = 0 },
                  r.ops[1].kvs[1])
      assert.equal(rev2, r.revision)                    -- nothing written
      -- the other results and targets
      assert.is_true(txn("cmp", k, "mod", ">", rev).succeeded)
      assert.is_false(txn("cmp", k, "mod", "<", rev2).succeeded)
      assert.is_true(txn("cmp", k, "mod", "!=", rev).succeeded)
      assert.is_true(txn("cmp", k, "version", "=", 2).succeeded)
      assert.is_true(txn("cmp", k, "create", "=", rev, "cmp", k, "value", "=", "v2").succeeded)
      assert.is_false(txn("cmp", k, "value", "=", "v1").succeeded)
      assert.is_true(txn("cmp", base .. "absent", "create", "=", 0).succeeded)
    end)

    it("puts with a lease: the key carries it, a compare sees it, it goes with the lease", function()
      local g = assert(C:post(1, "/v3/lease/grant", '{"TTL":60}'))
      local id = math.tointeger(tonumber(g.ID))
      local k = base .. "leased"
      assert.is_true(txn("then", "put", k, "v", "lease=" .. id).succeeded)
      local kv = txn("then", "get", k).ops[1].kvs[1]
      assert.equal(id, kv.lease)
      assert.is_true(txn("cmp", k, "lease", "=", id).succeeded)
      assert.is_false(txn("cmp", k, "lease", "=", 0).succeeded)
      -- a put that replaces it: prev_kv is what was there
      local r = txn("then", "put", k, "w", "lease=" .. id, "prevkv")
      assert.equal("v", r.ops[1].prev[1].value)
      assert.equal(id, r.ops[1].prev[1].lease)
      assert.truthy(C:post(1, "/v3/lease/revoke", '{"ID":"' .. id .. '"}'))
      assert.equal(0, txn("then", "get", k).ops[1].count)
      -- a lease that is gone: the server's refusal, named
      local st, line = core(eps, nil, "txn", "then", "put", k, "v", "lease=" .. id)
      assert.equal(1, st)
      assert.matches("^ENOENT|.*lease not found", line)
    end)

    it("reads a prefix in key order or by create revision, with revisions, limit, count, keys only", function()
      local rev = {}
      for _, n in ipairs({ "b", "a", "c" }) do rev[n] = txn("then", "put", base .. n, "v" .. n).revision end
      txn("then", "put", base:sub(1, -2) .. "0", "outside")   -- just past the prefix
      local r = txn("then", "get", base, "prefix")
      local o = r.ops[1]
      assert.same({ base .. "a", base .. "b", base .. "c" }, keys(o.kvs))
      assert.equal(3, o.count)
      assert.is_false(o.more)
      for _, kv in ipairs(o.kvs) do
        local n = kv.key:sub(-1)
        assert.equal(rev[n], kv.create)
        assert.equal(rev[n], kv.mod)
        assert.equal("v" .. n, kv.value)
      end
      assert.same({ base .. "b", base .. "a", base .. "c" },
                  keys(txn("then", "get", base, "prefix", "sort=create").ops[1].kvs))
      assert.same({ base .. "c", base .. "a", base .. "b" },
                  keys(txn("then", "get", base, "prefix", "sort=create", "desc").ops[1].kvs))
      o = txn("then", "get", base, "prefix", "limit=2").ops[1]
      assert.same({ base .. "a", base .. "b" }, keys(o.kvs))
      assert.is_true(o.more)
      assert.equal(3, o.count)
      o = txn("then", "get", base, "prefix", "count").ops[1]
      assert.same({}, o.kvs)
      assert.equal(3, o.count)
      o = txn("then", "get", base, "prefix", "keys").ops[1]
      assert.equal(3, #o.kvs)
      assert.equal("", o.kvs[1].value)
      assert.same({ base .. "a", base .. "b" },
                  keys(txn("then", "get", base .. "a", "end=" .. base .. "c").ops[1].kvs))
      -- several ops in one txn answer in order, at one revision
      r = txn("then", "get", base .. "c", "get", base, "prefix", "count", "get", base .. "none")
      assert.same({ 1, 3, 0 }, { r.ops[1].count, r.ops[2].count, r.ops[3].count })
    end)

    it("deletes: the count of keys deleted and, with prev_kv, the kvs they held", function()
      txn("then", "put", base .. "a", "va", "put", base .. "b", "vb")
      local r = txn("then", "del", base, "prefix", "prevkv")
      assert.equal("delete", r.ops[1].type)
      assert.equal(2, r.ops[1].deleted)
      assert.same({ base .. "a", base .. "b" }, keys(r.ops[1].prev))
      assert.same({ "va", "vb" }, { r.ops[1].prev[1].value, r.ops[1].prev[2].value })
      assert.equal(0, txn("then", "get", base, "prefix").ops[1].count)
      r = txn("then", "del", base .. "a")
      assert.equal(0, r.ops[1].deleted)
      assert.same({}, r.ops[1].prev)
    end)

    it("keys and values of any bytes round-trip: NUL, 0xff, bytes that are not UTF-8", function()
      local k = base .. "\\x00\\xff\\xfe/z"
      local v = "\\x00a\\x00\\xc3\\x28\\xff\\x20"
      assert.is_true(txn("then", "put", k, v).succeeded)
      local kv = txn("then", "get", k).ops[1].kvs[1]
      assert.equal(k, kv.key)
      assert.equal("\\x00a\\x00\\xc3(\\xff\\x20", kv.value)    -- "(" is 0x28
      assert.is_true(txn("cmp", k, "value", "=", v).succeeded)
      assert.is_false(txn("cmp", k, "value", "=", "\\x00a").succeeded)
      -- a prefix that ends in 0xff: its range ends past the last byte below it
      txn("then", "put", base .. "f\\xff\\xff", "1", "put", base .. "g", "2")
      assert.same({ base .. "f\\xff\\xff" },
                  keys(txn("then", "get", base .. "f\\xff", "prefix").ops[1].kvs))
    end)

    it("refuses bad arguments with EINVAL before sending, saying which", function()
      local k = base .. "k"
      local function refused(pattern, ...)
        local st, line = core(eps, nil, "txn", ...)
        assert.equal(1, st, line)
        assert.matches("^EINVAL|" .. pattern, line)
      end
      refused("etcd txn: compare 1 has no key", "cmp", "(null)", "mod", "=", 1)
      refused("etcd txn: compare 2: unknown target 9", "cmp", k, "mod", "=", 1, "cmp", k, 9, "=", 1)
      refused("etcd txn: compare 1: unknown result 7", "cmp", k, "mod", 7, 1)
      refused("etcd txn: then op 1 %(range%) has no key", "then", "get", "(null)")
      refused("etcd txn: else op 2: unknown type 7", "else", "get", k, 7, k)
      refused("etcd txn: then op 1: range_end and prefix both given", "then", "get", k, "prefix", "end=z")
      refused("etcd txn: then op 1: a put takes no range_end or prefix", "then", "put", k, "v", "prefix")
      refused("etcd txn: then op 1: unknown sort 9", "then", "get", k, "sort=9")
      -- the server's refusal: one key written twice in one txn
      refused(".*duplicate key", "then", "put", k, "1", "put", k, "2")
      assert.equal(0, txn("then", "get", k).ops[1].count)     -- nothing was written
    end)
  end)
end)

describe("etcd core over TLS #child", function()
  if not E.available() then
    pending("etcd is not installed")
    return
  end
  -- Two one-member clusters with etcd's default timing (a minimum lease
  -- TTL of 2 s): one that asks for client certificates, one with users.
  -- Not one with both: with auth on, etcd's gateway refuses any client
  -- certificate that has a CommonName ("... will be ignored and not used").
  local CC, CA, certs
  setup(function()
    build_driver()
    certs = E.make_certs(H.tmpdir())
    local t = {}
    for k, v in pairs(certs) do t[k] = v end
    t.client_auth = true
    CC = assert(E.start({ members = 1, port = E.base + 30, tls = t, heartbeat = 100, election = 1000 }))
    CA = assert(E.start({ members = 1, port = E.base + 35, tls = { ca = certs.ca,
                          server_cert = certs.server_cert, server_key = certs.server_key },
                          heartbeat = 100, election = 1000 }))
    local function ctl(a) local st, o, e = CA:etcdctl(a); assert(st == 0, a .. ": " .. o .. e) end
    ctl("user add root:rootpw")
    ctl("role add root")
    ctl("user grant-role root root")
    ctl("user add alice:s3cret")
    ctl("role add locker")
    -- a lock's keys are the name's own (auth/, as etcdctl lock's), its
    -- tickets and creator records atomrun's (atomrun/)
    ctl("role grant-permission locker --prefix=true readwrite atomrun/")
    ctl("role grant-permission locker --prefix=true readwrite auth/")
    ctl("user grant-role alice locker")
    ctl("auth enable")
  end)
  teardown(function()
    if CC then CC:stop() end
    if CA then CA:stop() end
    H.cleanup()
  end)

  local function tls(extra)
    local e = { ETCD_TLS = "1", ETCD_CA = certs.ca }
    for k, v in pairs(extra or {}) do e[k] = v end
    return e
  end
  local alice = { ETCD_USER = "alice", ETCD_PASSWORD = "s3cret" }

  it("locks with a client certificate signed by the test's CA", function()
    local st, line = core(CC:endpoints(), tls({ ETCD_CERT = certs.cert, ETCD_KEY = certs.key }), "try", "tls", 0)
    assert.equal(0, st, line)
    assert.matches("^ok %d+ 1$", line)
  end)

  it("without the client certificate the cluster refuses, naming the endpoint", function()
    local st, line = core(CC:endpoints(), tls({ ETCD_OP_TIMEOUT = "1" }), "try", "tls", 0)
    assert.equal(1, st)
    assert.matches("^unavailable|.*127%.0%.0%.1:" .. CC.port, line)
  end)

  it("a CA that did not sign the server: refused, naming the endpoint and the certificate", function()
    local other = E.make_certs(H.tmpdir())
    local st, line = core(CA:endpoints(), tls({ ETCD_CA = other.ca, ETCD_OP_TIMEOUT = "1",
                                                ETCD_USER = "alice", ETCD_PASSWORD = "s3cret" }),
                          "try", "tls", 0)
    assert.equal(1, st)
    assert.matches("^unavailable|.*127%.0%.0%.1:" .. CA.port .. ".*[Cc]ertificate", line)
  end)

  it("locks as an etcd user", function()
    local st, line = core(CA:endpoints(), tls(alice), "try", "auth", 0)
    assert.equal(0, st, line)
    assert.matches("^ok %d+ 1$", line)
  end)

  it("a wrong password is a clear error that does not print it", function()
    local st, line = core(CA:endpoints(), tls({ ETCD_USER = "alice", ETCD_PASSWORD = "wrong-pw" }), "try", "auth", 0)
    assert.equal(1, st)
    assert.matches('^EACCES|etcd user "alice" could not log in', line)
    assert.matches("invalid user ID or password", line)
    assert.is_nil(line:find("wrong-pw", 1, true))
  end)

  it("no user on a cluster with auth: a clear error", function()
    local st, line = core(CA:endpoints(), tls(), "try", "auth", 0)
    assert.equal(1, st)
    assert.matches("^EACCES|.*user", line)
  end)

  it("ttl below the cluster's minimum is an error naming the minimum", function()
    local st, line = core(CA:endpoints(), tls(alice), "try", "auth", 0, 1)
    assert.equal(1, st)
    assert.equal("ERANGE|ttl 1 is below the cluster's minimum lease TTL of 2 s|0|", line)
  end)
end)
