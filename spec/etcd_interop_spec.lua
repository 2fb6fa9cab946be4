-- One name, one lock, whichever etcd client takes it (issue 20): atomrun's
-- etcd locks are on etcd's own keys (NAME/<lease hex>, as clientv3's
-- concurrency.Mutex and `etcdctl lock NAME` make them), so atomrun and
-- etcdctl exclude each other.  Real processes on the spec's 3-member
-- cluster: the spec holds with atomrun.lock, /usr/bin/etcdctl (E.ctl)
-- holds and waits in background processes.
local H = require "spec.helper"
local E = require "spec.etcd"
local ar = H.ar

local HOST = H.slurp("/proc/sys/kernel/hostname"):gsub("\n$", "")

-- An atomrun contender in another process: takes url (mode, slots from
-- the arguments), writes its pid to ready, then holds until stop exists.
local HOLD = [[
  local url, ready, stop, mode, slots = ...
  local lk = assert(atomrun.lock(url, { mode = mode, slots = tonumber(slots) }))
  assert(atomrun.replace(ready, tostring(atomrun.pid())))
  while not atomrun.stat(stop) do atomrun.sleep(0.02) end
  assert(lk:unlock())
]]

-- An atomrun member of the queue test: waits for url, then, holding it,
-- bumps the counter file NON-atomically (read, pause, write: two holders
-- at once would lose a bump) and appends "atomrun TOKEN" to the log.
local BUMP = [[
  local url, counter, log = ...
  local lk = assert(atomrun.lock(url))
  local f = assert(io.open(counter)); local n = tonumber(f:read("a")) or 0; f:close()
  atomrun.sleep(0.1)
  f = assert(io.open(counter, "w")); f:write(tostring(n + 1)); f:close()
  f = assert(io.open(log, "a")); f:write("atomrun ", lk.token, "\n"); f:close()
  assert(lk:unlock())
]]

