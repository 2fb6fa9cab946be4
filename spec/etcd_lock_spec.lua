-- atomrun.lock and the recipes on etcd names (lua/atomrun/remote.lua,
-- src/bind/etcd.c), against the spec's 3-member cluster: the same calls and
-- results as for files, plus token, lost() and "unavailable".
local H = require "spec.helper"
local E = require "spec.etcd"
local ar = H.ar

local HOST = H.slurp("/proc/sys/kernel/hostname"):gsub("\n$", "")
local SINCE = "%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ"

-- Hold url in another process until `stop` exists; the ready file gets
-- the pid, ready..".tok" the token.  The holder writes "lost: WHY" into ready..".lost" when it
-- notices, and the unlock result into ready..".unlock".
local HOLD = [[
  local url, ready, stop, ttl, mode = ...
  local lk = assert(atomrun.lock(url, { ttl = tonumber(ttl), mode = mode }))
  assert(atomrun.replace(ready .. ".tok", tostring(lk.token)))
  assert(atomrun.replace(ready, tostring(atomrun.pid())))
  local said
  while not atomrun.stat(stop) do
    local why = lk:lost()
    if why and not said then atomrun.replace(ready .. ".lost", why); said = true end
    atomrun.sleep(0.02)
  end
  local ok, msg, code = lk:unlock()
  atomrun.replace(ready .. ".unlock", tostring(ok) .. "|" .. tostring(msg) .. "|" .. tostring(code))
]]

