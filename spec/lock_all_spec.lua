-- atomrun.lock_all: several locks in canonical order, all or none.
local H = require "spec.helper"
local ar = H.ar
local gone = H.gone
local bg, ready_pid, hold, free = H.bg_lua, H.ready_pid, H.hold, H.free
local cleanup = H.cleanup_procs

describe("atomrun.lock_all", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(cleanup)

  local function ident(p)
    local st = assert(ar.stat(p))
    return st.dev, st.ino
  end

  it("takes every lock, in (device, inode) order, and releases them all", function()
    local paths = { dir .. "/c", dir .. "/a", dir .. "/sub/b" }
    local g = assert(ar.lock_all(paths, { timeout = 5 }))
    assert.equal(3, #g.locks)
    assert.equal(3, ar.held())
    for i = 2, #g.paths do
      local d1, i1 = ident(g.paths[i - 1])
      local d2, i2 = ident(g.paths[i])
      assert.is_true(d1 < d2 or (d1 == d2 and i1 < i2))
    end
    for _, p in ipairs(paths) do assert.is_false(free(p)) end
    assert.equal(1, H.run("lock", "-n", paths[1], "true"))
    g:unlock()
    g:unlock()                         -- idempotent
    assert.equal(0, ar.held())
    for _, p in ipairs(paths) do assert.is_true(free(p)) end
  end)

  it("gives the same order whatever order the paths come in", function()
    local a, b, c = dir .. "/a", dir .. "/b", dir .. "/c"
    local g1 = assert(ar.lock_all({ a, b, c }))
    local order = g1.paths
    g1:unlock()
    local g2 = assert(ar.lock_all({ c, a, b }))
    assert.same(order, g2.paths)
    g2:unlock()
  end)

  it("is released by <close>", function()
    local a = dir .. "/a"
    do
      local g <close> = assert(ar.lock_all({ a }))
      assert.is_false(free(a))
    end
    assert.is_true(free(a))
  end)

  it("never deadlocks two processes locking the same set in opposite orders", function()
    local LOOP = [[
      local first, second, n, go, done = ...
      while not atomrun.stat(go) do atomrun.sleep(0.002) end
      for _ = 1, tonumber(n) do
        local g = assert(atomrun.lock_all({ first, second }))
        g:unlock()
      end
      assert(atomrun.replace(done, "ok"))
    ]]
    local a, b, go = dir .. "/a", dir .. "/b", dir .. "/go"
    local n = H.heavy and 3000 or 500
    bg(LOOP, a, b, n, go, dir .. "/done1")
    bg(LOOP, b, a, n, go, dir .. "/done2")
    H.write(go, "")
    assert.is_true(H.wait_file(dir .. "/done1", 30), "process 1 is stuck")
    assert.is_true(H.wait_file(dir .. "/done2", 30), "process 2 is stuck")
  end)

  it("is all or none: one busy lock and none is held", function()
    local a, b, c = dir .. "/a", dir .. "/b", dir .. "/c"
    local pid = hold(dir, b)
    local g, msg, code, holder = ar.lock_all({ a, b, c }, { wait = false })
    assert.is_nil(g)
    assert.equal("busy", code)
    assert.equal(pid, holder.pid)
    assert.truthy(msg:find(b, 1, true))
    assert.equal(0, ar.held())
    assert.is_true(free(a))
    assert.is_true(free(c))
  end)

  it("shares one deadline among all the locks", function()
    -- canonical order first, so we know which lock is taken first
    local g0 = assert(ar.lock_all({ dir .. "/x", dir .. "/y" }))
    local first, second = g0.paths[1], g0.paths[2]
    g0:unlock()
    -- the first lock frees after 0.8 s, the second never: with one
    -- deadline of 1.5 s the whole call gives up after 1.5 s; a timeout
    -- per lock would take 0.8 + 1.5 s
    local p1 = hold(dir, first, 0.8, "1")
    hold(dir, second, nil, "2")
    local t0 = ar.now()
    local g, _, code, holder = ar.lock_all({ second, first }, { timeout = 1.5 })
    local dt = ar.now() - t0
    assert.is_nil(g)
    assert.equal("timeout", code)
    assert.not_equal(p1, holder.pid)
    assert.is_true(dt >= 1.5 - 1e-3, dt)
    assert.is_true(dt < 2.3, "the deadline was not shared: " .. dt)
    assert.equal(0, ar.held())
  end)

  it("waits for busy locks within the deadline", function()
    local a, b = dir .. "/a", dir .. "/b"
    hold(dir, b, 0.3)
    local g = assert(ar.lock_all({ a, b }, { timeout = 10 }))
    assert.equal(2, #g.locks)
    g:unlock()
  end)

  it("takes a file named twice (or through a hard link) once", function()
    local a, b = dir .. "/a", dir .. "/b"
    H.write(a, "")
    assert(os.execute("ln " .. H.q(a) .. " " .. H.q(dir .. "/a2")))
    local g = assert(ar.lock_all({ a, b, a, dir .. "/a2" }, { timeout = 1 }))
    assert.equal(2, #g.locks)
    g:unlock()
    assert.equal(0, ar.held())
  end)

  it("says 'deadlock' at once if the script already holds one of them", function()
    local a, b = dir .. "/a", dir .. "/b"
    local lk = assert(ar.lock(b))
    local g, msg, code = ar.lock_all({ a, b })
    assert.is_nil(g)
    assert.equal("deadlock", code)
    assert.truthy(msg:find(b, 1, true))
    assert.equal(1, ar.held())
    lk:unlock()
  end)

  it("returns the errno code when a path cannot be opened, holding nothing", function()
    H.write(dir .. "/file", "")
    local g, msg, code = ar.lock_all({ dir .. "/a", dir .. "/file/x" })
    assert.is_nil(g)
    assert.equal("ENOTDIR", code)
    assert.truthy(msg:find("file/x", 1, true))
    assert.equal(0, ar.held())
  end)

  it("sorts by the identity of the files it opened, with no stat by path", function()
    local paths = { dir .. "/c", dir .. "/a", dir .. "/sub/b" }
    local real, stats = ar.stat, 0
    ar.stat = function(...) stats = stats + 1; return real(...) end
    local ok, g = pcall(ar.lock_all, paths)
    ar.stat = real
    assert(ok, g)
    assert(g, "lock_all failed")
    assert.equal(0, stats)
    for i = 2, #g.locks do
      local a, b = g.locks[i - 1], g.locks[i]
      assert.is_true(a.dev < b.dev or (a.dev == b.dev and a.ino < b.ino))
    end
    g:unlock()
  end)

  it("raises a Lua error for programming mistakes", function()
    assert.has_error(function() ar.lock_all(dir .. "/a") end)
    assert.has_error(function() ar.lock_all({ dir .. "/a", 42 }) end)
    assert.has_error(function() ar.lock_all({ dir .. "/a" }, { timout = 1 }) end)
    assert.has_error(function() ar.lock_all({ dir .. "/a" }, { mode = "both" }) end)
    assert.equal(0, ar.held())
  end)
end)

describe("handle identity: f.dev, f.ino, lk.dev, lk.ino", function()
  local dir
  before_each(function() dir = H.tmpdir() end)

  local function same_as_stat(h, p)
    local st = assert(ar.stat(p))
    assert.equal(st.dev, h.dev)
    assert.equal(st.ino, h.ino)
  end

  it("open(): taken from the descriptor, kept after close", function()
    local p = dir .. "/f"
    local f = assert(ar.open(p))
    same_as_stat(f, p)
    local dev, ino = f.dev, f.ino
    -- the path now names another file; the handle still tells its own
    assert(os.rename(p, dir .. "/old"))
    H.write(p, "")
    f:close()
    assert.equal(dev, f.dev)
    assert.equal(ino, f.ino)
    assert.not_equal(ino, ar.stat(p).ino)
  end)

  it("lock(): filled on first read (lazy), from the descriptor", function()
    local p = dir .. "/l"
    local lk = assert(ar.lock(p))
    assert(os.rename(p, dir .. "/old"))
    H.write(p, "")
    same_as_stat(lk, dir .. "/old")
    lk:unlock()
    same_as_stat(lk, dir .. "/old")     -- read while held: kept
    local lk2 = assert(ar.lock(p))
    lk2:unlock()
    assert.is_nil(lk2.dev)             -- never read while held: gone
    assert.is_nil(lk2.ino)
  end)

  it("fcntl locks and lockfd() have them too", function()
    local p = dir .. "/r"
    local lk = assert(ar.lock(p, { fcntl = true, start = 0, length = 1 }))
    same_as_stat(lk, p)
    lk:unlock()
    local st = assert(ar.stat(p))
    local code, out, err = H.sh("exec 9>>" .. H.q(p) .. "; " .. H.q(H.atomrun) .. " -e "
      .. H.q("local lk = assert(atomrun.lockfd(9)); io.write(lk.dev, ' ', lk.ino)"))
    assert.equal(0, code, err)
    assert.equal(st.dev .. " " .. st.ino, out)
  end)
end)
