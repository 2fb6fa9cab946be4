-- spec/symlink_spec.lua -- issue 23, point 10: root never follows another
-- user's symlink planted in a sticky world-writable directory (/tmp), at
-- the last component or at a middle one, whatever fs.protected_symlinks
-- says.  Two real users: the links are planted by uid 65534 (setpriv),
-- the calls run as root, and the victim is a root-only file.
local H = require "spec.helper"
local ar = H.ar

local NOBODY = "setpriv --reuid=65534 --regid=65534 --clear-groups "
local VICTIM = "root only\n"

describe("protected symlinks", function()
  local dir, sticky, secret, victim, evil, evildir

  -- as nobody: ln -s target link (false when setpriv cannot)
  local function plant(target, link)
    return H.sh(NOBODY .. "ln -s " .. H.q(target) .. " " .. H.q(link)) == 0
  end

  before_each(function()
    if ar.uid() ~= 0 then return end
    dir = H.tmpdir()
    assert(os.execute("chmod 755 " .. H.q(dir)))
    sticky = dir .. "/tmp"                    -- /tmp-like: 1777, root's
    secret = dir .. "/secret"                 -- root-only
    assert(os.execute("mkdir -m 1777 " .. H.q(sticky) .. " && mkdir -m 700 " .. H.q(secret)))
    victim = secret .. "/victim.conf"
    H.write(victim, VICTIM)
    assert(os.execute("chmod 600 " .. H.q(victim)))
    evil, evildir = sticky .. "/evil", sticky .. "/evildir"
  end)
  after_each(function() H.cleanup_procs() end)

  local function need_users()
    if ar.uid() ~= 0 then pending("needs root to act as two users") return false end
    if not plant(victim, evil) or not plant(secret, evildir) then
      pending("cannot create a link as another user (setpriv)")
      return false
    end
    return true
  end

  -- The victim and its directory are exactly as they were; the sticky
  -- directory holds only the planted links (no temp file, no sidecar).
  local function untouched(planted)
    assert.equal(VICTIM, H.slurp(victim))
    assert.same({ "victim.conf" }, H.listdir(secret))
    assert.same(planted or { "evil", "evildir" }, H.listdir(sticky))
  end

  local function refused(link, ok, msg, code)
    assert.is_nil(ok)
    assert.equal("EACCES", code)
    assert.matches("refusing to follow the symlink " .. H.pat(link) .. " %(owned by uid 65534%) "
      .. "in the sticky world%-writable directory " .. H.pat(sticky) .. "$", msg)
  end

  it("every call that follows the last component refuses another user's link", function()
    if not need_users() then return end
    local called = false
    refused(evil, ar.update(evil, function() called = true return "pwned\n" end))
    assert.is_false(called)
    refused(evil, ar.status(evil):write({ pwned = true }))
    local ok, msg, code, stage = ar.replace(evil, "pwned\n", { follow = true })
    refused(evil, ok, msg, code)
    assert.equal("resolve", stage)
    refused(evil, ar.replace(evil, function() return nil end, { follow = true }))
    refused(evil, ar.read(evil))
    refused(evil, ar.status(evil):read())
    refused(evil, ar.lock(evil, { follow = true }))
    refused(evil, ar.lock(evil, { follow = "protected" }))
    refused(evil, ar.resolve(evil))
    -- without follow nothing is followed: lock refuses the link as such,
    -- create finds the name taken
    assert.equal("ELOOP", select(3, ar.lock(evil)))
    assert.equal("exists", select(3, ar.create(evil, "x")))
    untouched()
  end)

  it("a link to a directory at a middle component is refused, with or without follow", function()
    if not need_users() then return end
    local inside = evildir .. "/victim.conf"
    refused(evildir, ar.update(inside, function() return "pwned\n" end))
    refused(evildir, ar.update(inside, function() return "pwned\n" end, { follow = false }))
    refused(evildir, ar.status(inside):write({ pwned = true }))
    refused(evildir, ar.replace(inside, "pwned\n"))
    refused(evildir, ar.create(evildir .. "/new", "x"))
    refused(evildir, ar.create(evildir .. "/new"))
    refused(evildir, ar.read(inside))
    refused(evildir, ar.lock(inside .. ".lock"))
    refused(evildir, ar.open(inside))
    refused(evildir, ar.mkdir(evildir .. "/sub"))
    -- a chain: our own link to theirs is refused at theirs
    assert(os.execute("ln -s evildir " .. H.q(sticky .. "/mine")))
    refused(evildir, ar.read(sticky .. "/mine/victim.conf"))
    untouched({ "evil", "evildir", "mine" })
  end)

  it("atomrun lock refuses it, runs nothing and says which link", function()
    if not need_users() then return end
    for _, path in ipairs({ evil, evildir .. "/victim.conf" }) do
      local st, out, err = H.run("lock", path, "echo", "ran")
      assert.equal(66, st)
      assert.equal("", out)
      local link = path == evil and evil or evildir
      assert.equal("atomrun: cannot open lock file " .. path .. ": Permission denied\n"
        .. "atomrun: refusing to follow the symlink " .. link .. " (owned by uid 65534) in the "
        .. "sticky world-writable directory " .. sticky .. "\n", err)
    end
    untouched()
  end)

  it("our own links, the directory owner's links and links elsewhere work as before", function()
    if ar.uid() ~= 0 then pending("needs root to act as two users") return end
    -- root's own link in the sticky directory, last and middle component
    assert(os.execute("ln -s " .. H.q(victim) .. " " .. H.q(sticky .. "/mine")
      .. " && ln -s " .. H.q(secret) .. " " .. H.q(sticky .. "/minedir")))
    local mine = sticky .. "/mine"
    assert.equal("root only\nmore\n", ar.update(mine, function(old) return old .. "more\n" end))
    assert.equal("root only\nmore\n", H.slurp(victim))
    assert.equal("link", ar.stat(mine, false).type)          -- the link stays a link
    assert.is_true(H.exists(victim .. ".lock"))              -- the target's sidecar
    assert.is_true(ar.status(mine):write({ n = 1 }))
    assert.equal(1, ar.status(mine):read().n)
    assert.is_true(ar.replace(mine, "replaced\n", { follow = true }))
    assert.equal("replaced\n", ar.read(mine))
    assert.equal(victim, ar.resolve(mine))
    ar.lock(mine, { follow = true }):unlock()
    assert.is_true(ar.create(sticky .. "/minedir/new", "x"))
    assert.equal("x", ar.read(secret .. "/new"))
    assert.equal(0, (H.run("lock", mine, "true")))
    -- a sticky directory that nobody owns: nobody's link in it is followed
    local theirs = dir .. "/theirs"
    assert(os.execute("mkdir -m 1777 " .. H.q(theirs) .. " && chown 65534 " .. H.q(theirs)))
    if not plant(victim, theirs .. "/link") then pending("setpriv cannot plant a link") return end
    assert.equal("replaced\n", ar.read(theirs .. "/link"))
    ar.lock(theirs .. "/link", { follow = true }):unlock()
    -- an ordinary directory: another user's link is followed
    local plain = dir .. "/plain"
    assert(os.execute("mkdir -m 755 " .. H.q(plain) .. " && ln -s " .. H.q(victim) .. " "
      .. H.q(plain .. "/link") .. " && chown -h 65534:65534 " .. H.q(plain .. "/link")))
    assert.equal("replaced\n", ar.read(plain .. "/link"))
    assert.is_true(ar.replace(plain .. "/link", "again\n", { follow = true }))
    assert.equal("again\n", H.slurp(victim))
    assert.equal(0, (H.run("lock", plain .. "/link", "true")))
  end)

  it("paths with dots, slashes and relative links walk as the kernel walks them", function()
    local d = H.tmpdir()
    assert(ar.mkdir(d .. "/a/b"))
    H.write(d .. "/a/b/f", "F")
    assert(os.execute("ln -s a/b " .. H.q(d .. "/ab") .. " && ln -s ../b/f " .. H.q(d .. "/a/b/up")
      .. " && ln -s " .. H.q(d .. "/a") .. " " .. H.q(d .. "/abs")))
    assert.equal("F", ar.read(d .. "//a/./b//f"))
    assert.equal("F", ar.read(d .. "/ab/f"))
    assert.equal("F", ar.read(d .. "/ab/up"))                -- .. after a link: the target's parent
    assert.equal("F", ar.read(d .. "/abs/b/../b/f"))
    assert.equal("F", ar.read(d .. "/ab/../b/f"))
    assert.equal(d .. "/ab/../b/f", ar.resolve(d .. "/ab/up"))
    assert.equal("EISDIR", select(3, ar.read(d .. "/ab/")))
    assert.equal("ENOTDIR", select(3, ar.read(d .. "/a/b/f/x")))
    ar.lock(d .. "/ab/", { follow = true }):unlock()         -- a directory, as flock(1) allows
    -- missing directories are made through our own middle link, and a
    -- dangling last link's target directory with follow
    assert.is_true(ar.replace(d .. "/ab/new/deeper/g", "G"))
    assert.equal("G", H.slurp(d .. "/a/b/new/deeper/g"))
    assert(os.execute("ln -s made/here/h " .. H.q(d .. "/dangling")))
    assert.is_true(ar.replace(d .. "/dangling", "H", { follow = true }))
    assert.equal("H", H.slurp(d .. "/made/here/h"))
    -- but never the directories a dangling middle link points to (mkdir -p)
    assert(os.execute("ln -s nowhere " .. H.q(d .. "/dm")))
    assert.equal("ENOENT", select(3, ar.create(d .. "/dm/x", "x")))
    assert.is_false(H.exists(d .. "/nowhere"))
    -- /proc magic links: the kernel follows them
    assert.equal(H.slurp("/proc/self/status"):match("^Name"), ar.read("/proc/self/status"):match("^Name"))
    local f = assert(io.open(d .. "/a/b/f"))
    local st, out = H.sh(H.cmd("-e", "io.write(require('atomrun').read('/dev/stdin'))") .. " <"
      .. H.q(d .. "/a/b/f"))
    f:close()
    assert.same({ 0, "F" }, { st, out })
  end)
end)
