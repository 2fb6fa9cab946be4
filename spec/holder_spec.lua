-- spec/holder_spec.lua -- the holder atomrun names is the live one.
--
-- /proc/locks names whoever TOOK a flock lock (maybe dead since: its child
-- holds the open file description) and -1 for OFD locks.  atomrun names a
-- process alive now that holds the description now, found through
-- /proc/PID/fdinfo; who() lists every holder and waiter of a file with
-- its mode, kind, range and start time.  Real processes throughout:
-- atomrun itself, flock(1) and python3's fcntl module.
local H = require "spec.helper"
local ar = H.ar

local PY = H.python

-- Run a python3 snippet in the background (args quoted); returns its pid.
local function py(code, ...)
  local parts = { H.q(PY), "-c", H.q(code) }
  for _, a in ipairs({ ... }) do parts[#parts + 1] = H.q(tostring(a)) end
  return H.spawn(table.concat(parts, " "))
end

local read_pid, waiting = H.ready_pid, H.waiting

-- A python3 holder: lock `path` (kind flock | ofd | posix, mode r | w, a
-- range) and write its pid to `ready`; with wait = "wait", block for it.
local LOCKER = [[
import fcntl, os, struct, sys, time
path, ready, kind, mode, start, length, how = sys.argv[1:8]
start, length = int(start), int(length)
fd = os.open(path, os.O_RDWR | os.O_CREAT)
t = fcntl.F_WRLCK if mode == "w" else fcntl.F_RDLCK
if how == "wait":
    open(ready, "w").write(str(os.getpid()))
if kind == "flock":
    fcntl.flock(fd, fcntl.LOCK_EX if mode == "w" else fcntl.LOCK_SH)
elif kind == "ofd":
    cmd = fcntl.F_OFD_SETLKW if how == "wait" else fcntl.F_OFD_SETLK
    fcntl.fcntl(fd, cmd, struct.pack("hh4xqqi4x", t, 0, start, length, 0))
else:
    cmd = fcntl.F_SETLKW if how == "wait" else fcntl.F_SETLK
    fcntl.fcntl(fd, cmd, struct.pack("hh4xqqi4x", t, 0, start, length, 0))
if how != "wait":
    open(ready, "w").write(str(os.getpid()))
time.sleep(120)
]]

-- Each test's directory and processes (killed, and waited for: a dying
-- holder's lock stays in /proc/locks a moment, and the next test's file
-- may get the same inode number).
local dir, pids
local function setup()
  before_each(function()
    dir = H.tmpdir()
    pids = {}
  end)
  after_each(function()
    for _, p in ipairs(pids) do H.kill(p, "KILL") end
    for _, p in ipairs(pids) do H.wait_exit(p, 10) end
    H.cleanup_procs()
  end)
end

