-- Every ready job script in scripts/ runs here, pointed at a scratch dir.
local H = require "spec.helper"
local ar = H.ar
local gone = H.gone

-- "atomrun /repo/scripts/NAME" for a shell command line.  In the lua5.4
-- pass the scripts run in stock lua5.4 with atomrun/core.so instead: users may
-- run them either way.
local RUNNER = H.q(H.atomrun)
if H.pass == "lua5.4" then
  local build = H.build:sub(1, 1) == "/" and H.build or H.root .. "/" .. H.build
  RUNNER = "env LUA_CPATH=" .. H.q(build .. "/lua/?.so;;") .. " lua5.4"
end
local function S(name)
  return RUNNER .. " " .. H.q(H.root .. "/scripts/" .. name)
end

local function lines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

-- The scripts a case below runs; a new script must get a case here.
local covered = {
  ["demo.lua"] = true, ["cron-job.lua"] = true, ["worker-pool.lua"] = true,
  ["status-producer.lua"] = true, ["status-watch.lua"] = true,
  ["retry-command.lua"] = true, ["json-counter.lua"] = true,
  ["fleet-status.lua"] = true,
  ["bundle.lua"] = true,   -- the build's bundler: spec/core_spec.lua
}

describe("scripts/", function()
  local dir
  local pids = {}
  before_each(function() dir = H.tmpdir() end)
  after_each(function()
    for _, pid in ipairs(pids) do H.kill(pid, "KILL") end
    pids = {}
    H.cleanup()
  end)

  it("every script compiles and has a case in this spec", function()
    local p = io.popen("cd " .. H.q(H.root) .. " && ls scripts/*.lua")
    local found = 0
    for path in p:lines() do
      found = found + 1
      assert(loadfile(H.root .. "/" .. path))
      assert.is_true(covered[path:match("[^/]+$")] == true, path .. " is not run by any spec")
    end
    p:close()
    assert.is_true(found >= 7)
  end)

  it("the job scripts run as executables through #!/usr/bin/env atomrun", function()
    if H.pass == "lua5.4" then pending("needs the atomrun binary on PATH") end
    local bin = H.atomrun:match("^(.*)/[^/]+$") or "."
    local st, out, err = H.sh("PATH=" .. H.q(bin) .. ":$PATH " .. H.q(H.root .. "/scripts/json-counter.lua")
      .. " " .. H.q(dir .. "/c.json"))
    assert.equal(0, st, err)
    assert.equal("1\n", out)
  end)

  describe("demo.lua", function()
    it("runs to the end in TMPDIR", function()
      -- it runs `arg[-1] lock ...`: the atomrun binary only
      if H.pass == "lua5.4" then pending("demo.lua runs arg[-1] lock: the atomrun binary only") end
      local st, out, err = H.sh("TMPDIR=" .. H.q(dir) .. " " .. S("demo.lua"))
      assert.equal(0, st, err)
      assert.matches("locked " .. dir:gsub("%p", "%%%0") .. "/atomrun%-demo%.lock\n", out)
      assert.matches("exited exit 1", out)
      assert.matches("create again:\tnil\tcannot create .* it already exists\texists", out)
      assert.matches("demo done\n$", out)
    end)
  end)

  describe("cron-job.lua", function()
    local function env() return "JOB_DIR=" .. H.q(dir .. "/jobs") .. " " end

    -- start one instance whose command says it runs, then sleeps
    local function first(name, secs)
      local ready = dir .. "/ready." .. name
      H.spawn(env() .. S("cron-job.lua") .. " " .. name .. " sh -c "
        .. H.q("echo $$ > " .. H.q(ready .. ".t") .. " && mv " .. H.q(ready .. ".t") .. " "
        .. H.q(ready) .. " && exec sleep " .. secs))
      assert.is_true(H.wait_file(ready, 15))
      local cmd_pid = math.tointeger(tonumber(H.slurp(ready)))
      local rec = ar.json.decode(H.slurp(dir .. "/jobs/" .. name .. ".json"))
      local pid = math.tointeger(rec.pid)
      pids[#pids + 1], pids[#pids + 2] = cmd_pid, pid
      return pid, cmd_pid
    end

    it("runs the command quietly and exits with its status", function()
      local st, out, err = H.sh(env() .. S("cron-job.lua") .. " sync echo hello")
      assert.equal(0, st)
      assert.equal("hello\n", out)
      assert.equal("", err)
      st, _, err = H.sh(env() .. S("cron-job.lua") .. " sync sh -c 'exit 3'")
      assert.equal(3, st)
      assert.matches("sync: exit 3 after", err)
    end)

    it("does not start a second copy: exit 75, naming pid, start and command", function()
      local pid = first("sync", 30)
      local st, out, err = H.sh(env() .. S("cron-job.lua") .. " sync echo never")
      assert.equal(75, st)
      assert.equal("", out)
      assert.matches("^sync is already running: pid " .. pid
        .. " since %d+%-%d+%-%d+T%d+:%d+:%d+Z %(sh %-c .*sleep 30%) on %S+\n$", err)
    end)

    it("queues for JOB_WAIT seconds", function()
      first("sync", 0.3)
      local st, out = H.sh("JOB_WAIT=20 " .. env() .. S("cron-job.lua") .. " sync echo next")
      assert.equal(0, st)
      assert.equal("next\n", out)
    end)

    it("kills a command that runs past JOB_TIMEOUT: exit 124", function()
      local t0 = ar.now()
      local st, _, err = H.sh("JOB_TIMEOUT=0.3 " .. env() .. S("cron-job.lua") .. " sync sleep 30")
      assert.equal(124, st)
      assert.is_true(ar.now() - t0 < 20)
      assert.matches("killed after", err)
    end)

    it("starts at once when the previous run was killed with -9", function()
      local pid, cmd_pid = first("sync", 30)
      H.kill(pid, "KILL")
      H.kill(cmd_pid, "KILL")
      assert.is_true(H.wait_until(function() return gone(pid) and gone(cmd_pid) end, 10))
      assert.equal(0, (H.sh(env() .. S("cron-job.lua") .. " sync true")))
    end)

    it("exits 64 without a command and 127 when the command is missing", function()
      assert.equal(64, (H.sh(env() .. S("cron-job.lua") .. " sync")))
      assert.equal(127, (H.sh(env() .. S("cron-job.lua") .. " sync " .. H.q(dir .. "/nope"))))
    end)
  end)

  describe("worker-pool.lua", function()
    it("runs at most N commands at once, each in a slot 1..N", function()
      local work = H.q("touch run.$$; ls | grep -c '^run\\.' >> counts; "
        .. "echo $POOL_SLOT >> slots; sleep 0.1; rm run.$$")
      local one = S("worker-pool.lua") .. " " .. H.q(dir .. "/pool.slots") .. " 2 sh -c " .. work
      local n = H.heavy and 8 or 6
      local st, _, err = H.sh("cd " .. H.q(dir) .. " && for i in $(seq " .. n .. "); do "
        .. one .. " & done; wait")
      assert.equal(0, st, err)
      local counts, slots = lines(H.slurp(dir .. "/counts")), lines(H.slurp(dir .. "/slots"))
      assert.equal(n, #counts)
      for _, c in ipairs(counts) do assert.is_true(tonumber(c) <= 2, "more than 2 at once") end
      for _, s in ipairs(slots) do assert.is_true(s == "1" or s == "2", s) end
    end)

    it("passes the command's status through", function()
      assert.equal(5, (H.sh(S("worker-pool.lua") .. " " .. H.q(dir .. "/s") .. " 3 sh -c 'exit 5'")))
    end)

    it("gives up after POOL_WAIT with exit 75, naming the holders", function()
      local ready = dir .. "/ready"
      H.spawn(S("worker-pool.lua") .. " " .. H.q(dir .. "/s") .. " 1 sh -c "
        .. H.q("echo $$ > " .. H.q(ready .. ".t") .. " && mv " .. H.q(ready .. ".t") .. " "
        .. H.q(ready) .. " && exec sleep 30"))
      assert.is_true(H.wait_file(ready, 15))
      pids[#pids + 1] = math.tointeger(tonumber(H.slurp(ready)))
      local st, _, err = H.sh("POOL_WAIT=0.2 " .. S("worker-pool.lua") .. " " .. H.q(dir .. "/s")
        .. " 1 true")
      assert.equal(75, st)
      assert.matches("all 1 slots of .* are taken %(held by pids? %d+", err)
      -- the holders outlive this test unless killed: the script's own pid
      local _, ps = H.sh("pgrep -f " .. H.q("worker-pool.lua " .. dir))
      for p in ps:gmatch("%d+") do pids[#pids + 1] = p end
    end)

    it("exits 64 on bad arguments", function()
      for _, a in ipairs({ "", H.q(dir .. "/s"), H.q(dir .. "/s") .. " 0 true",
          H.q(dir .. "/s") .. " two true", H.q(dir .. "/s") .. " 2" }) do
        assert.equal(64, (H.sh(S("worker-pool.lua") .. " " .. a)), a)
      end
    end)
  end)

  describe("status-producer.lua and status-watch.lua", function()
    it("the watcher follows the producer to 'done', never seeing a torn file", function()
      local f = H.q(dir .. "/job.status")
      local st, out, err = H.sh(S("status-producer.lua") .. " " .. f .. " 5 0.05 & "
        .. S("status-watch.lua") .. " " .. f .. " --timeout 30; w=$?; wait $!; exit $w")
      assert.equal(0, st, err)
      local ls = lines(out)
      assert.is_true(#ls >= 1)
      local last = -1
      for _, l in ipairs(ls) do
        local step = assert(l:match("^(%d+)/5 %a+ pid %d+$"), l)
        assert.is_true(tonumber(step) >= last)
        last = tonumber(step)
      end
      assert.matches("^5/5 done pid %d+$", ls[#ls])
      local rec = ar.json.decode(H.slurp(dir .. "/job.status"))
      assert.equal("done", rec.state)
    end)

    it("readers never see a partial file, even with writes back to back", function()
      local f = H.q(dir .. "/fast.status")
      local n = H.heavy and 1000 or 300
      local st, _, err = H.sh(S("status-producer.lua") .. " " .. f .. " " .. n .. " 0 & "
        .. S("status-watch.lua") .. " " .. f .. " --timeout 60 >/dev/null; w=$?; wait $!; exit $w")
      assert.equal(0, st, err)
    end)

    it("--once prints the current status; exit 2 for a missing or broken file", function()
      local f = dir .. "/s"
      assert.equal(0, (H.sh(S("status-producer.lua") .. " " .. H.q(f) .. " 1 0")))
      local st, out = H.sh(S("status-watch.lua") .. " --once " .. H.q(f))
      assert.equal(0, st)
      assert.matches("^1/1 done pid %d+\n$", out)
      local err
      st, _, err = H.sh(S("status-watch.lua") .. " --once " .. H.q(dir .. "/none"))
      assert.equal(2, st)
      assert.matches("No such file", err)
      H.write(dir .. "/bad", "{\"state\": \"runn")
      st, _, err = H.sh(S("status-watch.lua") .. " " .. H.q(dir .. "/bad"))
      assert.equal(2, st)
      assert.matches("not a JSON status file", err)
    end)

    it("the watcher times out with exit 1; usage errors exit 64", function()
      local st, _, err = H.sh(S("status-watch.lua") .. " " .. H.q(dir .. "/never") .. " --timeout 0.2")
      assert.equal(1, st)
      assert.matches("no 'done'", err)
      assert.equal(64, (H.sh(S("status-watch.lua"))))
      assert.equal(64, (H.sh(S("status-watch.lua") .. " x --timeout soon")))
      assert.equal(64, (H.sh(S("status-producer.lua"))))
    end)
  end)

  describe("retry-command.lua", function()
    local flaky = "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ $n -ge 3 ]"

    it("retries a flaky command until it succeeds", function()
      local st, _, err = H.sh("cd " .. H.q(dir) .. " && " .. S("retry-command.lua")
        .. " -b 0.01 -- sh -c " .. H.q(flaky))
      assert.equal(0, st, err)
      assert.equal("3\n", H.slurp(dir .. "/count"))
      assert.matches("attempt 1: exit 1\n.*attempt 2: exit 1\n$", err)
    end)

    it("gives up at the deadline with the command's last status", function()
      local t0 = ar.now()
      local st, _, err = H.sh(S("retry-command.lua") .. " -t 0.5 -b 0.01 -m 0.05 sh -c 'exit 3'")
      local dt = ar.now() - t0
      -- the last attempt may start just before the deadline and be killed there
      assert.is_true(st == 3 or st == 124, st)
      assert.matches("gave up after %d+ attempts: ", err)
      assert.matches("attempt 1: exit 3\n", err)
      assert.is_true(dt >= 0.5, dt)
      assert.is_true(dt < 10, dt)
    end)

    it("kills an attempt that hangs past the deadline: exit 124", function()
      local st, _, err = H.sh(S("retry-command.lua") .. " -t 0.3 sleep 30")
      assert.equal(124, st)
      assert.matches("killed at the deadline", err)
    end)

    it("stops after -n attempts", function()
      local st, _, err = H.sh("cd " .. H.q(dir) .. " && " .. S("retry-command.lua")
        .. " -n 2 -b 0 sh -c " .. H.q(flaky))
      assert.equal(1, st)
      assert.equal("2\n", H.slurp(dir .. "/count"))
      assert.matches("gave up after 2 attempts", err)
    end)

    it("does not retry a command that cannot start (127); usage errors exit 64", function()
      local st, _, err = H.sh(S("retry-command.lua") .. " -b 0 " .. H.q(dir .. "/nope"))
      assert.equal(127, st)
      assert.matches("^retry%-command: cannot run .*/nope: No such file or directory\n$", err)
      assert.equal(64, (H.sh(S("retry-command.lua"))))
      assert.equal(64, (H.sh(S("retry-command.lua") .. " -n 0 true")))
      assert.equal(64, (H.sh(S("retry-command.lua") .. " -t soon true")))
    end)
  end)

  describe("fleet-status.lua", function()
    local E = require "spec.etcd"
    local C = E.cluster()
    if not C then return end
    it("publish, show (live hosts only: an ended publisher's record goes, a killed one's expires), follow in order", function()
      local prefix = C:url("scripts/fleet/")
      local fol = H.bg(dir, "follow", S("fleet-status.lua") .. " " .. H.q(prefix) .. " follow --timeout 20")
      pids[#pids + 1] = fol
      ar.sleep(1)
      local st, _, err = H.sh(S("fleet-status.lua") .. " " .. H.q(prefix) .. " publish --name web-1 --count 3 --every 0.1")
      assert.equal(0, st, err)
      local dead = H.bg(dir, "dead", S("fleet-status.lua") .. " " .. H.q(prefix) .. " publish --name web-2 --ttl 2 --every 30 --count 2")
      pids[#pids + 1] = dead
      assert.is_true(H.wait_until(function()
        local _, o = H.sh(S("fleet-status.lua") .. " " .. H.q(prefix) .. " show")
        return o:find("web%-2")
      end, 10))
      local out
      st, out = H.sh(S("fleet-status.lua") .. " " .. H.q(prefix) .. " show")
      assert.equal(0, st)
      -- web-1 ended: its lease was revoked at exit, its record went with it
      assert.matches("^web%-2 [^\n]* seq 1\n$", out)
      -- the publisher itself (its record names its pid), not the shell around it
      local ppid = assert(math.tointeger(tonumber(out:match("pid (%d+)"))))
      pids[#pids + 1] = ppid
      H.kill(ppid, "KILL")
      assert.is_true(H.wait_until(function()
        local _, o = H.sh(S("fleet-status.lua") .. " " .. H.q(prefix) .. " show")
        return not o:find("web%-2")
      end, 2 + 8))
      local fst, fout = H.result(dir, "follow", 40)
      assert.equal(0, fst)
      local l = lines(fout)
      assert.matches("^web%-1 .* seq 1$", l[1])
      assert.matches("^web%-1 .* seq 2$", l[2])
      assert.matches("^web%-1 .* seq 3$", l[3])
      assert.equal("web-1 gone", l[4])
      assert.matches("^web%-2 .* seq 1$", l[5])
      assert.equal("web-2 gone", l[6])
      assert.equal(64, (H.sh(S("fleet-status.lua"))))
      assert.equal(64, (H.sh(S("fleet-status.lua") .. " etcd:///x/ dance")))
      assert.equal(64, (H.sh(S("fleet-status.lua") .. " /tmp/x/ show")))
    end)
  end)

  describe("json-counter.lua", function()
    it("loses no update when many processes count at once", function()
      local f = H.q(dir .. "/stats.json")
      local per, procs = H.heavy and 12 or 6, 4
      local loop = "for i in $(seq " .. per .. "); do " .. S("json-counter.lua") .. " " .. f
        .. " hits || exit 1; done"
      local cmd = {}
      for p = 1, procs do cmd[#cmd + 1] = "(" .. loop .. ") > " .. H.q(dir .. "/out" .. p) .. " &" end
      local st, _, err = H.sh(table.concat(cmd, " ") .. " wait")
      assert.equal(0, st, err)
      local total = per * procs
      assert.same({ hits = total }, ar.json.decode(H.slurp(dir .. "/stats.json")))
      -- every process saw a different value: 1..total, each once
      local seen = {}
      for p = 1, procs do
        for _, v in ipairs(lines(H.slurp(dir .. "/out" .. p))) do
          local n = assert(math.tointeger(tonumber(v)), v)
          assert.is_nil(seen[n], "two updaters both wrote " .. n)
          seen[n] = true
        end
      end
      for n = 1, total do assert.is_true(seen[n], n) end
    end)

    it("takes KEY and DELTA, keeps other keys, prints integers as integers", function()
      local f = H.q(dir .. "/c.json")
      local _, out = H.sh(S("json-counter.lua") .. " " .. f)
      assert.equal("1\n", out)
      _, out = H.sh(S("json-counter.lua") .. " " .. f .. " bytes 1024")
      assert.equal("1024\n", out)
      _, out = H.sh(S("json-counter.lua") .. " " .. f .. " bytes 0.5")
      assert.equal("1024.5\n", out)
      local t = ar.json.decode(H.slurp(dir .. "/c.json"))
      assert.equal(1, t.count)
      assert.equal(1024.5, t.bytes)
    end)

    it("fails on a corrupt file and leaves it untouched; usage errors exit 64", function()
      H.write(dir .. "/bad.json", "{not json")
      local st = H.sh(S("json-counter.lua") .. " " .. H.q(dir .. "/bad.json"))
      assert.equal(1, st)
      assert.equal("{not json", H.slurp(dir .. "/bad.json"))
      assert.is_true(H.exists(dir .. "/bad.json.lock"))
      assert.equal(64, (H.sh(S("json-counter.lua"))))
      assert.equal(64, (H.sh(S("json-counter.lua") .. " " .. H.q(dir .. "/c") .. " k many")))
    end)
  end)
end)

-- Issue 22: every job script answers --help and -h, and refuses an option it
-- does not know, before it does anything at all (`status-producer.lua
-- --help` used to run a 5 s job writing ./--help).
describe("scripts/: --help, -h and unknown options", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function() H.cleanup() end)

  -- Every job script, found afresh so that a new one is checked too: all of
  -- scripts/ and its folders but the build's bundler and the bench's tools.
  local scripts = {}
  local p = io.popen("cd " .. H.q(H.root .. "/scripts") .. " && find . -name '*.lua'"
    .. " ! -path './bench/*' ! -name bundle.lua | sed 's|^\\./||' | sort")
  for name in p:lines() do scripts[#scripts + 1] = name end
  p:close()

  -- S(name) ARGS run in the empty dir; its status, stdout, stderr
  local function run(name, args)
    return H.sh("cd " .. H.q(dir) .. " && " .. S(name) .. " " .. args)
  end

  it("finds the job scripts", function()
    assert.is_true(#scripts >= 8, table.concat(scripts, " "))
  end)

  for _, name in ipairs(scripts) do
    local base = name:match("[^/]+$")
    it(name .. " --help and -h: its usage on stdout, exit 0, no file made", function()
      local help
      for _, flag in ipairs({ "--help", "-h" }) do
        local st, out, err = run(name, flag)
        assert.equal(0, st, err)
        assert.equal("", err)
        assert.matches("^usage: atomrun " .. H.pat(base) .. ".-\n\n%u", out)  -- what it does
        assert.matches("\n  %-h, %-%-help ", out)                                -- its options
        assert.matches("\nExample[^\n]*:\n  [^\n]*" .. H.pat(base) .. "[^\n]*\n", out)
        assert.same({}, H.listdir(dir))
        help = help or out
        assert.equal(help, out)
      end
    end)

    it(name .. " --bogus: exit 64, the option named on stderr, no file made", function()
      local st, out, err = run(name, "--bogus")
      assert.equal(64, st, err)
      assert.equal("", out)
      assert.matches("^" .. H.pat(base:gsub("%.lua$", "")) .. ": unknown option '%-%-bogus'\n"
        .. "usage: atomrun " .. H.pat(base), err)
      assert.same({}, H.listdir(dir))
    end)
  end

  it("every script takes its command line from atomrun.args (bundled: a copied script runs alone)", function()
    for _, name in ipairs(scripts) do
      local src = H.slurp(H.root .. "/scripts/" .. name)
      assert.matches('require%("atomrun.args"%)%.new%(NAME, SYNOPSIS, USAGE%)', src, name)
      assert.is_nil(src:find("local function parse_args", 1, true), name .. " has its own parser")
    end
  end)

  it("a script copied alone to another directory still answers --help and refuses --bogus", function()
    local copy = dir .. "/elsewhere"
    assert(H.sh("mkdir -p " .. H.q(copy) .. " && cp " .. H.q(H.root .. "/scripts/json-counter.lua")
      .. " " .. H.q(copy .. "/jc.lua")) == 0)
    local st, out = H.sh("cd " .. H.q(copy) .. " && " .. H.q(H.atomrun) .. " jc.lua --help")
    assert.equal(0, st)
    assert.matches("^usage: atomrun json%-counter%.lua", out)
    st = H.sh("cd " .. H.q(copy) .. " && " .. H.q(H.atomrun) .. " jc.lua --bogus")
    assert.equal(64, st)
    assert(H.sh("rm -rf " .. H.q(copy)) == 0)
  end)

  it("an option after the operands is still one, where operands are files and numbers", function()
    for _, args in ipairs({ "out --help", "out 3 0 -h", "out --bogus" }) do
      local st = run("status-producer.lua", args)
      assert.equal(args:find("bogus") and 64 or 0, st, args)
      assert.same({}, H.listdir(dir), args)
    end
    assert.equal(64, (run("json-counter.lua", "c.json hits --bogus")))
    assert.equal(0, (run("json-counter.lua", "c.json hits --help")))
    assert.same({}, H.listdir(dir))
    local st, _, err = run("status-watch.lua", "s --once --bogus")
    assert.equal(64, st)
    assert.matches("unknown option '%-%-bogus'", err)
    st, _, err = run("status-watch.lua", "s --timeout")
    assert.equal(64, st)
    assert.matches("%-%-timeout needs a value", err)
    -- no etcd is asked: the arguments are wrong before any
    st, _, err = run("fleet-status.lua", "etcd:///x/ show --ttl 5")
    assert.equal(64, st)
    assert.matches("show has no option %-%-ttl", err)
    assert.equal(64, (run("fleet-status.lua", "etcd:///x/ follow --bogus 1")))
    assert.equal(0, (run("fleet-status.lua", "etcd:///x/ publish --help")))
  end)

  it("what follows the command's name is the command's, its options too", function()
    local st, out, err = H.sh("JOB_DIR=" .. H.q(dir .. "/jobs") .. " " .. S("cron-job.lua")
      .. " job echo -h --bogus")
    assert.equal(0, st, err)
    assert.equal("-h --bogus\n", out)
    st, out, err = run("worker-pool.lua", H.q(dir .. "/s") .. " 1 echo --help -x")
    assert.equal(0, st, err)
    assert.equal("--help -x\n", out)
    st, out, err = run("retry-command.lua", "-n 1 echo -h")
    assert.equal(0, st, err)
    assert.equal("-h\n", out)
    st, _, err = run("retry-command.lua", "-n 1 --bogus echo")
    assert.equal(64, st)
    assert.matches("unknown option '%-%-bogus'", err)
  end)

  it("-- ends the options; a negative number is an operand; a lone - is refused", function()
    local _, out = run("json-counter.lua", "c.json k -2")
    assert.equal("-2\n", out)
    _, out = run("json-counter.lua", "-- c.json -k")
    assert.equal("1\n", out)
    assert.same({ k = -2, ["-k"] = 1 }, ar.json.decode(H.slurp(dir .. "/c.json")))
    local st, _, err = run("status-watch.lua", "--once -- -s")     -- the file ./-s
    assert.equal(2, st)
    assert.matches("No such file", err)
    st, _, err = run("json-counter.lua", "-")
    assert.equal(64, st)
    assert.matches("unknown option '%-'", err)
    assert.is_false(H.exists(dir .. "/-"))
  end)

  -- the bench's one tool run by hand with arguments (it starts 50 processes)
  it("bench/holders.lua answers --help and refuses --bogus before starting anything", function()
    local st, out, err = run("bench/holders.lua", "--help")
    assert.equal(0, st, err)
    assert.matches("^usage: atomrun scripts/bench/holders%.lua %[PROCS %[FDS_EACH%]%]\n", out)
    st, out, err = run("bench/holders.lua", "--bogus")
    assert.equal(64, st)
    assert.equal("", out)
    assert.matches("^holders%.lua: unknown option '%-%-bogus'\nusage: ", err)
    assert.equal(64, (run("bench/holders.lua", "many")))
    assert.same({}, H.listdir(dir))
  end)
end)
