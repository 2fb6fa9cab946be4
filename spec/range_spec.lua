-- Byte-range locks (atomrun.open, f:lock, f:test, r:unlock), proved with
-- real processes: other atomrun processes, Python's fcntl.lockf and sqlite3.
local H = require "spec.helper"
local ar = H.ar

local SQLITE_PENDING = 0x40000000     -- SQLite's os_unix.c lock bytes
local SQLITE_SHARED_FIRST = SQLITE_PENDING + 2
local SQLITE_SHARED_SIZE = 510

local esc, err_of = H.pat, H.err_of

-- A child `atomrun -e` that locks a range, writes its pid to a ready file
-- and holds the lock until the test writes the stop file (60 s at most).
local HOLD = [[
  local path, start, length, mode, ready, stop = ...
  local f = assert(atomrun.open(path))
  local r = assert(f:lock(math.tointeger(tonumber(start)), math.tointeger(tonumber(length)),
    { mode = mode, timeout = 30 }))
  assert(atomrun.replace(ready, tostring(atomrun.pid()), { durable = false }))
  local t = atomrun.now() + 60
  while not atomrun.stat(stop) and atomrun.now() < t do atomrun.sleep(0.005) end
  r:unlock()
]]

-- One-shot child: what does another process see on these bytes?
local PROBE = [[
  local path, start, length, mode = ...
  local f = assert(atomrun.open(path, { create = false }))
  local h = f:test(math.tointeger(tonumber(start)), math.tointeger(tonumber(length)), mode)
  if not h then print("free") return end
  print(h.pid or 0, h.kind, h.mode, h.start, h.length)
]]

-- Python, for the classic POSIX side (fcntl.lockf = F_SETLK/F_SETLKW).
local PY = [[
import fcntl, os, struct, sys, time

def touch(path, text=""):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)

def hold_until(stop):
    t = time.monotonic() + 60
    while not os.path.exists(stop) and time.monotonic() < t:
        time.sleep(0.005)

cmd, path = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
if cmd == "hold":                 # hold START LEN MODE READY STOP [closeother]
    start, length, mode, ready, stop = sys.argv[3:8]
    op = fcntl.LOCK_EX if mode == "exclusive" else fcntl.LOCK_SH
    fcntl.lockf(fd, op, int(length), int(start))
    if len(sys.argv) > 8:         # the classic pitfall: close another fd
        os.close(os.open(path, os.O_RDONLY))
    touch(ready, str(os.getpid()))
    hold_until(stop)
elif cmd == "try":                # try ex:START:LEN sh:START:LEN ...
    for spec in sys.argv[3:]:
        kind, start, length = spec.split(":")
        op = fcntl.LOCK_EX if kind == "ex" else fcntl.LOCK_SH
        try:
            fcntl.lockf(fd, op | fcntl.LOCK_NB, int(length), int(start))
        except OSError:
            print(spec, "busy")
            continue
        fcntl.lockf(fd, fcntl.LOCK_UN, int(length), int(start))
        print(spec, "ok")
elif cmd == "getlk":              # getlk START LEN: what F_GETLK says
    fmt = "hhqqi4x"
    arg = struct.pack(fmt, fcntl.F_WRLCK, 0, int(sys.argv[3]), int(sys.argv[4]), 0)
    t, _, s, l, pid = struct.unpack(fmt, fcntl.fcntl(fd, fcntl.F_GETLK, arg))
    print("unlocked" if t == fcntl.F_UNLCK else "locked", s, l, pid)
elif cmd == "wait":               # wait START LEN WAITING GOT: blocking lockf
    start, length, waiting, got = sys.argv[3:7]
    touch(waiting)
    fcntl.lockf(fd, fcntl.LOCK_EX, int(length), int(start))
    touch(got, str(os.getpid()))
]]

