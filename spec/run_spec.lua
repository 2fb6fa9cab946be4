-- atomrun.run(argv [, opts]): a command without a shell, results like
-- os.execute, a timeout that kills the whole process group, held locks
-- inherited (or not), env and cwd, and nothing else leaking into the child.
local H = require "spec.helper"
local ar = H.ar
local gone = H.gone

local function pack(...) return table.pack(...) end

local flock_n = H.flock_n

-- What the child sees as its open descriptors.  The shell execs ls in its
-- own place (same pid, same descriptors); ls adds one of its own, for the
-- directory it reads, which child_fds() leaves out.
local FDS = 'exec ls -l /proc/$$/fd/ > "$0"'

local function child_fds(out)
  local fds = {}
  for line in H.slurp(out):gmatch("[^\n]+") do
    local n, target = line:match(" (%d+) %-> (.*)$")
    if n and not target:match("^/proc/%d+/fd$") then fds[tonumber(n)] = target end
  end
  return fds
end

describe("atomrun.run", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function()
    collectgarbage()
    H.cleanup()
  end)

  describe("results", function()
    it("returns what os.execute returns for the same outcome", function()
      local cases = {
        { { "true" }, "true" },
        { { "false" }, "false" },
        { { "sh", "-c", "exit 7" }, "exit 7" },
        { { "sh", "-c", "exit 255" }, "exit 255" },
        { { "sh", "-c", "kill -KILL $$" }, "kill -KILL $$" },
        { { "sh", "-c", "kill -TERM $$" }, "kill -TERM $$" },
      }
      for _, c in ipairs(cases) do
        local got, want = pack(ar.run(c[1])), pack(os.execute(c[2]))
        assert.same(want, got, table.concat(c[1], " "))
      end
      assert.same(pack(true, "exit", 0), pack(ar.run({ "true" })))
      assert.same(pack(nil, "signal", 9), pack(ar.run({ "sh", "-c", "kill -KILL $$" })))
    end)

    it("passes argv to the command as it is, without a shell, numbers as strings", function()
      local out = dir .. "/argv"
      local ok = ar.run({ "sh", "-c", 'printf "%s|" "$@" > "$0"', out, "a b", "$HOME", "*", "", "'", 42 })
      assert.is_true(ok)
      assert.equal("a b|$HOME|*||'|42|", H.slurp(out))
      assert.same(pack(nil, "exit", 3), pack(ar.run({ "sh", "-c", "exit $0", 3 })))
    end)

    it("finds the command on PATH", function()
      assert.is_true((ar.run({ "env", "true" })))
    end)
  end)

  describe("commands that cannot run", function()
    it("gives nil, message, 'ENOENT' for a missing command", function()
      local r = pack(ar.run({ dir .. "/no-such-command", "x" }))
      assert.equal(3, r.n)
      assert.is_nil(r[1])
      assert.matches("no%-such%-command", r[2])
      assert.equal("ENOENT", r[3])
      r = pack(ar.run({ "atomrun-no-such-command-on-path" }))
      assert.is_nil(r[1])
      assert.equal("ENOENT", r[3])
    end)

    it("gives nil, message, 'EACCES' for a file that is not executable, or a directory", function()
      H.write(dir .. "/script", "#!/bin/sh\necho hi\n")
      local r = pack(ar.run({ dir .. "/script" }))
      assert.is_nil(r[1])
      assert.matches("script", r[2])
      assert.matches("[Pp]ermission denied", r[2])
      assert.equal("EACCES", r[3])
      r = pack(ar.run({ dir }))
      assert.is_nil(r[1])
      assert.equal("EACCES", r[3])
    end)

    it("gives nil, message, code for a working directory that does not exist", function()
      local r = pack(ar.run({ "true" }, { cwd = dir .. "/nowhere" }))
      assert.is_nil(r[1])
      assert.matches("cannot change to directory " .. dir:gsub("%p", "%%%0") .. "/nowhere", r[2])
      assert.equal("ENOENT", r[3])
      H.write(dir .. "/file", "")
      r = pack(ar.run({ "true" }, { cwd = dir .. "/file" }))
      assert.is_nil(r[1])
      assert.equal("ENOTDIR", r[3])
    end)

    it("leaves no child behind after a failed exec", function()
      for _ = 1, 5 do ar.run({ dir .. "/no-such-command" }) end
      -- every child was reaped: none of our children is a zombie
      local me = ar.pid()
      local _, out = H.sh("ps -o stat= --ppid " .. me)
      assert.not_matches("Z", out)
    end)
  end)

  describe("opts.timeout", function()
    it("sends TERM to the whole process group and reports 'timeout'", function()
      local pidf = dir .. "/bgpid"
      local t0 = ar.now()
      local r = pack(ar.run({ "sh", "-c", 'sleep 60 & echo $! > "$0"; wait', pidf }, { timeout = 0.3 }))
      local took = ar.now() - t0
      assert.same(pack(nil, "signal", 15, "timeout"), r)
      assert.is_true(took >= 0.29 and took < 5, "took " .. took .. " s")
      -- the grandchild in the same group got the TERM too
      local bgpid = tonumber(H.slurp(pidf))
      assert.is_number(bgpid)
      assert(H.wait_until(function() return gone(bgpid) end, 10), "grandchild survived the timeout")
    end)

    it("runs the command in its own process group", function()
      local out = dir .. "/pgid"
      assert.is_true((ar.run({ "sh", "-c", 'ps -o pid=,pgid= -p $$ > "$0"', out }, { timeout = 30 })))
      local pid, pgid = H.slurp(out):match("(%d+)%s+(%d+)")
      assert.equal(pid, pgid)
    end)

    -- In its own group the command no longer hears the terminal's Ctrl-C or
    -- a signal to our group; atomrun passes INT/TERM/HUP/QUIT on, so that
    -- stopping atomrun never leaves the command running, orphaned.  (INT and
    -- QUIT take the same path, but a background job of a shell, as spawned
    -- here, starts with them ignored, so they cannot be seen from a test.)
    for _, sig in ipairs({ "TERM", "HUP" }) do
      it("passes SIG" .. sig .. " sent to atomrun on to the command's group", function()
        local job, pidf, res = dir .. "/job.lua", dir .. "/grandchild", dir .. "/result"
        H.write(job, [[
          local r = table.pack(atomrun.run({ "sh", "-c", 'sleep 60 & echo $! > "$0"; wait', arg[1] },
            { timeout = 60 }))
          local f = io.open(arg[2], "w")
          f:write(tostring(r[1]), " ", tostring(r[2]), " ", tostring(r[3]))
          f:close()
        ]])
        local pid = H.spawn(H.q(H.atomrun) .. " " .. H.q(job) .. " " .. H.q(pidf) .. " " .. H.q(res))
        assert.is_true(H.wait_until(function() return H.slurp(pidf):match("%d") ~= nil end, 20))
        local grandchild = tonumber(H.slurp(pidf))
        H.kill(pid, sig)
        assert.is_true(H.wait_until(function() return gone(grandchild) end, 20),
          "the command's group did not get SIG" .. sig)
        assert.is_true(H.wait_until(function() return H.slurp(res) ~= "" end, 20))
        -- the shell's `wait` was interrupted by the signal it got: it died of it
        assert.matches("^nil signal %d+$", H.slurp(res))
        H.wait_exit(pid, 10)
      end)
    end

    it("sends KILL kill_after seconds later when TERM is ignored", function()
      local t0 = ar.now()
      local r = pack(ar.run({ "sh", "-c", "trap '' TERM; sleep 60" }, { timeout = 0.2, kill_after = 0.3 }))
      local took = ar.now() - t0
      assert.same(pack(nil, "signal", 9, "timeout"), r)
      assert.is_true(took >= 0.49 and took < 5, "took " .. took .. " s")
    end)

    it("reports how a command that handles TERM ended, plus 'timeout'", function()
      local r = pack(ar.run({ "sh", "-c", "exec 2>/dev/null; trap 'exit 3' TERM; while :; do sleep 0.02; done" },
        { timeout = 0.2 }))
      assert.same(pack(nil, "exit", 3, "timeout"), r)
      r = pack(ar.run({ "sh", "-c", "exec 2>/dev/null; trap 'exit 0' TERM; while :; do sleep 0.02; done" },
        { timeout = 0.2 }))
      assert.same(pack(true, "exit", 0, "timeout"), r)
    end)

    it("has no 4th result when the command ends in time", function()
      assert.same(pack(true, "exit", 0), pack(ar.run({ "true" }, { timeout = 30 })))
      assert.same(pack(nil, "exit", 2), pack(ar.run({ "sh", "-c", "exit 2" }, { timeout = 30, kill_after = 5 })))
    end)
  end)

  describe("locks and descriptors", function()
    it("the child inherits held locks; close_locks keeps them out", function()
      local p = dir .. "/held.lock"
      local lk = assert(ar.lock(p))
      local out = dir .. "/fds"
      assert.is_true((ar.run({ "sh", "-c", FDS, out })))
      local seen = false
      for _, t in pairs(child_fds(out)) do seen = seen or t == p end
      assert.is_true(seen, "lock descriptor not inherited:\n" .. H.slurp(out))
      assert.is_true((ar.run({ "sh", "-c", FDS, out }, { close_locks = true })))
      for _, t in pairs(child_fds(out)) do assert.not_equal(p, t) end
      lk:unlock()
    end)

    it("close_fds: the command runs without the caller's descriptors, which stay open here", function()
      local out = dir .. "/cfds"
      -- descriptor 7, inheritable, as a shell's 7>file gives it
      local st = H.sh(H.q(H.atomrun) .. " -e " .. H.q([[
        local out = ...
        assert(atomrun.run({ "sh", "-c", "test -e /proc/self/fd/7 && echo has || echo none", },
                           { close_fds = { 7 } }) )
        local f = io.open("/proc/self/fd/7") and "open" or "closed"
        io.write(f)]]) .. " " .. H.q(out) .. " 7>" .. H.q(dir .. "/seven") .. " >" .. H.q(out))
      assert.equal(0, st)
      assert.equal("none\nopen", H.slurp(out))
      for _, bad in ipairs({ { "x" }, { -1 }, { 1.5 } }) do
        local ok, err = pcall(ar.run, { "true" }, { close_fds = bad })
        assert.is_false(ok)
        assert.matches("option 'close_fds': item 1 is not a descriptor number", err, 1, true)
      end
      local ok, err = pcall(ar.run, { "true" }, { close_fds = 7 })
      assert.is_false(ok)
      assert.matches("close_fds", err, 1, true)
    end)

    it("an inherited lock stays held by a child that outlives the unlock (flock(1) semantics)", function()
      for _, close in ipairs({ false, true }) do
        local p = dir .. "/outlive.lock"
        local pidf = dir .. "/sleeper"
        local lk = assert(ar.lock(p))
        assert.is_true((ar.run({ "sh", "-c", '(exec sleep 60) </dev/null >/dev/null 2>&1 & echo $! > "$0"', pidf },
          { close_locks = close })))
        local sleeper = tonumber(H.slurp(pidf))
        lk:unlock()
        assert.equal(close and 0 or 1, flock_n(p), close and "close_locks" or "inherited")
        H.kill(sleeper, "KILL")
        assert(H.wait_until(function() return gone(sleeper) end, 10))
        assert.equal(0, flock_n(p))
      end
    end)

    it("passes the caller's descriptors, leaks none of its own, adds the locks", function()
      local p = dir .. "/a.lock"
      local out = dir .. "/fds"
      local function extras(fds)
        local t = {}
        for n, tg in pairs(fds) do
          if n > 2 then t[#t + 1] = n .. " -> " .. tg end
        end
        table.sort(t)
        return t
      end
      -- what the caller gave this process (the test runner's own), as
      -- os.execute passes it: run() must pass exactly the same
      assert.is_true((os.execute("exec sh -c " .. H.q(FDS) .. " " .. H.q(out))))
      local base = extras(child_fds(out))
      assert.is_true((ar.run({ "sh", "-c", FDS, out })))
      assert.same(base, extras(child_fds(out)), "before any lock")
      local lk = assert(ar.lock(p))
      local f = assert(ar.open(dir .. "/ranges"))
      local rg = assert(f:lock(0, 10))
      local plain = assert(ar.open(dir .. "/plain"))       -- no lock held through it
      assert(ar.replace(dir .. "/replaced", "x"))
      assert.is_true((ar.run({ "sh", "-c", FDS, out }, { close_locks = true })))
      assert.same(base, extras(child_fds(out)), "close_locks")
      -- without close_locks: the caller's plus the two that hold locks
      assert.is_true((ar.run({ "sh", "-c", FDS, out })))
      local want = {}
      for _, e in ipairs(base) do want[#want + 1] = e:match("-> (.*)$") end
      want[#want + 1] = p
      want[#want + 1] = dir .. "/ranges"
      table.sort(want)
      local got = {}
      for n, t in pairs(child_fds(out)) do
        if n > 2 then got[#got + 1] = t end
      end
      table.sort(got)
      assert.same(want, got)
      rg:unlock()
      f:close()
      plain:close()
      lk:unlock()
    end)
  end)

  describe("env and cwd", function()
    it("merges opts.env over the environment; false removes a variable", function()
      local out = dir .. "/env"
      assert.is_true((ar.run({ "sh", "-c", 'env > "$0"', out }, { env = { ATOMRUN_T = "x y", N = 5 } })))
      local env = H.slurp(out)
      assert.matches("\nATOMRUN_T=x y\n", "\n" .. env)
      assert.matches("\nN=5\n", "\n" .. env)
      assert.matches("\nPATH=", "\n" .. env)        -- inherited
      assert.is_true((ar.run({ "sh", "-c", "exit 0" }, { env = { PATH = false } })))
      assert.is_true((ar.run({ "sh", "-c", 'env > "$0"', out }, { env = { PATH = false, HOME = false } })))
      env = H.slurp(out)
      assert.not_matches("\nPATH=", "\n" .. env)
      assert.not_matches("\nHOME=", "\n" .. env)
      -- without opts.env the environment is inherited unchanged
      assert.is_true((ar.run({ "sh", "-c", 'env > "$0"', out })))
      assert.matches("\nPATH=" .. os.getenv("PATH"):gsub("%p", "%%%0") .. "\n", "\n" .. H.slurp(out))
    end)

    it("runs in opts.cwd", function()
      local out = dir .. "/cwd"
      assert(ar.mkdir(dir .. "/sub"))
      assert.is_true((ar.run({ "sh", "-c", 'pwd -P > "$0"', out }, { cwd = dir .. "/sub" })))
      local _, want = H.sh("cd " .. H.q(dir .. "/sub") .. " && pwd -P")
      assert.equal(want, H.slurp(out))
      -- our own directory did not change
      local _, here = H.sh("pwd -P")
      assert.not_equal(want, here)
    end)
  end)

  describe("opts.on_start", function()
    it("is called once with the running command's pid, before run() waits", function()
      local out, calls, seen = dir .. "/pid", 0, nil
      local r = pack(ar.run({ "sh", "-c", 'echo $$ > "$0"; sleep 0.2', out }, {
        on_start = function(pid)
          calls = calls + 1
          seen = pid
          assert(H.alive(pid), "not running when on_start was called")
        end }))
      assert.same(pack(true, "exit", 0), r)
      assert.equal(1, calls)
      assert.equal(math.tointeger(tonumber(H.slurp(out))), seen)
    end)

    it("an error in it kills the command (its group with a timeout) and propagates", function()
      for _, opts in ipairs({ {}, { timeout = 60 } }) do
        local child
        opts.on_start = function(pid) child = pid; error("refused " .. pid) end
        local ok, err = pcall(ar.run, { "sleep", "60" }, opts)
        assert.is_false(ok)
        assert.matches("refused " .. child, err)
        -- killed and reaped: not even a zombie is left
        assert.is_false(H.exists("/proc/" .. child))
      end
    end)

    it("is not called when the command cannot start", function()
      local called = false
      local r, _, code = ar.run({ dir .. "/no/such" }, { on_start = function() called = true end })
      assert.is_nil(r)
      assert.equal("ENOENT", code)
      assert.is_false(called)
    end)
  end)

  describe("opts.die_with_parent", function()
    -- atomrun runs `sleep 60` and is SIGKILLed: with die_with_parent the
    -- command dies with it (PR_SET_PDEATHSIG, SIGKILL), without it the
    -- command lives on, orphaned.
    for _, die in ipairs({ true, false }) do
      it(die and "kills the command when atomrun dies" or "without it the command outlives atomrun", function()
        local pidf = dir .. "/pids"
        H.bg_lua([[
          local pidf, die = ...
          atomrun.run({ "sleep", "60" }, { die_with_parent = die == "true",
            on_start = function(pid) assert(atomrun.replace(pidf, atomrun.pid() .. " " .. pid)) end })
        ]], pidf, tostring(die))
        assert.is_true(H.wait_file(pidf, 15))
        local parent, child = H.slurp(pidf):match("^(%d+) (%d+)$")
        parent, child = tonumber(parent), tonumber(child)
        H.kill(parent, "KILL")
        assert.is_true(H.wait_exit(parent, 10))
        if die then
          assert.is_true(H.wait_exit(child, 10), "the command survived its parent")
        else
          ar.sleep(0.2)
          assert.is_true(H.alive(child))
          H.kill(child, "KILL")
        end
      end)
    end
  end)

  -- A real terminal: python3's pty module runs atomrun as the foreground
  -- job of a new pseudo-terminal and types at it.
  describe("on a terminal", function()
    local DRIVER = [[
import json, os, pty, select, sys, time
steps = json.loads(sys.argv[1])
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
out = b""
def more(t):
    global out
    r, _, _ = select.select([fd], [], [], t)
    if not r:
        return True
    try:
        d = os.read(fd, 4096)
    except OSError:
        return False
    out += d
    return bool(d)
ok = 1
for kind, arg in steps:
    if kind == "expect":
        end = time.time() + 20
        while arg.encode() not in out:
            if time.time() > end or not more(end - time.time()):
                ok = 0
                break
    elif kind == "send":
        os.write(fd, arg.encode())
    elif kind == "kill":
        os.kill(pid, int(arg))
    elif kind == "cont":
        # wait until atomrun has stopped itself, then continue it (`fg`)
        end = time.time() + 20
        while open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[0] != "T":
            if time.time() > end:
                ok = 0
                break
            more(0.05)
        if ok:
            os.kill(pid, 18)
    if not ok:
        break
end = time.time() + 20
while time.time() < end and more(0.2):
    pass
os.kill(pid, 9) if not ok else None
_, st = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace").replace("\r", ""))
sys.stdout.write("\nOK %d STATUS %d\n" % (ok, os.waitstatus_to_exitcode(st)))
]]
    local function drive(code, steps)
      local function jstr(v)
        return '"' .. v:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
      end
      local parts = {}
      for _, st in ipairs(steps) do
        parts[#parts + 1] = "[" .. jstr(st[1]) .. "," .. jstr(st[2]) .. "]"
      end
      local json = "[" .. table.concat(parts, ",") .. "]"
      local _, out = H.sh("exec " .. H.q(H.python) .. " -c " .. H.q(DRIVER) .. " " .. H.q(json)
        .. " " .. H.q(H.atomrun) .. " -e " .. H.q(code) .. " </dev/null")
      return out
    end

    it("a timed command gets the foreground: it reads the terminal, and atomrun can read it after", function()
      local out = drive([[
        local r = table.pack(atomrun.run({ "sh", "-c", "printf 'cmd> '; read x; echo got:$x" },
          { timeout = 15 }))
        print("result", r[1], r[2], r[3], r[4])
        io.write("again> "); io.stdout:flush()
        print("read:" .. tostring(io.read("l")))
      ]], { { "expect", "cmd> " }, { "send", "hello\n" }, { "expect", "again> " },
            { "send", "back\n" }, { "expect", "read:" } })
      assert.matches("got:hello", out)
      assert.matches("result\ttrue\texit\t0\tnil", out)
      assert.matches("read:back", out)
      assert.matches("OK 1 STATUS 0", out)
    end)

    it("Ctrl-Z stops the timed command and atomrun; continued, the command has the terminal again", function()
      local out = drive([[
        local r = table.pack(atomrun.run({ "sh", "-c", "echo started; read x; echo got:$x" },
          { timeout = 30 }))
        print("result", r[1], r[2], r[3])
      ]], { { "expect", "started" }, { "send", "\26" }, { "cont", "" }, { "send", "hi\n" },
            { "expect", "result" } })
      assert.matches("got:hi", out)
      assert.matches("result\ttrue\texit\t0", out)
      assert.matches("OK 1 STATUS 0", out)
    end)

    -- Ctrl-C ends the command, then the script, with or without a timeout
    -- (a shell's job does the same, and so does flock(1)): the script dies
    -- of SIGINT once its command is gone, never before, never leaving it.
    for _, timed in ipairs({ false, true }) do
      local opts = timed and "{ timeout = 60 }" or "{}"
      it("Ctrl-C during run" .. opts .. " ends the command, then the script", function()
        local out = drive(string.format([[
          local r = table.pack(atomrun.run({ "sh", "-c", "echo started:$$; exec sleep 30" }, %s))
          print("continued", r[1], r[2], r[3])
        ]], opts), { { "expect", "started:" }, { "send", "\3" } })
        assert.is_nil(out:find("continued", 1, true), out)
        assert.matches("OK 1 STATUS %-2\n", out)     -- died of SIGINT
        local cmd = tonumber(out:match("started:(%d+)"))
        assert.is_true(H.wait_exit(cmd, 10), "the command outlived the script")
      end)

      it("kill -INT to atomrun during run" .. opts .. " ends the command, then the script", function()
        local out = drive(string.format([[
          local r = table.pack(atomrun.run({ "sh", "-c", "echo started:$$; exec sleep 30" }, %s))
          print("continued", r[1], r[2], r[3])
        ]], opts), { { "expect", "started:" }, { "kill", "2" } })
        assert.is_nil(out:find("continued", 1, true), out)
        assert.matches("OK 1 STATUS %-2\n", out)
        local cmd = tonumber(out:match("started:(%d+)"))
        assert.is_true(H.wait_exit(cmd, 10), "the command outlived the script")
      end)

      it("Ctrl-C during run" .. opts .. " that the command handles: the script goes on", function()
        local out = drive(string.format([[
          local r = table.pack(atomrun.run({ "sh", "-c",
            "trap 'echo handled; exit 4' INT; echo started; while :; do sleep 0.05; done" }, %s))
          print("continued", r[1], r[2], r[3])
        ]], opts), { { "expect", "started" }, { "send", "\3" }, { "expect", "continued" } })
        assert.matches("handled", out)
        assert.matches("continued\tnil\texit\t4", out)
        assert.matches("OK 1 STATUS 0", out)
      end)
    end
  end)

  describe("bad arguments raise an error naming them", function()
    local function raises(pattern, ...)
      local args = table.pack(...)
      local ok, err = pcall(ar.run, table.unpack(args, 1, args.n))
      assert.is_false(ok, "no error for " .. pattern)
      assert.matches(pattern, err)
    end

    it("argv", function()
      raises("bad argument #1 .*table expected, got no value")
      raises("bad argument #1 .*table expected, got string", "true")
      raises("bad argument #1 .*at least the command name", {})
      raises("bad argument #1 .*argv%[2%] must be a string, not a table", { "echo", {} })
      raises("bad argument #1 .*argv%[1%] must be a string, not a boolean", { true })
      raises("bad argument #1 .*argv%[2%] contains a NUL byte", { "echo", "a\0b" })
    end)

    it("options", function()
      local argv = { "true" }
      raises("bad argument #2 .*table expected, got number", argv, 5)
      raises("bad argument #2 .*unknown option 'timout'", argv, { timout = 1 })
      raises("bad argument #2 .*option 'timeout' must be a number of seconds >= 0", argv, { timeout = -1 })
      raises("bad argument #2 .*option 'timeout' must be a number of seconds >= 0", argv, { timeout = 0 / 0 })
      raises("bad argument #2 .*option 'timeout' must be a number, not a string", argv, { timeout = "1" })
      raises("bad argument #2 .*option 'kill_after' must be a number of seconds >= 0", argv, { kill_after = -2 })
      raises("bad argument #2 .*option 'close_locks' must be a boolean, not a number", argv, { close_locks = 1 })
      raises("bad argument #2 .*option 'cwd' must be a string, not a number", argv, { cwd = 1 })
      raises("bad argument #2 .*option 'env' must be a table, not a string", argv, { env = "A=1" })
      raises("bad argument #2 .*env keys must be variable names", argv, { env = { "A=1" } })
      raises("bad argument #2 .*env values must be strings or false", argv, { env = { A = {} } })
      raises("bad argument #2 .*env values must be strings or false", argv, { env = { A = true } })
      raises("bad argument #2 .*option 'on_start' must be a function, not a string", argv, { on_start = "x" })
      raises("bad argument #2 .*option 'die_with_parent' must be a boolean, not a number", argv,
        { die_with_parent = 1 })
    end)
  end)
end)
