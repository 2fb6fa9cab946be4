-- `atomrun lock`: util-linux flock(1) under atomrun's name (the side-by-side
-- table against flock(1) itself is spec/flock_compat_spec.lua): its forms,
-- messages and exit codes, silence when busy, the holder named with
-- --verbose, what atomrun adds, signals passed on to the command.
local H = require "spec.helper"
local ar = H.ar
local wait_gone = H.wait_exit

-- ------------------------------------------------------------ helpers

local flock_n, track, bg, result, pat = H.flock_n, H.track, H.bg, H.result, H.pat

local nholds = 0
-- flock(1) holds path (exclusive or shared) until release() is called.
local function hold(dir, path, mode)
  nholds = nholds + 1
  local ready, rel = dir .. "/ready" .. nholds, dir .. "/release" .. nholds
  local pid = track(H.spawn("exec flock " .. (mode == "shared" and "-s " or "-x ") .. H.q(path) ..
    " sh -c " .. H.q('touch "$1"; while [ ! -e "$2" ] && [ -d "${2%/*}" ]; do sleep 0.02; done') ..
    " holder " .. H.q(ready) .. " " .. H.q(rel)))
  assert(H.wait_file(ready, 20), "flock(1) never took the lock")
  return pid, function()
    H.write(rel, "")
    assert(wait_gone(pid), "holder did not exit")
  end, rel
end

-- The shell-quoted command line of `atomrun lock ARGS...`.
local function cmdline(...)
  return H.cmd("lock", ...)
end

local function lock(...)
  return H.sh(cmdline(...))
end

-- --------------------------------------------------------------- specs

