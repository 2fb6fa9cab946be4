-- `atomrun doctor [DIR] [--json]`: what the filesystem under DIR supports.
local H = require "spec.helper"
local ar = H.ar

-- Only the binary is under test here, and the lua5.4 pass would run the
-- same binary again: these run in the atomrun and asan passes (shown as
-- skipped in the lua5.4 pass).
local describe = H.pass == "lua5.4" and pending or describe

-- The filesystem type as util-linux names it ("ext4", "tmpfs"), or nil.
local function fstype(dir)
  local st, out = H.sh("findmnt -n -o FSTYPE -T " .. H.q(dir))
  return st == 0 and out:match("^(%S+)") or nil
end

describe("atomrun doctor #child", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  local FEATURES = { "flock%(2%) whole%-file locks", "OFD byte%-range locks",
    "O_TMPFILE unnamed temp files", "renameat2%(RENAME_NOREPLACE%)", "fsync of a directory" }

  it("reports every probe and every primitive for a directory, exit 0", function()
    local st, out, err = H.run("doctor", dir)
    assert.equal(0, st, err)
    assert.matches("^atomrun doctor: " .. dir:gsub("%p", "%%%0") .. " %(", out)
    for _, f in ipairs(FEATURES) do assert.matches(f .. " +%S", out) end
    for _, p in ipairs({ "lock", "range_lock", "create", "replace", "durability" }) do
      assert.matches("\n  " .. p .. " +%S", out)
    end
    -- and leaves nothing behind in the directory it probed
    local _, ls = H.sh("ls -A " .. H.q(dir))
    assert.equal("", ls)
  end)

  it("names the filesystem type and finds everything working on ext4", function()
    local t = fstype(dir)
    if t ~= "ext4" then
      pending("/tmp is " .. tostring(t) .. " here, not ext4")
      return
    end
    local st, out = H.run("doctor", dir)
    assert.equal(0, st)
    assert.matches("%(ext4%)", out)
    for _, f in ipairs(FEATURES) do assert.matches(f .. " +yes\n", out) end
    assert.matches("a replace survives a crash", out)
    assert.is_nil(out:find("warning", 1, true))
  end)

  it("warns on tmpfs (/dev/shm) that durability means nothing", function()
    if fstype("/dev/shm") ~= "tmpfs" then
      pending("no tmpfs at /dev/shm")
      return
    end
    local st, out = H.run("doctor", "/dev/shm")
    assert.equal(0, st)
    assert.matches("%(tmpfs, in memory%)", out)
    assert.matches("warning: tmpfs keeps files in memory", out)
    assert.matches("nothing survives a reboot", out)
  end)

  it("--json prints one JSON object with the same facts", function()
    local st, out = H.run("doctor", dir, "--json")
    assert.equal(0, st)
    assert.matches("^{.*}\n$", out)
    local r = ar.json.decode(out)
    assert.equal(dir, r.dir)
    assert.equal("string", type(r.fstype))
    assert.equal("boolean", type(r.remote))
    assert.equal("boolean", type(r.volatile))
    -- the probes by atomrun.probe()'s names, with its values
    local p = ar.probe(dir)
    for _, k in ipairs({ "flock", "ofd", "tmpfile", "noreplace", "dirsync" }) do
      assert.is_not_nil(r.probes[k], k)
      assert.equal(p[k], r.probes[k], k)
    end
    -- primitives are machine values; the sentences are apart, in explain
    local kinds = { lock = { flock = 1, none = 1 }, range_lock = { ofd = 1, posix = 1 },
      create = { tmpfile = 1, noreplace = 1, link = 1 }, replace = { tmpfile = 1, rename = 1 },
      durability = { ["crash-safe"] = 1, volatile = 1, ["not-crash-safe"] = 1 } }
    for k, allowed in pairs(kinds) do
      assert.truthy(allowed[r.primitives[k]], k .. " = " .. tostring(r.primitives[k]))
      assert.equal("string", type(r.explain[k]), k)
      assert.truthy(#r.explain[k] > 10, k)
    end
    assert.equal("table", type(r.warnings))
    local _, text = H.run("doctor", dir)
    assert.truthy(text:find("(" .. r.fstype, 1, true))
    if fstype(dir) == "ext4" then
      assert.equal(true, r.probes.flock)
      assert.equal(false, r.volatile)
      assert.matches('"warnings":%[%]', out)     -- a list, even when empty
    end
  end)

  it("--json on tmpfs has volatile true and the warning in a list", function()
    if fstype("/dev/shm") ~= "tmpfs" then
      pending("no tmpfs at /dev/shm")
      return
    end
    local st, out = H.run("doctor", "--json", "/dev/shm")
    assert.equal(0, st)
    local r = ar.json.decode(out)
    assert.equal("tmpfs", r.fstype)
    assert.is_true(r.volatile)
    assert.equal(1, #r.warnings)
    assert.matches("in memory", r.warnings[1])
  end)

  it("probes the current directory by default", function()
    local st, out = H.sh("cd " .. H.q(dir) .. " && " .. H.q(H.atomrun) .. " doctor --json")
    assert.equal(0, st)
    assert.equal(".", ar.json.decode(out).dir)
  end)

  it("fails with exit 1 and the reason for a missing directory or a file", function()
    local st, out, err = H.run("doctor", dir .. "/nope")
    assert.equal(1, st)
    assert.equal("", out)
    assert.matches("^atomrun: cannot probe .*/nope: No such file or directory\n$", err)
    H.write(dir .. "/file", "")
    st, out, err = H.run("doctor", dir .. "/file", "--json")
    assert.equal(1, st)
    assert.matches("Not a directory", err)
    -- --json: an error object on stdout too, as who --json gives
    local r = ar.json.decode(out)
    assert.equal(dir .. "/file", r.dir)
    assert.equal("ENOTDIR", r.error)
    assert.matches("Not a directory", r.message)
  end)

  -- Where no scratch file can be made the report still comes, with the
  -- filesystem type; the probes that need one say "not tested" and why,
  -- and the exit status is 2 (an incomplete report), never 0 or 1.
  local function incomplete(out, st, why, fs)
    assert.equal(2, st, out)
    if fs then assert.matches("%(" .. fs, out) end
    for _, f in ipairs({ "flock%(2%) whole%-file locks", "OFD byte%-range locks",
        "O_TMPFILE unnamed temp files", "renameat2%(RENAME_NOREPLACE%)" }) do
      assert.matches(f .. " +not tested\n", out)
    end
    assert.matches("not tested: flock, ofd, tmpfile, noreplace: no scratch file could be "
      .. "created in .* %(" .. why .. "%)", out)
    -- no primitive is promised where no write can succeed
    for _, k in ipairs({ "lock", "range_lock", "create", "replace", "durability" }) do
      assert.matches("\n  " .. k .. " +not tested here %(no scratch file could be created: "
        .. why .. "%)", out)
    end
    assert.is_nil(out:find("does NOT exclude", 1, true), out)   -- no false alarm
    assert.is_nil(out:find("survives a crash", 1, true), out)
    assert.is_nil(out:find("leaves nothing behind", 1, true), out)
  end

  it("on /proc reports the type and which probes it could not run (exit 2)", function()
    local st, out, err = H.run("doctor", "/proc")
    assert.equal("", err)
    incomplete(out, st, "E%u+", "proc")
    st, out = H.run("doctor", "--json", "/proc")
    assert.equal(2, st)
    local r = ar.json.decode(out)
    assert.equal("proc", r.fstype)
    assert.equal(4, #r.skipped)
    assert.equal("flock", r.skipped[1].probe)
    assert.matches("^E%u+$", r.skipped[1].reason)
    assert.is_nil(r.probes.flock)                 -- not run: no result
    assert.is_nil(r.probes.tmpfile)
    assert.is_not_nil(r.probes.dirsync)           -- this one could run
    for _, k in ipairs({ "lock", "range_lock", "create", "replace", "durability" }) do
      assert.equal("untested", r.primitives[k], k)
    end
  end)

  it("on a directory it cannot write (as uid 65534) says so (exit 2)", function()
    if ar.uid() ~= 0 then
      pending("needs root to run as uid 65534")
      return
    end
    local copy = dir .. "/atomrun"
    assert.equal(0, (H.sh("cp " .. H.q(H.atomrun) .. " " .. H.q(copy) .. " && mkdir "
      .. H.q(dir .. "/closed") .. " && chmod 755 " .. H.q(dir) .. " " .. H.q(dir .. "/closed"))))
    local st, out = H.sh("setpriv --reuid=65534 --regid=65534 --clear-groups " .. H.q(copy)
      .. " doctor " .. H.q(dir .. "/closed"))
    incomplete(out, st, "EACCES")
    assert.same({}, H.listdir(dir .. "/closed"))
  end)

  it("on a read-only filesystem (tmpfs remounted ro, private namespace) says so (exit 2)", function()
    local ro = dir .. "/ro"
    assert.is_true(ar.mkdir(ro))
    local script = "mount -t tmpfs -o size=64k tmpfs " .. H.q(ro) .. " && mount -o remount,ro "
      .. H.q(ro) .. " && exec " .. H.q(H.atomrun) .. " doctor " .. H.q(ro)
    local st, out, err = H.sh("unshare -m sh -c " .. H.q(script))
    if st ~= 2 and err:find("unshare", 1, true) then
      pending("unshare -m / mount -t tmpfs not permitted here: " .. err)
      return
    end
    incomplete(out, st, "EROFS", "tmpfs")
  end)

  it("exits 64 on usage errors, worded as getopt_long's", function()
    for _, case in ipairs({
      { { "--bogus" }, "atomrun: unrecognized option '%-%-bogus'" },
      { { dir, dir }, "atomrun: doctor takes one directory" },
      { { "-j", dir }, "atomrun: invalid option %-%- 'j'" },
      { { "--json=yes", dir }, "atomrun: option '%-%-json' doesn't allow an argument" },
    }) do
      local args, want = case[1], case[2]
      local st, out, err = H.run("doctor", table.unpack(args))
      assert.equal(64, st, table.concat(args, " "))
      assert.equal("", out)
      assert.matches("^" .. want .. "\nTry 'atomrun doctor %-%-help' for more information%.\n$", err)
    end
  end)

  it("takes options anywhere and unambiguous prefixes (--js)", function()
    local st, out = H.run("doctor", dir, "--js")
    assert.equal(0, st)
    assert.truthy(ar.json.decode(out))
    st, out = H.run("doctor", "--", dir)
    assert.equal(0, st)
    assert.matches("atomrun doctor: ", out)
  end)

  it("--help prints the usage, exit 0", function()
    local st, out = H.run("doctor", "--help")
    assert.equal(0, st)
    assert.matches("^usage: atomrun doctor", out)
  end)
end)
