-- spec/hygiene_spec.lua -- what a child process inherits, and signals.
--
-- Descriptors: every descriptor atomrun opens is close-on-exec, except the
-- locks a command is meant to inherit (flock(1) semantics).  A child started
-- by atomrun.run, `atomrun lock`, `atomrun lock -o`, `atomrun lock -F`,
-- `atomrun once` and os.execute is asked for its own /proc/self/fd.
--
-- Signals: the deadline signal is sent to the waiting thread only, and a
-- signal the host already handles or ignores is never taken over; Ctrl-C
-- during a blocking wait in the CLI ends it at once with the shell's 130;
-- SIGTERM and SIGHUP to `atomrun lock` / `atomrun once` reach the command.
local H = require "spec.helper"
local ar = H.ar

-- "fd target" lines of the shell that runs this (its own fds, not ls's).
local LIST = "sh -c 'ls -l /proc/$$/fd; true'"

local function parse_fds(out)
  local fds = {}
  for fd, target in out:gmatch("%s(%d+) %-> ([^\n]*)") do fds[tonumber(fd)] = target end
  return fds
end

local function keys(t)
  local k = {}
  for n in pairs(t) do k[#k + 1] = n end
  table.sort(k)
  return k
end

local function show(fds)
  local parts = {}
  for _, n in ipairs(keys(fds)) do parts[#parts + 1] = n .. "->" .. fds[n] end
  return table.concat(parts, ", ")
end

-- The descriptors >= 3 in fds, as a sorted list of targets.
local function extra(fds)
  local t = {}
  for _, n in ipairs(keys(fds)) do
    if n > 2 then t[#t + 1] = fds[n] end
  end
  table.sort(t)
  return t
end

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

-- Is pid waiting for a lock in the kernel (a "->" line in /proc/locks)?
local function waiting(pid)
  for line in H.slurp("/proc/locks"):gmatch("[^\n]+") do
    if line:find("->", 1, true) and line:find(" " .. pid .. " ", 1, true) then return true end
  end
  return false
end

describe("descriptor hygiene", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  it("atomrun.run: the child sees 0, 1, 2 and exactly the locks the script holds", function()
    local out = script(dir, [[
      local dir, list = ...
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
      -- the child writes straight to our stdout: a redirection would make
      -- the shell keep a saved copy of its stdout (dash: fd 10)
      local function listing(tag, opts)
        io.write(tag, "\n"); io.stdout:flush()
        assert(atomrun.run({ "sh", "-c", "ls -l /proc/$$/fd; true" }, opts))
      end
      listing("KEPT"); listing("CLOSED", { close_locks = true })
      lk:unlock(); r:unlock(); slot:release(); guard:release(); plain:close(); f:close()
      listing("AFTER")
    ]], dir, LIST)
    local kept = parse_fds(out:match("KEPT\n(.-)CLOSED\n"))
    local closed = parse_fds(out:match("CLOSED\n(.-)AFTER\n"))
    local after = parse_fds(out:match("AFTER\n(.*)$"))
    assert.same({ dir .. "/once/hyg.lock", dir .. "/ranges", dir .. "/sem", dir .. "/whole.lock" },
      extra(kept), show(kept))
    for n = 0, 2 do assert.is_not_nil(kept[n], "fd " .. n .. " missing: " .. show(kept)) end
    assert.same({}, extra(closed), show(closed))
    assert.same({}, extra(after), show(after))
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

  it("atomrun lock: the command inherits exactly the lock; -o: nothing; -F: the lock", function()
    local f = dir .. "/cli.lock"
    -- extra descriptors on atomrun itself (5, 7) must not reach the command
    local redirs = " 5</dev/null 7>" .. H.q(dir .. "/seven")
    local st, out = H.sh(H.q(H.atomrun) .. " lock " .. H.q(f) .. " " .. LIST .. redirs)
    assert.equal(0, st)
    local fds = parse_fds(out)
    assert.same({ f }, extra(fds), show(fds))
    st, out = H.sh(H.q(H.atomrun) .. " lock -o " .. H.q(f) .. " " .. LIST .. redirs)
    assert.equal(0, st)
    fds = parse_fds(out)
    assert.same({}, extra(fds), show(fds))
    st, out = H.sh(H.q(H.atomrun) .. " lock -F " .. H.q(f) .. " " .. LIST .. redirs)
    assert.equal(0, st)
    fds = parse_fds(out)
    assert.same({ f }, extra(fds), show(fds))
    st, out = H.sh(H.q(H.atomrun) .. " lock -c " .. H.q("ls -l /proc/$$/fd; true") .. " " .. H.q(f)
      .. redirs)
    assert.equal(0, st)
    fds = parse_fds(out)
    assert.same({ f }, extra(fds), show(fds))
  end)

  it("atomrun once: the command inherits exactly the instance lock", function()
    local st, out, err = H.sh(H.q(H.atomrun) .. " once --dir " .. H.q(dir) .. " hyg3 " .. LIST
      .. " 5</dev/null")
    assert.equal(0, st, err)
    local fds = parse_fds(out)
    assert.same({ dir .. "/hyg3.lock" }, extra(fds), show(fds))
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
