-- spec/helper.lua -- what every spec needs: the binary under test, scratch
-- directories, and running real processes.
--
-- Specs run three times: in stock lua5.4 with build/lua/atomrun/core.so and
-- the Lua sources of lua/ (spec/run.sh sets LUA_CPATH and LUA_PATH;
-- children inherit them), inside the atomrun binary itself, and inside an
-- ASan+UBSan build of it (AR_BUILD names the build directory each time).
local H = {}

H.build = os.getenv("AR_BUILD") or "build"
H.atomrun = H.build .. "/atomrun"
H.python = "/usr/bin/python3"      -- Debian's, which has python3-filelock
H.root = os.getenv("PWD") or "."
H.asan = os.getenv("AR_ASAN") == "1"
-- Which of the three passes this is: "lua5.4", "atomrun" or "asan".
H.pass = os.getenv("AR_PASS") or "atomrun"
-- Slow tests (storms, fault-injection sweeps, many processes) carry the tag
-- #heavy in their names, which only the atomrun pass's run profile runs
-- (spec/.busted).  H.heavy is true in that pass, for the specs that size a
-- loop by it (more rounds where the #heavy tests run).
H.heavy = H.pass == "atomrun"

if not package.loaded.atomrun and not package.preload.atomrun then
  package.cpath = H.build .. "/lua/?.so;" .. package.cpath
  package.path = H.root .. "/lua/?.lua;" .. H.root .. "/lua/?/init.lua;" .. package.path
end
H.ar = require "atomrun"

--- Quote a string for /bin/sh.
function H.q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local seq = 0
--- A fresh empty directory, removed by H.cleanup().
function H.tmpdir()
  local p = io.popen("mktemp -d /tmp/atomrun-spec.XXXXXX")
  local d = p:read("l")
  p:close()
  H._dirs = H._dirs or {}
  table.insert(H._dirs, d)
  seq = seq + 1
  return d
end

function H.cleanup()
  for _, d in ipairs(H._dirs or {}) do os.execute("rm -rf " .. H.q(d)) end
  H._dirs = {}
end

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end
H.slurp = slurp

function H.write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

--- Run a shell command; returns exit status (128+N for a signal), stdout, stderr.
function H.sh(cmd, stdin)
  local d = os.tmpname()
  local inpart = ""
  if stdin then
    H.write(d .. ".in", stdin)
    inpart = " <" .. H.q(d .. ".in")
  end
  local full = "(" .. cmd .. ")" .. inpart .. " >" .. H.q(d .. ".out") .. " 2>" .. H.q(d .. ".err")
  local ok, how, code = os.execute(full)
  local out, err = slurp(d .. ".out"), slurp(d .. ".err")
  os.remove(d); os.remove(d .. ".out"); os.remove(d .. ".err"); os.remove(d .. ".in")
  local status = how == "exit" and code or 128 + code
  return status, out, err
end

--- A shell command whose output lists the descriptors of the shell that
--- runs it ("N -> target" lines; its own, not ls's).
H.FD_LIST = "sh -c 'ls -l /proc/$$/fd; true'"

--- H.FD_LIST's output as { [fd] = target }.
function H.parse_fds(out)
  local fds = {}
  for fd, target in out:gmatch("%s(%d+) %-> ([^\n]*)") do fds[tonumber(fd)] = target end
  return fds
end

--- { [fd] = target } as "0->/dev/null, 1->...", for messages.
function H.show_fds(fds)
  local n = {}
  for fd in pairs(fds) do n[#n + 1] = fd end
  table.sort(n)
  for i, fd in ipairs(n) do n[i] = fd .. "->" .. fds[fd] end
  return table.concat(n, ", ")
end

--- The descriptors >= 3 of { [fd] = target }, as a sorted list of targets.
function H.extra_fds(fds)
  local t = {}
  for fd, target in pairs(fds) do
    if fd > 2 then t[#t + 1] = target end
  end
  table.sort(t)
  return t
end

--- Run the atomrun binary with shell-quoted arguments.
function H.run(...)
  local parts = { H.q(H.atomrun) }
  for _, a in ipairs({ ... }) do parts[#parts + 1] = H.q(a) end
  return H.sh(table.concat(parts, " "))
end

--- Start a shell command in the background; returns its pid.
function H.spawn(cmd)
  local p = io.popen("(" .. cmd .. ") >/dev/null 2>&1 </dev/null & echo $!")
  local pid = tonumber(p:read("l"))
  p:close()
  return pid
end

-- A zombie counts as dead: where PID 1 does not reap orphans (containers,
-- CI sandboxes), `kill -0` would call a killed process alive forever.
function H.alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat", "r")
  if not f then return false end
  local stat = f:read("a") or ""
  f:close()
  local state = stat:match("^%d+ %b() (%a)")
  return state ~= nil and state ~= "Z" and state ~= "X"
end
H.gone = function(pid) return not H.alive(pid) end

function H.kill(pid, sig)
  os.execute("kill -" .. (sig or "TERM") .. " " .. pid .. " 2>/dev/null")
end

--- Wait (polling: this is a test) until pred() is true; false after timeout.
function H.wait_until(pred, timeout)
  local deadline = H.ar.now() + (timeout or 10)
  while H.ar.now() < deadline do
    if pred() then return true end
    H.ar.sleep(0.01)
  end
  return pred()
end

--- Is pid blocked waiting for a lock (a "->" line of /proc/locks)?
function H.waiting(pid)
  for line in slurp("/proc/locks"):gmatch("[^\n]+") do
    if line:find("->", 1, true) and line:find(" " .. pid .. " ", 1, true) then return true end
  end
  return false
end

--- Is somebody blocked waiting for a lock on path (a "->" line of
--- /proc/locks naming its device and inode)?  What a spec waits on before
--- it lets go, so that the waiter is seen to wait, not timed with a sleep.
--- (Waiters that poll, such as Python's filelock, never show here.)
local function lock_id(path)
  local st = H.ar.stat(path)
  if not st then return nil end
  -- " MAJ:MIN:INODE ": hex, hex and decimal, split as new_encode_dev() does
  local major = (st.dev >> 8) & 0xfff
  local minor = (st.dev & 0xff) | ((st.dev >> 12) & 0xfff00)
  return string.format(" %02x:%02x:%d ", major, minor, st.ino)
end

function H.lock_waited(path)
  local id = lock_id(path)
  if not id then return false end
  for line in slurp("/proc/locks"):gmatch("[^\n]+") do
    if line:find("->", 1, true) and (line .. " "):find(id, 1, true) then return true end
  end
  return false
end

--- Wait until somebody waits for a lock on path; false after timeout.
function H.wait_lock_waited(path, timeout)
  return H.wait_until(function() return H.lock_waited(path) end, timeout)
end

--- H.lock_waited from another process, for a spec that blocks in the wait
--- itself: a background shell creates file go once somebody waits for a
--- lock on path (path must exist).  Returns its pid, tracked for
--- H.cleanup_procs.
function H.touch_when_waited(path, go)
  local id = assert(lock_id(path), path)
  return H.track(H.spawn("until grep -e '->' /proc/locks | grep -qF -e " .. H.q(id)
    .. "; do sleep 0.01; done; : >" .. H.q(go)))
end

--- The pids of pid's children (of every thread of it).
function H.children(pid)
  local p = io.popen("cat /proc/" .. pid .. "/task/*/children 2>/dev/null")
  local kids = {}
  for k in p:read("a"):gmatch("%d+") do kids[#kids + 1] = math.tointeger(tonumber(k)) end
  p:close()
  return kids
end

--- Does pid ignore signal number sig (SigIgn in /proc/PID/status)?
function H.ignores(pid, sig)
  local mask = slurp("/proc/" .. pid .. "/status"):match("SigIgn:%s*(%x+)")
  return mask ~= nil and (tonumber(mask, 16) >> (sig - 1)) & 1 == 1
end

--- Every name in dir, hidden ones included, sorted.
function H.listdir(dir)
  local p = io.popen("ls -A1 " .. H.q(dir))
  local names = {}
  for l in p:lines() do names[#names + 1] = l end
  p:close()
  table.sort(names)
  return names
end

function H.exists(path)
  return H.ar.stat(path) ~= nil
end

--- Wait until a file exists (a child's "I hold it now" signal).
function H.wait_file(path, timeout)
  return H.wait_until(function() return H.exists(path) end, timeout)
end

--- Wait for a background pid to exit.
function H.wait_exit(pid, timeout)
  return H.wait_until(function() return not H.alive(pid) end, timeout)
end

-- Background Lua processes that specs start and must kill after each test.
local started = {}

--- Run a Lua snippet in the background in the atomrun binary; returns its pid.
function H.bg_lua(code, ...)
  local parts = { H.q(H.atomrun), "-e", H.q(code) }
  for _, a in ipairs({ ... }) do parts[#parts + 1] = H.q(tostring(a)) end
  local pid = H.spawn(table.concat(parts, " "))
  started[#started + 1] = pid
  return pid
end

--- Wait for a child's "ready" file, which holds its pid; returns the pid.
function H.ready_pid(path)
  assert(H.wait_file(path, 15), "child never got ready: " .. path)
  local pid
  H.wait_until(function()
    pid = math.tointeger(tonumber(H.slurp(path)))
    return pid ~= nil
  end, 5)
  started[#started + 1] = pid
  return pid
end

-- Hold a whole-file lock in another process until `stop` exists (or for
-- `stop` seconds when it is a number).
local HOLD = [[
  local path, ready, stop, mode = ...
  local lk = assert(atomrun.lock(path, { mode = mode }))
  assert(atomrun.replace(ready, tostring(atomrun.pid())))
  if tonumber(stop) then atomrun.sleep(tonumber(stop)) return end
  while not atomrun.stat(stop) do atomrun.sleep(0.01) end
]]

--- Hold path exclusively in another process; returns the holder's pid.
function H.hold(dir, path, stop, tag)
  local ready = dir .. "/ready." .. (tag or "h")
  H.bg_lua(HOLD, path, ready, stop or (dir .. "/stop"), "exclusive")
  return H.ready_pid(ready)
end

--- Can somebody lock path right now?
function H.free(path)
  local lk = H.ar.lock(path, { wait = false })
  if lk then lk:unlock() return true end
  return false
end

-- ------------------------------------------------------------ shared bits
-- What several spec files need alike; one copy here, not one per file.

--- A Lua pattern that matches s literally.
function H.pat(s)
  return (tostring(s):gsub("%p", "%%%0"))
end

--- Call fn and return the message of the error it raises (fails if none).
function H.err_of(fn)
  local ok, e = pcall(fn)
  assert(not ok, "expected an error")
  return tostring(e)
end

--- flock(1) -n from the outside: 0 when the lock could be taken at once
--- (mode "shared" asks for a shared one).
function H.flock_n(path, mode)
  return (H.sh("flock -n " .. (mode == "shared" and "-s " or "-x ") .. H.q(path) .. " true"))
end

--- The shell-quoted command line of the atomrun binary with these arguments.
function H.cmd(...)
  local parts = { H.q(H.atomrun) }
  for _, a in ipairs({ ... }) do parts[#parts + 1] = H.q(a) end
  return table.concat(parts, " ")
end

--- Write body to dir/name (a script for a child process); returns the path.
function H.script(dir, name, body)
  local p = dir .. "/" .. name
  H.write(p, body)
  return p
end

--- Remember a pid for H.cleanup_procs to kill after the test; returns it.
function H.track(pid)
  started[#started + 1] = pid
  return pid
end

--- Run a shell command in the background; its stdout, stderr and exit
--- status land in dir/name.out, .err and .st (H.result waits for them).
--- Returns the pid, tracked.
function H.bg(dir, name, cmd)
  local base = dir .. "/" .. name
  return H.track(H.spawn(cmd .. " >" .. H.q(base .. ".out") .. " 2>" .. H.q(base .. ".err") ..
    "; echo $? >" .. H.q(base .. ".st")))
end

--- Wait for an H.bg command to finish: exit status, stdout, stderr.
function H.result(dir, name, timeout)
  local base = dir .. "/" .. name
  local ok = H.wait_until(function() return H.slurp(base .. ".st"):match("\n") end, timeout or 20)
  assert(ok, name .. " did not finish")
  return tonumber(H.slurp(base .. ".st")), H.slurp(base .. ".out"), H.slurp(base .. ".err")
end

--- Kill every process H.bg_lua/H.ready_pid/H.track/H.bg started, then H.cleanup().
function H.cleanup_procs()
  for _, pid in ipairs(started) do
    if H.alive(pid) then H.kill(pid, "KILL") end
  end
  started = {}
  H.cleanup()
end

-- ------------------------------------------------------------ sessions
-- A process tree that must not outlive its test even when a parent in it
-- dies first: an orphan is reparented (so it is no longer anybody's child
-- we know), but it keeps its session.  H.bg_session starts a command as a
-- session leader; H.end_sessions ends every process still in those
-- sessions, by pid.

local sessions = {}

--- What /proc/PID/stat says of pid: {state = "R", ppid =, pgrp =, session =},
--- or nil when it is gone.  (The fields after the last ')': the command
--- name may hold one; a process that exits between open and read leaves
--- nil, not "".)
function H.proc_stat(pid)
  local rest = (slurp("/proc/" .. pid .. "/stat") or ""):match("^.*%) (.*)$")
  local state, ppid, pgrp, sid = (rest or ""):match("^(%a) (%-?%d+) (%-?%d+) (%-?%d+)")
  if not state then return nil end
  return { state = state, ppid = math.tointeger(tonumber(ppid)), pgrp = math.tointeger(tonumber(pgrp)),
           session = math.tointeger(tonumber(sid)) }
end

--- The pids of the live processes (zombies left out) of session sid.
function H.session_pids(sid)
  local pids = {}
  local p = io.popen("ls /proc")
  for name in p:lines() do
    if name:match("^%d+$") then
      local st = H.proc_stat(name)
      if st and st.session == sid and st.state ~= "Z" and st.state ~= "X" then
        pids[#pids + 1] = tonumber(name)
      end
    end
  end
  p:close()
  return pids
end

--- H.bg's twin in a session of its own (setsid): cmd's stdout, stderr and
--- exit status land in dir/name.out, .err and .st (H.result waits for
--- them).  Returns the session id (the pid of the shell that runs cmd),
--- which H.end_sessions ends with everything in it.
function H.bg_session(dir, name, cmd)
  local base = dir .. "/" .. name
  local sidfile = base .. ".sid"
  local body = cmd .. " >" .. H.q(base .. ".out") .. " 2>" .. H.q(base .. ".err") ..
    "; echo $? >" .. H.q(base .. ".st")
  -- the shell that setsid starts is the session leader: its $$ is the id
  H.spawn("setsid sh -c " .. H.q('echo $$ >"$0"; exec sh -c "$1"') .. " " .. H.q(sidfile) ..
    " " .. H.q(body))
  local sid = H.ready_pid(sidfile)
  sessions[#sessions + 1] = sid
  return sid
end

--- SIGCONT and SIGKILL every process left in the sessions H.bg_session
--- started (a stopped one too), until none is left; true when none is.
function H.end_sessions()
  local ok = H.wait_until(function()
    local left = {}
    for _, sid in ipairs(sessions) do
      for _, pid in ipairs(H.session_pids(sid)) do left[#left + 1] = pid end
    end
    if #left == 0 then return true end
    local list = table.concat(left, " ")
    os.execute("kill -CONT " .. list .. " 2>/dev/null; kill -KILL " .. list .. " 2>/dev/null")
    return false
  end, 10)
  sessions = {}
  return ok
end

-- The files that are not regular files, made in dir: a FIFO, a directory,
-- as root a character device node of our own (never the system's
-- /dev/null), and tofifo, a symlink to the FIFO.  Returns name -> the
-- type stat reports, tofifo left out (callers treat the link apart).
function H.special_nodes(dir)
  assert(H.sh("mkfifo " .. H.q(dir .. "/fifo")) == 0, "mkfifo")
  local nodes = { fifo = "fifo" }
  if H.ar.uid() == 0 then
    assert(H.sh("mknod " .. H.q(dir .. "/null") .. " c 1 3") == 0, "mknod")
    nodes.null = "char"
  end
  assert(H.ar.mkdir(dir .. "/sub"))
  nodes.sub = "directory"
  assert(H.sh("ln -s fifo " .. H.q(dir .. "/tofifo")) == 0, "ln -s")
  return nodes
end

-- One `it` per case { name, fn, pattern }: fn raises a "bad argument"
-- error whose message matches pattern.  `it` is the caller's (busted
-- gives each spec file its own).
function H.bad_arg_cases(it, cases)
  local la = require "luassert"
  for _, c in ipairs(cases) do
    it(c[1], function()
      local e = H.err_of(c[2])
      la.matches("bad argument", e)
      la.matches(c[3], e)
    end)
  end
end

return H
