-- `atomrun lock` and `atomrun once` on etcd names: the token in CMD's
-- environment, flock(1)'s exit codes, -F refused, and a lost lock ending
-- the command's process group with exit 75.
local H = require "spec.helper"
local E = require "spec.etcd"
local ar = H.ar

describe("atomrun lock/once with etcd names #child", function()
  local C = E.cluster()
  if not C then return end
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function() H.cleanup_procs() end)

  -- atomrun in the background; its pid (not a shell's), its exit status
  -- later in file..".rc"
  local function bg(file, ...)
    local parts = { H.q(H.atomrun) }
    for _, a in ipairs({ ... }) do parts[#parts + 1] = H.q(a) end
    H.spawn(table.concat(parts, " ") .. " 2>" .. H.q(file .. ".err") .. " >" .. H.q(file)
      .. " & p=$!; echo $p > " .. H.q(file .. ".pid") .. "; wait $p; echo $? > " .. H.q(file .. ".rc"))
    return H.ready_pid(file .. ".pid")
  end
  local function rc(file)
    assert(H.wait_file(file .. ".rc", 30), "no exit status in " .. file)
    local v
    H.wait_until(function() v = tonumber(H.slurp(file .. ".rc")) return v end, 5)
    return v
  end

  it("runs CMD with ATOMRUN_LOCK_TOKEN and passes its exit status on", function()
    local url = C:url("cli/token")
    local st, out = H.run("lock", url, "--", "sh", "-c", 'echo "token=$ATOMRUN_LOCK_TOKEN"; exit 3')
    assert.equal(3, st)
    local t = tonumber(out:match("^token=(%d+)\n$"))
    assert.is_truthy(t, out)
    local st2, out2 = H.run("lock", url, "sh", "-c", 'echo "$ATOMRUN_LOCK_TOKEN"')
    assert.equal(0, st2)
    assert.is_true(tonumber(out2) > t)
  end)

  it("-n on a held name: exit 1 (or -E), silently; --verbose names the holder", function()
    local url = C:url("cli/busy")
    local stop = dir .. "/stop"
    local f = dir .. "/h"
    local pid = bg(f, "lock", url, "sh", "-c", "touch " .. H.q(f .. ".in") .. "; while [ ! -e "
      .. H.q(stop) .. " ]; do sleep 0.05; done")
    assert.is_true(H.wait_file(f .. ".in", 15))
    local st, out, err = H.run("lock", "-n", url, "true")
    assert.equal(1, st)
    assert.equal("", out .. err)
    st = H.run("lock", "-n", "-E", "9", url, "true")
    assert.equal(9, st)
    st, _, err = H.run("lock", "-w", "0.3", "--verbose", url, "true")
    assert.equal(1, st)
    assert.matches("locked by pid %d+ on ", err)
    H.write(stop, "")
    assert.equal(0, rc(f))
    local _ = pid
  end)

  it("refuses -F, other schemes and a bad --ttl as usage errors (64), creating nothing", function()
    local cwd = H.tmpdir()
    local bin = H.atomrun:sub(1, 1) == "/" and H.atomrun or H.root .. "/" .. H.atomrun
    local function run(...)
      local parts = { "cd", H.q(cwd), "&&", H.q(bin) }
      for _, a in ipairs({ ... }) do parts[#parts + 1] = H.q(a) end
      return H.sh(table.concat(parts, " "))
    end
    local st, _, err = run("lock", "-F", C:url("cli/f"), "true")
    assert.equal(64, st)
    assert.matches("%-F cannot be used with an etcd name", err)
    st, _, err = run("lock", "foo://x/y", "true")
    assert.equal(64, st)
    assert.matches("unsupported scheme 'foo'", err)
    st = run("lock", "--ttl", "0", C:url("cli/f"), "true")
    assert.equal(64, st)
    st, _, err = run("lock", "etcd://127.0.0.1:1/x", "true")
    assert.equal(69, st)
    assert.matches("unavailable", err .. " unavailable")
    assert.same({}, H.listdir(cwd))
  end)

  it("a lost lock: CMD's group is killed at once (the lease is gone); exit 75, saying why", function()
    local url = C:url("cli/lost")
    local f = dir .. "/l"
    -- a command that ignores TERM and has a child in its group
    local pid = bg(f, "lock", "--ttl", "3", "--kill-after", "1", url, "sh", "-c",
      'trap "" TERM; sleep 100 & echo $! > ' .. H.q(f .. ".child") .. '; echo $$ > ' .. H.q(f .. ".sh")
      .. "; wait")
    assert.is_true(H.wait_file(f .. ".child", 15))
    assert.is_true(H.wait_until(function() return tonumber(H.slurp(f .. ".sh")) end, 5))
    local sh, child = tonumber(H.slurp(f .. ".sh")), tonumber(H.slurp(f .. ".child"))
    -- break it from outside: revoke the holder's lease
    local q = assert(ar._etcd_queue(url))
    assert.equal(1, #q)
    local t0 = ar.now()
    local st, out = C:etcdctl("lease revoke " .. q[1].lease)
    assert.equal(0, st, out)
    assert.equal(75, rc(f))
    local took = ar.now() - t0
    assert.is_true(took < 6, "took " .. took)
    assert.matches("lost the lock .*cli/lost while sh ran .*; sent SIGKILL", H.slurp(f .. ".err"))
    assert.is_true(H.wait_exit(sh, 5))
    assert.is_true(H.wait_exit(child, 5))
    local _ = pid
  end)

  it("a SIGSTOPped atomrun lock past its TTL: the next gets the lock; resumed, it exits 75", function()
    local url = C:url("cli/stopped")
    local f = dir .. "/s"
    local pid = bg(f, "lock", "--ttl", "2", url, "sh", "-c", "touch " .. H.q(f .. ".in") .. "; sleep 100")
    assert.is_true(H.wait_file(f .. ".in", 15))
    H.kill(pid, "STOP")
    local st, out = H.run("lock", "-w", "15", url, "sh", "-c", 'echo "$ATOMRUN_LOCK_TOKEN"')
    assert.equal(0, st)
    assert.is_truthy(tonumber(out))
    H.kill(pid, "CONT")
    assert.equal(75, rc(f))
    assert.matches("lost the lock", H.slurp(f .. ".err"))
  end)

  it("atomrun doctor etcd://...: health, version, leader, members, minimum TTL, auth", function()
    local st, out = H.run("doctor", "etcd://" .. C:endpoints())
    assert.equal(0, st)
    for i = 1, 3 do
      assert.matches(C:endpoint(i):gsub("%p", "%%%0") .. "%s+healthy, etcd 3%.%d+%.%d+", out)
    end
    assert.matches("LEADER", out)
    assert.matches("members: m%d, m%d, m%d", out)
    assert.matches("minimum lease TTL: 1 s", out)
    assert.matches("authentication: off", out)
    st, out = H.run("doctor", "--json", "etcd://" .. C:endpoint(1) .. ",127.0.0.1:1")
    assert.equal(0, st)
    local rep = ar.json.decode(out)
    assert.is_true(rep.endpoints[1].healthy)
    assert.is_false(rep.endpoints[2].healthy)
    assert.equal(1, #rep.warnings)
    assert.equal(3, #rep.members)
    st = H.run("doctor", "etcd://127.0.0.1:1")
    assert.equal(69, st)
  end)

  it("atomrun once etcd://...: one instance across processes", function()
    local url = C:url("cli/once")
    local f = dir .. "/o"
    local stop = dir .. "/stop"
    bg(f, "once", url, "sh", "-c", "touch " .. H.q(f .. ".in") .. "; while [ ! -e " .. H.q(stop)
      .. " ]; do sleep 0.05; done")
    assert.is_true(H.wait_file(f .. ".in", 15))
    local st = H.run("once", url, "true")
    assert.equal(1, st)
    local sst, sout = H.run("once", "--status", url)
    assert.equal(0, sst)
    assert.matches("^" .. H.pat(url) .. " is running: pid %d+ on %S+ since %d+%-%d+%-%d+T[%d:]+Z %(", sout)
    H.write(stop, "")
    assert.equal(0, rc(f))
    sst, sout = H.run("once", "--status", url)
    assert.equal(1, sst)
    assert.equal(url .. " is not running\n", sout)
    st = H.run("once", url, "sh", "-c", "exit 4")
    assert.equal(4, st)
  end)

  it("atomrun lock --slots N on an etcd name: N at once across processes, ATOMRUN_SLOT, guarded", function()
    local url = C:url("cli/slots")
    local stop = dir .. "/stop"
    for i = 1, 2 do
      bg(dir .. "/s" .. i, "lock", "--slots", "2", url, "sh", "-c", "echo $ATOMRUN_SLOT > "
        .. H.q(dir .. "/up" .. i) .. "; while [ ! -e " .. H.q(stop) .. " ]; do sleep 0.05; done")
    end
    assert.is_true(H.wait_file(dir .. "/up1", 15) and H.wait_file(dir .. "/up2", 15))
    H.wait_until(function() return H.slurp(dir .. "/up1") ~= "" and H.slurp(dir .. "/up2") ~= "" end, 5)
    local slots = { tonumber(H.slurp(dir .. "/up1")), tonumber(H.slurp(dir .. "/up2")) }
    table.sort(slots)
    assert.same({ 1, 2 }, slots)
    local st, out, err = H.run("lock", "-n", "--slots", "2", url, "true")
    assert.equal(1, st)
    assert.equal("", out .. err)
    H.write(stop, "")
    assert.equal(0, rc(dir .. "/s1"))
    assert.equal(0, rc(dir .. "/s2"))
    st, out = H.run("lock", "--slots", "2", url, "sh", "-c", "echo $ATOMRUN_SLOT")
    assert.equal(0, st)
    assert.matches("^[12]\n$", out)
  end)

  it("atomrun once --ttl/--kill-after on etcd names; each option refused for the other kind (64)", function()
    local url = C:url("cli/once-ttl")
    local f = dir .. "/t"
    local stop = dir .. "/stop"
    bg(f, "once", "--ttl", "3", "--kill-after", "0.5", url, "sh", "-c", "touch " .. H.q(f .. ".in")
      .. "; while [ ! -e " .. H.q(stop) .. " ]; do sleep 0.05; done")
    assert.is_true(H.wait_file(f .. ".in", 15))
    -- the holder's lease has the TTL asked for
    local _, out = H.run("who", "--json", url)
    local lease = ar.json.decode(out)[1].holders[1].lease
    local st, ttl = C:etcdctl("lease timetolive " .. lease)
    assert.equal(0, st, ttl)
    assert.matches("granted with TTL%(3s%)", ttl)
    H.write(stop, "")
    assert.equal(0, rc(f))
    local empty = dir .. "/empty"
    assert.is_true(ar.mkdir(empty))
    local cases = {
      { { "once", "--dir", empty, url, "true" }, "%-%-dir is for a local job name" },
      { { "once", "--ttl", "5", "localjob", "true" }, "%-%-ttl is for etcd names" },
      { { "once", "--kill-after", "1", "localjob", "true" }, "%-%-kill%-after is for etcd names" },
      { { "once", "--kill-after", "9", url, "true" }, "does not fit in a TTL of 10 s" },
      { { "once", "--ttl", "1e9", url, "true" }, "invalid %-%-ttl" },
    }
    for _, c in ipairs(cases) do
      local cst, cout, cerr = H.run(table.unpack(c[1]))
      assert.equal(64, cst, table.concat(c[1], " ") .. ": " .. cerr)
      assert.equal("", cout)
      assert.matches(c[2], cerr)
      assert.is_nil(cerr:find("traceback", 1, true), cerr)
    end
    assert.same({}, H.listdir(empty))
  end)

  it("atomrun who etcd://...: the holder and the queue; --revoke breaks the lock (75)", function()
    local url = C:url("cli/who")
    local st, out = H.run("who", url)
    assert.equal(0, st)
    assert.equal(url .. ": free\n", out)
    local f = dir .. "/w"
    bg(f, "lock", "--kill-after", "1", url, "sh", "-c", "touch " .. H.q(f .. ".in")
      .. "; exec sleep 60")
    assert.is_true(H.wait_file(f .. ".in", 15))
    local g = dir .. "/q"
    bg(g, "lock", "-w", "30", url, "true")
    assert.is_true(H.wait_until(function()
      local _, o = H.run("who", url)
      return o:find("waits", 1, true) ~= nil
    end, 15))
    st, out = H.run("who", url)
    assert.equal(1, st)
    assert.matches("^" .. H.pat(url) .. ": held\n  holds   pid %d+ +on %S+ +exclusive token %d+", out)
    assert.matches("\n  waits   pid %d+ +on ", out)
    st, out = H.run("who", "--json", url)
    assert.equal(1, st)
    local rep = ar.json.decode(out)
    assert.equal(1, #rep[1].holders)
    assert.equal(1, #rep[1].waiters)
    assert.is_true(rep[1].waiters[1].token > rep[1].holders[1].token)
    local _, _, err = H.run("who", "--revoke", "/tmp/x.lock")
    assert.matches("etcd names only", err)
    local rst, _, rerr = H.run("who", "--revoke", url)
    assert.equal(0, rst)
    assert.matches("revoked lease %x+ of pid %d+", rerr)
    -- the holder's command is killed (exit 75), the waiter gets the lock
    assert.equal(75, rc(f))
    assert.equal(0, rc(g))
  end)

  -- The window the docs state: a revoke frees the name at once, the old
  -- holder learns it at its next keepalive (every TTL/3) and its command is
  -- killed then; until then the two commands overlap.  Measured here.
  it("who --revoke: the old holder's command ends within TTL/3 (+ a round trip) of the grant", function()
    local url = C:url("cli/revoke-window")
    local stamps, granted = dir .. "/stamps", dir .. "/granted"
    local f = dir .. "/h"
    bg(f, "lock", "--ttl", "6", url, "sh", "-c", "while :; do date +%s.%N >> " .. H.q(stamps)
      .. "; sleep 0.02; done")
    assert.is_true(H.wait_file(stamps, 15))
    local g = dir .. "/g"
    bg(g, "lock", "-w", "30", url, "sh", "-c", "date +%s.%N > " .. H.q(granted))
    assert.is_true(H.wait_until(function()
      local _, o = H.run("who", url)
      return o:find("waits", 1, true) ~= nil
    end, 15))
    assert.equal(0, (H.run("who", "--revoke", url)))
    assert.equal(75, rc(f))
    assert.equal(0, rc(g))
    local t_grant = tonumber(H.slurp(granted))
    local last = 0
    for line in H.slurp(stamps):gmatch("[^\n]+") do last = math.max(last, tonumber(line) or 0) end
    local overlap = last - t_grant
    io.stderr:write(string.format("\n  who --revoke: the old command wrote for %.2f s after the "
      .. "grant (TTL 6: keepalive every 2 s)\n", overlap))
    assert.is_true(overlap <= 6 / 3 + 1.5, string.format("overlap %.2f s", overlap))
  end)

  -- libcurl 7.88 opens its sockets, and each multi handle's wakeup pair,
  -- without close-on-exec: a command would inherit them (flock(1) passes
  -- nothing of its own).
  it("the command and a script's children inherit no descriptor of the etcd client", function()
    local fds = function(out) return H.extra_fds(H.parse_fds(out)) end
    local st, base = H.sh(H.FD_LIST)
    assert.equal(0, st)
    local out
    st, out = H.run("lock", C:url("cli/fds"), "sh", "-c", "ls -l /proc/$$/fd; true")
    assert.equal(0, st)
    assert.same(fds(base), fds(out), out)
    st, out = H.run("-e", [[
      local url, list = ...
      local function kids() local p = io.popen(list) local s = p:read("a") p:close() return s end
      -- the script's own inheritable descriptors (io.open's are) stay so
      local mine = { io.open("/dev/null"), io.open("/dev/null"), io.open("/dev/null") }
      local before = kids()
      assert(atomrun.replace(url .. "/v", "1"))
      local lk = assert(atomrun.lock(url .. "/l"))
      atomrun.watch(url .. "/v", function() end, { timeout = 0.2 })
      io.write(before, "\0", kids())
      lk:unlock()
    ]], C:url("cli/fds2"), H.FD_LIST)
    assert.equal(0, st)
    local before, during = out:match("^(.*)%z(.*)$")
    assert.same(fds(before), fds(during), during)
    local nulls = 0
    for _, t in ipairs(fds(during)) do if t == "/dev/null" then nulls = nulls + 1 end end
    assert.is_true(nulls >= 3, during)
  end)
end)

-- No cluster needed: a machine without libcurl (spec/shim/nocurl.c makes
-- every dlopen of it fail as the loader does when it is not installed).
describe("etcd names on a machine without libcurl #child", function()
  local shim = H.build .. "/nocurl.so"
  local function env()
    return "LD_PRELOAD=" .. H.q(shim)
      .. (H.asan and " ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=0" or "") .. " "
  end
  local function run(...)
    local parts = { env() .. H.q(H.atomrun) }
    for _, a in ipairs({ ... }) do parts[#parts + 1] = H.q(a) end
    return H.sh(table.concat(parts, " "))
  end

  it("atomrun lock: 69 and the package to install; file locks still work", function()
    if not H.exists(shim) then return pending("no " .. shim .. " (make test builds it)") end
    local st, out, err = run("lock", "-n", "etcd://127.0.0.1:1/nocurl", "true")
    assert.equal(69, st, err)
    assert.equal("", out)
    assert.matches("etcd names need libcurl %(Debian package libcurl4%)", err)
    local dir = H.tmpdir()
    st, out, err = run("lock", "-n", dir .. "/f", "true")
    assert.equal(0, st, err)
  end)

  it("from Lua: nil, the message, ELIBACC -- not ENOMEM", function()
    if not H.exists(shim) then return pending("no " .. shim .. " (make test builds it)") end
    local st, out, err = run("-e", [[
      local lk, msg, code = atomrun.lock("etcd://127.0.0.1:1/nocurl", { wait = false })
      io.write(tostring(lk), "|", code, "|", msg)]])
    assert.equal(0, st, err)
    assert.matches("^nil|ELIBACC|.*need libcurl", out)
  end)
end)