describe("atomrun lock #child", function()
  local dir, f
  before_each(function()
    dir = H.tmpdir()
    f = dir .. "/cmd.lock"
  end)
  after_each(function()
    H.cleanup_procs()
  end)

  describe("exit codes", function()
    it("exits with the command's status, arguments passed verbatim", function()
      local st, out, err = lock(f, "sh", "-c", 'printf "[%s]" "$@"; exit 3', "sh", "two words", "")
      assert.equal(3, st)
      assert.equal("[two words][]", out)
      assert.equal("", err)
      assert.equal(0, (lock(f, "true")))
      assert.equal(0, (lock(f, "--", "true")))
      assert.equal(2, (lock(f, "--", "sh", "-c", "exit 2")))
    end)

    it("--slots N: at most N commands at once, each with its ATOMRUN_SLOT; -n when all are taken", function()
      local sem, d = dir .. "/sem", dir .. "/in"
      assert.is_true(ar.mkdir(d))
      -- a slot is exclusive: mkdir of its directory fails if two share it
      local body = "mkdir " .. H.q(d) .. "/$ATOMRUN_SLOT || exit 9; echo $ATOMRUN_SLOT >> "
        .. H.q(dir .. "/seen") .. "; sleep 0.3; rmdir " .. H.q(d) .. "/$ATOMRUN_SLOT"
      local pids = {}
      for i = 1, 6 do
        pids[i] = H.spawn(cmdline("--slots", "2", sem, "sh", "-c", body) .. " > " .. H.q(dir .. "/rc" .. i)
          .. " 2>&1; echo $? >> " .. H.q(dir .. "/rcs"))
      end
      assert.is_true(H.wait_until(function()
        local t = H.exists(dir .. "/rcs") and H.slurp(dir .. "/rcs") or ""
        return select(2, t:gsub("\n", "")) == 6
      end, 30))
      assert.equal("0\n0\n0\n0\n0\n0\n", H.slurp(dir .. "/rcs"))
      for v in H.slurp(dir .. "/seen"):gmatch("%d+") do assert.truthy(v == "1" or v == "2", v) end
      -- both slots held: -n is 1 and silent; --verbose says who
      local stop = dir .. "/stop"
      for i = 1, 2 do
        H.spawn(cmdline("--slots", "2", sem, "sh", "-c", "touch " .. H.q(dir .. "/up" .. i)
          .. "; while [ ! -e " .. H.q(stop) .. " ]; do sleep 0.02; done"))
      end
      assert.is_true(H.wait_file(dir .. "/up1", 15) and H.wait_file(dir .. "/up2", 15))
      local st, out, err = lock("-n", "--slots", "2", sem, "true")
      assert.equal(1, st)
      assert.equal("", out .. err)
      st, _, err = lock("-n", "--verbose", "--slots", "2", sem, "true")
      assert.equal(1, st)
      assert.matches("all 2 slots of .* are taken %(held by pids %d+, %d+%)", err)
      H.write(stop, "")
      for _, bad in ipairs({ { "--slots", "0", sem, "true" }, { "--slots", "x", sem, "true" },
          { "--slots", "2", "-s", sem, "true" }, { "--slots", "2", "--fcntl", sem, "true" },
          { "--slots", "2", "--ttl", "5", sem, "true" } }) do
        st, out, err = lock(table.unpack(bad))
        assert.equal(64, st, table.concat(bad, " ") .. ": " .. err)
      end
    end)

    it("a mistyped etcd name is a usage error (64) in lock, once, who and doctor; flock takes it as a file", function()
      for _, args in ipairs({ { "lock", "-n", "etcd:/127.0.0.1:2379/x", "true" },
          { "lock", "etcd//h:2379/x", "true" }, { "once", "etcd:/h:2379/x", "true" },
          { "who", "etcd:h:2379/x" }, { "doctor", "etcd+https:/h:2379" } }) do
        local st, out, err = H.sh("cd " .. H.q(dir) .. " && " .. H.cmd(table.unpack(args)))
        assert.equal(64, st, table.concat(args, " ") .. ": " .. err)
        assert.equal("", out)
        assert.matches("looks like a mistyped etcd name, not a file: the form is etcd://", err)
      end
      assert.same({}, H.listdir(dir))
      assert.equal(0, (H.sh("cd " .. H.q(dir) .. " && ln -s " .. H.q(H.atomrun) .. " flock && ./flock -n "
        .. H.q("etcd:x") .. " true")))
      assert.is_true(H.exists(dir .. "/etcd:x"))
    end)

    it("--fcntl on a read-only descriptor says which open mode the lock needs (65)", function()
      H.write(f, "x")
      local st, out, err = H.sh(H.q(H.atomrun) .. " lock --fcntl 5 5<" .. H.q(f))
      assert.equal(65, st)
      assert.equal("", out)
      assert.matches("^atomrun: 5: Bad file descriptor %(an exclusive %-%-fcntl lock needs the file "
        .. "open for writing: use %-s for a shared lock, or leave out %-%-fcntl%)\n$", err)
      assert.equal(0, (H.sh(H.q(H.atomrun) .. " lock -s --fcntl 5 5<" .. H.q(f))))
      st, _, err = H.sh(H.q(H.atomrun) .. " lock -s --fcntl 5 5>>" .. H.q(f))
      assert.equal(65, st)
      assert.matches("a shared %-%-fcntl lock needs the file open for reading", err)
    end)

    it("exits 128+N when the command dies of signal N", function()
      assert.equal(128 + 15, (lock(f, "sh", "-c", "kill -TERM $$")))
      assert.equal(128 + 9, (lock(f, "sh", "-c", "kill -KILL $$")))
    end)

    it("exits 69 when the command cannot be executed", function()
      local st, _, err = lock(f, dir .. "/no-such-command")
      assert.equal(69, st)
      assert.matches("no%-such%-command", err)
      H.write(dir .. "/notexec", "#!/bin/sh\n")
      st, _, err = lock(f, dir .. "/notexec")
      assert.equal(69, st)
      assert.matches("[Pp]ermission denied", err)
      assert.equal(69, (lock("-F", f, dir .. "/no-such-command")))
      -- the lock was released all the same
      assert.equal(0, flock_n(f))
    end)

    it("exits 66 when the lock file cannot be opened", function()
      local st, _, err = lock("/etc/passwd/x.lock", "true")
      assert.equal(66, st)
      assert.matches("cannot open lock file /etc/passwd/x%.lock", err)
      assert.equal(66, (lock("/proc/no-such-dir/x.lock", "true")))
    end)

    it("exits 64 on usage errors, worded as getopt's, running nothing", function()
      local marker = dir .. "/ran"
      local usage = {
        { {}, "atomrun: not enough arguments\nTry 'atomrun lock %-%-help' for more information%.\n" },
        { { f }, "atomrun: bad file descriptor: '" .. pat(f) .. "'\n" },
        { { "-w", "abc", f, "touch", marker }, "atomrun: invalid timeout value: 'abc'\n" },
        { { "-w" }, "atomrun: option requires an argument %-%- 'w'\nTry 'atomrun lock %-%-help'" },
        { { "-E", "300", f, "touch", marker }, "atomrun: exit code out of range %(expected 0 to 255%)\n" },
        { { "-E", "x", f, "touch", marker }, "atomrun: invalid exit code: 'x'\n" },
        { { "-q", f, "touch", marker }, "atomrun: invalid option %-%- 'q'\nTry 'atomrun lock %-%-help'" },
        { { "--bogus", f, "touch", marker }, "atomrun: unrecognized option '%-%-bogus'\n" },
        { { "--no", f, "touch", marker },
          "atomrun: option '%-%-no' is ambiguous; possibilities: '%-%-nonblocking' '%-%-no%-fork'\n" },
        { { "--verbose=yes", f, "touch", marker }, "atomrun: option '%-%-verbose' doesn't allow an argument\n" },
        { { f, "-c" }, "atomrun: %-c requires exactly one command argument\n" },
        { { f, "-c", "true", "extra" }, "atomrun: %-c requires exactly one command argument\n" },
        { { f, "--" }, "atomrun: missing command\n" },
        { { "-F", "-o", f, "touch", marker }, "atomrun: the %-%-no%-fork and %-%-close options are incompatible\n" },
        -- values that fit their own type but not what they feed (issue 23,
        -- point 13: these ended in a Lua traceback, exit 1); the etcd name
        -- is never contacted
        { { "--ttl", "1e9", "etcd://127.0.0.1:1/x", "touch", marker },
          "atomrun: invalid %-%-ttl: '1e9' %(a whole number of seconds, 1 to 1000000%)\n$" },
        { { "--ttl", "1000001", "etcd://127.0.0.1:1/x", "touch", marker },
          "atomrun: invalid %-%-ttl: '1000001' %(a whole number of seconds, 1 to 1000000%)\n$" },
        { { "--start", "9223372036854775807", "--length", "10", f, "touch", marker },
          "atomrun: invalid as length of lock range: '10' %(with %-%-start 9223372036854775807 the "
          .. "range ends past the largest file offset, 9223372036854775807%)\n$" },
        { { "--length", "2", "--start", "9223372036854775806", f, "touch", marker },
          "atomrun: invalid as start offset: '9223372036854775806' %(with %-%-length 2 the range "
          .. "ends past the largest file offset, 9223372036854775807%)\n$" },
      }
      for _, case in ipairs(usage) do
        local args = case[1]
        local st, out, err = lock(table.unpack(args))
        assert.equal(64, st, "atomrun lock " .. table.concat(args, " "))
        assert.equal("", out)
        assert.matches("^" .. case[2], err)
      end
      -- nothing was created or run by a refused command line
      assert.is_false(H.exists(f))
      assert.is_false(H.exists(marker))
    end)

    it("-w with a negative or infinite value fails as flock's timer does: 71", function()
      for _, v in ipairs({ "-1", "-0.5", "inf", "nan" }) do
        local st, out, err = lock("-w", v, f, "true")
        assert.same({ 71, "", "atomrun: cannot set up timer: Invalid argument\n" }, { st, out, err }, v)
      end
    end)

    it("--help is util-linux's, plus what atomrun adds; -V is one line", function()
      local st, out, err = lock("--help")
      assert.equal(0, st)
      assert.equal("", err)
      assert.matches("^\nUsage:\n atomrun lock %[options%] <file>|<directory> <command>", out)
      assert.matches("%-%-fcntl", out)
      assert.matches("`%-%-` may separate FILE from CMD", out)
      st, out = lock("-h")
      assert.equal(0, st)
      st, out = lock("-V")
      assert.same({ 0, "atomrun " .. ar.version .. "\n" }, { st, out })
      -- -h acts where it stands, before a later mistake is seen
      assert.equal(0, (lock("--he", "-q")))
    end)
  end)

  describe("busy", function()
    it("-n exits 1 at once and silently, as flock(1): cron sends no mail", function()
      local _, release = hold(dir, f)
      assert.same({ 1, "", "" }, { lock("-n", f, "sh", "-c", "echo ran") })
      assert.same({ 1, "", "" }, { lock("-w", "0", f, "sh", "-c", "echo ran") })
      release()
    end)

    it("--verbose: flock's line, then one naming the live holder", function()
      local pid, release = hold(dir, f)
      local st, out, err = lock("-n", "--verbose", f, "true")
      assert.equal(1, st)
      assert.equal("", out)
      assert.matches("^atomrun: failed to get lock\natomrun: " .. pat(f) .. " is held by pid " .. pid
        .. " %(flock [^\n]*%)\n$", err)
      release()
    end)

    it("-E CODE replaces 1, also for a -w timeout; long options work", function()
      local _, release = hold(dir, f)
      assert.equal(7, (lock("-n", "-E", "7", f, "true")))
      assert.equal(9, (lock("--nonblock", "--conflict-exit-code=9", f, "true")))
      assert.equal(0, (lock("-E", "0", "-n", f, "true")))
      assert.equal(42, (lock("-w", "0.05", "-E42", f, "true")))
      assert.equal(1, (lock("--timeout=0.05", f, "true")))
      assert.equal(1, (lock("--wai", "0.05", f, "true")))
      assert.equal(1, (lock("-nx", f, "true")))
      release()
    end)

    it("-w SECONDS times out near the deadline, silently; --verbose says so", function()
      local pid, release = hold(dir, f)
      local t0 = ar.now()
      local st, out, err = lock("-w", "0.3", f, "sh", "-c", "echo ran")
      local took = ar.now() - t0
      assert.same({ 1, "", "" }, { st, out, err })
      assert.is_true(took >= 0.25 and took < 3, "took " .. took .. " s")
      st, out, err = lock("-w", "0.2", "--verbose", f, "true")
      assert.equal(1, st)
      assert.matches("^atomrun: timeout while waiting to get lock\natomrun: " .. pat(f) ..
        " is held by pid " .. pid .. " ", err)
      release()
    end)

    it("-w SECONDS runs the command once the holder lets go", function()
      local _, release, rel = hold(dir, f)
      H.touch_when_waited(f, rel)         -- lets go once we wait
      local st, out = lock("-w", "30", f, "sh", "-c", "echo ran")
      assert.equal(0, st)
      assert.equal("ran\n", out)
      release()
    end)

    it("-s shares with a shared holder and -x waits for it", function()
      local _, release = hold(dir, f, "shared")
      assert.equal(0, (lock("-s", "-n", f, "true")))
      assert.equal(0, (lock("--shared", "-n", f, "true")))
      assert.equal(1, (lock("-x", "-n", f, "true")))
      assert.equal(1, (lock("-e", "-n", f, "true")))
      assert.equal(1, (lock("-n", f, "true")))
      release()
    end)

    it("says once on a terminal, after a second, whom it waits for #heavy", function()
      local pid, release, rel = hold(dir, f)
      track(H.spawn("sleep 1.6; touch " .. H.q(rel)))
      -- script(1) gives the command a terminal as stderr
      local st, out = H.sh("script -qec " .. H.q(cmdline("-w", "30", f, "echo", "ran")) .. " /dev/null")
      assert.equal(0, st, out)
      assert.matches("atomrun: waiting for " .. pat(f) .. ", held by pid " .. pid .. " %(flock ", out)
      assert.equal(1, select(2, out:gsub("waiting for", "")))
      assert.matches("ran", out)
      release()
    end)

    it("does not print the waiting line when stderr is not a terminal #heavy", function()
      local _, release, rel = hold(dir, f)
      track(H.spawn("sleep 1.4; touch " .. H.q(rel)))
      local st, out, err = lock("-w", "30", f, "echo", "ran")
      assert.equal(0, st)
      assert.equal("ran\n", out)
      assert.equal("", err)
      release()
    end)
  end)

  describe("while the command runs", function()
    it("flock(1) sees the file locked (exclusive), or shared with -s", function()
      local probe = 'flock -n -x "$1" true; echo "x=$?"; flock -n -s "$1" true; echo "s=$?"'
      local st, out = lock(f, "sh", "-c", probe, "sh", f)
      assert.equal(0, st)
      assert.equal("x=1\ns=1\n", out)
      st, out = lock("-s", f, "sh", "-c", probe, "sh", f)
      assert.equal(0, st)
      assert.equal("x=1\ns=0\n", out)
      -- and free again afterwards
      assert.equal(0, flock_n(f))
    end)

    it("locks a directory, as flock(1) allows", function()
      local st, out = lock(dir, "sh", "-c", 'flock -n "$1" true; echo $?', "sh", dir)
      assert.equal(0, st)
      assert.equal("1\n", out)
    end)

    it("creates missing parent directories of the lock file; called flock, never", function()
      local p = dir .. "/a/b/c.lock"
      assert.equal(0, (lock(p, "true")))
      assert.is_true(H.exists(p))
      local abs = H.atomrun:sub(1, 1) == "/" and H.atomrun or (H.root .. "/" .. H.atomrun)
      os.execute("ln -s " .. H.q(abs) .. " " .. H.q(dir .. "/flock"))
      local q = dir .. "/x/y.lock"
      local st, out, err = H.sh(H.q(dir .. "/flock") .. " " .. H.q(q) .. " true")
      assert.same({ 66, "", "flock: cannot open lock file " .. q .. ": No such file or directory\n" },
        { st, out, err })
      assert.is_false(H.exists(dir .. "/x"))
    end)

    it("follows a symlinked lock file, except another user's in a sticky directory", function()
      local target = dir .. "/target"
      os.execute("ln -s target " .. H.q(dir .. "/link"))
      local st, out = lock(dir .. "/link", "sh", "-c", 'flock -n "$1" true; echo $?', "sh", target)
      assert.same({ 0, "1\n" }, { st, out })
      -- /tmp-like: sticky and world-writable; the link belongs to nobody
      local sticky = dir .. "/sticky"
      os.execute("mkdir " .. H.q(sticky) .. " && chmod 1777 " .. H.q(sticky) .. " && chmod 755 " .. H.q(dir))
      local made = H.sh("setpriv --reuid=65534 --regid=65534 --clear-groups ln -s " .. H.q(target) .. " "
        .. H.q(sticky .. "/evil"))
      if made ~= 0 then pending("cannot create a link as another user (setpriv)") return end
      local st2, out2, err2 = lock(sticky .. "/evil", "echo", "ran")
      assert.equal(66, st2)
      assert.equal("", out2)
      assert.matches("^atomrun: cannot open lock file " .. pat(sticky .. "/evil") .. ": Permission denied\n"
        .. "atomrun: refusing to follow the symlink " .. pat(sticky .. "/evil") .. " %(owned by uid 65534%) "
        .. "in the sticky world%-writable directory " .. pat(sticky) .. "\n$", err2)
      -- flock(1) itself follows it (fs.protected_symlinks may be 0)
      assert.equal(0, (H.sh("flock " .. H.q(sticky .. "/evil") .. " true")))
    end)

    it("the command inherits the lock descriptor; with -o it does not", function()
      local list = 'for fd in /proc/$$/fd/*; do readlink "$fd"; done; exit 0'
      local st, out = lock(f, "sh", "-c", list)
      assert.equal(0, st)
      assert.matches(pat(f), out)
      st, out = lock("-o", f, "sh", "-c", list)
      assert.equal(0, st)
      assert.not_matches(pat(f), out)
      st, out = lock("--close", f, "sh", "-c", list)
      assert.equal(0, st)
      assert.not_matches(pat(f), out)
    end)

    it("--fd N -o: the command runs without descriptor N, and the lock stays held on it", function()
      local probe = 'test -e /proc/self/fd/9 && echo has9 || echo no9; flock -n "$0" true; echo "flock $?"'
      local st, out = H.sh("exec 9>" .. H.q(f) .. "; " .. cmdline("--fd", "9", "-o", "sh", "-c", probe, f))
      assert.equal(0, st)
      assert.equal("no9\nflock 1\n", out)
      st, out = H.sh("exec 9>" .. H.q(f) .. "; " .. cmdline("--fd", "9", "sh", "-c", probe, f))
      assert.equal(0, st)
      assert.equal("has9\nflock 1\n", out)
    end)

    it("with -o, killing atomrun frees the lock; without, the command keeps it", function()
      for _, close in ipairs({ true, false }) do
        local tag = close and "o" or "inherit"
        local ready, cpid = dir .. "/" .. tag .. ".ready", dir .. "/" .. tag .. ".pid"
        local args = { f, "sh", "-c", 'echo $$ > "$1"; touch "$2"; exec sleep 60', "sh", cpid, ready }
        if close then table.insert(args, 1, "-o") end
        local pid = track(H.spawn("exec " .. cmdline(table.unpack(args))))
        assert(H.wait_file(ready, 20))
        local child = track(tonumber(H.slurp(cpid)))
        assert.equal(1, flock_n(f))
        H.kill(pid, "KILL")
        assert(wait_gone(pid))
        if close then
          assert(H.wait_until(function() return flock_n(f) == 0 end, 10))
        else
          assert.equal(1, flock_n(f))
        end
        H.kill(child, "KILL")
        assert(wait_gone(child))
        assert.equal(0, flock_n(f))
      end
    end)

    it("-F execs the command in place of atomrun, keeping the lock", function()
      local ready, cpid = dir .. "/F.ready", dir .. "/F.pid"
      local pid = track(H.spawn("exec " .. cmdline("-F", f, "sh", "-c",
        'echo $$ > "$1"; touch "$2"; exec sleep 60', "sh", cpid, ready)))
      assert(H.wait_file(ready, 20))
      assert.equal(pid, tonumber(H.slurp(cpid)))
      assert.equal(1, flock_n(f))
      H.kill(pid, "KILL")
      assert(wait_gone(pid))
      assert.equal(0, flock_n(f))
      -- -F passes the command's status straight through
      assert.equal(5, (lock("--no-fork", f, "sh", "-c", "exit 5")))
    end)

    it("-c runs CMDSTRING with $SHELL -c, or /bin/sh when SHELL is unset or empty", function()
      local st, out = H.sh("SHELL=/bin/bash " .. cmdline(f, "-c", 'echo "bash=$BASH_VERSION"; exit 4'))
      assert.equal(4, st)
      assert.matches("^bash=%d", out)
      st, out = H.sh("env -u SHELL " .. cmdline(f, "-c", 'echo "bash=$BASH_VERSION"; echo "$0"'))
      assert.equal(0, st)
      assert.equal("bash=\n/bin/sh\n", out)
      st, out = H.sh("SHELL= " .. cmdline(f, "-c", 'echo "$0"'))
      assert.same({ 0, "/bin/sh\n" }, { st, out })
      st, out = H.sh("SHELL=/bin/sh " .. cmdline(f, "--command", "echo one two"))
      assert.equal(0, st)
      assert.equal("one two\n", out)
    end)

    it("--verbose says on stdout, as flock(1), how long the lock took and what it runs", function()
      local st, out, err = lock("--verbose", f, "echo", "hi")
      assert.equal(0, st)
      assert.equal("", err)
      assert.matches("^hi\natomrun: getting lock took %d+%.%d%d%d%d%d%d seconds\natomrun: executing echo\n$", out)
      -- quiet without it
      st, out, err = lock(f, "echo", "hi")
      assert.same({ 0, "hi\n", "" }, { st, out, err })
    end)
  end)

  describe("signals", function()
    -- The command records atomrun's pid ($PPID) and traps the signals.
    local trapper = [[
echo $PPID > "$1"
trap 'echo TERM > "$2"; exit 5' TERM
trap 'echo HUP > "$2"; exit 6' HUP
touch "$3"
while [ -e "$3" ]; do sleep 0.02; done
]]
    for _, case in ipairs({ { "TERM", 5 }, { "HUP", 6 } }) do
      it("passes SIG" .. case[1] .. " on to the command", function()
        local ppid, got, ready = dir .. "/ppid", dir .. "/got", dir .. "/ready"
        bg(dir, "sig", cmdline(f, "sh", "-c", trapper, "sh", ppid, got, ready))
        assert(H.wait_file(ready, 20))
        local pid = tonumber(H.slurp(ppid))
        H.kill(pid, case[1])
        local st = result(dir, "sig")
        assert.equal(case[2], st)
        assert.equal(case[1] .. "\n", H.slurp(got))
        assert.equal(0, flock_n(f))
      end)
    end

    it("a command killed by the forwarded SIGTERM gives 143", function()
      local ppid, ready = dir .. "/ppid", dir .. "/ready"
      bg(dir, "sig", cmdline(f, "sh", "-c", 'echo $PPID > "$1"; touch "$2"; exec sleep 60', "sh", ppid, ready))
      assert(H.wait_file(ready, 20))
      H.kill(tonumber(H.slurp(ppid)), "TERM")
      assert.equal(143, (result(dir, "sig")))
      assert.equal(0, flock_n(f))
    end)

    it("SIGINT ends atomrun lock while it waits for the lock", function()
      local _, release = hold(dir, f)
      bg(dir, "int", "exec env --default-signal=INT " .. cmdline(f, "echo", "ran"))
      local pid
      -- find the waiting atomrun in /proc/locks ("N: -> FLOCK ... PID ...")
      assert(H.wait_until(function()
        for line in io.lines("/proc/locks") do
          local p = tonumber(line:match("^%d+: %-> %S+%s+%S+%s+%S+%s+(%d+)"))
          if p and H.slurp("/proc/" .. p .. "/cmdline"):match("lock") and
             H.slurp("/proc/" .. p .. "/cmdline"):match(pat(f)) then
            pid = p
            return true
          end
        end
      end, 20), "atomrun lock never waited in the kernel")
      H.kill(pid, "INT")
      assert(wait_gone(pid, 10))
      release()
    end)
  end)
end)

