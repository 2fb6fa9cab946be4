-- `atomrun who [--json] PATH...`: the live holders and the waiters of each
-- lock file, for flock(2), OFD and classic POSIX locks.
local H = require "spec.helper"
local ar = H.ar

-- Only the binary is under test: the lua5.4 pass would run the same again
-- (shown as skipped there).
local describe = H.pass == "lua5.4" and pending or describe

local function who(...) return H.run("who", ...) end

describe("atomrun who #child", function()
  local dir, f
  before_each(function()
    dir = H.tmpdir()
    f = dir .. "/w.lock"
  end)
  after_each(function() H.cleanup_procs() end)

  -- Start CMD (a shell line) in the background; it touches READY once it
  -- holds what it should.  Returns the pid of the shell.
  local function start(cmd, ready)
    local pid = H.spawn("exec " .. cmd)
    assert(H.wait_file(ready, 15), "never ready: " .. cmd)
    return pid
  end

  it("exits 64 on usage errors, worded as getopt's", function()
    for _, case in ipairs({
      { {}, "^atomrun: no lock file given\nTry 'atomrun who %-%-help' for more information%.\n$" },
      { { "--bogus", f }, "^atomrun: unrecognized option '%-%-bogus'\n" },
      { { "-x", f }, "^atomrun: invalid option %-%- 'x'\n" },
      { { f, "--json=1" }, "^atomrun: option '%-%-json' doesn't allow an argument\n" },
    }) do
      local st, out, err = who(table.unpack(case[1]))
      assert.same({ 64, "" }, { st, out }, table.concat(case[1], " "))
      assert.matches(case[2], err)
    end
    local st, out = who("--he")
    assert.equal(0, st)
    assert.matches("^usage: atomrun who", out)
  end)

  describe("holders and waiters", function()
    it("exit 0 and 'free' when nobody holds it; 66 for a missing file", function()
      H.write(f, "")
      assert.same({ 0, f .. ": free\n", "" }, { who(f) })
      local st, _, err = who(dir .. "/none")
      assert.equal(66, st)
      assert.matches("^atomrun: cannot examine " .. dir:gsub("%p", "%%%0") .. "/none: No such file", err)
    end)

    it("an etcd name no endpoint answers: 69 as lock's, with the endpoint and the error", function()
      local st, out, err = who("etcd://127.0.0.1:1/x")
      assert.equal(69, st)
      assert.equal("", out)
      assert.matches("^atomrun: cannot examine etcd://127%.0%.0%.1:1/x: .*127%.0%.0%.1:1", err)
    end)

    it("names the flock holder and a waiter, exit 1", function()
      local ready = dir .. "/ready"
      local pid = start("flock " .. H.q(f) .. " sh -c 'touch " .. H.q(ready) .. "; exec sleep 30'", ready)
      local waiter = H.spawn("exec flock -s " .. H.q(f) .. " true")
      assert(H.wait_until(function()
        return H.slurp("/proc/locks"):find("->", 1, true) ~= nil
      end, 10), "the waiter never queued")
      local st, out = who(f)
      assert.equal(1, st)
      assert.matches("^" .. f:gsub("%p", "%%%0") .. ": held\n", out)
      -- flock(1) forks: the live holder is whoever has the description
      -- now, flock or its sleep, never a dead pid
      local holder = tonumber(out:match("\n  holds%s+pid (%d+)"))
      assert.truthy(holder == pid or H.slurp("/proc/" .. holder .. "/cmdline"):find("sleep"), out)
      assert.matches("holds%s+pid %d+%s+exclusive%s+flock%s+whole file%s+since %d+%-%d+%-%d+T%d+:%d+:%d+Z ", out)
      assert.matches("waits%s+pid " .. waiter .. "%s+shared%s+flock", out)
      H.kill(waiter, "KILL")
    end)

    it("names an OFD range holder and a POSIX (lockf) holder with their bytes", function()
      local ready = dir .. "/ofd"
      H.bg_lua([[
        local path, ready = ...
        local fh = assert(atomrun.open(path))
        local r = assert(fh:lock(10, 5))
        atomrun.replace(ready, tostring(atomrun.pid()))
        atomrun.sleep(30)
      ]], f, ready)
      local ofd = H.ready_pid(ready)
      local pready = dir .. "/posix"
      local posix = start(H.python .. " -c " .. H.q([[
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_SH, 0, 100, 0)
open(sys.argv[2], "w").close()
time.sleep(30)
]]) .. " " .. H.q(f) .. " " .. H.q(pready), pready)
      local st, out = who(f)
      assert.equal(1, st)
      assert.matches("holds%s+pid " .. ofd .. "%s+exclusive%s+ofd%s+bytes 10%-14", out)
      assert.matches("holds%s+pid " .. posix .. "%s+shared%s+posix%s+bytes 100 to end of file", out)
      local st2, js = who("--json", f)
      assert.equal(1, st2)
      local doc = ar.json.decode(js)
      assert.equal(f, doc[1].path)
      assert.is_true(doc[1].held)
      assert.equal(2, #doc[1].holders)
      assert.same({}, doc[1].waiters)
      -- since: ISO 8601 UTC (the one format etcd names use too), and the epoch
      for _, e in ipairs(doc[1].holders) do
        assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", e.since)
        assert.equal(os.date("!%Y-%m-%dT%H:%M:%SZ", e.since_epoch), e.since)
      end
      H.kill(posix, "KILL")
    end)

    it("after `atomrun lock F cmd` is SIGKILLed names the command that still holds it", function()
      local ready = dir .. "/r"
      local lockpid = start(H.q(H.atomrun) .. " lock " .. H.q(f) .. " sh -c 'touch " .. H.q(ready)
        .. "; exec sleep 30'", ready)
      H.kill(lockpid, "KILL")
      assert(H.wait_exit(lockpid, 10))
      local st, out = who(f)
      assert.equal(1, st)
      local holder = tonumber(out:match("holds%s+pid (%d+)"))
      assert.truthy(holder and holder ~= lockpid and H.alive(holder), out)
      assert.matches("sleep 30", out)
    end)

    it("shows another process's command line on one line, control characters escaped", function()
      local ready = dir .. "/r"
      -- argv[0] of the holder is the hostile text (bash's exec -a), so it
      -- leads the command line whatever the core shortens
      local script = "import fcntl, sys, time\n" ..
        "f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX)\n" ..
        "open(sys.argv[2], 'w').close(); time.sleep(30)\n"
      start("bash -c 'exec -a \"$0\" " .. H.python .. " -c \"$1\" \"$2\" \"$3\"' " .. H.q("evil\n\27[2J")
        .. " " .. H.q(script) .. " " .. H.q(f) .. " " .. H.q(ready), ready)
      local st, out = who(f)
      assert.equal(1, st)
      assert.is_nil(out:find("\27", 1, true))
      assert.equal(2, select(2, out:gsub("\n", "")), out)   -- the path line and one holder
      assert.truthy(out:find("evil\\n\\e[2J", 1, true) or out:find("evil\\n\\x1b[2J", 1, true), out)
    end)

    it("takes several paths and options anywhere; --json lists each", function()
      local g = dir .. "/g.lock"
      H.write(f, "")
      H.write(g, "")
      local st, out = who(f, "--json", g)
      assert.equal(0, st)
      local doc = ar.json.decode(out)
      assert.equal(2, #doc)
      assert.same({ path = g, held = false, holders = {}, waiters = {} }, doc[2])
    end)
  end)
end)