describe("etcd locks beside etcdctl lock", function()
  local C = E.cluster()
  if not C then return end
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(E.teardown(C))

  -- The etcdctl command line for this cluster (as Cluster:etcdctl builds
  -- it, without the command timeout: a lock waits as long as it takes).
  local function ctl(args)
    local eps = {}
    for _, i in ipairs(C.all) do eps[#eps + 1] = C:http(i) end
    return "ETCDCTL_API=3 " .. H.q(E.ctl) .. " --dial-timeout=3s --endpoints="
      .. H.q(table.concat(eps, ",")) .. " " .. args
  end

  -- `etcdctl lock NAME [-- sh -c cmd]` in the background (tracked), its
  -- output and status in dir/tag.out, .err, .st (H.result).  Without a
  -- command it holds until killed, and the pid is etcdctl's own (exec).
  local function ctl_lock(tag, name, cmd, ttl)
    local line = ctl("lock" .. (ttl and " --ttl=" .. ttl or "") .. " " .. H.q(name)
      .. (cmd and " -- sh -c " .. H.q(cmd) or ""))
    if not cmd then
      line = line:gsub("^ETCDCTL_API=3 ", "ETCDCTL_API=3 exec ")
      return H.track(H.spawn(line .. " >" .. H.q(dir .. "/" .. tag .. ".out")))
    end
    return H.bg(dir, tag, line)
  end

  -- The keys directly under NAME/, in create-revision order, each {key =,
  -- create =, lease = hex, value =}: read with core.etcd.txn (its bytes
  -- decoded), as any client sees them.
  local function keys(name)
    local a = assert(ar.etcd.txn(C:url("io"), { success = { { range = {
      key = name .. "/", prefix = true, sort = "create" } } } }))
    local t = {}
    for _, kv in ipairs(a.responses[1].kvs or {}) do
      if not kv.key:sub(#name + 2):find("/", 1, true) then
        t[#t + 1] = { key = kv.key, create = kv.create_revision,
                      lease = string.format("%x", kv.lease or 0), value = kv.value or "" }
      end
    end
    return t
  end

  local function wait_keys(name, n)
    assert.is_true(H.wait_until(function() return #keys(name) == n end, 15),
                   "never " .. n .. " keys under " .. name .. "/")
    return keys(name)
  end

  it("puts atomrun's key where clientv3 puts its own: NAME/<lease hex>, the record as its value", function()
    local lk = assert(ar.lock(C:url("io/key")))
    local k = wait_keys("io/key", 1)[1]
    assert.equal("io/key/" .. lk.lease, lk.key)
    assert.equal(lk.key, k.key)
    assert.equal(lk.token, k.create)
    local rec = ar.json.decode(k.value)
    assert.equal(ar.pid(), math.tointeger(rec.pid))
    assert.equal(HOST, rec.host)
    assert.equal("exclusive", rec.mode)
    -- nothing of ours under atomrun/lock/ any more: the old layout is gone
    local st, out = C:etcdctl("get --prefix --keys-only atomrun/lock/")
    assert.equal(0, st)
    assert.equal("", out)
    lk:unlock()
  end)

  it("a second key of one process on one lease gets a suffix; etcd's waiters look only at create revisions", function()
    local sem = ar.semaphore(C:url("io/two"), 2)
    local a = assert(sem:acquire())
    local b = assert(sem:acquire())
    assert.equal(a.lock.lease, b.lock.lease)
    assert.equal("io/two/" .. a.lock.lease, a.lock.key)
    assert.matches("^io/two/" .. a.lock.lease .. "%-%d+$", b.lock.key)
    assert(a:release())
    -- the bare key is free again once its delete was confirmed
    local c = assert(sem:acquire())
    assert.equal("io/two/" .. c.lock.lease, c.lock.key)
    assert(b:release())
    assert(c:release())
  end)

  for _, case in ipairs({ { "exclusive" }, { "shared" }, { "semaphore", 3 } }) do
    local mode, slots = case[1], case[2]
    it("an atomrun " .. mode .. " holder: `etcdctl lock NAME cmd` runs cmd only after the release", function()
      local name = "io/first/" .. mode
      local lk = assert(ar.lock(C:url(name), { mode = mode ~= "semaphore" and mode or nil,
                                              slots = slots }))
      local ran = dir .. "/ran"
      local pid = ctl_lock("ctl", name, "echo \"$ETCD_LOCK_KEY\" >" .. H.q(ran))
      local q = wait_keys(name, 2)           -- etcdctl's key is queued behind ours
      assert.equal(lk.key, q[1].key)
      assert.equal("", q[2].value)
      ar.sleep(1.0)
      assert.is_false(H.exists(ran), "etcdctl ran its command while atomrun held " .. name)
      assert.is_true(H.alive(pid))
      local released = ar.now()
      assert(lk:unlock())
      assert.is_true(H.wait_file(ran, 10))
      assert.is_true(ar.now() - released < 5)
      assert.equal(q[2].key .. "\n", H.slurp(ran))
      assert.equal(0, (H.result(dir, "ctl")))
    end)
  end

  it("an etcdctl holder: atomrun.lock is busy and names it, atomrun who too", function()
    local name = "io/ctl"
    ctl_lock("ctl", name)                    -- holds until killed
    local k = wait_keys(name, 1)[1]
    assert.equal("", k.value)
    assert.equal(name .. "/" .. k.lease, k.key)   -- clientv3's own layout
    local lk, msg, code, h = ar.lock(C:url(name), { wait = false })
    assert.is_nil(lk)
    assert.equal("busy", code)
    assert.matches("is locked by an etcd client without an atomrun record, lease " .. k.lease
                   .. " %(token " .. k.create .. "%)", msg)
    assert.equal("an etcd client without an atomrun record, lease " .. k.lease, h.foreign)
    assert.equal(k.create, h.token)
    assert.equal(k.lease, h.lease)
    assert.equal("exclusive", h.mode)
    assert.is_nil(h.pid)
    -- shared and semaphore requests meet it as an exclusive holder too
    for _, o in ipairs({ { mode = "shared", wait = false }, { slots = 2, wait = false } }) do
      local l2, _, c2 = ar.lock(C:url(name), o)
      assert.is_nil(l2)
      assert.equal("busy", c2)
    end
    -- a timeout says the same
    lk, msg, code = ar.lock(C:url(name), { timeout = 0.3 })
    assert.is_nil(lk)
    assert.equal("timeout", code)
    assert.matches("locked by an etcd client without an atomrun record, lease " .. k.lease, msg)
    local st, out = H.run("who", C:url(name))
    assert.equal(1, st, out)
    assert.matches(": held\n  holds   an etcd client without an atomrun record, lease "
                   .. k.lease .. ", token " .. k.create .. "\n", out)
    st, out = H.run("who", "--json", C:url(name))
    local r = ar.json.decode(out)[1]
    assert.is_true(r.held)
    assert.equal(k.lease, r.holders[1].lease)
    assert.equal(k.create, r.holders[1].token)
    assert.matches("without an atomrun record", r.holders[1].foreign)
    assert.equal(0, #r.waiters)              -- ours went: wait=false leaves no key
    -- once --status names it the same way
    st, out = H.run("once", "--status", C:url(name))
    assert.equal(0, st, out)
    assert.matches(" is running: held by an etcd client without an atomrun record, lease "
                   .. k.lease, out)
    -- --revoke breaks it as it breaks ours: the name is free at once
    local err
    st, out, err = H.run("who", "--revoke", C:url(name))
    assert.equal(0, st, err)
    assert.matches("revoked lease " .. k.lease .. " of an etcd client without an atomrun record "
                   .. "%(token " .. k.create .. "%)", err)
    lk = assert(ar.lock(C:url(name), { wait = false }))
    lk:unlock()
  end)

  it("3 atomrun and 2 etcdctl waiters get the lock in create-revision order, one at a time", function()
    local name, url = "io/queue", C:url("io/queue")
    local counter, log = dir .. "/counter", dir .. "/log"
    H.write(counter, "0")
    H.write(log, "")
    local first = assert(ar.lock(url))
    -- the etcdctl holder's token: its key's create revision, read back
    local ctl_bump = table.concat({
      "n=$(cat " .. H.q(counter) .. ")", "sleep 0.1", "echo $((n + 1)) >" .. H.q(counter),
      "rev=$(" .. ctl("get -w fields \"$ETCD_LOCK_KEY\"") .. " | sed -n 's/^\"CreateRevision\" : //p')",
      "echo \"etcdctl $rev\" >>" .. H.q(log) }, "; ")
    local kinds = { "atomrun", "etcdctl", "atomrun", "etcdctl", "atomrun" }
    for i, kind in ipairs(kinds) do
      if kind == "atomrun" then H.bg_lua(BUMP, url, counter, log)
      else ctl_lock("ctl" .. i, name, ctl_bump) end
      wait_keys(name, i + 1)                 -- queued in this order
    end
    local q = keys(name)
    for i, kind in ipairs(kinds) do
      -- atomrun's records, etcdctl's empty values: the queue as started
      assert.equal(kind == "etcdctl", q[i + 1].value == "", q[i + 1].key)
    end
    assert(first:unlock())
    assert.is_true(H.wait_until(function()
      return select(2, H.slurp(log):gsub("\n", "")) == #kinds
    end, 30), H.slurp(log))
    assert.equal(tostring(#kinds), (H.slurp(counter):gsub("%s+$", "")))
    local prev, i = first.token, 0
    for kind, token in H.slurp(log):gmatch("(%a+) (%d+)\n") do
      i = i + 1
      token = math.tointeger(tonumber(token))
      assert.equal(kinds[i], kind, H.slurp(log))
      assert.equal(q[i + 1].create, token)   -- create-revision order
      assert.is_true(token > prev, H.slurp(log))
      prev = token
    end
    assert.equal(#kinds, i)
    for j = 2, 4, 2 do assert.equal(0, (H.result(dir, "ctl" .. j))) end
  end)

  it("a SIGKILLed etcdctl holder: atomrun has the lock within etcdctl's session TTL", function()
    local name, ttl = "io/killed", 3
    local pid = ctl_lock("ctl", name, nil, ttl)
    local k = wait_keys(name, 1)[1]
    H.kill(pid, "KILL")
    assert.is_true(H.wait_exit(pid, 5))
    local killed = ar.now()
    local lk, msg = ar.lock(C:url(name), { timeout = 3 * ttl })
    local took = ar.now() - killed
    assert.is_truthy(lk, msg)
    assert.is_true(took <= ttl + 1, "took " .. took .. " s")
    assert.is_true(lk.token > k.create)
    lk:unlock()
  end)

  it("`etcdctl elect -l NAME` prints atomrun's holder key and record as the leader's", function()
    local name = "io/elect"
    local lk = assert(ar.lock(C:url(name)))
    local st, out = H.sh("timeout 3 sh -c " .. H.q(ctl("elect -l " .. H.q(name))))
    assert.equal(124, st)                    -- it observes until stopped
    local key, value = out:match("^([^\n]+)\n([^\n]+)\n")
    assert.equal(lk.key, key, out)
    local rec = ar.json.decode(value)
    assert.equal(ar.pid(), math.tointeger(rec.pid))
    assert.equal(HOST, rec.host)
    lk:unlock()
  end)

  it("holders of NAME/x never block NAME, whoever holds them", function()
    local stop = dir .. "/stop"
    H.bg_lua(HOLD, C:url("io/nest/x"), dir .. "/ready", stop, "exclusive", "1")
    H.ready_pid(dir .. "/ready")
    ctl_lock("ctl", "io/nest/x")             -- waits behind atomrun's holder of io/nest/x
    assert.is_true(H.wait_until(function()
      local _, out = C:etcdctl("get --prefix --keys-only io/nest/x/")
      return select(2, out:gsub("[^\n]+", "")) == 2
    end, 15))
    local lk, msg = ar.lock(C:url("io/nest"), { wait = false })
    assert.is_truthy(lk, msg)
    assert.equal(1, #keys("io/nest"))         -- ours alone directly under io/nest/
    local st, out = H.run("who", C:url("io/nest"))
    assert.equal(1, st)
    assert.matches(": held\n  holds   pid " .. ar.pid() .. " ", out)
    assert.is_nil(out:find("waits", 1, true))
    lk:unlock()
    H.write(stop, "")
  end)

  it("refuses names that would not be one lock: a trailing /, an empty segment, atomrun's own space", function()
    for _, bad in ipairs({ "io/bad/", "io//bad", "/io", "atomrun", "atomrun/creator/x",
                           "atomrun/lock/x" }) do
      local lk, msg, code = ar.lock(C:url(bad), { wait = false })
      assert.is_nil(lk, bad)
      assert.equal("EINVAL", code, bad .. ": " .. tostring(msg))
    end
    local lk = assert(ar.lock(C:url("atomrunner/x"), { wait = false }))   -- only the segment
    lk:unlock()
  end)
end)
