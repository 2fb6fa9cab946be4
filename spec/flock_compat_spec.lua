-- atomrun is flock(1): one table of cases, each run with Debian's
-- util-linux flock, with a link named `flock` to the atomrun binary, and
-- with `atomrun lock`, on the same files; stdout, stderr and the exit status
-- must be the same.  Allowed differences: the version line, and on stderr
-- one extra line after flock's --verbose one, naming the holder.  What
-- Debian's 2.38 lacks (--fcntl, --start, --length, --fd) is checked against
-- the kernel's lock table and util-linux master's own wording.
local H = require "spec.helper"

-- Only binaries are under test: the lua5.4 pass would run the same again
-- (shown as skipped there).
local describe = H.pass == "lua5.4" and pending or describe

local ATOMRUN = H.atomrun:sub(1, 1) == "/" and H.atomrun or (H.root .. "/" .. H.atomrun)
-- Debian's, found in PATH so that getopt's messages (which carry argv[0]
-- as given) say "flock:"; inner uses give the full path.
local REAL = "/usr/bin/flock"

-- Each case: args (argv after the program name) or sh (a shell line where
-- %T is the program, %X the same as one path, for make); hold = lock "f"
-- in another process first; ours = what `atomrun lock` gives instead where
-- it differs on purpose.
local CASES = {
  -- the command's status, signals, failures to execute or open
  { "status", args = { "f", "sh", "-c", "exit 3" } },
  { "signal", args = { "f", "sh", "-c", "kill -TERM $$" } },
  { "arguments verbatim", args = { "f", "sh", "-c", 'printf "[%s]" "$@"', "sh", "two words", "" } },
  { "cannot execute", args = { "f", "./no-such-command" } },
  { "cannot open", args = { "/etc/passwd/x.lock", "true" } },
  { "missing parent", args = { "missing/x.lock", "true" }, ours = { status = 0, err = "" } },
  { "a directory", args = { ".", "true" } },
  { "-c", args = { "f", "-c", "echo one; exit 4" } },
  { "--command", args = { "f", "--command", "echo two" } },
  { "-- before FILE", args = { "-s", "--", "f", "echo", "hi" } },
  { "-- after FILE runs --", args = { "f", "--", "true" }, ours = { status = 0, err = "" } },
  -- usage errors, worded as getopt and util-linux word them
  { "no arguments", args = {} },
  { "only a file", args = { "f" } },
  { "not a descriptor", args = { "5x" } },
  { "descriptor out of range", args = { "2147483648" } },
  { "options only", args = { "-n" } },
  { "-c without string", args = { "f", "-c" } },
  { "-c with two", args = { "f", "-c", "true", "extra" } },
  { "invalid option", args = { "-q", "f", "true" } },
  { "invalid in a cluster", args = { "-nq", "f", "true" } },
  { "unrecognized", args = { "--bogus", "f", "true" } },
  { "unrecognized =value", args = { "--bogus=1", "f", "true" } },
  { "no argument allowed", args = { "--verbose=1", "f", "true" } },
  { "prefix no argument allowed", args = { "--verb=1", "f", "true" } },
  { "-w needs a value", args = { "-w" } },
  { "--timeout needs a value", args = { "--timeout" } },
  { "--tim needs a value", args = { "--tim" } },
  { "ambiguous --no", args = { "--no", "f", "true" } },
  { "ambiguous --c", args = { "--c", "f", "true" } },
  { "ambiguous --ve", args = { "--ve", "f", "true" } },
  { "bad timeout", args = { "-w", "abc", "f", "true" } },
  { "timeout with a blank", args = { "-w", "5 ", "f", "true" } },
  { "negative timeout", args = { "-w", "-1", "f", "true" } },
  { "exit code too big", args = { "-E", "300", "-n", "f", "true" } },
  { "negative exit code", args = { "-E", "-1", "-n", "f", "true" } },
  { "bad exit code", args = { "-E", "x", "-n", "f", "true" } },
  { "huge exit code", args = { "-E", "99999999999999999999", "f", "true" } },
  { "-F -o", args = { "-F", "-o", "f", "true" } },
  { "--no-fork --close", args = { "--no-fork", "--close", "f", "true" } },
  -- every option, clustered, attached, abbreviated
  { "-w5", args = { "-w5", "f", "echo", "ok" } },
  { "-w .5", args = { "-w", ".5", "f", "echo", "ok" } },
  { "--wait=1", args = { "--wait=1", "f", "true" } },
  { "-E42 free", args = { "-E42", "-n", "f", "true" } },
  { "-nx", args = { "-nx", "f", "true" } },
  { "-sn", args = { "-sn", "f", "true" } },
  { "-e", args = { "-e", "f", "true" } },
  { "--shared --exclusive", args = { "--shared", "--exclusive", "f", "true" } },
  { "--nonblocking", args = { "--nonblocking", "f", "true" } },
  { "--nonblock", args = { "--nonblock", "f", "true" } },
  { "--nonb", args = { "--nonb", "f", "true" } },
  { "--nb", args = { "--nb", "f", "true" } },
  { "--verbose", args = { "--verbose", "f", "echo", "hi" } },
  { "--verb", args = { "--verb", "f", "-c", "echo hi" } },
  { "-u FILE", args = { "-u", "f", "true" } },
  { "-o", args = { "-o", "f", "sh", "-c", "ls -l /proc/$$/fd | grep -c '/f$'; true" } },
  { "-F", args = { "-F", "f", "sh", "-c", "exit 7" } },
  { "-V", args = { "-V" }, version = true },
  { "--version", args = { "--version" }, version = true },
  { "--vers", args = { "--vers" }, version = true },
  { "-V before a mistake", args = { "-V", "-q" }, version = true },
  { "empty SHELL", sh = "SHELL= %T f -c 'echo \"$0\"'" },
  -- busy: silent unless --verbose, then flock's line (and ours, the holder)
  { "busy -n", hold = true, args = { "-n", "f", "echo", "ran" } },
  { "busy -n -E42", hold = true, args = { "-n", "-E42", "f", "echo", "ran" } },
  { "busy -w 0", hold = true, args = { "-w", "0", "f", "echo", "ran" } },
  { "busy -w 0.2", hold = true, args = { "-w", "0.2", "f", "echo", "ran" } },
  { "busy -s -n", hold = true, args = { "-s", "-n", "f", "true" } },
  { "busy --conflict-exit-code=0", hold = true, args = { "--conflict-exit-code=0", "-n", "f", "true" } },
  { "busy -n --verbose", hold = true, args = { "-n", "--verbose", "f", "true" } },
  { "busy -w --verbose", hold = true, args = { "-w", "0.2", "--verbose", "f", "true" } },
  { "busy -n FILE -c", hold = true, args = { "-n", "f", "-c", "echo ran" } },
  -- the descriptor forms and descriptors passed through
  { "fd -n", sh = "exec 9>f; %T -n 9; echo locked=$?; " .. REAL .. " -n f true; echo other=$?" },
  { "fd -s", sh = ": >f; exec 9<f; %T -s 9; echo locked=$?; " .. REAL .. " -n -s f true; echo other=$?" },
  { "fd -u", sh = "exec 9>f; %T 9; %T -u 9; echo unlocked=$?; " .. REAL .. " -n f true; echo other=$?" },
  { "fd busy", hold = true, sh = "exec 9>f; %T -n 9; echo $?" },
  { "fd -w busy", hold = true, sh = "exec 9>f; %T -w 0.1 -E 3 9; echo $?" },
  { "bad descriptor", args = { "99" } },
  { "bad descriptor -u", args = { "-u", "98" } },
  { "negative descriptor", args = { "--", "-1" } },
  { "cmd 5>out passes through",
    sh = "%T f sh -c 'echo through >&5' 5>out; cat out" },
  { "make's jobserver passes through", make = true,
    sh = "make -s -j2 -f top.mk LOCKER='%X'" },
  { "a symlinked lock file is followed",
    sh = "ln -s target link; %T link sh -c '" .. REAL .. " -n target true; echo $?'" },
}