-- The multi-call name from an install: runs `make`, so in the main pass only.
describe("make install FLOCK_LINK=1 #child #heavy", function()
  after_each(H.cleanup)

  it("installs bin/flock -> atomrun, which is flock; uninstall removes only that link", function()
    local dest = H.tmpdir()
    local make = "make -s --no-print-directory -C " .. H.q(H.root) .. " PREFIX=/usr/local DESTDIR=" .. H.q(dest)
    local st, _, err = H.sh(make .. " install FLOCK_LINK=1")
    assert.equal(0, st, err)
    local flock = dest .. "/usr/local/bin/flock"
    local _, link = H.sh("readlink " .. H.q(flock))
    assert.equal("atomrun\n", link)
    local out
    st, out = H.sh(H.q(flock) .. " -V")
    assert.same({ 0, "flock from atomrun " .. ar.version .. "\n" }, { st, out })
    st, out, err = H.sh("cd " .. H.q(dest) .. " && " .. H.q(flock) .. " -n --verbose f echo hi")
    assert.equal(0, st)
    assert.matches("^hi\nflock: getting lock took [%d.]+ seconds\nflock: executing echo\n$", out)
    st, _, err = H.sh(make .. " uninstall")
    assert.equal(0, st, err)
    assert.is_false(H.exists(dest .. "/usr/local/bin/flock"))
    -- a flock that is not our link is never replaced
    os.execute("mkdir -p " .. H.q(dest .. "/usr/local/bin") .. " && touch " .. H.q(flock))
    st, _, err = H.sh(make .. " install FLOCK_LINK=1")
    assert.is_not.equal(0, st)
    assert.matches("refusing to replace", err)
    H.sh(make .. " uninstall")
    assert.is_true(H.exists(flock))
  end)
end)
