-- spec/hygiene_spec.lua -- what a child process inherits, and signals.
--
-- Descriptors: every descriptor atomrun opens is close-on-exec, except the
-- locks a command is meant to inherit (flock(1) semantics); descriptors the
-- caller gave atomrun (a shell's `5>file`) pass through to the command, as
-- with flock(1) and os.execute.  A child started
-- by atomrun.run, `atomrun lock`, `atomrun lock -o`, `atomrun lock -F`,
-- `atomrun once` and os.execute is asked for its own /proc/self/fd.
--
-- Signals: the deadline signal is sent to the waiting thread only, and a
-- signal the host already handles or ignores is never taken over; Ctrl-C
-- during a blocking wait in the CLI ends it at once with the shell's 130;
-- SIGTERM and SIGHUP to `atomrun lock` / `atomrun once` reach the command.
local H = require "spec.helper"
local ar = H.ar

local LIST, parse_fds, show, extra = H.FD_LIST, H.parse_fds, H.show_fds, H.extra_fds

-- Run a Lua script in this pass's interpreter (stock lua5.4 with the
-- module, or the atomrun binary); its stdout.
local function script(dir, body, ...)
  local p = dir .. "/job.lua"
  H.write(p, 'local atomrun = require "atomrun"\n' .. body)
  local cmd = H.q(H.atomrun)
  if H.pass == "lua5.4" then
    local build = H.build:sub(1, 1) == "/" and H.build or H.root .. "/" .. H.build
    cmd = "env LUA_CPATH=" .. H.q(build .. "/lua/?.so;;") .. " lua5.4"
  end
  for _, a in ipairs({ p, ... }) do cmd = cmd .. " " .. H.q(a) end
  -- two descriptors of the caller's, which commands must inherit
  cmd = cmd .. " 5</dev/null 7>" .. H.q(dir .. "/seven")
  local st, out, err = H.sh(cmd)
  assert.equal(0, st, err)
  return out
end

-- The command-line tests exercise the binary, which the lua5.4 pass
-- shares with the atomrun pass: run them in the atomrun and ASan passes.
local CLI = H.pass ~= "lua5.4"

-- A process that holds an exclusive flock on path until killed.
local function holder(dir, path)
  local ready = dir .. "/holder.ready"
  os.remove(ready)
  local pid = H.spawn(H.q(H.atomrun) .. " -e " .. H.q(
    "local l = assert(atomrun.lock(arg[1])); io.open(arg[2], 'w'):close(); atomrun.sleep(60)")
    .. " " .. H.q(path) .. " " .. H.q(ready))
  assert.is_true(H.wait_file(ready, 20), "the holder never took the lock")
  return pid
end

local waiting = H.waiting