-- A LOCKER process; with how = "wait", returns once it waits in the kernel.
local function locker(path, kind, mode, start, length, how, tag)
  local ready = dir .. "/ready." .. tag
  pids[#pids + 1] = py(LOCKER, path, ready, kind, mode, start or 0, length or 0, how or "hold")
  local real = read_pid(ready)
  pids[#pids + 1] = real
  if how == "wait" then
    assert(H.wait_until(function()
      -- an OFD waiter shows as -1 in /proc/locks: look for its line instead
      if kind == "ofd" then return H.slurp("/proc/locks"):find("-> OFDLCK", 1, true) ~= nil end
      return waiting(real)
    end, 10), "never waited")
  end
  return real
end

describe("the live holder", function()
  setup()

  it("is the command when the atomrun that took the lock was SIGKILLed", function()
    local f, ready, cmdpid = dir .. "/job.lock", dir .. "/ready", dir .. "/cmd.pid"
    local parent = H.bg_lua([[
      local f, ready, cmdpid = ...
      local lk = assert(atomrun.lock(f))
      assert(atomrun.replace(ready, tostring(atomrun.pid())))
      atomrun.run({ "sh", "-c", 'echo $$ > "$0"; exec sleep 120', cmdpid })
    ]], f, ready, cmdpid)
    pids[#pids + 1] = parent
    parent = read_pid(ready)            -- atomrun's own pid (not its shell's)
    local cmd = read_pid(cmdpid)
    pids[#pids + 1] = cmd
    -- while atomrun lives, it (the taker) is named
    local lk, msg, code, holder = ar.lock(f, { wait = false })
    assert.is_nil(lk)
    assert.equal("busy", code)
    assert.is_true(holder.pid == parent or holder.pid == cmd, msg)
    H.kill(parent, "KILL")
    assert.is_true(H.wait_exit(parent, 10))
    -- /proc/locks still names the dead taker; atomrun names the command
    assert.matches(" " .. parent .. " ", H.slurp("/proc/locks"))
    lk, msg, code, holder = ar.lock(f, { wait = false })
    assert.is_nil(lk)
    assert.equal("busy", code)
    assert.equal(cmd, holder.pid, msg)
    assert.equal("sleep 120", holder.cmd)
    assert.equal("flock", holder.kind)
    assert.matches("pid " .. cmd .. " %(sleep 120%)", msg)
    local who = assert(ar.who(f))
    assert.equal(1, #who)
    assert.equal(cmd, who[1].pid)
    assert.is_false(who[1].waiting)
    assert.is_true(ar.holds(f, cmd))
    assert.is_false(ar.holds(f, ar.pid()))
  end)

  it("is the daemon a holder forked before it exited", function()
    local f, ready = dir .. "/d.lock", dir .. "/daemon.pid"
    pids[#pids + 1] = py([[
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
parent = os.getpid()
if os.fork() == 0:
    os.setsid()
    # ready only once the taker is gone: until then it holds the lock too
    while os.getppid() == parent:
        time.sleep(0.01)
    open(sys.argv[2], "w").write(str(os.getpid()))
    time.sleep(120)
os._exit(0)
]], f, ready)
    local daemon = read_pid(ready)
    pids[#pids + 1] = daemon
    local _, msg, code, holder = ar.lock(f, { wait = false })
    assert.equal("busy", code)
    assert.equal(daemon, holder.pid, msg)
    -- timeouts name it too
    local _, msg2, code2, holder2 = ar.lock(f, { timeout = 0.05 })
    assert.equal("timeout", code2)
    assert.equal(daemon, holder2.pid, msg2)
  end)

  it("is unknown, never guessed, when its descriptors cannot be seen (another user's)", function()
    -- the holder runs as another user (nobody): root sees it, so drop to
    -- nobody ourselves and look from there
    if ar.uid() ~= 0 then
      pending("needs root to start processes as two users")
      return
    end
    local f = dir .. "/u.lock"
    H.write(f, "")
    os.execute("chmod 777 " .. H.q(dir) .. "; chmod 666 " .. H.q(f))
    local pid = locker(f, "flock", "w", 0, 0, "hold", "u")
    local st, out = H.sh("setpriv --reuid=65534 --regid=65534 --clear-groups " .. H.q(H.atomrun)
      .. " -e " .. H.q([[
        local lk, msg, code, h = atomrun.lock(arg[1], { wait = false })
        io.write(code, " ", tostring(h and h.pid), " ", msg)
      ]]) .. " " .. H.q(f))
    assert.equal(0, st, out)
    -- root's python is hidden from nobody: the pid /proc/locks shows is not
    -- one nobody can check, so it is not named
    assert.matches("^busy nil ", out)
    assert.matches("locked by a process atomrun cannot see %(another user's: root, or its owner, "
      .. "can see it%)", out)
    assert.is_true(H.alive(pid))
  end)

  it("has a command line made safe for a terminal: one line, controls escaped", function()
    local f, ready, script = dir .. "/esc.lock", dir .. "/esc.pid", dir .. "/e.py"
    -- a script file and relative names: the odd arguments must come
    -- before the cut of long command lines
    H.write(script, [[
import fcntl, os, sys, time
fd = os.open(sys.argv[3], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
open(sys.argv[4], "w").write(str(os.getpid()))
time.sleep(120)
]])
    pids[#pids + 1] = H.spawn("cd " .. H.q(dir) .. " && exec " .. H.q(PY) .. " e.py "
      .. H.q("two\nlines\tand\27[31mred\27[0m") .. " " .. H.q("bad\128\255utf8 ok\195\169")
      .. " esc.lock esc.pid")
    local pid = read_pid(ready)
    pids[#pids + 1] = pid
    local _, msg, code, holder = ar.lock(f, { wait = false })
    assert.equal("busy", code)
    assert.equal(pid, holder.pid)
    assert.is_nil(holder.cmd:find("[%c\127]"), holder.cmd)
    assert.is_nil(msg:find("[%c\127]"), msg)
    assert.is_truthy(holder.cmd:find("two\\nlines\\tand\\e[31mred\\e[0m", 1, true), holder.cmd)
    assert.is_truthy(holder.cmd:find("bad\\x80\\xffutf8 ok\195\169", 1, true), holder.cmd)
  end)
end)

describe("atomrun.who", function()
  setup()

  local function by_pid(list)
    local t = {}
    for _, e in ipairs(list) do if e.pid then t[e.pid] = e end end
    return t
  end

  it("is an empty list for a free file, nil, msg, 'ENOENT' for a missing one", function()
    local f = dir .. "/free"
    H.write(f, "")
    assert.same({}, ar.who(f))
    local r, msg, code = ar.who(dir .. "/missing")
    assert.is_nil(r)
    assert.equal("ENOENT", code)
    assert.matches("missing", msg)
  end)

  for _, kind in ipairs({ "flock", "ofd", "posix" }) do
    it("lists " .. kind .. " holders and waiters with mode, range and start time", function()
      local f = dir .. "/" .. kind
      H.write(f, string.rep("x", 100))
      local range = kind ~= "flock"
      local s, l = range and 10 or 0, range and 10 or 0
      local holder = locker(f, kind, "w", s, l, "hold", "h")
      local waiter = locker(f, kind, "r", range and 15 or 0, range and 2 or 0, "wait", "w")
      local list = assert(ar.who(f))
      assert.equal(2, #list, H.slurp("/proc/locks"))
      local t = by_pid(list)
      local h, w = t[holder], t[waiter]
      assert.is_not_nil(h, "holder not named")
      assert.is_not_nil(w, "waiter not named")
      assert.is_false(h.waiting)
      assert.equal("exclusive", h.mode)
      assert.equal(kind, h.kind)
      assert.equal(s, h.start)
      assert.equal(l, h.length)
      assert.matches("python3", h.cmd)
      assert.is_true(w.waiting)
      assert.equal("shared", w.mode)
      assert.equal(range and 15 or 0, w.start)
      assert.equal(range and 2 or 0, w.length)
      -- start times: epoch seconds of processes started moments ago
      for _, e in ipairs({ h, w }) do
        assert.is_true(math.type(e.since) == "integer", tostring(e.since))
        assert.is_true(math.abs(os.time() - e.since) < 120, tostring(e.since))
      end
      assert.is_true(ar.holds(f, holder))
      assert.is_false(ar.holds(f, waiter))
    end)
  end

  it("lists several shared holders of one flock lock, each once", function()
    local f = dir .. "/shared"
    H.write(f, "")
    local a = locker(f, "flock", "r", 0, 0, "hold", "a")
    local b = locker(f, "flock", "r", 0, 0, "hold", "b")
    local list = assert(ar.who(f))
    local function show()
      local parts = { "a=" .. a .. " b=" .. b .. " ino=" .. ar.stat(f).ino }
      for _, e in ipairs(list) do
        parts[#parts + 1] = string.format("%s %s %s %s", tostring(e.pid), e.kind, e.mode,
          tostring(e.waiting))
      end
      return table.concat(parts, "; ") .. "\n" .. H.slurp("/proc/locks")
    end
    -- each named once (a lock left on the file by another test's process,
    -- as seen once in a full run, would be a third entry: not ours to count)
    local count = {}
    for _, e in ipairs(list) do
      if e.pid then count[e.pid] = (count[e.pid] or 0) + 1 end
    end
    assert.equal(1, count[a], show())
    assert.equal(1, count[b], show())
  end)

  it("names every holder of a file with hundreds of OFD locks (a big semaphore)", function()
    local f, ready = dir .. "/sem", dir .. "/sem.pid"
    pids[#pids + 1] = py([[
import fcntl, os, struct, sys, time
fds = []
for i in range(300):
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hh4xqqi4x", fcntl.F_WRLCK, 0, i, 1, 0))
    fds.append(fd)
open(sys.argv[2], "w").write(str(os.getpid()))
time.sleep(120)
]], f, ready)
    local pid = read_pid(ready)
    pids[#pids + 1] = pid
    -- One read, exact: held locks come from the holders' fdinfo, never
    -- from a page of /proc/locks that make test's other lane, churning
    -- locks the whole time, can tear (see "a torn /proc/locks" below).
    local list = assert(ar.who(f))
    assert.equal(300, #list)
    local starts = {}
    for _, e in ipairs(list) do
      assert.equal(pid, e.pid)
      assert.equal("ofd", e.kind)
      assert.equal(1, e.length)
      starts[e.start] = true
    end
    for i = 0, 299 do assert.is_true(starts[i], "slot " .. i) end
  end)

  it("agrees with flock(1) holding and waiting", function()
    local f, ready = dir .. "/fl", dir .. "/fl.pid"
    local sh = H.spawn("exec flock " .. H.q(f) .. " sh -c 'echo $$ > " .. ready .. "; exec sleep 120'")
    pids[#pids + 1] = sh
    local cmd = read_pid(ready)
    pids[#pids + 1] = cmd
    local w = H.spawn("exec flock -s " .. H.q(f) .. " true")
    pids[#pids + 1] = w
    assert.is_true(H.wait_until(function() return waiting(w) end, 10))
    local t = by_pid(assert(ar.who(f)))
    -- flock(1) took it and is alive with the description: it or its
    -- command is named, never anybody else
    local hold = t[sh] or t[cmd]
    assert.is_not_nil(hold)
    assert.is_false(hold.waiting)
    assert.is_true(t[w].waiting)
    assert.equal("shared", t[w].mode)
  end)
end)

-- /proc/locks is filled a page per read(2), the kernel finding its place
-- again by position: while other processes take and drop locks (anywhere:
-- the table is global), a reader of a long table skips or repeats lines.
-- who() takes held flock and OFD locks from the holders' fdinfo instead
-- (each written whole under the inode's lock), so a storm on other files
-- cannot change what it says about this one.
local HOLDERS = [[
import fcntl, os, struct, sys, time
path, ready = sys.argv[1], sys.argv[2]
for c in range(4):
    if os.fork() == 0:
        fds = []
        for i in range(40):
            fd = os.open(path, os.O_RDWR)
            fcntl.flock(fd, fcntl.LOCK_SH)
            fds.append(fd)
        for i in range(35):
            # the first 15 on descriptions that hold a flock too: two lines
            # in one fdinfo
            fd = fds[i] if i < 15 else os.open(path, os.O_RDWR)
            t = fcntl.F_WRLCK if i % 2 == 0 else fcntl.F_RDLCK
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK,
                        struct.pack("hh4xqqi4x", t, 0, c * 100 + i, 1, 0))
            fds.append(fd)
        open(ready + "." + str(c), "w").write(str(os.getpid()))
        time.sleep(300)
        os._exit(0)
time.sleep(300)
]]

-- Takes and drops flock, OFD and POSIX locks on n files of dir, some 40
-- held at a time, until killed.
local STORM = [[
import fcntl, os, random, struct, sys, time
d, n = sys.argv[1], int(sys.argv[2])
held, ops = [], 0
while True:
    fd = os.open("%s/s%d" % (d, random.randrange(n)), os.O_RDWR | os.O_CREAT)
    how = random.randrange(3)
    try:
        if how == 0:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        else:
            cmd = fcntl.F_OFD_SETLK if how == 1 else fcntl.F_SETLK
            fcntl.fcntl(fd, cmd, struct.pack("hh4xqqi4x", fcntl.F_WRLCK, 0,
                                             random.randrange(1000), 1, 0))
    except OSError:
        pass
    held.append(fd)
    if len(held) > 40:
        os.close(held.pop(random.randrange(len(held))))
    ops += 1
    if ops % 200 == 0:
        time.sleep(0.002)
]]

describe("who() and a torn /proc/locks #heavy", function()
  setup()

  local function key(pid, kind, mode, start, length, waiting)
    return string.format("%s %s %s %d %d %s", tostring(pid), kind, mode, start, length,
      tostring(waiting))
  end

  it("reads 300 flock and OFD holders exactly, 1000 times, through a kill storm on other files", function()
    local f, storm = dir .. "/big", dir .. "/storm"
    H.write(f, "")
    assert.equal(0, (H.sh("mkdir " .. H.q(storm))))
    pids[#pids + 1] = py(HOLDERS, f, dir .. "/ready")
    local want = {}
    for c = 0, 3 do
      local pid = read_pid(dir .. "/ready." .. c)
      pids[#pids + 1] = pid
      for _ = 1, 40 do want[#want + 1] = key(pid, "flock", "shared", 0, 0, false) end
      for i = 0, 34 do
        want[#want + 1] = key(pid, "ofd", i % 2 == 0 and "exclusive" or "shared", c * 100 + i, 1, false)
      end
    end
    table.sort(want)
    want = table.concat(want, "\n")

    local workers = {}
    local function start_worker(i)
      workers[i] = H.spawn("exec " .. H.q(PY) .. " -c " .. H.q(STORM) .. " " .. H.q(storm) .. " 50")
      pids[#pids + 1] = workers[i]
    end
    for i = 1, 3 do start_worker(i) end
    ar.sleep(0.3)                          -- the storm under way

    -- the table as one plain read sees it, now and then: how torn it is
    local mark = ":" .. ar.stat(f).ino .. " "
    local raw, raw_torn, bad, first_bad, kills = 0, 0, 0, nil, 0
    local last_kill, t0, spent = ar.now(), ar.now(), 0
    for n = 1, 1000 do
      local t = ar.now()
      local list = assert(ar.who(f))
      spent = spent + (ar.now() - t)
      local got = {}
      for _, e in ipairs(list) do
        got[#got + 1] = key(e.pid, e.kind, e.mode, e.start, e.length, e.waiting)
      end
      table.sort(got)
      got = table.concat(got, "\n")
      if got ~= want then
        bad = bad + 1
        first_bad = first_bad or string.format("read %d: %d entries\n%s", n, #list, got)
      end
      if n % 10 == 0 then
        local lines = 0
        for line in H.slurp("/proc/locks"):gmatch("[^\n]+") do
          if line:find(mark, 1, true) then lines = lines + 1 end
        end
        raw = raw + 1
        if lines ~= 300 then raw_torn = raw_torn + 1 end
      end
      if ar.now() - last_kill > 0.1 then    -- SIGKILL a worker, start another
        local i = math.random(#workers)
        H.kill(workers[i], "KILL")
        kills = kills + 1
        start_worker(i)
        last_kill = ar.now()
      end
    end
    assert.equal(0, bad, first_bad)
    print(string.format("\nwho() through a kill storm: 1000 exact reads of 300 locks in %.1f s "
      .. "(%.1f ms each), %d workers SIGKILLed; %d of %d plain reads of /proc/locks torn",
      ar.now() - t0, spent * 1e3 / 1000, kills, raw_torn, raw))
  end)

  it("names a description a forked child shares once, with one of its two holders", function()
    local f, ready = dir .. "/shared", dir .. "/two.pid"
    H.write(f, "")
    pids[#pids + 1] = py([[
import fcntl, os, struct, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_SH)
fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hh4xqqi4x", fcntl.F_WRLCK, 0, 5, 1, 0))
fd2 = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd2, fcntl.LOCK_SH)
os.dup(fd2)
child = os.fork()
if child == 0:
    time.sleep(120)
    os._exit(0)
open(sys.argv[2], "w").write("%d %d" % (os.getpid(), child))
time.sleep(120)
]], f, ready)
    assert(H.wait_file(ready, 15))
    local parent, child
    H.wait_until(function()
      parent, child = H.slurp(ready):match("^(%d+) (%d+)$")
      return parent ~= nil
    end, 5)
    parent, child = math.tointeger(tonumber(parent)), math.tointeger(tonumber(child))
    pids[#pids + 1] = parent
    pids[#pids + 1] = child
    -- two descriptions, each in both fd tables (and one dup'ed): their
    -- fdinfo lines read the same (the taker's pid, the whole file), yet
    -- they are two shared flocks, and the first holds an OFD lock too
    local flocks, ofd = 0, 0
    for _, e in ipairs(assert(ar.who(f))) do
      assert.is_true(e.pid == parent or e.pid == child, tostring(e.pid))
      assert.is_false(e.waiting)
      if e.kind == "flock" then flocks = flocks + 1 else ofd = ofd + 1 end
    end
    assert.same({ 2, 1 }, { flocks, ofd })
  end)
end)