local TOP_MK = [[
all:
	+$(LOCKER) f $(MAKE) -s -f sub.mk
]]
local SUB_MK = [[
all: a b
a b:
	@sleep 0.2; echo $@ > $@.done
]]

-- The command line for one case run by one program (a shell word).
local function line(case, program, exe)
  if case.sh then
    return (case.sh:gsub("%%T", function() return program end):gsub("%%X", function() return exe end))
  end
  local parts = { program }
  for _, a in ipairs(case.args) do parts[#parts + 1] = H.q(a) end
  return table.concat(parts, " ")
end

-- What may differ between runs and programs: the time a lock took.
local function norm(s)
  return (s:gsub("getting lock took %d+%.%d%d%d%d%d%d seconds", "getting lock took N seconds"))
end

-- `atomrun lock` names itself atomrun; otherwise it says what flock says.
local function as_flock(s)
  s = ("\n" .. s):gsub("\natomrun: ", "\nflock: "):gsub("Try 'atomrun lock %-%-help'", "Try 'flock --help'")
  return s:sub(2)
end

-- stderr without the one line allowed beyond flock's: the holder's name,
-- right after flock's own busy line.
local function without_holder(s)
  return (s:gsub("(flock: [^\n]*lock\n)flock: [^\n]* is held by [^\n]*\n", "%1"))
end

describe("flock(1) compatibility #child", function()
  local dir, bin
  before_each(function()
    dir = H.tmpdir()
    bin = dir .. "/bin"
    os.execute("mkdir " .. H.q(bin) .. " && ln -s " .. H.q(ATOMRUN) .. " " .. H.q(bin .. "/flock"))
  end)
  after_each(function() H.cleanup_procs() end)

  local programs = {
    { "util-linux flock", function() return "flock" end, function() return REAL end },
    { "flock link", function() return "PATH=" .. H.q(bin) .. ":\"$PATH\" flock" end,
      function() return bin .. "/flock" end },
    { "atomrun lock", function() return H.q(ATOMRUN) .. " lock" end,
      function() return ATOMRUN .. " lock" end },
  }

  -- Run one case with one program in a fresh work directory.
  local function run(case, prog)
    local work = dir .. "/" .. prog[1]:gsub("%W", "_")
    os.execute("rm -rf " .. H.q(work) .. "; mkdir " .. H.q(work))
    if case.make then
      H.write(work .. "/top.mk", TOP_MK)
      H.write(work .. "/sub.mk", SUB_MK)
    end
    if case.hold then H.hold(dir, work .. "/f", dir .. "/stop", prog[1]:gsub("%W", "_")) end
    local st, out, err = H.sh("cd " .. H.q(work) .. " && " .. line(case, prog[2](), prog[3]()))
    return st, norm(out), norm(err)
  end

  for _, case in ipairs(CASES) do
    it(case[1], function()
      local want_st, want_out, want_err = run(case, programs[1])
      for k = 2, 3 do
        local prog = programs[k]
        local st, out, err = run(case, prog)
        if k == 3 then out, err = as_flock(out), as_flock(err) end
        err = without_holder(err)
        local what = prog[1] .. ": " .. line(case, "flock")
        if case.version then
          assert.equal(want_st, st, what)
          assert.matches("^flock from util%-linux [%d.]+\n$", want_out, nil, what)
          assert.matches(k == 2 and "^flock from atomrun [%d.]+\n$" or "^atomrun [%d.]+\n$", out, nil, what)
          assert.equal(want_err, err, what)
        else
          local ours = k == 3 and case.ours or {}
          assert.equal(ours.status or want_st, st, what)
          assert.equal(ours.out or want_out, out, what)
          assert.equal(ours.err or want_err, err, what)
        end
      end
    end)
  end

  describe("the holder line beyond flock's", function()
    it("names the live holder after flock's busy line, and only with --verbose", function()
      local work = dir .. "/w"
      os.execute("mkdir " .. H.q(work))
      local pid = H.hold(dir, work .. "/f", dir .. "/stop")
      local cmd = "cd " .. H.q(work) .. " && PATH=" .. H.q(bin) .. ":\"$PATH\" flock "
      local st, out, err = H.sh(cmd .. "-n --verbose f true")
      assert.equal(1, st)
      assert.equal("", out)
      assert.matches("^flock: failed to get lock\nflock: f is held by pid " .. pid .. " %(", err)
      assert.equal(2, select(2, err:gsub("\n", "")))
      st, out, err = H.sh(cmd .. "-n f true")
      assert.same({ 1, "", "" }, { st, out, err })
    end)
  end)

  -- Debian's 2.38 has no --fcntl/--start/--length/--fd: the kernel's lock
  -- table says what was locked, and util-linux master's help says how.
  describe("options of util-linux master", function()
    local function ours(...)
      local parts = { "cd", H.q(dir), "&&", "PATH=" .. H.q(bin) .. ":\"$PATH\"", "flock" }
      for _, a in ipairs({ ... }) do parts[#parts + 1] = a end
      return H.sh(table.concat(parts, " "))
    end
    local LOCKS = "sh -c 'ino=$(stat -c %i f); grep \":$ino \" /proc/locks'"

    it("--help has master's lines for them, word for word", function()
      local st, out = ours("--help")
      assert.equal(0, st)
      for _, want in ipairs({
        " flock [options] --fd <file descriptor number> -c <command>\n",
        " flock [options] --fd <file descriptor number> <command> [<argument>...]\n",
        " -n, --nb, --nonblocking  fail rather than wait\n",
        "     --wait               same as --timeout\n",
        "     --fcntl              use fcntl(F_OFD_SETLK) rather than flock()\n",
        "     --start <offset>     starting offset for lock (implies --fcntl)\n",
        "     --length <number>    number of bytes to lock (implies --fcntl)\n",
        "     --fd <number>        use the file descriptor number to wrap the\n"
          .. "                          lock around the command execution\n",
        "For more details see flock(1).\n",
      }) do
        assert.truthy(out:find(want, 1, true), want)
      end
    end)

    -- a /proc/locks line of an OFD lock: mode, first byte, last byte (or EOF)
    local function ofd_line(rw, first, last)
      return "OFDLCK%s+ADVISORY%s+" .. rw .. "%s+%-?%d+%s+%S+:%d+%s+" .. first .. "%s+" .. last
    end

    it("--fcntl takes an OFD lock of the whole file", function()
      local st, out = ours("--fcntl f", LOCKS)
      assert.equal(0, st)
      assert.matches(ofd_line("WRITE", 0, "EOF"), out)
      st, out = ours("--fcntl -s f", LOCKS)
      assert.matches(ofd_line("READ", 0, "EOF"), out)
    end)

    it("--start and --length lock bytes (and imply --fcntl)", function()
      local st, out = ours("--start 10 --length 5 f", LOCKS)
      assert.equal(0, st)
      assert.matches(ofd_line("WRITE", 10, 14), out)
      st, out = ours("--start=1K f", LOCKS)
      assert.matches(ofd_line("WRITE", 1024, "EOF"), out)
      -- a range conflicts only where it overlaps
      st = ours("--start 0 --length 10 f sh -c '" ..
        "flock -n --start 10 --length 10 f true && ! flock -n --start 5 --length 10 f true'")
      assert.equal(0, st)
    end)

    it("--start and --length refuse what is not a size", function()
      for _, case in ipairs({
        { "--start x f true", "flock: invalid as start offset: 'x'\n" },
        { "--length -1 f true", "flock: invalid as length of lock range: '-1'\n" },
        { "--start 9223372036854775807 --length 1 f true", "flock: invalid as length of lock "
          .. "range: '1' (with --start 9223372036854775807 the range ends past the largest file "
          .. "offset, 9223372036854775807)\n" },
        { "--fd x true", "flock: invalid file descriptor: 'x'\n" },
        { "--fd -1 true", "flock: requires file descriptor, file or directory\n" },
        { "--fd 9", "flock: missing command\n" },
        { "--fd 9 -c 'echo a' extra", "flock: -c requires exactly one command argument\n" },
        { "-c true", "flock: requires file descriptor, file or directory\n" },
      }) do
        local st, out, err = ours(case[1])
        assert.same({ 64, "", case[2] }, { st, out, err }, case[1])
      end
    end)

    it("--fd N runs a command holding N's lock, which stays on N", function()
      local function sh(script)
        return H.sh("cd " .. H.q(dir) .. " && PATH=" .. H.q(bin) .. ":\"$PATH\" sh -c " .. H.q(script))
      end
      local st, out = sh("exec 9>f; flock --fd 9 " .. REAL .. " -n f true; echo inner=$?; "
        .. REAL .. " -n f true; echo after=$?")
      assert.equal(0, st)
      assert.equal("inner=1\nafter=1\n", out)
      st, out = sh("exec 9>f; SHELL=/bin/sh flock --fd 9 -c 'echo $0'")
      assert.same({ 0, "/bin/sh\n" }, { st, out })
      st, out = sh("exec 9>f; flock --fcntl --fd 9 " .. LOCKS)
      assert.matches("OFDLCK", out)
    end)
  end)
end)