describe("byte-range locks", function()
  local dir, path, children

  before_each(function()
    dir = H.tmpdir()
    path = dir .. "/ranges"
    children = {}
    H.write(dir .. "/py.py", PY)
  end)

  after_each(function()
    for _, c in ipairs(children) do
      H.write(c.stop, "")
      if c.pid then H.kill(c.pid, "KILL") end
    end
    collectgarbage()
    collectgarbage()
    H.cleanup()
  end)

  -- Start a holder (atomrun or python); returns {pid=, stop=, release=}.
  local function start_holder(kind, start, length, mode, extra)
    local n = #children + 1
    local ready, stop = dir .. "/ready" .. n, dir .. "/stop" .. n
    local errf = dir .. "/child" .. n .. ".err"
    local cmd
    if kind == "atomrun" then
      cmd = table.concat({ H.q(H.atomrun), "-e", H.q(HOLD), H.q(path), start, length,
        mode, H.q(ready), H.q(stop) }, " ")
    else
      cmd = table.concat({ H.python, H.q(dir .. "/py.py"), "hold", H.q(path), start, length,
        mode, H.q(ready), H.q(stop), extra or "" }, " ")
    end
    local c = { stop = stop }
    children[#children + 1] = c
    H.spawn(cmd .. " 2>" .. H.q(errf))
    assert(H.wait_file(ready, 30), "holder did not start: " .. H.slurp(errf))
    c.pid = tonumber(H.slurp(ready))
    function c.release()
      H.write(stop, "")
    end
    return c
  end

  -- h is the holder c: its pid, kind, mode and range
  local function assert_holder(h, c, kind, mode, start, length)
    assert.equal(c.pid, h.pid)
    assert.equal(kind, h.kind)
    assert.equal(mode, h.mode)
    assert.equal(start, h.start)
    assert.equal(length, h.length)
  end

  local function probe(start, length, mode)
    local st, out, err = H.run("-e", PROBE, path, tostring(start), tostring(length),
      mode or "exclusive")
    assert(st == 0, err)
    if out == "free\n" then return nil end
    local pid, kind, m, s, l = out:match("^(%d+)\t(%S+)\t(%S+)\t(%d+)\t(%d+)\n$")
    assert(pid, "probe printed: " .. out)
    return { pid = tonumber(pid), kind = kind, mode = m, start = tonumber(s),
      length = tonumber(l) }
  end

  local function py(...)
    local parts = { H.python, H.q(dir .. "/py.py") }
    for _, a in ipairs({ ... }) do parts[#parts + 1] = H.q(a) end
    local st, out, err = H.sh(table.concat(parts, " "))
    assert(st == 0, err)
    return out
  end

  it("f:lock returns a range with start, length, mode; r:unlock is idempotent", function()
    local f = assert(ar.open(path))
    assert.equal(path, f.path)
    assert.is_true(f.writable)
    assert.matches("^atomrun%.file %(" .. esc(path) .. "%)$", tostring(f))
    local r = assert(f:lock(10, 5))
    assert.equal(10, r.start)
    assert.equal(5, r.length)
    assert.equal("exclusive", r.mode)
    assert.is_true(r.locked)
    assert.matches("bytes 10%+5, exclusive, held", tostring(r))
    local s = assert(f:lock(100, 0, { mode = "shared" }))
    assert.equal("shared", s.mode)
    assert.equal(0, s.length)
    assert.matches("bytes 100 to end of file, shared", tostring(s))
    assert.same({ pid = ar.pid(), kind = "ofd", mode = "exclusive", start = 10, length = 5 },
      probe(0, 50))
    assert.is_true(r:unlock())
    assert.is_true(r:unlock())
    assert.is_false(r.locked)
    assert.matches("released", tostring(r))
    assert.is_nil(probe(0, 50))
    assert.equal("shared", probe(0, 0).mode)
    assert.is_true(f:close())
    assert.is_true(f:close())
  end)

  it("shared ranges coexist across processes; exclusive ones exclude", function()
    local c = start_holder("atomrun", 0, 10, "shared")
    local f = assert(ar.open(path))
    local g = assert(ar.open(path))
    local r, msg, code = g:lock(5, 1, { wait = false })
    assert.is_nil(r)
    assert.equal("busy", code)
    assert.matches("pid " .. c.pid, msg)
    local s = assert(f:lock(0, 10, { mode = "shared", wait = false }))
    assert.is_nil(f:test(0, 10, "shared"))
    r, msg = f:lock(20, 1, { wait = false })   -- other bytes: free
    assert.truthy(r, msg)
    -- bytes right after the shared range are free
    assert.truthy(g:lock(10, 10, { wait = false }))
    s:unlock()
    c.release()
    -- an exclusive holder excludes shared requests too
    local c2 = start_holder("atomrun", 40, 10, "exclusive")
    r, msg, code = f:lock(45, 1, { mode = "shared", wait = false })
    assert.is_nil(r)
    assert.equal("busy", code)
    assert.matches("pid " .. c2.pid, msg)
    f:close()
    g:close()
  end)

  it("f:test and busy messages name an OFD holder in another process", function()
    local c = start_holder("atomrun", 100, 10, "exclusive")
    local f = assert(ar.open(path))
    local h = f:test(105, 1)
    assert_holder(h, c, "ofd", "exclusive", 100, 10)
    assert.matches("atomrun", h.cmd)
    assert.equal(c.pid, f:test(0, 0, "shared").pid)
    assert.is_nil(f:test(0, 100))
    assert.is_nil(f:test(110, 5))
    local r, msg, code, holder = f:lock(90, 20, { wait = false })
    assert.is_nil(r)
    assert.equal("busy", code)
    assert.matches(esc(path) .. " %(bytes 90%+20%) is locked by pid " .. c.pid
      .. " %(atomrun ", msg)
    assert_holder(holder, c, "ofd", "exclusive", 100, 10)
    f:close()
  end)

  it("names the other process, not itself, when its own handle holds the same shared lock",
    function()
      local f = assert(ar.open(path))
      local s = assert(f:lock(0, 10, { mode = "shared" }))
      local c = start_holder("atomrun", 0, 10, "shared")
      -- f's own shared lock on the same bytes does not conflict with f
      local h = f:test(0, 10)
      assert.equal(c.pid, h.pid)
      assert.equal("shared", h.mode)
      s:unlock()
      f:close()
    end)

  it("sees Python's lockf ranges, with the holder's real pid", function()
    local c = start_holder("python", 100, 10, "exclusive")
    local f = assert(ar.open(path))
    local h = f:test(105, 1)
    assert_holder(h, c, "posix", "exclusive", 100, 10)
    assert.matches("py%.py hold", h.cmd)
    local r, msg, code, holder = f:lock(95, 10, { wait = false })
    assert.is_nil(r)
    assert.equal("busy", code)
    assert.matches("is locked by pid " .. c.pid .. " %(python", msg)
    assert.equal(c.pid, holder.pid)
    -- the neighbours are free
    assert.truthy(f:lock(90, 10, { wait = false }))
    assert.truthy(f:lock(110, 10, { wait = false }))
    -- a shared lockf range admits our shared lock, not our exclusive one
    local c2 = start_holder("python", 200, 10, "shared")
    local g = assert(ar.open(path))
    r, msg, code = g:lock(200, 1, { wait = false })
    assert.equal("busy", code)
    assert.matches("pid " .. c2.pid, msg)
    assert.truthy(g:lock(200, 10, { mode = "shared", wait = false }))
    -- a kernel wait is woken when Python lets go
    c.release()
    local w = assert(ar.open(path))
    assert.truthy(w:lock(100, 10, { timeout = 30 }))
    f:close()
    g:close()
    w:close()
  end)

  it("is seen by Python's lockf, and wakes a Python waiter when released", function()
    local f = assert(ar.open(path))
    local x = assert(f:lock(0, 10))
    local s = assert(f:lock(20, 10, { mode = "shared" }))
    assert.equal(table.concat({
      "ex:0:10 busy", "ex:5:1 busy", "ex:10:10 ok", "sh:20:10 ok", "ex:25:1 busy",
      "ex:30:0 ok", "" }, "\n"),
      py("try", path, "ex:0:10", "ex:5:1", "ex:10:10", "sh:20:10", "ex:25:1", "ex:30:0"))
    -- the classic F_GETLK sees the lock but cannot say whose it is
    assert.equal("locked 0 10 -1\n", py("getlk", path, "0", "10"))
    local waiting, got = dir .. "/py.waiting", dir .. "/py.got"
    H.spawn(table.concat({ H.python, H.q(dir .. "/py.py"), "wait", H.q(path), "5", "1",
      H.q(waiting), H.q(got) }, " "))
    assert.truthy(H.wait_file(waiting, 30))
    assert.truthy(H.wait_lock_waited(path, 30))   -- blocked in F_SETLKW
    assert.is_false(H.exists(got))          -- still ours
    x:unlock()
    assert.truthy(H.wait_file(got, 30))
    s:unlock()
    f:close()
  end)

  it("survives another descriptor of the same file being closed", function()
    local f = assert(ar.open(path))
    local r = assert(f:lock(0, 10))
    local other = assert(io.open(path, "r"))
    other:close()
    local another = assert(ar.open(path))
    another:close()
    local h = probe(0, 10)
    assert.equal(ar.pid(), h.pid)
    assert.equal("ofd", h.kind)
    assert.equal("ex:0:10 busy\n", py("try", path, "ex:0:10"))
    r:unlock()
    f:close()
  end)

  it("(the pitfall it avoids: a classic lockf lock dies with any close of the file)",
    function()
      start_holder("python", 0, 10, "exclusive", "closeother")
      local f = assert(ar.open(path))
      assert.is_nil(f:test(0, 10))
      f:close()
    end)

  it("length 0 covers bytes beyond the end of file, including ones written later", function()
    local c = start_holder("atomrun", 100, 0, "exclusive")
    local f = assert(ar.open(path))
    assert.equal(0, ar.stat(path).size)
    assert.is_nil(f:test(0, 100))
    local h = f:test(100, 1)
    assert.equal(c.pid, h.pid)
    assert.equal(100, h.start)
    assert.equal(0, h.length)
    assert.equal(c.pid, f:test(1 << 40, 1).pid)
    local out = assert(io.open(path, "ab"))
    out:write(string.rep("x", 5000))
    out:close()
    assert.equal(c.pid, f:test(4000, 10).pid)
    assert.equal(c.pid, f:test(6000, 10).pid)
    local r, _, code = f:lock(50, 100, { wait = false })
    assert.is_nil(r)
    assert.equal("busy", code)
    assert.truthy(f:lock(0, 100, { wait = false }))
    f:close()
  end)

  it("locks ranges past the end of file without growing it", function()
    local f = assert(ar.open(path))
    local r = assert(f:lock(1000000000, 10))
    assert.equal(0, ar.stat(path).size)
    assert.same({ pid = ar.pid(), kind = "ofd", mode = "exclusive", start = 1000000000,
      length = 10 }, probe(0, 0))
    r:unlock()
    assert.is_nil(probe(0, 0))
    f:close()
  end)

  describe("with sqlite3", function()
    local have = os.execute("command -v sqlite3 >/dev/null 2>&1")

    it("f:test sees SQLite's locks while sqlite3 holds an EXCLUSIVE transaction", function()
      if not have then pending("sqlite3 is not installed") return end
      local db, fifo, pidf = dir .. "/db", dir .. "/fifo", dir .. "/sqlite.pid"
      assert.equal(0, (H.sh("sqlite3 " .. H.q(db) .. " 'CREATE TABLE t(x)'")))
      assert.equal(0, (H.sh("mkfifo " .. H.q(fifo))))
      H.spawn("sqlite3 " .. H.q(db) .. " <" .. H.q(fifo))
      -- r+ (O_RDWR) never blocks on a FIFO; sqlite3 gets EOF when we close it.
      local w = assert(io.open(fifo, "r+"))
      finally(function() if io.type(w) == "file" then w:close() end end)
      w:write("BEGIN EXCLUSIVE;\nINSERT INTO t VALUES(1);\n",
        ".shell echo $PPID > " .. pidf .. ".tmp && mv " .. pidf .. ".tmp " .. pidf .. "\n")
      w:flush()
      assert.truthy(H.wait_until(function() return H.slurp(pidf):match("^%d+\n$") end, 30))
      local spid = tonumber(H.slurp(pidf))
      local f = assert(ar.open(db))
      local h = f:test(SQLITE_SHARED_FIRST, SQLITE_SHARED_SIZE, "shared")
      assert.equal(spid, h.pid)
      assert.equal("posix", h.kind)
      assert.equal("exclusive", h.mode)
      assert.matches("^sqlite3", h.cmd)
      assert.equal(spid, f:test(SQLITE_PENDING, 1, "shared").pid)
      assert.is_nil(f:test(0, SQLITE_PENDING))       -- the pages themselves: no locks
      local r, msg, code, holder = f:lock(SQLITE_SHARED_FIRST, SQLITE_SHARED_SIZE,
        { mode = "shared", wait = false })
      assert.is_nil(r)
      assert.equal("busy", code)
      assert.matches("is locked by pid " .. spid .. " %(sqlite3", msg)
      assert.equal(spid, holder.pid)
      -- COMMIT and EOF: sqlite3 lets go and exits
      w:write("COMMIT;\n")
      w:close()
      assert.truthy(H.wait_until(function() return f:test(SQLITE_PENDING, 512) == nil end, 30))
      f:close()
      local st, out = H.sh("sqlite3 " .. H.q(db) .. " 'SELECT count(*) FROM t'")
      assert.equal(0, st)
      assert.equal("1\n", out)
    end)

    it("an atomrun lock on SQLite's SHARED bytes keeps sqlite3 readers out", function()
      if not have then pending("sqlite3 is not installed") return end
      local db = dir .. "/db"
      assert.equal(0, (H.sh("sqlite3 " .. H.q(db) .. " 'CREATE TABLE t(x)'")))
      local f = assert(ar.open(db))
      local r = assert(f:lock(SQLITE_SHARED_FIRST, SQLITE_SHARED_SIZE))
      local st, _, err = H.sh("sqlite3 " .. H.q(db) .. " 'SELECT count(*) FROM t'")
      assert.not_equal(0, st)
      assert.matches("locked", err)
      r:unlock()
      local out
      st, out = H.sh("sqlite3 " .. H.q(db) .. " 'SELECT count(*) FROM t'")
      assert.equal(0, st)
      assert.equal("0\n", out)
      f:close()
    end)
  end)

  it("times out after the timeout, naming the holder; wait = false is busy at once", function()
    local c = start_holder("atomrun", 0, 10, "exclusive")
    local f = assert(ar.open(path))
    local t0 = ar.now()
    local r, msg, code, holder = f:lock(5, 10, { timeout = 0.3 })
    local took = ar.now() - t0
    assert.is_nil(r)
    assert.equal("timeout", code)
    assert.matches("^timed out after 0%.3 s waiting for " .. esc(path)
      .. " %(bytes 5%+10%), locked by pid " .. c.pid, msg)
    assert.equal(c.pid, holder.pid)
    assert.is_true(took >= 0.29, "returned after " .. took .. " s")
    assert.is_true(took < 20, "returned after " .. took .. " s")
    r, msg, code = f:lock(0, 1, { wait = false })
    assert.is_nil(r)
    assert.equal("busy", code)
    r, msg, code = f:lock(0, 1, { timeout = 0 })
    assert.equal("busy", code)
    -- a waiting lock is granted when the holder lets go
    c.release()
    assert.truthy(f:lock(0, 10, { timeout = 30 }))
    f:close()
  end)

  describe("the two rules", function()
    it("a range overlapping one held through the same handle is a Lua error", function()
      local f = assert(ar.open(path))
      local r = assert(f:lock(10, 10))
      local e = err_of(function() return f:lock(15, 10) end)
      assert.matches(esc(path) .. " %(bytes 15%+10%) overlaps bytes 10%+10 already locked "
        .. "through this handle", e)
      assert.matches("overlaps", err_of(function() return f:lock(0, 0, { mode = "shared" }) end))
      assert.matches("overlaps", err_of(function() return f:lock(19, 1) end))
      -- the refusal left the first range intact
      assert.same({ pid = ar.pid(), kind = "ofd", mode = "exclusive", start = 10, length = 10 },
        probe(10, 10))
      -- adjacent ranges are fine (the kernel shows them merged into one lock)
      local a = assert(f:lock(0, 10))
      local b = assert(f:lock(20, 0))
      assert.equal(ar.pid(), probe(10, 10).pid)
      r:unlock()
      assert.is_nil(probe(10, 10))
      -- and unlocking one never freed its neighbours
      assert.same({ pid = ar.pid(), kind = "ofd", mode = "exclusive", start = 0, length = 10 },
        probe(0, 10))
      assert.equal(20, probe(20, 5).start)
      -- once released, the same bytes may be locked again through the handle
      assert.truthy(f:lock(10, 10))
      a:unlock()
      b:unlock()
      f:close()
    end)

    it("a conflict with another handle of this state is 'deadlock' at once, not a hang",
      function()
        local f = assert(ar.open(path))
        local g = assert(ar.open(path))
        local r = assert(f:lock(0, 10))
        local x, msg, code = g:lock(5, 10, { timeout = 20 })
        assert.is_nil(x)
        assert.equal("deadlock", code)
        assert.matches(esc(path) .. " %(bytes 5%+10%) conflicts with bytes 0%+10 held through "
          .. "another handle of this script", msg)
        x, msg, code = g:lock(0, 0, { mode = "shared", timeout = 20 })
        assert.equal("deadlock", code)
        -- wait = false: just busy, naming this very process
        x, msg, code = g:lock(5, 10, { wait = false })
        assert.is_nil(x)
        assert.equal("busy", code)
        assert.matches("pid " .. ar.pid(), msg)
        -- shared + shared across handles is no conflict
        local s1 = assert(f:lock(100, 10, { mode = "shared" }))
        local s2 = assert(g:lock(100, 10, { mode = "shared" }))
        s1:unlock()
        s2:unlock()
        r:unlock()
        assert.truthy(g:lock(5, 10, { timeout = 20 }))
        f:close()
        g:close()
      end)

    it("without a timeout, too ('deadlock' in a child that would otherwise hang)", function()
      local st, out, err = H.sh("timeout 20 " .. H.q(H.atomrun) .. " -e " .. H.q([[
        local f = assert(atomrun.open(arg[1]))
        local g = assert(atomrun.open(arg[1]))
        local r = assert(f:lock(0, 10))
        print(select(3, g:lock(0, 1)))
      ]]) .. " " .. H.q(path))
      assert.equal(0, st, err)
      assert.equal("deadlock\n", out)
    end)
  end)

  it("an exclusive lock on a read-only handle is nil, msg, 'EBADF' saying why", function()
    local ro = dir .. "/readonly"
    H.write(ro, "")
    os.execute("chmod 0755 " .. H.q(dir) .. "; chmod 0644 " .. H.q(ro))
    local script = [[
      local f = assert(atomrun.open(arg[1]))
      print(f.writable)
      print(f:lock(0, 10))
      print(f:lock(0, 10, { mode = "shared" }) ~= nil)
    ]]
    local cmd = H.q(H.atomrun) .. " -e " .. H.q(script) .. " " .. H.q(ro)
    if ar.uid() == 0 then
      -- root may write anything: run the child as nobody
      local nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups "
      if H.sh(nobody .. H.q(H.atomrun) .. " -e ''") ~= 0 then
        pending("cannot run " .. H.atomrun .. " as nobody (setpriv, or permissions)")
        return
      end
      cmd = nobody .. cmd
    else
      os.execute("chmod 0444 " .. H.q(ro))
    end
    local st, out, err = H.sh(cmd)
    assert.equal(0, st, err)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal("false", lines[1])
    assert.matches("^nil\tcannot lock " .. esc(ro) .. " %(bytes 0%+10%) exclusive: the file is "
      .. "open read%-only %(no write permission%), which allows only shared locks\tEBADF$",
      lines[2])
    assert.equal("true", lines[3])
  end)

  describe("releasing", function()
    it("closing a handle releases all its ranges", function()
      local f = assert(ar.open(path))
      local held = ar.held()
      local a = assert(f:lock(0, 10))
      local b = assert(f:lock(20, 0, { mode = "shared" }))
      assert.equal(held + 2, ar.held())
      assert.equal(ar.pid(), probe(0, 0).pid)
      assert.is_true(f:close())
      assert.equal(held, ar.held())
      assert.is_false(a.locked)
      assert.is_false(b.locked)
      assert.is_true(a:unlock())
      assert.is_nil(probe(0, 0))
      assert.matches("closed", err_of(function() return f:lock(0, 1) end))
      assert.matches("closed", err_of(function() return f:test(0, 1) end))
      assert.matches("closed", tostring(f))
    end)

    it("<close> releases a range at the end of its block", function()
      local f = assert(ar.open(path))
      do
        local r <close> = assert(f:lock(0, 10))
        assert.equal(ar.pid(), probe(0, 10).pid)
      end
      assert.is_nil(probe(0, 10))
      do
        local g <close> = assert(ar.open(path))
        assert(g:lock(50, 10))
      end
      assert.is_nil(probe(0, 0))
      f:close()
    end)

    it("a collected range releases its bytes; a live range keeps its handle open", function()
      local g = assert(ar.open(path))
      -- (in functions, so that no stack slot keeps them alive)
      local function lock_and_drop()
        local f = assert(ar.open(path))
        local _ = assert(f:lock(0, 10))
        assert.equal(ar.pid(), g:test(0, 10).pid)
      end
      local function lock_keep_range()
        local f = assert(ar.open(path))
        return assert(f:lock(0, 10))
      end
      lock_and_drop()
      collectgarbage()
      collectgarbage()
      assert.is_nil(g:test(0, 10))
      local r = lock_keep_range()
      collectgarbage()
      collectgarbage()
      assert.equal(ar.pid(), g:test(0, 10).pid)   -- the handle lives on in r
      assert.equal(path, r.file.path)
      r = nil
      collectgarbage()
      collectgarbage()
      assert.is_nil(g:test(0, 10))
      g:close()
    end)
  end)

  describe("bad arguments are Lua errors naming them", function()
    local f
    before_each(function() f = assert(ar.open(path)) end)
    after_each(function() f:close() end)

    local cases = {
      { "negative start", function() return f:lock(-1, 10) end, "#1 to 'lock' %(start must be >= 0" },
      { "negative length", function() return f:lock(0, -1) end,
        "#2 to 'lock' %(length must be >= 0" },
      { "non-integer start", function() return f:lock(1.5, 10) end,
        "#1 to 'lock' %(start must be a whole number of bytes" },
      { "non-integer length", function() return f:lock(0, 0.5) end,
        "#2 to 'lock' %(length must be a whole number of bytes" },
      { "huge float start", function() return f:lock(2 ^ 63, 1) end, "start must be a whole number" },
      { "NaN start", function() return f:lock(0 / 0, 1) end, "start must be a whole number" },
      { "string start", function() return f:lock("10", 1) end, "#1 to 'lock' %(integer expected, got string" },
      { "missing length", function() return f:lock(0) end, "#2 to 'lock' %(integer expected, got no value" },
      { "start+length overflow", function() return f:lock(math.maxinteger, 1) end,
        "start %+ length overflows" },
      { "start+length overflow (2)", function() return f:lock(2, math.maxinteger - 1) end,
        "start %+ length overflows" },
      { "bad mode", function() return f:lock(0, 1, { mode = "write" }) end,
        "#3 to 'lock' %(bad mode 'write'" },
      { "mode of wrong type", function() return f:lock(0, 1, { mode = 1 }) end,
        "option 'mode' must be a string" },
      { "unknown option", function() return f:lock(0, 1, { timout = 5 }) end,
        "#3 to 'lock' %(unknown option 'timout'" },
      { "options not a table", function() return f:lock(0, 1, "shared") end,
        "#3 to 'lock' %(table expected, got string" },
      { "negative timeout", function() return f:lock(0, 1, { timeout = -1 }) end,
        "option 'timeout' must be a number of seconds >= 0" },
      { "NaN timeout", function() return f:lock(0, 1, { timeout = 0 / 0 }) end,
        "option 'timeout' must be a number of seconds >= 0" },
      { "string timeout", function() return f:lock(0, 1, { timeout = "5" }) end,
        "option 'timeout' must be a number" },
      { "wait of wrong type", function() return f:lock(0, 1, { wait = "no" }) end,
        "option 'wait' must be a boolean" },
      { "test: negative start", function() return f:test(-5, 1) end, "#1 to 'test' %(start must be >= 0" },
      { "test: non-integer", function() return f:test(0, 1.25) end, "length must be a whole number" },
      { "test: overflow", function() return f:test(math.maxinteger, 2) end, "overflows" },
      { "test: bad mode", function() return f:test(0, 1, "write") end, "#3 to 'test' %(bad mode 'write'" },
      { "test: mode of wrong type", function() return f:test(0, 1, {}) end, "#3 to 'test'" },
      { "open: path not a string", function() return ar.open(42) end, "#1 to 'open' %(string expected" },
      { "open: no path", function() return ar.open() end, "#1 to 'open'" },
      { "open: unknown option", function() return ar.open(path, { mode = "shared" }) end,
        "#2 to 'open' %(unknown option 'mode'" },
      { "open: bad perm", function() return ar.open(path, { perm = "644" }) end, "option 'perm'" },
      { "open: bad create", function() return ar.open(path, { create = 1 }) end, "option 'create'" },
      { "unlock on a file", function() local r = assert(f:lock(0, 1)) return r.unlock(f) end,
        "#1 to .*atomrun%.range expected" },
    }
    H.bad_arg_cases(it, cases)

    it("start 0 with the largest length, and the last byte to end of file, are fine", function()
      assert.truthy(f:lock(0, math.maxinteger))
      local g = assert(ar.open(path))
      assert.truthy(g:test(math.maxinteger - 1, 1))
      g:close()
    end)
  end)
end)
