-- Issue 23, points 6-9 and 11, on the spec's real 3-member cluster
-- (spec/etcd.lua): a name must never stay held by nobody, one name is one
-- kind of lock, a cluster is one cluster however its endpoints are written,
-- and a holder's text from etcd reaches the terminal escaped.  The faults
-- are made for real: spec/faultproxy.py stands between the client and one
-- member and black-holes the unlock's txn, or holds an enqueue back and
-- delivers it after the lock was taken and released; every fault is
-- checked in the proxy's log, so a fault that did not happen cannot pass.
-- What etcd holds is read back with etcdctl, never through the proxy.
local H = require "spec.helper"
local E = require "spec.etcd"
local ar = H.ar
local json = ar.json

-- Hold url in another process until `stop` exists.  kind: "exclusive",
-- "shared" or "sem:N" (a slot of atomrun.semaphore(url, N)); cmd: the
-- command recorded for others to see ("" for this process's own).  The
-- ready file gets the pid once it holds.
local HOLD = [[
  local url, ready, stop, kind, cmd = ...
  local n = tonumber(kind:match("^sem:(%d+)$"))
  local lk
  if n then
    lk = assert(atomrun.semaphore(url, n):acquire({ timeout = 60 }))
  else
    lk = assert(atomrun.lock(url, { mode = kind, cmd = cmd ~= "" and cmd or nil }))
  end
  atomrun.replace(ready, tostring(atomrun.pid()))
  while not atomrun.stat(stop) do atomrun.sleep(0.02) end
  lk:unlock()
]]

-- No byte below 0x20 (but none is wanted at all), no DEL, no C1 control.
local function has_control(s)
  return s:find("[%c\127]") ~= nil or s:find("\194[\128-\159]") ~= nil
end

describe("etcd lock liveness, identity, kinds and holder text (issue 23)", function()
  local C = E.cluster()
  if not C then return end
  local dir, tags = nil, 0
  before_each(function() dir = H.tmpdir() end)
  after_each(E.teardown(C))

  -- Start a holder (HOLD) of url; returns its pid and its stop file.
  local function hold(url, kind, cmd)
    tags = tags + 1
    local ready, stop = dir .. "/ready" .. tags, dir .. "/stop" .. tags
    H.bg_lua(HOLD, url, ready, stop, kind or "exclusive", cmd or "")
    return H.ready_pid(ready), stop
  end

  -- The keys of NAME's queue, as etcd has them (etcdctl, every member).
  local function queue_keys(name)
    local st, out, err = C:etcdctl("get --prefix --keys-only " .. H.q(name .. "/"))
    assert.equal(0, st, err)
    local keys = {}
    for k in out:gmatch("[^\n]+") do keys[#keys + 1] = k end
    return keys
  end

  -- `atomrun who --json url`, decoded: the report's one entry.
  local function who_json(url)
    local _, out, err = H.run("who", "--json", url)
    local ok, rep = pcall(json.decode, out)
    assert(ok, "who --json printed no JSON: " .. out .. err)
    return rep[1]
  end

  -- ------------------------------------------------------------ point 6

  describe("a release without an answer leaves no name held by nobody (point 6)", function()
    -- The proxy in front of member 1 black-holes the unlock's txn (and a
    -- revoke) while the lease keepalives still pass: the cluster is fine,
    -- only our release never gets an answer.  Without a fix the key stays
    -- on a lease this process keeps alive.
    local TXN, REVOKE = "/v3/kv/txn", "/v3/lease/revoke"
    local function dark_proxy()
      local ctl = dir .. "/ctl"
      local p = C:faultproxy(dir, "--control " .. H.q(ctl))
      return p, function(word) H.write(ctl, word) end
    end
    -- Another process locks url: true once it got it within `within` s.
    local function other_gets(url, within)
      local st, out, err = H.sh(H.cmd("-e", [[
        local lk, msg, code = atomrun.lock(..., { timeout = tonumber(select(2, ...)) })
        io.write(tostring(code), " ", tostring(msg))
        os.exit(lk and 0 or 1)]], url, tostring(within)))
      return st == 0, out .. err
    end

    it("the only lock on its lease: unlock says so, the lease is let go, the name is free within the TTL", function()
      local name, ttl = "rel/alone", 4
      local p, say = dark_proxy()
      local lk = assert(ar.lock(p.url(name), { ttl = ttl }))
      say("blackhole " .. TXN .. " " .. REVOKE)
      local ok, msg, code = lk:unlock()
      assert.is_nil(ok)
      assert.equal("unavailable", code)
      assert.matches("the release of " .. name .. " was not confirmed %(.*%): the lease %x+ was let go, so "
        .. name .. " is free within " .. (2 * ttl + 2) .. " s at the latest", msg)
      assert.is_true(p.events("^blackholed POST " .. TXN) >= 1)
      assert.is_false(lk.locked)
      -- asked again while nothing answers: the same failure, not a blind true
      ok, msg, code = lk:unlock()
      assert.is_nil(ok)
      assert.equal("unavailable", code)
      assert.matches("the release of " .. name .. " is still not confirmed", msg)
      -- the keepalives stopped: through the other members, the name is
      -- free within the bound while the proxy still black-holes our txns
      local got, why = other_gets(C:url(name), 2 * ttl + 2 + 10)
      assert.is_true(got, why)
      assert.equal(0, #queue_keys(name))
      -- the cluster answers again: the revoke is answered, unlock says true
      say("pass")
      assert.is_true(H.wait_until(function() return lk:unlock() == true end, 20))
      assert.is_true(lk:unlock())
    end)

    it("a lease other locks share: the release is retried until a member answers; the others are not lost", function()
      local name, ttl = "rel/shared", 10
      local p, say = dark_proxy()
      local other = assert(ar.lock(p.url("rel/shared-other"), { ttl = ttl }))
      local lk = assert(ar.lock(p.url(name), { ttl = ttl }))
      say("blackhole " .. TXN)
      local ok, msg, code = lk:unlock()
      assert.is_nil(ok)
      assert.equal("unavailable", code)
      assert.matches("the release of " .. name .. " was not confirmed %(.*%): the release is retried "
        .. "in the background, so " .. name .. " is free once a member answers", msg)
      ok, msg, code = lk:unlock()
      assert.is_nil(ok)
      assert.equal("unavailable", code)
      assert.matches("still not confirmed", msg)
      assert.equal(1, #queue_keys(name))                     -- not released yet, truly
      assert.is_false(other:lost())
      say("pass")
      local got, why = other_gets(C:url(name), 20)            -- the retry landed
      assert.is_true(got, why)
      assert.is_true(H.wait_until(function() return lk:unlock() == true end, 10))
      assert.is_false(other:lost())
      assert.is_true(other:unlock())
    end)

    it("with_lock returns the failed release instead of fn's results", function()
      local name = "rel/with"
      local p, say = dark_proxy()
      local v, msg, code = ar.with_lock(p.url(name), { ttl = 4 }, function()
        say("blackhole " .. TXN .. " " .. REVOKE)
        return "fn's result"
      end)
      assert.is_nil(v, "with_lock swallowed the failed release")
      assert.equal("unavailable", code)
      assert.matches("the release of " .. name .. " was not confirmed", msg)
      say("pass")
      local got, why = other_gets(C:url(name), 20)
      assert.is_true(got, why)
    end)

    it("with_lock returns 'lost' when the lock was lost while fn ran", function()
      local url = C:url("rel/with-lost")
      local v, msg, code = ar.with_lock(url, { ttl = 5 }, function()
        local q = assert(ar._etcd_queue(url))
        local st, _, err = C:etcdctl("lease revoke " .. q[1].lease)  -- broken from outside
        assert.equal(0, st, err)
        return "fn's result"
      end)
      assert.is_nil(v)
      assert.equal("lost", code, msg)
      -- an error in fn still propagates, and the lock is released
      local e = H.err_of(function() ar.with_lock(url, nil, function() error("boom") end) end)
      assert.matches("boom", e)
      assert(ar.lock(url, { wait = false })):unlock()
    end)

    it("a release whose answer was lost and that was sent again is a release, not 'lost'", function()
      -- the proxy forwards the lock's second txn (the release) and drops its
      -- answer: the client sends it again to member 2, where the compare
      -- fails because the first copy already deleted the key
      local name = "rel/resent"
      local p = C:faultproxy(dir, "--drop 2")
      local url = "etcd://" .. p.endpoint .. "," .. C:endpoint(2) .. "/" .. name
      local lk = assert(ar.lock(url, { ttl = 5, timeout = 20 }))
      local ok, msg, code = lk:unlock()
      assert.equal(1, p.events("dropped"), H.slurp(p.log))
      assert.is_true(ok, tostring(msg) .. " " .. tostring(code))
      assert.equal(0, #queue_keys(name))
      -- and a key removed by somebody else is still "lost"
      lk = assert(ar.lock(C:url(name), { ttl = 5 }))
      local st, out = C:etcdctl("del " .. lk.key)
      assert.equal(0, st, out)
      ok, msg, code = lk:unlock()
      assert.is_nil(ok)
      assert.equal("lost", code, msg)
    end)
  end)

  -- ------------------------------------------------------------ point 7

  describe("a late enqueue lands on nothing (point 7)", function()
    -- The enqueue txn is held back by the proxy in front of member 1 (its
    -- client is cut, so the client moves on); the spec delivers it to etcd
    -- when it wants, after the lock was dealt with.
    local function late_proxy()
      local ctl = dir .. "/ctl"
      return C:faultproxy(dir, "--late 1 --late-hold --control " .. H.q(ctl)), ctl
    end
    local function deliver(p, ctl)
      H.write(ctl, "deliver")
      assert.is_true(H.wait_until(function() return p.events("^txn 1 delivered late") == 1 end, 10),
        "the held enqueue was not delivered:\n" .. H.slurp(p.log))
    end

    it("delivered after the lock was taken through another member and released: no key comes back", function()
      local name = "late/after-release"
      local p, ctl = late_proxy()
      local url = "etcd://" .. p.endpoint .. "," .. C:endpoint(2) .. "/" .. name
      local lk = assert(ar.lock(url, { timeout = 10 }))
      assert.equal(1, p.events("^txn 1 held"))               -- the fault happened
      assert.is_true(lk:unlock())
      assert.same({}, queue_keys(name))
      deliver(p, ctl)
      assert.equal(1, p.events("^txn 1 delivered late.*not succeeded"))
      assert.same({}, queue_keys(name))                       -- nothing re-created
      -- another process gets the name at once, and so does this one
      local st, _, err = H.sh(H.cmd("-e", "assert(atomrun.lock(..., { wait = false }))", C:url(name)))
      assert.equal(0, st, err)
      assert(ar.lock(C:url(name), { timeout = 5 })):unlock()
    end)

    it("delivered after a waiter gave up without an answer: the late copy lands on nothing", function()
      local name = "late/give-up"
      local p, ctl = late_proxy()
      local lk, msg, code = ar.lock(p.url(name), { timeout = 3 })
      assert.is_nil(lk)
      assert.equal("unavailable", code, msg)
      assert.equal(1, p.events("^txn 1 held"))
      deliver(p, ctl)
      assert.equal(1, p.events("^txn 1 delivered late.*not succeeded"))
      assert.same({}, queue_keys(name))
      local st, _, err = H.sh(H.cmd("-e", "assert(atomrun.lock(..., { wait = false }))", C:url(name)))
      assert.equal(0, st, err)
    end)

    it("lock and unlock stay two consensus writes (revisions), with a ticket per acquisition", function()
      local url = C:url("late/writes")
      assert(ar.lock(url)):unlock()                           -- the session's lease first
      local function revision()
        local _, out = C:etcdctl("get --write-out=json nothing")
        return json.decode(out).header.revision
      end
      local function tickets()
        local _, out = C:etcdctl("get --prefix --keys-only atomrun/ticket/")
        return select(2, out:gsub("[^\n]+", ""))
      end
      local r0, t0 = revision(), tickets()
      for _ = 1, 5 do assert(ar.lock(url)):unlock() end
      assert.equal(10, revision() - r0)
      assert.equal(t0, tickets())          -- an answered enqueue leaves no ticket behind
    end)
  end)

  -- ------------------------------------------------------------ point 8

  describe("one cluster however its endpoints are written (point 8)", function()
    it("the same name with the endpoints reordered or repeated: deadlock, not a wait for ourselves", function()
      local name = "ident/order"
      local lk = assert(ar.lock(C:url(name)))
      for _, list in ipairs({ { 3, 1, 2 }, { 2, 2, 1, 3, 1 }, { 3 } }) do
        local url = "etcd://" .. C:endpoints(list) .. "/" .. name
        local l2, msg, code = ar.lock(url, { timeout = 8 })
        assert.is_nil(l2)
        assert.equal("deadlock", code, msg)
        assert.matches("already locked by this script", msg)
      end
      -- a shared lock of the name held: an exclusive one asked by another
      -- spelling is the same deadlock
      assert.is_true(lk:unlock())
      local sh = assert(ar.lock(C:url(name), { mode = "shared" }))
      local _, _, code = ar.lock("etcd://" .. C:endpoints({ 2, 3, 1 }) .. "/" .. name, { timeout = 8 })
      assert.equal("deadlock", code)
      assert.is_true(sh:unlock())
      -- released: every spelling takes it
      assert(ar.lock("etcd://" .. C:endpoints({ 3, 2, 1 }) .. "/" .. name, { timeout = 5 })):unlock()
    end)

    it("a host name in other capitals is the same endpoint", function()
      local name = "ident/case"
      local eps = {}
      for i = 1, 3 do eps[i] = "localhost:" .. (C.port + i - 1) end
      local lk = assert(ar.lock("etcd://" .. table.concat(eps, ",") .. "/" .. name))
      local _, msg, code = ar.lock("etcd://" .. table.concat(eps, ","):upper() .. "/" .. name,
        { timeout = 8 })
      assert.equal("deadlock", code, msg)
      assert.is_true(lk:unlock())
    end)
  end)

  -- ------------------------------------------------------------ point 9

  describe("one name, one kind (point 9)", function()
    it("an exclusive lock held elsewhere: a semaphore slot on the name is busy and says what holds it", function()
      local url = C:url("kind/x-then-sem")
      local pid = hold(url, "exclusive")
      local sem = ar.semaphore(url, 3)
      local slot, msg, code, h = sem:acquire({ wait = false })
      assert.is_nil(slot, "a semaphore slot was granted beside an exclusive holder")
      assert.equal("busy", code)
      assert.matches("is locked by pid " .. pid .. " on .*, as an exclusive lock$", msg)
      assert.equal("exclusive", h.mode)
      slot, msg, code = sem:acquire({ timeout = 0.5 })
      assert.is_nil(slot)
      assert.equal("timeout", code)
      assert.matches("locked by pid " .. pid .. " .*as an exclusive lock", msg)
      assert.equal(1, #queue_keys("kind/x-then-sem"))        -- the waiters left no key
    end)

    it("semaphore slots held elsewhere: an exclusive and a shared lock are busy; a slot of the same semaphore is granted", function()
      local url = C:url("kind/sem-then-x")
      local pid = hold(url, "sem:3")
      local lk, msg, code, h = ar.lock(url, { wait = false })
      assert.is_nil(lk)
      assert.equal("busy", code)
      assert.matches("is locked by pid " .. pid .. " on .*, as a slot of a semaphore of 3$", msg)
      assert.equal("semaphore", h.mode)
      assert.equal(3, h.slots)
      lk, msg, code = ar.lock(url, { mode = "shared", wait = false })
      assert.is_nil(lk, "a shared lock was granted beside a semaphore slot")
      assert.equal("busy", code)
      assert.matches("as a slot of a semaphore of 3", msg)
      local slot = assert(ar.semaphore(url, 3):acquire({ wait = false }))
      assert.equal(2, slot.index)
      assert.is_true(slot:release())
    end)

    it("a semaphore asked with another count than its holders': refused at once, naming the holder and its count", function()
      local url = C:url("kind/count")
      local pid = hold(url, "sem:3")
      local slot, msg, code = ar.semaphore(url, 5):acquire({ timeout = 10 })
      assert.is_nil(slot)
      assert.equal("EINVAL", code, msg)
      assert.matches("is a semaphore of 3 slots %(pid " .. pid .. " on [^)]*%), not of 5", msg)
      assert.equal(1, #queue_keys("kind/count"))             -- ours went
      -- a mutex is a semaphore of 1: its slot is an exclusive lock, and waits
      slot, _, code = ar.semaphore(url, 1):acquire({ wait = false })
      assert.is_nil(slot)
      assert.equal("busy", code)
    end)

    it("atomrun who tells holders from waiters by the kind rule, and says semaphore and its count", function()
      local url = C:url("kind/who")
      hold(url, "sem:2")
      hold(url, "sem:2")
      H.bg_lua(HOLD, url, dir .. "/ready.w", dir .. "/stop.w", "sem:2", "")   -- waits: both taken
      -- queued before the exclusive one: the order the assertions below read
      assert.is_true(H.wait_until(function() return #queue_keys("kind/who") == 3 end, 15))
      H.bg_lua(HOLD, url, dir .. "/ready.x", dir .. "/stop.x", "exclusive", "")
      assert.is_true(H.wait_until(function() return #queue_keys("kind/who") == 4 end, 15))
      local r = who_json(url)
      assert.is_true(r.held)
      assert.equal(2, #r.holders)
      assert.equal(2, #r.waiters)
      for i, e in ipairs(r.holders) do
        assert.equal("semaphore", e.mode)
        assert.equal(2, e.slots)
        assert.equal(i, e.slot)             -- the slot rank, oldest first
        -- since as for files: ISO 8601 UTC, and the epoch
        assert.equal(os.date("!%Y-%m-%dT%H:%M:%SZ", e.since_epoch), e.since)
      end
      assert.equal("semaphore", r.waiters[1].mode)
      assert.equal("exclusive", r.waiters[2].mode)
      local st, out = H.run("who", url)
      assert.equal(1, st)
      assert.matches(": 2 of 2 slots taken\n", out)
      local holds, waits = 0, 0
      for line in out:gmatch("[^\n]+") do
        if line:match("^  slot " .. holds + 1 .. "/2 .* semaphore of 2") then holds = holds + 1 end
        if line:match("^  waits ") then waits = waits + 1 end
      end
      assert.equal(2, holds, out)
      assert.equal(2, waits, out)
      -- sem:holders() lists the two slot holders, not the waiters
      local hs = assert(ar.semaphore(url, 2):holders())
      assert.equal(2, #hs)
    end)

    it("an exclusive holder with semaphore waiters: who shows one holder", function()
      local url = C:url("kind/who-x")
      local pid = hold(url, "exclusive")
      H.bg_lua(HOLD, url, dir .. "/ready.w", dir .. "/stop.w", "sem:3", "")
      assert.is_true(H.wait_until(function() return #queue_keys("kind/who-x") == 2 end, 15))
      local r = who_json(url)
      assert.equal(1, #r.holders)
      assert.equal(pid, r.holders[1].pid)
      assert.equal(1, #r.waiters)
      assert.equal("semaphore", r.waiters[1].mode)
    end)
  end)

  -- ------------------------------------------------------------ point 11

  describe("holder text from etcd is escaped (point 11)", function()
    local EVIL_CMD = "job \27[31mred\27[0m\nnext line\7 \27]0;title\7 \194\155X"

    local function check_shown(s, what)
      assert.is_false(has_control(s), what .. " holds a raw control character: " .. s:gsub("%c", "?"))
    end

    it("a holder whose command line and host hold escape sequences: escaped in messages, tables and who", function()
      if H.sh("unshare -u true") ~= 0 then
        pending("unshare -u (a UTS namespace for the holder's host name) is not permitted here")
        return
      end
      local url = C:url("esc/cmd")
      local ready, stop = dir .. "/ready.e", dir .. "/stop.e"
      -- the holder runs in its own UTS namespace with a hostile host name
      H.track(H.spawn("exec unshare -u sh -c " .. H.q('printf %s "$1" >/proc/sys/kernel/hostname'
        .. ' && shift && exec "$@"') .. " sh " .. H.q("evil\27[2Jhost\7")
        .. " " .. H.q(H.atomrun) .. " -e " .. H.q(HOLD) .. " " .. H.q(url) .. " " .. H.q(ready)
        .. " " .. H.q(stop) .. " exclusive " .. H.q(EVIL_CMD)))
      local pid = H.ready_pid(ready)
      local lk, msg, code, h = ar.lock(url, { wait = false })
      assert.is_nil(lk)
      assert.equal("busy", code)
      check_shown(msg, "the busy message")
      assert.matches("pid " .. pid .. " on evil\\e%[2Jhost\\x07 %(job \\e%[31mred\\e%[0m\\nnext line", msg)
      for _, k in ipairs({ "cmd", "host" }) do check_shown(h[k], "holder." .. k) end
      _, msg = ar.lock(url, { timeout = 0.3 })
      check_shown(msg, "the timeout message")
      local q = assert(ar._etcd_queue(url))
      check_shown(q[1].cmd .. q[1].host, "the queue's holder")
      local st, out, err = H.run("who", url)
      assert.equal(1, st, err)
      check_shown(out:gsub("\n", ""), "atomrun who")
      assert.matches("evil\\e%[2Jhost", out)
      local r = who_json(url)                                 -- still JSON, escaped inside
      check_shown(r.holders[1].cmd .. r.holders[1].host, "who --json")
      assert.equal(pid, r.holders[1].pid)
      -- the CLI's own busy message
      st, _, err = H.run("lock", "-n", "--verbose", url, "true")
      assert.equal(1, st)
      check_shown(err:gsub("\n$", ""), "atomrun lock's message")
    end)

    it("a key written by another client with control characters in every field: escaped", function()
      local name = "esc/foreign"
      local st, out, err = C:etcdctl("lease grant 60")
      assert.equal(0, st, err)
      local lease = out:match("lease (%x+) granted")
      local value = json.encode({ host = "h\27[1;1H", pid = 4242, cmd = "c\27[8m",
                                  since = "2026\27[2K\n" })
      st, _, err = C:etcdctl("put --lease=" .. lease .. " " .. H.q(name .. "/"
        .. lease .. "-1") .. " " .. H.q(value))
      assert.equal(0, st, err)
      local lk, msg, code, h = ar.lock(C:url(name), { wait = false })
      assert.is_nil(lk)
      assert.equal("busy", code)
      check_shown(msg, "the busy message")
      -- (the since is not atomrun's ISO time: left out, as in the holder)
      assert.matches("pid 4242 on h\\e%[1;1H %(c\\e%[8m%)$", msg)
      for _, k in ipairs({ "cmd", "host" }) do check_shown(h[k], "holder." .. k) end
      -- a since that is not atomrun's ISO time: no since field, never a guess
      assert.is_nil(h.since)
      local _, wout = H.run("who", C:url(name))
      check_shown(wout:gsub("\n", ""), "atomrun who")
      C:etcdctl("lease revoke " .. lease)
    end)
  end)

  -- ------------------------------------------------- no silent caps (issue 24)

  describe("no silent caps", function()
    it("a semaphore of 200 slots, all held: who, holders() and the queue list all 200 and the waiter", function()
      local url = C:url("caps/sem200")
      local ready, stop = dir .. "/ready200", dir .. "/stop200"
      H.bg_lua([[
        local url, ready, stop = ...
        local sem, slots = atomrun.semaphore(url, 200), {}
        for i = 1, 200 do slots[i] = assert(sem:acquire({ wait = false })) end
        atomrun.replace(ready, tostring(atomrun.pid()))
        while not atomrun.stat(stop) do atomrun.sleep(0.02) end
        for i = 1, 200 do assert(slots[i]:unlock()) end
      ]], url, ready, stop)
      local pid = H.ready_pid(ready)
      H.bg_lua(HOLD, url, dir .. "/ready.w", dir .. "/stop.w", "sem:200", "")
      assert.is_true(H.wait_until(function() return #queue_keys("caps/sem200") == 201 end, 30))
      local r = who_json(url)
      assert.equal(200, #r.holders)
      assert.equal(1, #r.waiters)
      for _, e in ipairs(r.holders) do assert.equal(pid, e.pid) end
      local hs = assert(ar.semaphore(url, 200):holders())
      assert.equal(200, #hs)
      local q = assert(require("atomrun.etcd").queue(url))
      assert.equal(201, #q)
      H.write(stop, "")
      H.ready_pid(dir .. "/ready.w")
      H.write(dir .. "/stop.w", "")
    end)

    it("a process with 70 leases (70 TTLs) revokes every one at exit: no key waits for its TTL", function()
      local ready, stop = dir .. "/ready70", dir .. "/stop70"
      H.bg_lua([[
        local base, ready, stop = ...
        local held = {}
        for i = 1, 70 do
          held[i] = assert(atomrun.lock(base .. i, { ttl = 30 + i, wait = false }))
        end
        atomrun.replace(ready, tostring(atomrun.pid()))
        while not atomrun.stat(stop) do atomrun.sleep(0.02) end
        os.exit(0)      -- the locks still held: the exit revokes their leases
      ]], C:url("caps/ttl"), ready, stop)
      local pid = H.ready_pid(ready)
      local function keys()
        local st, out, err = C:etcdctl("get --prefix --keys-only caps/ttl")
        assert.equal(0, st, err)
        return select(2, out:gsub("[^\n]+", ""))
      end
      assert.equal(70, keys())
      local leases = select(2, C:etcdctl("lease list"))
      assert.is_true(select(2, leases:gsub("\n%x+", "")) >= 70, leases)
      H.write(stop, "")
      assert.is_true(H.wait_exit(pid, 20))
      assert.equal(0, keys())
    end)
  end)
end)
