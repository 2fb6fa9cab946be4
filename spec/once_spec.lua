-- atomrun.once: one instance per machine, and who is running it.
local H = require "spec.helper"
local ar = H.ar
local gone = H.gone
local bg, ready_pid, hold, free = H.bg_lua, H.ready_pid, H.hold, H.free
local cleanup = H.cleanup_procs

describe("atomrun.once", function()
  local dir
  before_each(function() dir = H.tmpdir() .. "/once" end)
  after_each(cleanup)

  local SINCE = "%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ"

  it("returns a guard and writes the record of who runs", function()
    local g = assert(ar.once("nightly", { dir = dir }))
    assert.equal("nightly", g.name)
    assert.is_true(H.exists(dir .. "/nightly.lock"))
    local rec = ar.json.decode(H.slurp(dir .. "/nightly.json"))
    assert.equal(ar.pid(), math.tointeger(rec.pid))
    assert.matches("^" .. SINCE .. "$", rec.since)
    assert.equal(H.slurp("/proc/sys/kernel/hostname"):gsub("\n$", ""), rec.host)
    assert.equal("table", type(rec.argv))
    g:release()
    g:release()                        -- idempotent
    assert.equal(0, ar.held())
    -- the lock file stays (deleting it would break the exclusion)
    assert.is_true(H.exists(dir .. "/nightly.lock"))
  end)

  it("refuses a second instance with 'running', the record and a message naming it", function()
    local g = assert(ar.once("job", { dir = dir, argv = { "backup.sh", "--full" } }))
    local r, msg, code, rec = ar.once("job", { dir = dir })
    assert.is_nil(r)
    assert.equal("running", code)
    assert.equal(ar.pid(), rec.pid)
    assert.equal(g.record.since, rec.since)
    assert.same({ "backup.sh", "--full" }, rec.argv)
    assert.equal(string.format("job is already running: pid %d since %s (backup.sh --full)",
      ar.pid(), rec.since), msg)
    g:release()
    assert(ar.once("job", { dir = dir })):release()
  end)

  it("lets exactly one of two instances started at the same moment run", function()
    local RACE = [[
      local name, dir, go, out, stop = ...
      while not atomrun.stat(go) do atomrun.sleep(0.001) end
      local g, msg, code, rec = atomrun.once(name, { dir = dir })
      local res = { won = g ~= nil, pid = atomrun.pid(), msg = msg, code = code, rec = rec }
      assert(atomrun.replace(out, atomrun.json.encode(res)))
      if g then
        while not atomrun.stat(stop) do atomrun.sleep(0.01) end
        g:release()
      end
    ]]
    local rounds = H.heavy and 10 or 3
    for round = 1, rounds do
      local base = dir .. "-r" .. round
      assert(ar.mkdir(base))
      local go, stop = base .. "/go", base .. "/stop"
      bg(RACE, "race", dir, go, base .. "/out1", stop)
      bg(RACE, "race", dir, go, base .. "/out2", stop)
      H.write(go, "")
      assert.is_true(H.wait_file(base .. "/out1", 15) and H.wait_file(base .. "/out2", 15))
      local r1 = ar.json.decode(H.slurp(base .. "/out1"))
      local r2 = ar.json.decode(H.slurp(base .. "/out2"))
      assert.is_true(r1.won ~= r2.won, "round " .. round .. ": both or neither ran")
      local winner, loser = r1.won and r1 or r2, r1.won and r2 or r1
      assert.equal("running", loser.code)
      assert.equal(winner.pid, loser.rec.pid)
      assert.matches("^" .. SINCE .. "$", loser.rec.since)
      assert.equal("string", type(loser.rec.host))
      assert.equal("table", type(loser.rec.argv))
      assert.matches("^race is already running: pid " .. math.tointeger(winner.pid)
        .. " since " .. SINCE .. " %(.+%)$", loser.msg)
      H.write(stop, "")
      assert.is_true(H.wait_until(function() return gone(math.tointeger(winner.pid)) end, 10))
    end
  end)

  it("runs the next instance at once after the holder was SIGKILLed", function()
    local HOLDER = [[
      local dir, ready = ...
      local g = assert(atomrun.once("victim", { dir = dir }))
      assert(atomrun.replace(ready, tostring(atomrun.pid())))
      atomrun.sleep(60)
    ]]
    bg(HOLDER, dir, dir .. ".ready")
    local pid = ready_pid(dir .. ".ready")
    local r, _, code, rec = ar.once("victim", { dir = dir })
    assert.is_nil(r)
    assert.equal("running", code)
    assert.equal(pid, rec.pid)
    H.kill(pid, "KILL")
    assert.is_true(H.wait_until(function() return gone(pid) end, 10))
    -- no waiting, no stale-pid guessing: the kernel freed the lock
    local g = assert(ar.once("victim", { dir = dir }))
    local new = ar.json.decode(H.slurp(dir .. "/victim.json"))
    assert.equal(ar.pid(), math.tointeger(new.pid))     -- the stale record is overwritten
    g:release()
  end)

  it("names the live holder, never the dead pid of its record: the command its atomrun ran", function()
    local HOLDER = [[
      local dir, ready, cmdpid = ...
      local g = assert(atomrun.once("orphan", { dir = dir }))
      assert(atomrun.replace(ready, tostring(atomrun.pid())))
      atomrun.run({ "sh", "-c", 'echo $$ > "$0"; exec sleep 60', cmdpid })
    ]]
    bg(HOLDER, dir, dir .. ".ready", dir .. ".cmd")
    local pid = ready_pid(dir .. ".ready")
    local cmd = ready_pid(dir .. ".cmd")
    H.kill(pid, "KILL")
    assert.is_true(H.wait_until(function() return gone(pid) end, 10))
    -- the record still says pid (dead); the command holds the lock
    local r, msg, code, rec = ar.once("orphan", { dir = dir })
    assert.is_nil(r)
    assert.equal("running", code)
    assert.equal(cmd, rec.pid)
    assert.equal("sleep 60", rec.cmd)
    assert.equal("orphan is already running: pid " .. cmd .. " (sleep 60)", msg)
    H.kill(cmd, "KILL")
  end)

  it("treats a record whose pid is alive but does not hold the lock as stale", function()
    local HOLDER = [[
      local dir, ready = ...
      local g = assert(atomrun.once("liar", { dir = dir }))
      assert(atomrun.replace(ready, tostring(atomrun.pid())))
      atomrun.sleep(60)
    ]]
    bg(HOLDER, dir, dir .. ".ready")
    local pid = ready_pid(dir .. ".ready")
    -- a record naming us (alive, holding nothing), as a reused pid would
    H.write(dir .. "/liar.json", string.format('{"pid":%d,"since":"x","argv":["impostor"]}\n', ar.pid()))
    local r, msg, code, rec = ar.once("liar", { dir = dir })
    assert.is_nil(r)
    assert.equal("running", code)
    assert.equal(pid, rec.pid)
    assert.is_nil(msg:find("impostor", 1, true), msg)
    assert.matches("pid " .. pid, msg)
    H.kill(pid, "KILL")
  end)

  it("guard:update merges fields into the record and rewrites it atomically", function()
    local g = assert(ar.once("upd", { dir = dir, argv = { "job" } }))
    assert.is_true(g:update({ pid = 12345, stage = "copying" }))
    local rec = ar.json.decode(H.slurp(dir .. "/upd.json"))
    assert.equal(12345, math.tointeger(rec.pid))
    assert.equal("copying", rec.stage)
    assert.equal("upd", rec.name)
    assert.same({ "job" }, rec.argv)
    assert.equal("copying", g.record.stage)
    -- nothing but the record, no temp file, in the directory
    assert.same({ "upd.json", "upd.lock" }, H.listdir(dir))
    assert.has_error(function() g:update("x") end, "bad argument #1 to 'update' (table expected, got string)")
    g:release()
    assert.has_error(function() g:update({ a = 1 }) end)
  end)

  it("queues with opts.timeout and opts.wait instead of refusing", function()
    local HOLDER = [[
      local dir, ready, secs = ...
      local g = assert(atomrun.once("queue", { dir = dir }))
      assert(atomrun.replace(ready, tostring(atomrun.pid())))
      atomrun.sleep(tonumber(secs))
    ]]
    bg(HOLDER, dir, dir .. ".r1", 30)
    local pid = ready_pid(dir .. ".r1")
    local t0 = ar.now()
    local r, msg, code, rec = ar.once("queue", { dir = dir, timeout = 0.3 })
    assert.is_nil(r)
    assert.is_true(ar.now() - t0 >= 0.3)
    assert.equal("running", code)
    assert.equal(pid, rec.pid)
    assert.matches("gave up waiting", msg)
    H.kill(pid, "KILL")
    -- kill(2) returns before the process is gone: the next holder's
    -- non-waiting once() would race its exit (and rightly say "running")
    assert.is_true(H.wait_exit(pid, 10))

    bg(HOLDER, dir, dir .. ".r2", 0.3)
    ready_pid(dir .. ".r2")
    assert(ar.once("queue", { dir = dir, wait = true })):release()

    bg(HOLDER, dir, dir .. ".r3", 0.3)
    ready_pid(dir .. ".r3")
    assert(ar.once("queue", { dir = dir, timeout = 20 })):release()
  end)

  it("keeps instances of different names and different dirs apart", function()
    local a = assert(ar.once("a", { dir = dir }))
    local b = assert(ar.once("b", { dir = dir }))
    local c = assert(ar.once("a", { dir = dir .. "2" }))
    a:release() b:release() c:release()
  end)

  it("creates opts.dir with its parents, private unless root", function()
    local d = dir .. "/deep/er"
    assert(ar.once("x", { dir = d })):release()
    local st = assert(ar.stat(d))
    assert.equal("directory", st.type)
    assert.equal(0, st.mode & tonumber("022", 8))
  end)

  it("is released by <close>", function()
    do
      local g <close> = assert(ar.once("scoped", { dir = dir }))
    end
    assert(ar.once("scoped", { dir = dir })):release()
  end)

  it("refuses a directory that belongs to another user", function()
    if ar.uid() ~= 0 then
      pending("needs root to chown the directory")
      return
    end
    assert(ar.mkdir(dir))
    assert.equal(0, (H.sh("chown 65534 " .. H.q(dir))))
    local r, msg, code = ar.once("x", { dir = dir })
    assert.is_nil(r)
    assert.equal("EPERM", code)
    assert.matches("belongs to uid 65534", msg)
    assert.is_false(H.exists(dir .. "/x.lock"))
  end)

  it("refuses a directory that is a symlink or not a directory", function()
    local real = H.tmpdir()
    assert(os.execute("ln -s " .. H.q(real) .. " " .. H.q(dir)))
    local r, _, code = ar.once("x", { dir = dir })
    assert.is_nil(r)
    assert.equal("ENOTDIR", code)
    local file = H.tmpdir() .. "/f"
    H.write(file, "")
    r, _, code = ar.once("x", { dir = file })
    assert.is_nil(r)
    assert.equal("ENOTDIR", code)
  end)

  it("uses $XDG_RUNTIME_DIR/atomrun for other users", function()
    local xdg = H.tmpdir()
    if ar.uid() ~= 0 or H.sh("command -v setpriv") ~= 0
        or H.sh("setpriv --reuid=65534 --regid=65534 --clear-groups test -x " .. H.q(H.atomrun)) ~= 0 then
      pending("needs root, setpriv and a binary user 65534 can run")
      return
    end
    os.execute("chown 65534 " .. H.q(xdg))
    local st, out, err = H.sh("XDG_RUNTIME_DIR=" .. H.q(xdg) .. " setpriv --reuid=65534 --regid=65534 "
      .. "--clear-groups " .. H.q(H.atomrun) .. " -e 'local g = assert(atomrun.once(\"mine\")) "
      .. "print(g.path)'")
    assert.equal(0, st, err)
    assert.equal(xdg .. "/atomrun/mine.lock\n", out)
    local d = assert(ar.stat(xdg .. "/atomrun"))
    assert.equal(65534, d.uid)
    assert.equal(tonumber("700", 8), d.mode & tonumber("777", 8))
  end)

  it("raises a Lua error for bad names and options", function()
    for _, name in ipairs({ "", "a/b", "../x", ".hidden", "-x", "a b", "x\0y" }) do
      assert.has_error(function() ar.once(name, { dir = dir }) end, nil, name)
    end
    assert.has_error(function() ar.once(42) end)
    assert.has_error(function() ar.once("ok", { dri = dir }) end)
    assert.has_error(function() ar.once("ok", { dir = 42 }) end)
    assert.has_error(function() ar.once("ok", "dir") end)
    assert.equal(0, ar.held())
  end)
end)