describe("descriptor hygiene", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  it("atomrun.run: the child sees 0, 1, 2, the caller's descriptors and the locks the script holds", function()
    local out = script(dir, [[
      local dir, list = ...
      -- the child writes straight to our stdout: a redirection would make
      -- the shell keep a saved copy of its stdout (dash: fd 10)
      local function listing(tag, opts)
        io.write(tag, "\n"); io.stdout:flush()
        assert(atomrun.run({ "sh", "-c", "ls -l /proc/$$/fd; true" }, opts))
      end
      io.write("BASE\n"); io.stdout:flush()
      os.execute("exec sh -c 'ls -l /proc/$$/fd; true'")
      local lk = assert(atomrun.lock(dir .. "/whole.lock"))
      local f = assert(atomrun.open(dir .. "/ranges"))
      local r = assert(f:lock(0, 10))
      local plain = assert(atomrun.open(dir .. "/plain"))      -- open, no lock: not inherited
      local sem = atomrun.semaphore(dir .. "/sem", 2)
      local slot = assert(sem:acquire())
      local guard = assert(atomrun.once("hyg", { dir = dir .. "/once" }))
      assert(atomrun.create(dir .. "/created", "x"))
      assert(atomrun.replace(dir .. "/replaced", "x"))
      assert(atomrun.read(dir .. "/replaced"))
      assert(atomrun.update(dir .. "/counter", function(o) return (o or "") .. "+" end))
      assert(atomrun.probe(dir))
      listing("KEPT"); listing("CLOSED", { close_locks = true })
      lk:unlock(); r:unlock(); slot:release(); guard:release(); plain:close(); f:close()
      listing("AFTER")
    ]], dir, LIST)
    local base = parse_fds(out:match("BASE\n(.-)KEPT\n"))
    local kept = parse_fds(out:match("KEPT\n(.-)CLOSED\n"))
    local closed = parse_fds(out:match("CLOSED\n(.-)AFTER\n"))
    local after = parse_fds(out:match("AFTER\n(.*)$"))
    -- the shell gave the script 5 and 7 (see script()): they pass through
    assert.equal("/dev/null", base[5], show(base))
    assert.equal(dir .. "/seven", base[7], show(base))
    local want = extra(base)
    for _, p in ipairs({ dir .. "/once/hyg.lock", dir .. "/ranges", dir .. "/sem", dir .. "/whole.lock" }) do
      want[#want + 1] = p
    end
    table.sort(want)
    assert.same(want, extra(kept), show(kept))
    for n = 0, 2 do assert.is_not_nil(kept[n], "fd " .. n .. " missing: " .. show(kept)) end
    assert.same(extra(base), extra(closed), show(closed))
    assert.same(extra(base), extra(after), show(after))
  end)

  it("os.execute and io.popen: atomrun adds no inheritable descriptor", function()
    local out = script(dir, [[
      local dir, list = ...
      local function listing()
        local p = io.popen(list)
        local s = p:read("a"); p:close()
        local f = dir .. "/os.fds"
        os.execute(list .. " > " .. f)
        local fh = io.open(f); local s2 = fh:read("a"); fh:close()
        return s .. "--\n" .. s2
      end
      local before = listing()
      local lk = assert(atomrun.lock(dir .. "/a.lock"))
      local lk2 = assert(atomrun.lock(dir .. "/b.lock", { mode = "shared" }))
      local f = assert(atomrun.open(dir .. "/r"))
      local r = assert(f:lock(0, 0, { mode = "shared" }))
      local guard = assert(atomrun.once("hyg2", { dir = dir .. "/once" }))
      local slot = assert(atomrun.semaphore(dir .. "/sem", 1):acquire())
      assert(atomrun.create(dir .. "/c", "x"))
      assert(atomrun.replace(dir .. "/c", "y"))
      assert(atomrun.update(dir .. "/u", function() return "z" end))
      assert(atomrun.status(dir .. "/s"):write({ a = 1 }))
      local held = listing()
      -- a failed exec must hand the lock descriptors back close-on-exec
      atomrun.exec({ dir .. "/no/such/command" })
      local after_exec = listing()
      io.write("BEFORE\n", before, "HELD\n", held, "EXEC\n", after_exec)
      lk:unlock(); lk2:unlock(); r:unlock(); guard:release(); slot:release()
    ]], dir, LIST)
    local before, held, after_exec = out:match("BEFORE\n(.-)HELD\n(.-)EXEC\n(.*)$")
    local b1, b2 = before:match("^(.-)%-%-\n(.*)$")
    local h1, h2 = held:match("^(.-)%-%-\n(.*)$")
    local e1, e2 = after_exec:match("^(.-)%-%-\n(.*)$")
    -- whatever the test harness itself passed down is in the baseline too
    local base_popen, base_exec = extra(parse_fds(b1)), extra(parse_fds(b2))
    assert.same(base_popen, extra(parse_fds(h1)), "io.popen child: " .. h1)
    assert.same(base_exec, extra(parse_fds(h2)), "os.execute child: " .. h2)
    assert.same(base_popen, extra(parse_fds(e1)), "io.popen child after a failed exec: " .. e1)
    assert.same(base_exec, extra(parse_fds(e2)), "os.execute child after a failed exec: " .. e2)
  end)

  -- The CLI cases need the atomrun binary: skipped in the lua5.4 pass.
  local it = CLI and it or pending

  -- What a command started by the shell itself sees with the same
  -- redirections: the caller's descriptors, which atomrun must pass on.
  local function baseline(redirs)
    local st, out = H.sh(LIST .. redirs)
    assert.equal(0, st)
    return extra(parse_fds(out))
  end
  local function plus(base, ...)
    local t = {}
    for _, v in ipairs(base) do t[#t + 1] = v end
    for _, v in ipairs({ ... }) do t[#t + 1] = v end
    table.sort(t)
    return t
  end

  it("atomrun lock: the command inherits the caller's descriptors and the lock; -o: not the lock", function()
    local f = dir .. "/cli.lock"
    -- descriptors the caller gave atomrun (5, 7) reach the command, as with flock(1)
    local redirs = " 5</dev/null 7>" .. H.q(dir .. "/seven")
    local base = baseline(redirs)
    assert.is_true(#base >= 2, table.concat(base, " "))
    local st, out = H.sh(H.q(H.atomrun) .. " lock " .. H.q(f) .. " " .. LIST .. redirs)
    assert.equal(0, st)
    local fds = parse_fds(out)
    assert.equal(dir .. "/seven", fds[7], show(fds))
    assert.same(plus(base, f), extra(fds), show(fds))
    st, out = H.sh(H.q(H.atomrun) .. " lock -o " .. H.q(f) .. " " .. LIST .. redirs)
    assert.equal(0, st)
    fds = parse_fds(out)
    assert.same(base, extra(fds), show(fds))
    st, out = H.sh(H.q(H.atomrun) .. " lock -F " .. H.q(f) .. " " .. LIST .. redirs)
    assert.equal(0, st)
    fds = parse_fds(out)
    assert.same(plus(base, f), extra(fds), show(fds))
    st, out = H.sh(H.q(H.atomrun) .. " lock " .. H.q(f) .. " -c " .. H.q("ls -l /proc/$$/fd; true")
      .. redirs)
    assert.equal(0, st)
    fds = parse_fds(out)
    assert.same(plus(base, f), extra(fds), show(fds))
  end)

  it("atomrun lock: `cmd 5>file` writes through the inherited descriptor", function()
    local f, o = dir .. "/w.lock", dir .. "/five"
    local st = H.sh(H.q(H.atomrun) .. " lock " .. H.q(f) .. " sh -c 'echo via5 >&5' 5>" .. H.q(o))
    assert.equal(0, st)
    assert.equal("via5\n", H.slurp(o))
  end)

  it("atomrun lock: a sub-make under it gets make's jobserver descriptors", function()
    H.write(dir .. "/sub.mk", "all: a b\na:\n\t@echo a\nb:\n\t@echo b\n")
    local bin = H.atomrun:sub(1, 1) == "/" and H.atomrun or H.root .. "/" .. H.atomrun
    H.write(dir .. "/Makefile", "all:\n\t+" .. H.q(bin) .. " lock lk $(MAKE) --no-print-directory -f sub.mk\n")
    local st, out, err = H.sh("cd " .. H.q(dir) .. " && make -j2 2>&1")
    assert.equal(0, st, out .. err)
    assert.is_nil(out:find("jobserver unavailable", 1, true), out)
    -- and the same through flock(1), for comparison
    H.write(dir .. "/Makefile", "all:\n\t+flock lk $(MAKE) --no-print-directory -f sub.mk\n")
    local st2, out2 = H.sh("cd " .. H.q(dir) .. " && make -j2 2>&1")
    assert.equal(0, st2)
    assert.is_nil(out2:find("jobserver unavailable", 1, true), out2)
  end)

  it("atomrun once: the command inherits the caller's descriptors and the instance lock", function()
    local base = baseline(" 5</dev/null")
    local st, out, err = H.sh(H.q(H.atomrun) .. " once --dir " .. H.q(dir) .. " hyg3 " .. LIST
      .. " 5</dev/null")
    assert.equal(0, st, err)
    local fds = parse_fds(out)
    assert.same(plus(base, dir .. "/hyg3.lock"), extra(fds), show(fds))
  end)
end)

describe("signals", function()
  local it = CLI and it or pending
  local dir, pids
  before_each(function() dir = H.tmpdir(); pids = {} end)
  after_each(function()
    for _, p in ipairs(pids) do H.kill(p, "KILL") end
    H.cleanup()
  end)

  it("the deadline signal never reaches a trapping parent shell or a sibling child", function()
    local f = dir .. "/held"
    pids[#pids + 1] = holder(dir, f)
    local log, done = dir .. "/trapped", dir .. "/child.done"
    H.write(dir .. "/waits.lua", [[
      local f, log, done = ...
      -- a child of ours that traps every real-time signal, alive while we time out
      os.execute("sh -c 'for s in $(seq 34 64); do trap \"echo child $s >> " .. log
        .. "\" $s; done; sleep 1; : > " .. done .. "' &")
      local n = 0
      for _ = 1, 10 do
        local lk, _, code = atomrun.lock(f, { timeout = 0.03 })
        assert(not lk and code == "timeout", "expected a timeout, got " .. tostring(code))
        n = n + 1
      end
      print(n)
    ]])
    -- the shell traps all real-time signals (and USR1/USR2/ALRM) and logs any
    local traps = "for s in $(seq 34 64) 10 12 14; do trap \"echo parent $s >> " .. H.q(log)
      .. "\" $s; done; "
    local st, out, err = H.sh("sh -c " .. H.q(traps .. H.q(H.atomrun) .. " " .. H.q(dir .. "/waits.lua")
      .. " " .. H.q(f) .. " " .. H.q(log) .. " " .. H.q(done) .. "; echo rc=$?"))
    assert.equal(0, st, err)
    assert.equal("10\nrc=0\n", out)
    assert.is_true(H.wait_file(done, 20), "the trapping child never finished")
    assert.equal("", H.slurp(log))
  end)

  it("a signal the host ignores is never taken over; timed waits still end", function()
    local f = dir .. "/held"
    pids[#pids + 1] = holder(dir, f)
    -- SIGRTMIN+2.. (36..40) ignored by the parent: atomrun must pick another
    local code = [[
      local t0 = atomrun.now()
      local lk, _, code = atomrun.lock(arg[1], { timeout = 0.2 })
      local fh = io.open("/proc/self/status")
      local s = fh:read("a"); fh:close()
      print(code, s:match("SigIgn:%s*(%x+)"), s:match("SigCgt:%s*(%x+)"))
    ]]
    local st, out, err = H.sh("sh -c " .. H.q("trap '' 36 37 38 39 40; exec " .. H.q(H.atomrun)
      .. " -e " .. H.q(code) .. " " .. H.q(f)))
    assert.equal(0, st, err)
    local c, ign, cgt = out:match("^(%S+)\t(%x+)\t(%x+)")
    assert.equal("timeout", c)
    -- bit n-1 of the mask is signal n
    local function has(mask, sig) return (tonumber(mask, 16) >> (sig - 1)) & 1 == 1 end
    for sig = 36, 40 do
      assert.is_true(has(ign, sig), "signal " .. sig .. " no longer ignored")
      assert.is_false(has(cgt, sig), "atomrun took over ignored signal " .. sig)
    end
    local ours = {}
    for sig = 34, 64 do if has(cgt, sig) then ours[#ours + 1] = sig end end
    assert.equal(1, #ours, "real-time signals caught: " .. table.concat(ours, ","))
  end)

  local function interrupted(args)
    local f = dir .. "/held"
    pids[#pids + 1] = holder(dir, f)
    -- A non-interactive shell starts background jobs with SIGINT ignored;
    -- env --default-signal gives atomrun the default a terminal would.
    local sh = "env --default-signal=INT " .. H.q(H.atomrun) .. " " .. args:gsub("FILE", H.q(f))
      .. " & p=$!; i=0; "
      .. "while ! grep -q -- \"-> .* $p \" /proc/locks; do i=$((i+1)); "
      .. "[ $i -gt 400 ] && { echo never-waited; kill -9 $p; exit 3; }; sleep 0.05; done; "
      .. "kill -INT $p; wait $p; echo status=$?"
    local t0 = ar.now()
    local st, out, err = H.sh(sh)
    H.kill(pids[#pids], "KILL")    -- its lock goes with it (no need to wait for the reaper)
    return st, out, err, ar.now() - t0
  end

  it("Ctrl-C during `atomrun lock` waiting forever: exit status 130", function()
    local st, out, err = interrupted("lock FILE true")
    assert.equal(0, st, err)
    assert.equal("status=130\n", out)
  end)

  it("Ctrl-C during `atomrun lock -w 60` (a timed wait): exit status 130", function()
    local st, out, err = interrupted("lock -w 60 FILE true")
    assert.equal(0, st, err)
    assert.equal("status=130\n", out)
  end)

  it("Ctrl-C during atomrun.lock() in a script: exit status 130", function()
    local st, out, err = interrupted("-e 'atomrun.lock(arg[1])' FILE")
    assert.equal(0, st, err)
    assert.equal("status=130\n", out)
    st, out, err = interrupted("-e 'atomrun.lock(arg[1], {timeout = 60})' FILE")
    assert.equal(0, st, err)
    assert.equal("status=130\n", out)
  end)

  local function forwarded(cmd, sig)
    local ready, got = dir .. "/ready", dir .. "/got"
    local child = "trap 'echo " .. sig .. " > " .. got .. "; exit 7' " .. sig .. "; echo > " .. ready
      .. "; i=0; while [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done"
    local pid = H.spawn(H.q(H.atomrun) .. " " .. cmd .. " sh -c " .. H.q(child)
      .. "; echo $? > " .. H.q(dir .. "/status"))
    pids[#pids + 1] = pid
    assert.is_true(H.wait_file(ready, 20), "the command never started")
    -- pid is the shell that waits for atomrun; atomrun is its child
    local p = io.popen("pgrep -P " .. pid .. " -x atomrun")
    local apid = tonumber(p:read("l"))
    p:close()
    assert.is_not_nil(apid, "no atomrun process under " .. pid)
    H.kill(apid, sig)
    assert.is_true(H.wait_file(dir .. "/status", 20), "atomrun did not end after SIG" .. sig)
    assert.equal(sig .. "\n", H.slurp(got))
    assert.equal("7\n", H.slurp(dir .. "/status"))
  end

  it("SIGTERM to `atomrun lock` reaches the command; the lock is then free", function()
    local f = dir .. "/fwd.lock"
    forwarded("lock " .. H.q(f), "TERM")
    local lk = assert(ar.lock(f, { wait = false }))
    lk:unlock()
  end)

  it("SIGHUP to `atomrun lock` reaches the command", function()
    forwarded("lock " .. H.q(dir .. "/fwd.lock"), "HUP")
  end)

  it("SIGTERM to `atomrun once` reaches the command", function()
    forwarded("once --dir " .. H.q(dir) .. " fwd", "TERM")
  end)
end)
