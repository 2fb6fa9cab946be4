-- `atomrun once NAME [-w S] [-E CODE] [--dir DIR] [--] CMD [ARGS...]`
local H = require "spec.helper"
local ar = H.ar
local gone = H.gone

-- Only the binary is under test here, and the lua5.4 pass would run the
-- same binary again: these run in the atomrun and asan passes (shown as
-- skipped in the lua5.4 pass).
local describe = H.pass == "lua5.4" and pending or describe

describe("atomrun once #child", function()
  local dir, odir
  local pids = {}
  before_each(function()
    dir = H.tmpdir()
    odir = dir .. "/once"
  end)
  after_each(function()
    for _, pid in ipairs(pids) do H.kill(pid, "KILL") end
    pids = {}
    H.cleanup()
  end)

  -- Start `atomrun once --dir ODIR NAME sh -c '...; sleep SECS'` in the
  -- background; returns the pid of the atomrun process and of the command.
  local function running(name, secs)
    local ready = dir .. "/ready." .. name
    H.spawn(table.concat({ H.q(H.atomrun), "once", "--dir", H.q(odir), name, "--",
      "sh", "-c", H.q("echo $$ > " .. H.q(ready) .. ".tmp && mv " .. H.q(ready) .. ".tmp "
        .. H.q(ready) .. " && exec sleep " .. secs) }, " "))
    assert.is_true(H.wait_file(ready, 15), "the first instance never started")
    local cmd_pid = math.tointeger(tonumber(H.slurp(ready)))
    local rec = ar.json.decode(H.slurp(odir .. "/" .. name .. ".json"))
    local pid = math.tointeger(rec.pid)
    pids[#pids + 1] = cmd_pid
    pids[#pids + 1] = pid
    return pid, cmd_pid
  end

  it("--status says who runs NAME (exit 0) or that nothing does (exit 1), taking no lock", function()
    local st, out, err = H.run("once", "--status", "--dir", odir, "stat")
    assert.equal(1, st, err)
    assert.equal("stat is not running\n", out)
    local _, cmd_pid = running("stat", 30)
    st, out, err = H.run("once", "--dir", odir, "--status", "stat")
    assert.equal(0, st, err)
    assert.matches("^stat is running: pid " .. cmd_pid .. " on %S+ since %d+%-%d+%-%d+T[%d:]+Z "
      .. "%(sh %-c .*sleep 30%)\n$", out)
    -- asking took no lock: a second start still finds it running, and
    -- the Lua call says the same
    assert.equal(1, (H.run("once", "--dir", odir, "stat", "true")))
    local rec = ar.once_status("stat", { dir = odir })
    assert.equal(cmd_pid, math.tointeger(rec.pid))
    assert.equal(false, ar.once_status("nothing-here", { dir = odir }))
    st, _, err = H.run("once", "--status", "--dir", odir, "stat", "true")
    assert.equal(64, st)
    assert.matches("%-%-status runs nothing", err)
  end)

  it("runs CMD and exits with its status", function()
    local st, out = H.run("once", "--dir", odir, "job", "--", "sh", "-c", "echo \"$@\"; exit 3",
      "sh", "two words", "x")
    assert.equal(3, st)
    assert.equal("two words x\n", out)
    assert.equal(0, (H.run("once", "--dir", odir, "job", "true")))
  end)

  it("exits 128+N when CMD dies of signal N", function()
    assert.equal(128 + 15, (H.run("once", "--dir", odir, "job", "sh", "-c", "kill -TERM $$")))
  end)

  it("releases NAME when CMD ends", function()
    assert.equal(0, (H.run("once", "--dir", odir, "job", "true")))
    assert.equal(0, (H.run("once", "--dir", odir, "job", "true")))
    assert(ar.once("job", { dir = odir })):release()
  end)

  it("refuses while NAME runs: exit 1 silently, as flock -n; --verbose says who", function()
    local pid = running("nightly", 30)
    assert.same({ 1, "", "" }, { H.run("once", "--dir", odir, "nightly", "--", "echo", "never") })
    local st, out, err = H.run("once", "--verbose", "--dir", odir, "nightly", "--", "echo", "never")
    assert.equal(1, st)
    assert.equal("", out)
    assert.matches("^atomrun: nightly is already running: pid " .. pid
      .. " since %d+%-%d+%-%d+T%d+:%d+:%d+Z %(sh %-c .+%)\n$", err)
  end)

  it("on a terminal says who runs NAME without --verbose #heavy", function()
    local pid = running("tty", 30)
    local st, out = H.sh("script -qec " .. H.q(H.q(H.atomrun) .. " once --dir " .. H.q(odir)
      .. " tty echo never; echo st=$?") .. " /dev/null")
    assert.equal(0, st)
    assert.matches("atomrun: tty is already running: pid " .. pid, out)
    assert.matches("st=1", out)
  end)

  it("records the command's own pid, not atomrun's", function()
    local pid, cmd_pid = running("mine", 30)
    assert.equal(cmd_pid, pid)
  end)

  it("exits with -E CODE instead, options before or after NAME", function()
    running("job", 30)
    assert.equal(7, (H.run("once", "-E", "7", "--dir", odir, "job", "true")))
    assert.equal(9, (H.run("once", "job", "--dir", odir, "-E", "9", "--", "true")))
    assert.equal(0, (H.run("once", "--dir", odir, "other", "-E", "9", "true")))
    assert.equal(5, (H.run("once", "--conflict-exit-code=5", "--dir=" .. odir, "job", "true")))
  end)

  it("-w waits for the running instance, up to SECONDS", function()
    running("job", 30)
    local t0 = ar.now()
    local st, _, err = H.run("once", "-w", "0.3", "--verbose", "--dir", odir, "job", "true")
    assert.equal(1, st)
    assert.is_true(ar.now() - t0 >= 0.3)
    assert.matches("gave up waiting", err)
    assert.same({ 1, "", "" }, { H.run("once", "--wait=0.1", "--dir", odir, "job", "true") })

    running("short", 0.3)
    local out
    st, out = H.run("once", "--dir", odir, "short", "-w", "20", "echo", "ran")
    assert.equal(0, st)
    assert.equal("ran\n", out)
  end)

  it("runs at once after the running instance was SIGKILLed", function()
    local pid, cmd_pid = running("victim", 30)
    assert.equal(1, (H.run("once", "--dir", odir, "victim", "true")))
    -- the command inherited the lock (as with flock(1)): kill both
    H.kill(pid, "KILL")
    H.kill(cmd_pid, "KILL")
    assert.is_true(H.wait_until(function() return gone(pid) and gone(cmd_pid) end, 10))
    assert.equal(0, (H.run("once", "--dir", odir, "victim", "true")))
  end)

  it("exits 69 when CMD cannot be executed", function()
    local st, _, err = H.run("once", "--dir", odir, "job", dir .. "/no-such-command")
    assert.equal(69, st)
    assert.matches("failed to execute .*no%-such%-command: No such file or directory", err)
    H.write(dir .. "/noexec", "#!/bin/sh\n")
    st, _, err = H.run("once", "--dir", odir, "job", dir .. "/noexec")
    assert.equal(69, st)
    assert.matches("Permission denied", err)
  end)

  it("exits 69 when the directory is refused", function()
    H.write(odir, "a file")
    local st, _, err = H.run("once", "--dir", odir, "job", "true")
    assert.equal(69, st)
    assert.matches("[Nn]ot a directory", err)
  end)

  it("exits 64 on usage errors, running nothing", function()
    local marker = dir .. "/ran"
    local touch = { "touch", marker }
    for _, args in ipairs({
      {},
      { "--dir", odir },
      { "--dir", odir, "job" },
      { "--dir", odir, "job", "--" },
      { "--dir", odir, "bad/name", table.unpack(touch) },
      { "--dir", odir, ".hidden", table.unpack(touch) },
      { "-w", "soon", "--dir", odir, "job", table.unpack(touch) },
      { "-w", "-1", "--dir", odir, "job", table.unpack(touch) },
      { "-E", "256", "--dir", odir, "job", table.unpack(touch) },
      { "-E", "x", "--dir", odir, "job", table.unpack(touch) },
      { "--bogus", "--dir", odir, "job", table.unpack(touch) },
      { "--dir", odir, "job", "-q", table.unpack(touch) },
      { "--dir" },
      { "job", "-w" },
      { "--verb=1", "job", table.unpack(touch) },
    }) do
      local st, out, err = H.run("once", table.unpack(args))
      local what = table.concat(args, " ")
      assert.equal(64, st, what)
      assert.equal("", out, what)
      assert.matches("^atomrun: [^\n]+\n", err, nil, what)
    end
    assert.is_false(H.exists(marker))
  end)

  it("--help prints the usage on stdout, exit 0", function()
    local st, out = H.run("once", "--help")
    assert.equal(0, st)
    assert.matches("^usage: atomrun once", out)
    for _, word in ipairs({ "-w", "-E", "--dir" }) do
      assert.truthy(out:find(word, 1, true), word)
    end
  end)
end)