describe("atomrun.lock on etcd", function()
  local C = E.cluster()
  if not C then return end
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(E.teardown(C))

  local function hold(name, opts)
    opts = opts or {}
    local ready = dir .. "/ready." .. (opts.tag or "h")
    H.bg_lua(HOLD, opts.url or C:url(name), ready, opts.stop or (dir .. "/stop"), opts.ttl or 10,
             opts.mode or "exclusive")
    local pid = H.ready_pid(ready)
    local token
    H.wait_until(function()
      token = math.tointeger(tonumber(H.slurp(ready .. ".tok")))
      return token
    end, 5)
    return pid, token, ready
  end

  it("locks and unlocks with the shape of a file lock, and a growing token", function()
    local url = C:url("lua/basic")
    local lk = assert(ar.lock(url))
    assert.equal(url, lk.path)
    assert.equal("lua/basic", lk.name)
    assert.equal("exclusive", lk.mode)
    assert.equal(1, lk.index)
    assert.is_true(lk.locked)
    assert.is_false(lk:lost())
    assert.equal("integer", math.type(lk.token))
    assert.matches("^lua/basic/%x+$", lk.key)
    assert.matches("^atomrun%.etcd_lock %(etcd://.*lua/basic, exclusive, token %d+%)$", tostring(lk))
    local t1 = lk.token
    assert.is_true(lk:unlock())
    assert.is_true(lk:unlock())            -- idempotent
    assert.is_false(lk.locked)
    do
      local lk2 <close> = assert(ar.lock(url, { timeout = 5, ttl = 5 }))
      assert.is_true(lk2.token > t1)
    end
    assert.is_truthy(ar.lock(url, { wait = false })):unlock()
  end)

  it("is released by __gc", function()
    local url = C:url("lua/gc")
    local lk = assert(ar.lock(url))
    lk = nil                                                 -- luacheck: ignore
    collectgarbage(); collectgarbage()
    assert.is_truthy(ar.lock(url, { wait = false })):unlock()
  end)

  it("busy and timeout name the holder's pid, host, command and since, with a holder table", function()
    local url = C:url("lua/busy")
    local pid = hold("lua/busy")
    local lk, msg, code, h = ar.lock(url, { wait = false })
    assert.is_nil(lk)
    assert.equal("busy", code)
    assert.matches("^" .. url:gsub("%p", "%%%0") .. " is locked by pid " .. pid .. " on "
                   .. HOST:gsub("%p", "%%%0") .. " %(.*%) since " .. SINCE .. "$", msg)
    assert.equal(pid, h.pid)
    assert.equal(HOST, h.host)
    -- since: epoch seconds, the one type file holders have too
    assert.equal("integer", math.type(h.since))
    assert.is_true(math.abs(os.time() - h.since) < 120, tostring(h.since))
    assert.equal("exclusive", h.mode)
    assert.equal("integer", math.type(h.token))
    local t0 = ar.now()
    lk, msg, code, h = ar.lock(url, { timeout = 0.5 })
    local took = ar.now() - t0
    assert.is_nil(lk)
    assert.equal("timeout", code)
    assert.matches("^timed out after 0%.5 s waiting for .* locked by pid " .. pid, msg)
    assert.equal(pid, h.pid)
    assert.is_true(took >= 0.45 and took < 4, "took " .. took)
    local q = assert(ar._etcd_queue(url))
    assert.equal(1, #q)                                       -- the waiter left no key
    H.write(dir .. "/stop", "")
  end)

  it("says deadlock when this state asks again for a name it holds", function()
    local url = C:url("lua/dead")
    local lk = assert(ar.lock(url))
    local l2, msg, code = ar.lock(url, { timeout = 1 })
    assert.is_nil(l2)
    assert.equal("deadlock", code)
    assert.matches("already locked by this script", msg)
    l2, msg, code = ar.lock(url, { wait = false })
    assert.equal("busy", code)
    lk:unlock()
    assert.is_truthy(ar.lock(url, { timeout = 1 })):unlock()
  end)

  it("a SIGSTOPped holder past its TTL: the next one gets a higher token, the first sees lost", function()
    local url = C:url("lua/stop")
    local pid, token, ready = hold("lua/stop", { ttl = 2 })
    H.kill(pid, "STOP")
    local lk = assert(ar.lock(url, { timeout = 15 }))
    assert.is_true(lk.token > token)
    H.kill(pid, "CONT")
    assert.is_true(H.wait_file(ready .. ".lost", 5))
    assert.matches("lease %x+", H.slurp(ready .. ".lost"))
    H.write(dir .. "/stop", "")
    assert.is_true(H.wait_file(ready .. ".unlock", 5))
    assert.matches("^nil|.*|lost$", H.slurp(ready .. ".unlock"))
    assert.is_false(lk:lost())
    assert.is_true(lk:unlock())
  end)

  it("every member down: unavailable within the deadline, naming the endpoints", function()
    local url = C:url("lua/down")
    for i = 1, 3 do C:pause(i) end
    local t0 = ar.now()
    local lk, msg, code = ar.lock(url, { timeout = 2 })
    local took = ar.now() - t0
    for i = 1, 3 do C:cont(i) end
    assert.is_nil(lk)
    assert.equal("unavailable", code)
    assert.matches("no etcd endpoint of " .. C:endpoints():gsub("%p", "%%%0") .. " answered", msg)
    assert.is_true(took < 4, "took " .. took)
  end)

  it("shared holders share, an exclusive request waits for them", function()
    local url = C:url("lua/rw")
    hold("lua/rw", { mode = "shared" })
    local r = assert(ar.lock(url, { mode = "shared", wait = false }))
    assert.equal("shared", r.mode)
    local lk, _, code = ar.lock(url, { wait = false })
    assert.is_nil(lk)
    assert.equal("busy", code)
    r:unlock()
    H.write(dir .. "/stop", "")
    assert.is_truthy(ar.lock(url, { timeout = 10 })):unlock()
  end)

  it("never shows a password: not in lk.path, messages or the holder's record", function()
    -- the spec cluster has no auth: a user given anyway is ignored by etcd
    local url = C:url("lua/pw", { userinfo = "bob:hunter2" })
    local lk = assert(ar.lock(url))
    assert.is_nil(lk.path:find("hunter2", 1, true))
    assert.is_nil(tostring(lk):find("hunter2", 1, true))
    lk:unlock()
    local pid = hold("lua/pw", { url = url })
    local _, msg, _, h = ar.lock(url, { wait = false })
    assert.equal(pid, h.pid)
    assert.is_nil(msg:find("hunter2", 1, true))
    assert.is_nil(h.cmd:find("hunter2", 1, true))
    local st, out = C:etcdctl("get --prefix lua/pw/")
    assert.equal(0, st)
    assert.is_nil(out:find("hunter2", 1, true))
    assert.matches("bob", url)
    H.write(dir .. "/stop", "")
  end)

  it("takes the endpoints from ATOMRUN_ETCD for etcd:///NAME", function()
    local code = [[
      local lk, msg = atomrun.lock("etcd:///lua/env")
      print(lk and ("ok " .. lk.path) or msg)
    ]]
    local st, out = H.sh("ATOMRUN_ETCD=" .. H.q(C:endpoints()) .. " " .. H.q(H.atomrun) .. " -e " .. H.q(code))
    assert.equal(0, st)
    assert.equal("ok etcd:///lua/env\n", out)
    st, out = H.sh("env -u ATOMRUN_ETCD " .. H.q(H.atomrun) .. " -e " .. H.q(code))
    assert.matches("ATOMRUN_ETCD is not set", out)
    st, out = H.sh("ATOMRUN_ETCD=etcd://bob:cr3t@" .. C:endpoint(1) .. " " .. H.q(H.atomrun) .. " -e " .. H.q(code))
    assert.matches("ATOMRUN_ETCD must hold endpoints only", out)
    assert.is_nil(out:find("cr3t", 1, true))
  end)

  it("guard: a lost lock ends the guarded process group (KILL at once: the lease is gone)", function()
    local url = C:url("lua/guard")
    local code = [[
      local url, ready, kill_after = ...
      local lk = assert(atomrun.lock(url, { ttl = 3 }))
      -- a process group that ignores TERM, so that KILL has to follow
      local p = io.popen("(exec setsid sh -c 'trap \"\" TERM; sleep 100') >/dev/null 2>&1 & echo $!")
      local pid = tonumber(p:read("l")); p:close()
      assert(lk:guard(pid, tonumber(kill_after)))
      atomrun.replace(ready .. ".lease", lk.lease)
      atomrun.replace(ready, tostring(pid))
      local function running()          -- a zombie has ended (nobody reaps it here)
        local f = io.open("/proc/" .. pid .. "/stat")
        local st = f and f:read("a") or ""
        if f then f:close() end
        return st ~= "" and not st:match("^%d+ %b() Z")
      end
      while not lk:lost() do atomrun.sleep(0.02) end
      local t = atomrun.now()
      while running() and atomrun.now() - t < 20 do atomrun.sleep(0.02) end
      atomrun.replace(ready .. ".done", string.format("%s %.2f", tostring(lk:unguard()), atomrun.now() - t))
    ]]
    local ready = dir .. "/g"
    H.bg_lua(code, url, ready, 1)
    local pid = H.ready_pid(ready)
    assert.is_true(H.alive(pid))
    -- break the lock from outside, as `atomrun who --revoke` would
    local st, out = C:etcdctl("lease revoke " .. H.slurp(ready .. ".lease"))
    assert.equal(0, st, out)
    assert.is_true(H.wait_file(ready .. ".done", 15))
    local how, took = H.slurp(ready .. ".done"):match("^(%S+) ([%d.]+)$")
    assert.equal("kill", how)                      -- revoked: no time for TERM
    assert.is_true(tonumber(took) < 5, "took " .. took)
    assert.is_true(H.wait_exit(pid, 5))
    H.kill(pid, "KILL")
  end)

  it("run{guard = lk}: ATOMRUN_LOCK_TOKEN for the command, lost -> killed and nil, 'lost'", function()
    local remote = require "atomrun.etcd"
    local url = C:url("lua/run")
    local lk = assert(ar.lock(url))
    local ok, how, code = ar.run({ "sh", "-c", "test \"$ATOMRUN_LOCK_TOKEN\" = " .. lk.token
      .. " && test \"$KEEP\" = 1" }, { guard = lk, env = { KEEP = "1" } })
    assert.is_true(ok, tostring(how) .. " " .. tostring(code))
    ok = remote.run({ "sh", "-c", "test \"$ATOMRUN_LOCK_TOKEN\" = " .. lk.token }, lk)
    assert.is_true(ok)
    assert.has_error(function() ar.run({ "true" }, { guard = "x" }) end,
      "bad argument #2 to 'run' (option 'guard' must be an etcd lock (atomrun.lock(\"etcd://...\")), not a string)")
    lk:unlock()
    assert.has_error(function() ar.run({ "true" }, { guard = lk }) end,
      "bad argument #2 to 'run' (option 'guard': the lock is already released)")
    -- lost while the command runs: its group is killed, run says "lost"
    local ready = dir .. "/r"
    H.bg_lua([[
      local url, ready = ...
      local lk = assert(atomrun.lock(url, { ttl = 3 }))
      atomrun.replace(ready .. ".lease", lk.lease)
      atomrun.replace(ready, tostring(atomrun.pid()))
      local ok, msg, code = atomrun.run({ "sh", "-c", 'trap "" TERM; sleep 100' },
        { guard = lk, kill_after = 1 })
      atomrun.replace(ready .. ".done", tostring(ok) .. "|" .. tostring(msg) .. "|" .. tostring(code))
    ]], url, ready)
    local pid = H.ready_pid(ready)
    -- sh runs under the guard, SIGTERM ignored already (what kill_after is for)
    assert.is_true(H.wait_until(function()
      for _, kid in ipairs(H.children(pid)) do
        if H.ignores(kid, 15) then return true end
      end
      return false
    end, 15), "sh never started with TERM ignored")
    local st, out = C:etcdctl("lease revoke " .. H.slurp(ready .. ".lease"))
    assert.equal(0, st, out)
    assert.is_true(H.wait_file(ready .. ".done", 15))
    assert.matches("^nil|lost the lock etcd://[^|]*lua/run while sh ran %(lease %x+ expired[^|]*%); "
      .. "sent SIGKILL|lost$", H.slurp(ready .. ".done"))
  end)

  it("run{kill_after} and lk:guard refuse a kill_after that cannot fit in the TTL", function()
    local lk = assert(ar.lock(C:url("lua/fit"), { ttl = 2 }))
    local e = H.err_of(function() ar.run({ "true" }, { guard = lk, kill_after = 1 }) end)
    assert.matches("option 'kill_after': 1 s does not fit in a TTL of 2 s: at most 0%.75 s", e)
    e = H.err_of(function() lk:guard(ar.pid(), 5) end)
    assert.matches("5 s does not fit in a TTL of 2 s", e)
    assert.is_nil(ar._etcd_kill_after(2, 1))
    assert.equal(0.5, ar._etcd_kill_after(2))           -- the default: TTL/4
    assert.equal(5, ar._etcd_kill_after(100))           -- at most 5
    assert.is_true(lk:unlock())
  end)

  it("refuses other schemes and malformed etcd URLs with a clear error, creating nothing", function()
    local cwd = H.tmpdir()
    local code = [[
      local url = ...
      local lk, msg, code = atomrun.lock(url, { wait = false })
      print(tostring(lk) .. "|" .. tostring(msg) .. "|" .. tostring(code))
    ]]
    local cases = {
      { "foo://x/y", "unsupported scheme 'foo'" },
      { "etcd://127.0.0.1:1", "has no /NAME" },
      { "etcd://127.0.0.1:1/", "no lock or key name after the endpoints" },
      { "etcd://@127.0.0.1:1/x", "empty user name" },
      { "etcd://host/x", "bad etcd endpoint \"host\"" },
      { "etcd://h:1,,h:2/x", "bad etcd endpoint" },
      { "etcd://" .. C:endpoint(1) .. "/a//b", "empty path segment" },
      { "etcd://bob:se/cr3t@" .. C:endpoint(1) .. "/x", "with '@' after the endpoints refused" },
    }
    for _, c in ipairs(cases) do
      local st, out = H.sh("cd " .. H.q(cwd) .. " && " .. H.q(H.atomrun:sub(1, 1) == "/" and H.atomrun or H.root .. "/" .. H.atomrun) .. " -e "
                           .. H.q(code) .. " " .. H.q(c[1]))
      assert.equal(0, st, c[1])
      assert.matches("^nil|", out, nil, c[1])
      assert.is_truthy(out:find(c[2], 1, true), c[1] .. " -> " .. out)
      assert.matches("|EINVAL\n$", out, nil, c[1])
      assert.is_nil(out:find("cr3t", 1, true), c[1])
    end
    assert.same({}, H.listdir(cwd))
    assert.has_error(function() ar.lock(C:url("x"), { ttl = 0 }) end)
    assert.has_error(function() ar.lock(C:url("x"), { ttl = 1.5 }) end)
    assert.has_error(function() ar.lock(C:url("x"), { bogus = 1 }) end)
    assert.has_error(function() ar.lock(C:url("x"), { mode = "both" }) end)
  end)
end)

describe("recipes on etcd names", function()
  local C = E.cluster()
  if not C then return end
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function() H.cleanup_procs() end)

  it("with_lock runs fn under the lock and releases it", function()
    local url = C:url("rec/with")
    local got = ar.with_lock(url, { timeout = 5, ttl = 5 }, function(a)
      assert.is_nil(ar.lock(url, { wait = false }))
      return a * 2
    end, 21)
    assert.equal(42, got)
    assert.is_truthy(ar.lock(url, { wait = false })):unlock()
  end)

  it("semaphore(url, 3) with 10 processes: never more than 3 inside", function()
    local url = C:url("rec/sem")
    local code = [[
      local url, dir = ...
      local sem = atomrun.semaphore(url, 3)
      local slot = assert(sem:acquire({ timeout = 60 }))
      local me = dir .. "/in." .. atomrun.pid()
      atomrun.replace(me, "")
      local p = io.popen("ls " .. dir .. " | grep -c '^in\\.'")
      local n = tonumber(p:read("a")); p:close()
      atomrun.replace(dir .. "/seen." .. atomrun.pid(), n .. " " .. slot.index)
      atomrun.sleep(0.2)
      os.remove(me)
      slot:release()
    ]]
    local pids = {}
    for i = 1, 10 do pids[i] = H.bg_lua(code, url, dir) end
    for i = 1, 10 do assert.is_true(H.wait_exit(pids[i], 60)) end
    local max, seen = 0, 0
    for _, f in ipairs(H.listdir(dir)) do
      if f:match("^seen%.") then
        seen = seen + 1
        local n, idx = H.slurp(dir .. "/" .. f):match("(%d+) (%d+)")
        max = math.max(max, tonumber(n))
        assert.is_true(tonumber(idx) >= 1 and tonumber(idx) <= 3)
      end
    end
    assert.equal(10, seen)
    assert.is_true(max >= 1 and max <= 3, "max " .. max)
  end)

  it("once(url) runs one instance across processes and names who runs it", function()
    local url = C:url("rec/once")
    local g = assert(ar.once(url))
    local code = [[
      local g, msg, code, rec = atomrun.once(...)
      print(tostring(g) .. "|" .. tostring(code) .. "|" .. tostring(rec and rec.pid) .. "|" .. tostring(msg))
    ]]
    local st, out = H.sh(H.q(H.atomrun) .. " -e " .. H.q(code) .. " " .. H.q(url))
    assert.equal(0, st)
    assert.matches("^nil|running|" .. ar.pid() .. "|", out)
    g:release()
    st, out = H.sh(H.q(H.atomrun) .. " -e " .. H.q(code) .. " " .. H.q(url))
    assert.is_nil(out:find("running", 1, true))
  end)

  it("lock_all takes files and etcd names together, all or none", function()
    local f = dir .. "/a.lock"
    local url = C:url("rec/all")
    local g = assert(ar.lock_all({ url, f }, { timeout = 5 }))
    assert.is_nil(ar.lock(url, { wait = false }))
    g:release()
    assert.is_truthy(ar.lock(url, { wait = false })):unlock()
  end)
end)
