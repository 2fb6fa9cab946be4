-- atomrun.lock: whole-file flock(2) locks, tested with real processes
-- (flock(1), Python's filelock, the atomrun binary) holding and waiting.
local H = require "spec.helper"
local ar = H.ar
local gone, wait_gone = H.gone, H.wait_exit

-- ------------------------------------------------------------ helpers

local flock_n, track, bg, result, script = H.flock_n, H.track, H.bg, H.result, H.script

local nholds = 0
-- A holder in another process until `release` is called:
-- kind "flock" (flock(1)), "python" (filelock), "atomrun" (the binary).
local function hold(dir, path, kind, mode)
  nholds = nholds + 1
  local ready, rel = dir .. "/ready" .. nholds, dir .. "/release" .. nholds
  local pid
  if kind == "python" then
    pid = H.spawn("exec " .. H.python .. " -c " .. H.q([[
import filelock, os, sys, time
lk = filelock.FileLock(sys.argv[1])
lk.acquire()
open(sys.argv[2], "w").close()
while not os.path.exists(sys.argv[3]) and os.path.isdir(os.path.dirname(sys.argv[3])):
    time.sleep(0.02)
lk.release()
]]) .. " " .. H.q(path) .. " " .. H.q(ready) .. " " .. H.q(rel))
  elseif kind == "atomrun" then
    pid = H.spawn("exec " .. H.q(H.atomrun) .. " -e " .. H.q([[
local ar = require "atomrun"
local lk = assert(ar.lock(arg[1], { mode = arg[4] }))
io.open(arg[2], "w"):close()
while not ar.stat(arg[3]) and ar.stat(arg[2]) do ar.sleep(0.02) end
lk:unlock()
]]) .. " " .. H.q(path) .. " " .. H.q(ready) .. " " .. H.q(rel) .. " " .. (mode or "exclusive"))
  else
    pid = H.spawn("exec flock " .. (mode == "shared" and "-s " or "-x ") .. H.q(path) ..
      " sh -c " .. H.q('touch "$1"; while [ ! -e "$2" ] && [ -d "${2%/*}" ]; do sleep 0.02; done') ..
      " holder " .. H.q(ready) .. " " .. H.q(rel))
  end
  track(pid)
  assert(H.wait_file(ready, 20), kind .. " holder never took the lock")
  return pid, function()
    H.write(rel, "")
    assert(wait_gone(pid), kind .. " holder did not exit")
  end, rel
end

-- A pid in /proc/locks as a blocked waiter ("N: -> FLOCK ... PID ...").
local function waiting_in_kernel(pid)
  for line in io.lines("/proc/locks") do
    local p = line:match("^%d+: %-> %S+%s+%S+%s+%S+%s+(%d+)")
    if p and tonumber(p) == pid then return true end
  end
  return false
end

-- The real-time signals a process catches (/proc/PID/status SigCgt).
local function caught_signals(pid)
  local f = io.open("/proc/" .. pid .. "/status")
  if not f then return {} end
  local s = f:read("a")
  f:close()
  local mask = tonumber(s:match("SigCgt:%s*(%x+)"), 16) or 0
  local set = {}
  for sig = 32, 64 do     -- real-time only: ASan catches SIGSEGV and friends
    if (mask >> (sig - 1)) & 1 == 1 then set[#set + 1] = sig end
  end
  return set
end

local function mode_of(path)
  return assert(ar.stat(path)).mode
end

local function umask()
  local _, out = H.sh("umask")
  return tonumber(out:match("%d+"), 8)
end

-- --------------------------------------------------------------- specs

describe("atomrun.lock", function()
  local dir
  before_each(function()
    dir = H.tmpdir()
  end)
  after_each(function()
    collectgarbage()
    H.cleanup_procs()
  end)

  describe("modes", function()
    it("takes an exclusive lock by default: flock(1) sees it, both modes refused", function()
      local p = dir .. "/x.lock"
      local lk = assert(ar.lock(p))
      assert.equal("exclusive", lk.mode)
      assert.equal(p, lk.path)
      assert.is_true(lk.locked)
      assert.equal(1, flock_n(p, "exclusive"))
      assert.equal(1, flock_n(p, "shared"))
      lk:unlock()
      assert.equal(0, flock_n(p, "exclusive"))
    end)

    it("takes a shared lock that admits other readers and excludes writers", function()
      local p = dir .. "/s.lock"
      local a = assert(ar.lock(p, { mode = "shared" }))
      local b = assert(ar.lock(p, { mode = "shared" }))
      assert.equal("shared", a.mode)
      assert.equal(0, flock_n(p, "shared"))
      assert.equal(1, flock_n(p, "exclusive"))
      a:unlock()
      assert.equal(1, flock_n(p, "exclusive"))
      b:unlock()
      assert.equal(0, flock_n(p, "exclusive"))
    end)

    it("shared waits for an exclusive holder elsewhere, exclusive for a shared one", function()
      local p = dir .. "/m.lock"
      local _, release = hold(dir, p, "flock", "exclusive")
      local lk, _, code = ar.lock(p, { mode = "shared", wait = false })
      assert.is_nil(lk)
      assert.equal("busy", code)
      release()
      local _, release2 = hold(dir, p, "flock", "shared")
      assert(ar.lock(p, { mode = "shared", wait = false })):unlock()
      lk, _, code = ar.lock(p, { wait = false })
      assert.is_nil(lk)
      assert.equal("busy", code)
      release2()
      assert(ar.lock(p, { wait = false })):unlock()
    end)
  end)

  describe("busy and timeout", function()
    it("wait=false fails at once with 'busy', the holder's pid and command", function()
      local p = dir .. "/busy.lock"
      local pid, release = hold(dir, p, "flock")
      local lk, msg, code, holder = ar.lock(p, { wait = false })
      assert.is_nil(lk)
      assert.equal("busy", code)
      assert.is_table(holder)
      assert.equal(pid, holder.pid)
      assert.matches("^flock ", holder.cmd)
      assert.equal("exclusive", holder.mode)
      assert.equal(p .. " is locked by pid " .. pid .. " (" .. holder.cmd .. ")", msg)
      -- timeout = 0 is the same as wait = false
      lk, _, code = ar.lock(p, { timeout = 0 })
      assert.is_nil(lk)
      assert.equal("busy", code)
      release()
    end)

    it("names the holder by its command line: an atomrun script", function()
      local p = dir .. "/who.lock"
      local pid, release = hold(dir, p, "atomrun")
      local _, msg, code, holder = ar.lock(p, { wait = false })
      assert.equal("busy", code)
      assert.equal(pid, holder.pid)
      assert.matches("^atomrun %-e ", holder.cmd)
      assert.matches("is locked by pid " .. pid .. " %(atomrun %-e ", msg)
      release()
    end)

    it("times out near the deadline with 'timeout' and the holder", function()
      local p = dir .. "/t.lock"
      local pid, release = hold(dir, p, "flock")
      local t0 = ar.now()
      local lk, msg, code, holder = ar.lock(p, { timeout = 0.3 })
      local took = ar.now() - t0
      assert.is_nil(lk)
      assert.equal("timeout", code)
      assert.is_true(took >= 0.25 and took < 2, "timeout took " .. took .. " s")
      assert.equal(pid, holder.pid)
      assert.matches("timed out after 0%.3 s", msg)
      assert.matches(p:gsub("%p", "%%%0") .. ", locked by pid " .. pid .. " %(flock ", msg)
      -- a shared request times out the same way
      lk, _, code = ar.lock(p, { mode = "shared", timeout = 0.05 })
      assert.is_nil(lk)
      assert.equal("timeout", code)
      release()
    end)

    it("hands the lock to a waiter when the holder lets go (with and without a timeout)", function()
      local p = dir .. "/h.lock"
      for _, opts in ipairs({ { timeout = 30 }, {} }) do
        local _, release, rel = hold(dir, p, "flock")
        -- release from another process once we block in the kernel
        H.touch_when_waited(p, rel)
        local t0 = ar.now()
        local lk = assert(ar.lock(p, opts))
        assert.is_true(ar.now() - t0 < 25)
        assert.equal(1, flock_n(p))
        lk:unlock()
        release()
      end
    end)
  end)

  describe("deadlock", function()
    it("fails at once when this state already holds a conflicting lock on the file", function()
      local p = dir .. "/d.lock"
      local lk = assert(ar.lock(p))
      local t0 = ar.now()
      local l2, msg, code = ar.lock(p, { timeout = 30 })
      assert.is_nil(l2)
      assert.equal("deadlock", code)
      assert.matches("already locked by this script", msg)
      assert.is_true(ar.now() - t0 < 10)
      -- with no timeout at all: still no hang
      l2, _, code = ar.lock(p)
      assert.is_nil(l2)
      assert.equal("deadlock", code)
      -- shared against our exclusive, too
      l2, _, code = ar.lock(p, { mode = "shared" })
      assert.equal("deadlock", code)
      lk:unlock()
      assert(ar.lock(p)):unlock()
    end)

    it("knows the file by device and inode, not by its name", function()
      local p = dir .. "/i.lock"
      local lk = assert(ar.lock(p))
      assert.equal(0, (H.sh("ln " .. H.q(p) .. " " .. H.q(dir .. "/hard.lock"))))
      assert.equal(0, (H.sh("ln -s " .. H.q(dir) .. " " .. H.q(dir .. "/via"))))
      local _, _, code = ar.lock(dir .. "/hard.lock")
      assert.equal("deadlock", code)
      _, _, code = ar.lock(dir .. "/via/i.lock", { timeout = 5 })
      assert.equal("deadlock", code)
      _, _, code = ar.lock(dir .. "/./i.lock")
      assert.equal("deadlock", code)
      -- another file is independent
      assert(ar.lock(dir .. "/other.lock", { wait = false })):unlock()
      lk:unlock()
    end)

    it("lets shared locks of one state share; exclusive over shared is a deadlock", function()
      local p = dir .. "/ss.lock"
      local a = assert(ar.lock(p, { mode = "shared" }))
      local b = assert(ar.lock(p, { mode = "shared", timeout = 1 }))
      local _, _, code = ar.lock(p, { timeout = 1 })
      assert.equal("deadlock", code)
      a:unlock()
      _, _, code = ar.lock(p)
      assert.equal("deadlock", code)
      b:unlock()
      assert(ar.lock(p)):unlock()
    end)

    it("wait=false against our own lock is just 'busy'", function()
      local p = dir .. "/nb.lock"
      local lk = assert(ar.lock(p))
      local l2, _, code, holder = ar.lock(p, { wait = false })
      assert.is_nil(l2)
      assert.equal("busy", code)
      assert.equal(ar.pid(), holder.pid)
      lk:unlock()
    end)
  end)

  describe("release", function()
    it("unlock() is idempotent and tostring says held/released", function()
      local p = dir .. "/u.lock"
      local lk = assert(ar.lock(p))
      local held = ar.held()
      assert.equal("atomrun.lock (" .. p .. ", exclusive, held)", tostring(lk))
      assert.is_true(lk:unlock())
      assert.is_true(lk:unlock())
      assert.is_true(lk.unlock(lk))
      assert.is_false(lk.locked)
      assert.equal(held - 1, ar.held())
      assert.equal("atomrun.lock (" .. p .. ", exclusive, released)", tostring(lk))
      assert.equal(p, lk.path)
      assert.equal("exclusive", lk.mode)
      assert.equal(0, flock_n(p))
      assert.is_nil(lk.nosuchfield)
    end)

    it("releases at the end of a <close> scope, also on error", function()
      local p = dir .. "/c.lock"
      local held = ar.held()
      do
        local lk <close> = assert(ar.lock(p))
        assert.equal(1, flock_n(p))
        assert.equal(held + 1, ar.held())
      end
      assert.equal(0, flock_n(p))
      assert.equal(held, ar.held())
      local ok, err = pcall(function()
        local lk <close> = assert(ar.lock(p))
        error("inside")
      end)
      assert.is_false(ok)
      assert.matches("inside", err)
      assert.equal(0, flock_n(p))
      -- after an explicit unlock, __close does nothing more
      do
        local lk <close> = assert(ar.lock(p))
        lk:unlock()
      end
      assert.equal(held, ar.held())
    end)

    it("is released by the garbage collector", function()
      local p = dir .. "/gc.lock"
      local held = ar.held()
      do
        local lk = assert(ar.lock(p))
        assert.equal(1, flock_n(p))
        lk = nil -- luacheck: ignore
      end
      collectgarbage()
      collectgarbage()
      assert.equal(0, flock_n(p))
      assert.equal(held, ar.held())
      assert(ar.lock(p, { wait = false })):unlock()
    end)

    it("never deletes or truncates the lock file", function()
      local p = dir .. "/keep.lock"
      H.write(p, "holder record\n")
      local lk = assert(ar.lock(p))
      lk:unlock()
      do local l2 <close> = assert(ar.lock(p, { mode = "shared" })) end
      collectgarbage()
      assert.is_true(H.exists(p))
      assert.equal("holder record\n", H.slurp(p))
    end)

    it("is released when the holding process dies", function()
      local p = dir .. "/die.lock"
      local pid = hold(dir, p, "atomrun")
      assert.equal("busy", select(3, ar.lock(p, { wait = false })))
      H.kill(pid, "KILL")
      assert(ar.lock(p, { timeout = 10 })):unlock()
    end)
  end)

  describe("the lock file", function()
    it("is created with mode 0666 & ~umask, or opts.perm", function()
      local p = dir .. "/new.lock"
      assert(ar.lock(p)):unlock()
      assert.equal(tonumber("666", 8) & ~umask(), mode_of(p))
      local q = dir .. "/perm.lock"
      assert(ar.lock(q, { perm = tonumber("600", 8) })):unlock()
      assert.equal(tonumber("600", 8), mode_of(q))
      -- perm only applies to a new file
      assert(ar.lock(p, { perm = tonumber("600", 8) })):unlock()
      assert.equal(tonumber("666", 8) & ~umask(), mode_of(p))
    end)

    it("creates missing parent directories", function()
      local p = dir .. "/a/b/c/deep.lock"
      local lk = assert(ar.lock(p))
      assert.equal("directory", ar.stat(dir .. "/a/b/c").type)
      assert.equal("file", ar.stat(p).type)
      assert.equal(1, flock_n(p))
      lk:unlock()
    end)

    it("with create=false fails with ENOENT instead", function()
      local lk, msg, code = ar.lock(dir .. "/no/such.lock", { create = false })
      assert.is_nil(lk)
      assert.equal("ENOENT", code)
      assert.matches(dir:gsub("%p", "%%%0") .. "/no/such%.lock", msg)
      assert.is_false(H.exists(dir .. "/no"))
    end)

    it("may be a directory, which flock(1) sees locked", function()
      local d = dir .. "/lockdir"
      assert(ar.mkdir(d))
      local lk = assert(ar.lock(d))
      assert.equal(1, flock_n(d))
      lk:unlock()
      assert.equal(0, flock_n(d))
      local s = assert(ar.lock(d, { mode = "shared" }))
      assert.equal(0, flock_n(d, "shared"))
      assert.equal(1, flock_n(d, "exclusive"))
      s:unlock()
    end)

    it("refuses a symlink with ELOOP and leaves its target untouched", function()
      local target, link = dir .. "/target", dir .. "/link.lock"
      H.write(target, "precious")
      assert.equal(0, (H.sh("touch -d '2001-02-03 04:05:06' " .. H.q(target) ..
        " && ln -s target " .. H.q(link))))
      local before = ar.stat(target)
      local lk, msg, code = ar.lock(link)
      assert.is_nil(lk)
      assert.equal("ELOOP", code)
      assert.matches("link%.lock", msg)
      local after = ar.stat(target)
      assert.equal("precious", H.slurp(target))
      assert.equal(before.mtime, after.mtime)
      assert.equal(before.mode, after.mode)
      assert.equal(0, flock_n(target))
      -- a dangling symlink does not create its target either
      assert.equal(0, (H.sh("ln -s nowhere " .. H.q(dir .. "/dangling.lock"))))
      lk, _, code = ar.lock(dir .. "/dangling.lock")
      assert.is_nil(lk)
      assert.equal("ELOOP", code)
      assert.is_false(H.exists(dir .. "/nowhere"))
      assert.equal("link", ar.stat(dir .. "/dangling.lock", false).type)
    end)

    it("falls back to read-only for a file that is readable but not writable", function()
      -- root may write anything: test as nobody
      local prefix = ""
      if ar.uid() == 0 then
        prefix = "setpriv --reuid=65534 --regid=65534 --clear-groups "
      end
      assert.equal(0, (H.sh("chmod 0777 " .. H.q(dir))))
      local bin = dir .. "/atomrun"
      assert.equal(0, (H.sh("cp " .. H.q(H.atomrun) .. " " .. H.q(bin) .. " && chmod 0755 " .. H.q(bin))))
      local p = dir .. "/ro.lock"
      H.write(p, "ro")
      assert.equal(0, (H.sh("chmod 0444 " .. H.q(p))))
      local job = script(dir, "ro.lua", [[
local ar = require "atomrun"
local lk, err, code = ar.lock(arg[1])
if not lk then print("exclusive", err, code) os.exit(2) end
io.open(arg[2], "w"):close()
while not ar.stat(arg[3]) and ar.stat(arg[2]) do ar.sleep(0.02) end
lk:unlock()
local sh = assert(ar.lock(arg[1], { mode = "shared", wait = false }))
sh:unlock()
-- in a directory we may not write, a missing lock file is EACCES
local none, _, ncode = ar.lock(arg[4])
print(none, ncode)
]])
      assert.equal(0, (H.sh("chmod 0755 " .. H.q(dir .. "/ro.lua") .. " && mkdir -m 0755 " .. H.q(dir .. "/closed"))))
      bg(dir, "ro", prefix .. H.q(bin) .. " " .. H.q(job) .. " " .. H.q(p) .. " " ..
        H.q(dir .. "/ro.ready") .. " " .. H.q(dir .. "/ro.release") .. " " .. H.q(dir .. "/closed/x.lock"))
      local st, out
      H.wait_until(function()
        if H.exists(dir .. "/ro.ready") then return true end
        st, out = H.slurp(dir .. "/ro.st"), H.slurp(dir .. "/ro.out") .. H.slurp(dir .. "/ro.err")
        return st ~= ""
      end, 20)
      assert.is_true(H.exists(dir .. "/ro.ready"), "read-only lock failed: " .. tostring(out))
      -- the kernel lock is real: flock(1) as root is refused
      assert.equal(1, flock_n(p))
      H.write(dir .. "/ro.release", "")
      local err
      st, out, err = result(dir, "ro")
      assert.equal(0, st, out .. err)
      assert.equal("nil\tEACCES\n", out)
      assert.equal("ro", H.slurp(p))
      assert.equal(tonumber("444", 8), mode_of(p))
    end)
  end)

  describe("bad arguments raise an error naming them", function()
    local p
    before_each(function() p = dir .. "/bad.lock" end)
    local function raises(pattern, ...)
      local args = table.pack(...)
      local ok, err = pcall(ar.lock, table.unpack(args, 1, args.n))
      assert.is_false(ok, "no error for " .. pattern)
      assert.matches(pattern, err)
    end

    it("path: not a string", function()
      raises("bad argument #1 .*string expected, got no value")
      raises("bad argument #1 .*string expected, got nil", nil)
      raises("bad argument #1 .*string expected, got number", 42)
      raises("bad argument #1 .*string expected, got table", {})
      raises("bad argument #1 .*string expected, got boolean", true)
      raises("bad argument #1 .*NUL", "a\0b")
    end)

    it("opts: not a table, unknown option names", function()
      raises("bad argument #2 .*table expected, got number", p, 5)
      raises("bad argument #2 .*table expected, got string", p, "shared")
      raises("bad argument #2 .*unknown option 'timout'", p, { timout = 5 })
      raises("bad argument #2 .*unknown option 'Mode'", p, { Mode = "shared" })
      raises("bad argument #2 .*unknown option '1'", p, { "shared" })
    end)

    it("mode: not 'exclusive' or 'shared'", function()
      raises("bad argument #2 .*bad mode 'write'", p, { mode = "write" })
      raises("bad argument #2 .*bad mode 'SHARED'", p, { mode = "SHARED" })
      raises("bad argument #2 .*option 'mode' must be a string, not a number", p, { mode = 1 })
    end)

    it("timeout: negative, NaN, not a number", function()
      raises("bad argument #2 .*option 'timeout' must be a number of seconds >= 0", p, { timeout = -1 })
      raises("bad argument #2 .*option 'timeout' must be a number of seconds >= 0", p, { timeout = -0.001 })
      raises("bad argument #2 .*option 'timeout' must be a number of seconds >= 0", p, { timeout = 0 / 0 })
      raises("bad argument #2 .*option 'timeout' must be a number, not a string", p, { timeout = "5" })
      raises("bad argument #2 .*option 'timeout' must be a number, not a boolean", p, { timeout = true })
    end)

    it("wait, perm, create: wrong types or values", function()
      raises("bad argument #2 .*option 'wait' must be a boolean, not a number", p, { wait = 0 })
      raises("bad argument #2 .*option 'wait' must be a boolean, not a string", p, { wait = "no" })
      raises("bad argument #2 .*option 'perm' must be a number, not a string", p, { perm = "0644" })
      raises("bad argument #2 .*option 'perm' must be permission bits", p, { perm = -1 })
      raises("bad argument #2 .*option 'perm' must be permission bits", p, { perm = 1.5 })
      raises("bad argument #2 .*option 'create' must be a boolean, not a number", p, { create = 1 })
      -- none of these created the file
      assert.is_false(H.exists(p))
    end)

    it("methods on something that is not a lock", function()
      local lk = assert(ar.lock(p))
      local ok, err = pcall(lk.unlock, {})
      assert.is_false(ok)
      assert.matches("atomrun.lock expected", err)
      lk:unlock()
    end)
  end)

  describe("signals during a wait", function()
    -- A waiter that has already armed its timer once (so its handler is
    -- installed and may be signalled safely), reports its pid, then waits.
    local waiter = [[
local ar = require "atomrun"
local path, mark, timeout = arg[1], arg[2], tonumber(arg[3])
assert(select(3, ar.lock(path, { timeout = 0.01 })) == "timeout")
local f = io.open(mark .. ".tmp", "w") f:write(ar.pid()) f:close()
os.rename(mark .. ".tmp", mark)
local t0 = ar.now()
local lk, err, code = ar.lock(path, { timeout = timeout })
io.write(string.format("%s %s %.3f\n", lk and "locked" or "failed", code or "-", ar.now() - t0))
]]

    local function start_waiter(p, timeout)
      local job = script(dir, "waiter.lua", waiter)
      local mark = dir .. "/waiter.pid"
      bg(dir, "w", H.q(H.atomrun) .. " " .. H.q(job) .. " " .. H.q(p) .. " " .. H.q(mark) .. " " .. timeout)
      assert(H.wait_file(mark, 20), "the waiter did not start")
      local pid = tonumber(H.slurp(mark))
      assert(H.wait_until(function() return waiting_in_kernel(pid) end, 20), "waiter not blocked in flock")
      return pid
    end

    -- The timer signal: the one real-time signal the waiter catches.
    local function timer_signal(pid)
      local sigs = caught_signals(pid)
      assert.equal(1, #sigs, "caught: " .. table.concat(sigs, ","))
      assert.is_true(sigs[1] >= 34, "timer signal " .. sigs[1])
      return sigs[1]
    end

    local function pester(pid, sigs, seconds)
      local stop = ar.now() + seconds
      while ar.now() < stop and not gone(pid) do
        for _, s in ipairs(sigs) do H.sh("kill -" .. s .. " " .. pid) end
        ar.sleep(0.03)
      end
    end

    it("resumes the wait after other signals and still times out on time", function()
      local p = dir .. "/eintr.lock"
      local _, release = hold(dir, p, "flock")
      local pid = start_waiter(p, 1.0)
      local rt = timer_signal(pid)
      -- SIGWINCH and SIGCHLD, and the timer signal itself sent early:
      -- the last one really interrupts flock(2) with EINTR.
      pester(pid, { "WINCH", "CHLD", rt }, 0.6)
      local st, out, err = result(dir, "w")
      assert.equal(0, st, out .. err)
      local what, code, took = out:match("^(%a+) (%S+) ([%d.]+)")
      assert.equal("failed", what, out)
      assert.equal("timeout", code)
      took = tonumber(took)
      assert.is_true(took >= 0.99 and took < 3, "timed out after " .. took .. " s")
      release()
    end)

    it("resumes the wait after other signals and gets the lock when it is released", function()
      local p = dir .. "/eintr2.lock"
      local _, release = hold(dir, p, "flock")
      local pid = start_waiter(p, 60)
      local rt = timer_signal(pid)
      pester(pid, { "WINCH", "CHLD", rt }, 0.4)
      assert.is_false(gone(pid))
      release()
      local st, out, err = result(dir, "w")
      assert.equal(0, st, out .. err)
      assert.matches("^locked %- ", out)
    end)

    it("Ctrl-C (SIGINT) ends `atomrun -e` blocked in a wait", function()
      local p = dir .. "/int.lock"
      local _, release = hold(dir, p, "flock")
      -- a background job starts with SIGINT ignored; a terminal's
      -- foreground job does not: give it the default disposition back
      local mark = dir .. "/int.pid"
      bg(dir, "int", "env --default-signal=INT " .. H.q(H.atomrun) .. " -e " .. H.q([[
local ar = require "atomrun"
local f = io.open(arg[2], "w") f:write(ar.pid()) f:close()
ar.lock(arg[1])
print("got the lock")
]]) .. " " .. H.q(p) .. " " .. H.q(mark))
      assert(H.wait_until(function() return H.slurp(mark) ~= "" end, 20))
      local pid = tonumber(H.slurp(mark))
      assert(H.wait_until(function() return waiting_in_kernel(pid) end, 20))
      H.kill(pid, "INT")
      local st, out, err = result(dir, "int", 10)
      assert.equal(128 + 2, st)
      assert.equal("", out .. err)
      release()
    end)
  end)

  describe("interoperates with flock(1)", function()
    it("flock(1) holds exclusive: atomrun is refused, then gets it", function()
      local p = dir .. "/f1.lock"
      local _, release = hold(dir, p, "flock", "exclusive")
      assert.equal("busy", select(3, ar.lock(p, { wait = false })))
      assert.equal("busy", select(3, ar.lock(p, { mode = "shared", wait = false })))
      release()
      assert(ar.lock(p, { wait = false })):unlock()
    end)

    it("flock(1) holds shared: atomrun shares it, exclusive is refused", function()
      local p = dir .. "/f2.lock"
      local pid, release = hold(dir, p, "flock", "shared")
      local s = assert(ar.lock(p, { mode = "shared", wait = false }))
      local _, _, code, holder = ar.lock(p, { wait = false })
      assert.equal("busy", code)
      -- the holder that conflicts is the other process, not our own share
      assert.equal(pid, holder.pid)
      assert.equal("shared", holder.mode)
      s:unlock()
      release()
    end)

    it("atomrun holds: flock(1) -n fails, flock(1) -w waits and gets it", function()
      local p = dir .. "/f3.lock"
      local lk = assert(ar.lock(p))
      assert.equal(1, (H.sh("flock -n " .. H.q(p) .. " true")))
      assert.equal(1, (H.sh("flock -w 0.1 " .. H.q(p) .. " true")))
      bg(dir, "fw", "flock -w 30 " .. H.q(p) .. " echo got it")
      assert.is_true(H.wait_lock_waited(p, 20), "flock -w never waited")
      lk:unlock()
      local st, out, err = result(dir, "fw")
      assert.equal(0, st, err)
      assert.equal("got it\n", out)
    end)

    it("atomrun holds shared: flock(1) -s shares, -x is refused", function()
      local p = dir .. "/f4.lock"
      local s = assert(ar.lock(p, { mode = "shared" }))
      assert.equal(0, flock_n(p, "shared"))
      assert.equal(1, flock_n(p, "exclusive"))
      s:unlock()
      assert.equal(0, flock_n(p, "exclusive"))
    end)
  end)

  describe("interoperates with Python's filelock", function()
    local py = [[
import filelock, sys
try:
    filelock.FileLock(sys.argv[1], timeout=float(sys.argv[2])).acquire()
except filelock.Timeout:
    sys.exit(3)
print("acquired")
]]
    local function pylock(p, timeout)
      return H.sh(H.python .. " -c " .. H.q(py) .. " " .. H.q(p) .. " " .. timeout)
    end

    it("filelock holds: atomrun is refused and names python, then gets it", function()
      local p = dir .. "/py1.lock"
      local pid, release = hold(dir, p, "python")
      local lk, msg, code, holder = ar.lock(p, { timeout = 0.1 })
      assert.is_nil(lk)
      assert.equal("timeout", code)
      assert.equal(pid, holder.pid)
      assert.matches("python", holder.cmd)
      assert.matches("locked by pid " .. pid, msg)
      release()
      assert(ar.lock(p, { wait = false })):unlock()
    end)

    it("atomrun holds (exclusive or shared): filelock times out, then gets it", function()
      local p = dir .. "/py2.lock"
      for _, mode in ipairs({ "exclusive", "shared" }) do
        local lk = assert(ar.lock(p, { mode = mode }))
        assert.equal(3, (pylock(p, 0.1)))
        lk:unlock()
        local st, out = pylock(p, 5)
        assert.equal(0, st)
        assert.equal("acquired\n", out)
      end
    end)

    it("hands over between atomrun and a waiting filelock", function()
      local p, tried = dir .. "/py3.lock", dir .. "/py3.tried"
      local lk = assert(ar.lock(p))
      -- filelock polls (no kernel wait to see in /proc/locks): it says when
      -- it has found the lock busy once, and waits on from there
      local waiter = [[
import filelock, sys
lock = filelock.FileLock(sys.argv[1])
try:
    lock.acquire(timeout=0)
    sys.exit(4)
except filelock.Timeout:
    open(sys.argv[3], "w").close()
lock.acquire(timeout=float(sys.argv[2]))
print("acquired")
]]
      bg(dir, "py", H.python .. " -c " .. H.q(waiter) .. " " .. H.q(p) .. " 30 " .. H.q(tried))
      assert.is_true(H.wait_file(tried, 20), "filelock never found it busy")
      lk:unlock()
      local st, out, err = result(dir, "py")
      assert.equal(0, st, err)
      assert.equal("acquired\n", out)
    end)
  end)
end)

-- lock(path, {follow, fcntl, start, length}), lockfd(fd, opts), unlockfd(fd, opts)
describe("atomrun.lock options follow and fcntl; lockfd / unlockfd", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup_procs)

  -- flock -n on path from another process: 0 free, 1 held
  local function flock_n(path)
    return (H.sh("flock -n " .. H.q(path) .. " true"))
  end

  -- the /proc/locks lines about path's inode
  local function kernel_locks(path)
    local st = assert(ar.stat(path))
    local lines = {}
    for line in H.slurp("/proc/locks"):gmatch("[^\n]+") do
      local ino = line:match("%x+:%x+:(%d+)")
      if ino and tonumber(ino) == st.ino then lines[#lines + 1] = line end
    end
    return lines
  end

  -- Run a Lua snippet in the atomrun binary under sh with redirections
  -- (`9>file`); returns status, stdout, stderr.
  local function under_sh(redirs, code, ...)
    local parts = { H.q(H.atomrun), "-e", H.q(code) }
    for _, a in ipairs({ ... }) do parts[#parts + 1] = H.q(tostring(a)) end
    return H.sh(table.concat(parts, " ") .. " " .. redirs)
  end

  describe("follow", function()
    it("refuses a symlink by default (ELOOP), follows it with follow = true", function()
      local target, link = dir .. "/target", dir .. "/link"
      H.write(target, "")
      assert(os.execute("ln -s target " .. H.q(link)))
      local lk, msg, code = ar.lock(link)
      assert.is_nil(lk)
      assert.equal("ELOOP", code)
      assert.matches("symlink", msg)
      lk = assert(ar.lock(link, { follow = true }))
      assert.equal(1, flock_n(target))
      lk:unlock()
      assert.equal(0, flock_n(target))
    end)

    it("follow = true creates the missing target of a dangling link", function()
      local link = dir .. "/dangling"
      assert(os.execute("ln -s made " .. H.q(link)))
      local lk = assert(ar.lock(link, { follow = true }))
      assert.is_true(H.exists(dir .. "/made"))
      lk:unlock()
    end)

    it("'protected' follows our own link, refuses another user's in a sticky world-writable directory", function()
      if ar.uid() ~= 0 then
        pending("needs root to give a symlink to another user")
        return
      end
      local sticky = dir .. "/tmp"
      assert(ar.mkdir(sticky))
      assert(os.execute("chmod 1777 " .. H.q(sticky)))
      H.write(dir .. "/secret", "")
      assert(os.execute("ln -s ../secret " .. H.q(sticky .. "/mine")))
      assert(os.execute("ln -s ../secret " .. H.q(sticky .. "/theirs")
        .. " && chown -h 65534:65534 " .. H.q(sticky .. "/theirs")))
      local lk = assert(ar.lock(sticky .. "/mine", { follow = "protected" }))
      lk:unlock()
      local r, msg, code = ar.lock(sticky .. "/theirs", { follow = "protected" })
      assert.is_nil(r)
      assert.equal("EACCES", code)
      assert.matches("theirs", msg)
      assert.matches("sticky", msg)
      -- a chain through another user's link is refused at that link
      assert(os.execute("ln -s theirs " .. H.q(sticky .. "/chain")))
      assert.equal("EACCES", select(3, ar.lock(sticky .. "/chain", { follow = "protected" })))
      -- outside a sticky directory another user's link is followed
      assert(os.execute("ln -s secret " .. H.q(dir .. "/plainlink")
        .. " && chown -h 65534:65534 " .. H.q(dir .. "/plainlink")))
      assert(ar.lock(dir .. "/plainlink", { follow = "protected" })):unlock()
      -- follow = true applies the same rule (issue 23: it is the only rule)
      assert.equal("EACCES", select(3, ar.lock(sticky .. "/theirs", { follow = true })))
      -- a plain file in the sticky directory is simply locked
      assert(ar.lock(sticky .. "/plain", { follow = "protected" })):unlock()
    end)
  end)

  describe("fcntl", function()
    it("takes an OFD lock of the whole file, or of start/length bytes", function()
      local p = dir .. "/ofd.lock"
      local lk = assert(ar.lock(p, { fcntl = true }))
      assert.equal(0, lk.start)
      assert.equal(0, lk.length)
      local lines = kernel_locks(p)
      assert.equal(1, #lines)
      assert.matches("OFDLCK%s+ADVISORY%s+WRITE%s+%-1 .* 0 EOF", lines[1])
      -- flock and OFD locks do not see each other: flock(1) still gets it
      assert.equal(0, flock_n(p))
      lk:unlock()
      assert.same({}, kernel_locks(p))
      lk = assert(ar.lock(p, { fcntl = true, start = 100, length = 10, mode = "shared" }))
      assert.equal(100, lk.start)
      assert.equal(10, lk.length)
      assert.equal("shared", lk.mode)
      lines = kernel_locks(p)
      assert.matches("OFDLCK%s+ADVISORY%s+READ%s+%-1 .* 100 109", lines[1])
      lk:unlock()
    end)

    it("conflicts with a POSIX lock of python3 on the same bytes and names it", function()
      local p, ready = dir .. "/px.lock", dir .. "/px.ready"
      H.write(p, "")
      local pid = H.spawn(H.q(H.python) .. " -c " .. H.q([[
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX, 10, 5)
open(sys.argv[2], "w").write(str(os.getpid()))
time.sleep(60)
]]) .. " " .. H.q(p) .. " " .. H.q(ready))
      local holder_pid = H.ready_pid(ready)
      local lk, msg, code, holder = ar.lock(p, { fcntl = true, start = 0, length = 6, wait = false })
      assert.is_nil(lk)
      assert.equal("busy", code)
      assert.equal(holder_pid, holder.pid, msg)
      assert.equal("posix", holder.kind)
      assert.equal(5, holder.start)
      assert.equal(10, holder.length)
      -- bytes next to it are free
      assert(ar.lock(p, { fcntl = true, start = 15, length = 5, wait = false })):unlock()
      H.kill(pid, "KILL"); H.kill(holder_pid, "KILL")
    end)

    it("a wait that only this script's own fcntl lock blocks is 'deadlock', not a hang", function()
      local p = dir .. "/self.lock"
      local lk = assert(ar.lock(p, { fcntl = true, start = 0, length = 10 }))
      local f = assert(ar.open(p))
      local r, msg, code = f:lock(5, 1, { timeout = 30 })
      assert.is_nil(r)
      assert.equal("deadlock", code, msg)
      r, msg, code = ar.lock(p, { fcntl = true, start = 9, length = 1, timeout = 30 })
      assert.is_nil(r)
      assert.equal("deadlock", code, msg)
      -- bytes outside it are free
      assert(f:lock(10, 5, { timeout = 30 })):unlock()
      f:close()
      lk:unlock()
    end)

    it("an exclusive fcntl lock of a read-only lock file fails with EBADF and says why", function()
      local p = dir .. "/ro.lock"
      H.write(p, "")
      os.execute("chmod 444 " .. H.q(p))
      if ar.uid() == 0 then
        pending("root can write a 0444 file")
        return
      end
      local lk, msg, code = ar.lock(p, { fcntl = true })
      assert.is_nil(lk)
      assert.equal("EBADF", code)
      assert.matches("read%-only", msg)
    end)
  end)

  describe("lockfd", function()
    it("locks an inherited descriptor; the lock outlives atomrun, as with `flock N`", function()
      local p = dir .. "/fd.lock"
      local st, out, err = H.sh("exec 9>" .. H.q(p) .. "; " .. H.q(H.atomrun) .. " -e "
        .. H.q("local lk = assert(atomrun.lockfd(9)); io.write(lk.mode, ' ', tostring(lk.locked))")
        .. "; flock -n " .. H.q(p) .. " true; echo \" $?\"; exec 9>&-; flock -n " .. H.q(p)
        .. " true; echo \"$?\"")
      assert.equal(0, st, err)
      -- held after atomrun ended (the shell's description), free once closed
      assert.equal("exclusive true 1\n0\n", out)
    end)

    it("garbage collection leaves the lock; unlock() and unlockfd release it", function()
      local p = dir .. "/gc.lock"
      local st, out, err = under_sh("9>" .. H.q(p), [[
        local p = ...
        local function busy() return (atomrun.run({ "flock", "-n", p, "true" })) == nil end
        local lk = assert(atomrun.lockfd(9, { mode = "shared" }))
        lk = nil
        collectgarbage(); collectgarbage()
        io.write(tostring(busy()), " ")          -- shared: flock -n (exclusive) is refused
        assert(atomrun.unlockfd(9))
        io.write(tostring(busy()), " ")
        lk = assert(atomrun.lockfd(9))
        io.write(tostring(busy()), " ")
        assert(lk:unlock())
        io.write(tostring(busy()), " ", tostring(lk.locked), " ", tostring(atomrun.held()))
      ]], p)
      assert.equal(0, st, err)
      assert.equal("true false true false false 0", out)
    end)

    it("is busy (nil, msg, 'busy', holder) when another process holds the file", function()
      local p = dir .. "/busy.lock"
      local pid = H.hold(dir, p)
      local st, out, err = under_sh("9<" .. H.q(p), [[
        local lk, msg, code, h = atomrun.lockfd(9, { wait = false })
        io.write(tostring(lk), "|", code, "|", h.pid, "|", msg)
      ]])
      assert.equal(0, st, err)
      assert.matches("^nil|busy|" .. pid .. "|descriptor 9 is locked by pid " .. pid, out)
      st, out = under_sh("9<" .. H.q(p), [[
        local lk, msg, code = atomrun.lockfd(9, { timeout = 0.05 })
        io.write(code)
      ]])
      assert.equal("timeout", out)
      H.write(dir .. "/stop", "")
    end)

    it("a wait that only this script's own lock() blocks is 'deadlock', not a hang", function()
      local p = dir .. "/dl.lock"
      local st, out, err = under_sh("9<>" .. H.q(p), [[
        local lk = assert(atomrun.lock(...))
        local r, msg, code = atomrun.lockfd(9, { timeout = 30 })
        io.write(tostring(r), "|", code)
      ]], p)
      assert.equal(0, st, err)
      assert.equal("nil|deadlock", out)
    end)

    it("takes an OFD lock of a range with fcntl = true; unlockfd with the same range frees it", function()
      local p = dir .. "/fdr.lock"
      H.write(p, "")
      local st, out, err = under_sh("9<>" .. H.q(p), [[
        local p = ...
        local lk = assert(atomrun.lockfd(9, { fcntl = true, start = 4, length = 4 }))
        io.write(lk.start, " ", lk.length, "\n")
        local f = io.open("/proc/locks"); io.write(f:read("a")); f:close()
        assert(atomrun.unlockfd(9, { fcntl = true, start = 4, length = 4 }))
        io.write("--\n")
        f = io.open("/proc/locks"); io.write(f:read("a")); f:close()
      ]], p)
      assert.equal(0, st, err)
      local ino = assert(ar.stat(p)).ino
      local before, after = out:match("^(.-)%-%-\n(.*)$")
      assert.matches("^4 4\n", before)
      assert.matches("OFDLCK%s+ADVISORY%s+WRITE%s+%-1 %x+:%x+:" .. ino .. " 4 7", before)
      assert.is_nil(after:find(":" .. ino .. " ", 1, true))
    end)

    it("a bad descriptor is nil, a message naming it, 'EBADF'", function()
      local p = dir .. "/bad.lock"
      H.write(p, "")
      local st, out, err = under_sh("8<" .. H.q(p) .. " 7>>" .. H.q(p), [[
        local function show(...) local t = table.pack(...) io.write(tostring(t[1]), "|", tostring(t[2]), "|", tostring(t[3]), "\n") end
        show(atomrun.lockfd(99))
        show(atomrun.unlockfd(99))
        show(atomrun.lockfd(8, { fcntl = true }))                 -- read-only, exclusive
        show(atomrun.lockfd(7, { fcntl = true, mode = "shared" })) -- write-only, shared
        show(atomrun.lockfd(8, { fcntl = true, mode = "shared" }) ~= nil)
      ]])
      assert.equal(0, st, err)
      local lines = {}
      for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
      assert.equal("nil|descriptor 99 is not open|EBADF", lines[1])
      assert.equal("nil|descriptor 99 is not open|EBADF", lines[2])
      assert.matches("^nil|descriptor 8 is open read%-only.*|EBADF$", lines[3])
      assert.matches("^nil|descriptor 7 is open write%-only.*|EBADF$", lines[4])
      assert.equal("true|nil|nil", lines[5])
      -- an O_PATH descriptor (python hands one down)
      st, out, err = H.sh(H.q(H.python) .. " -c " .. H.q([[
import os, sys
fd = os.open(sys.argv[2], os.O_PATH)
os.set_inheritable(fd, True)
os.execv(sys.argv[1], [sys.argv[1], "-e", "local r, m, c = atomrun.lockfd(tonumber(arg[1])) io.write(tostring(r), '|', m, '|', c)", str(fd)])
]]) .. " " .. H.q(H.atomrun) .. " " .. H.q(p))
      assert.equal(0, st, err)
      assert.matches("^nil|descriptor %d+ is an O_PATH descriptor.*|EBADF$", out)
    end)
  end)
end)
