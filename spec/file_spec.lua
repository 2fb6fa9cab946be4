-- Exclusive create, atomic replace and read, with real processes:
-- racing creators, readers that watch an 8 MiB create, a non-root child for
-- EACCES.  Every failure must also leave the directory clean: no temp file,
-- not even a hidden one.
local H = require "spec.helper"
local ar = H.ar
local gone, wait_gone, listdir = H.gone, H.wait_exit, H.listdir
local script, atomrun_cmd = H.script, H.cmd

local function perm(path, follow)
  local st = assert(ar.stat(path, follow))
  return st.mode
end

local function octal(s) return tonumber(s, 8) end

describe("atomrun.create", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  it("without data creates an empty file, then says 'exists'", function()
    local p = dir .. "/empty"
    assert.is_true(ar.create(p))
    assert.equal("", H.slurp(p))
    assert.equal("file", ar.stat(p).type)
    local ok, msg, code = ar.create(p)
    assert.is_nil(ok)
    assert.equal("exists", code)
    assert.matches("already exists", msg)
    assert.truthy(msg:find(p, 1, true))
    assert.same({ "empty" }, listdir(dir))
  end)

  it("with data writes it, and never touches an existing file", function()
    local p = dir .. "/f"
    assert.is_true(ar.create(p, "first\n"))
    assert.equal("first\n", H.slurp(p))
    local ok, _, code = ar.create(p, "second\n")
    assert.is_nil(ok)
    assert.equal("exists", code)
    assert.equal("first\n", H.slurp(p))
    assert.same({ "f" }, listdir(dir))
  end)

  it("treats a dangling symlink or a directory at path as 'exists'", function()
    assert.equal(0, (H.sh("ln -s nowhere " .. H.q(dir .. "/link"))))
    assert.equal(0, (H.sh("mkdir " .. H.q(dir .. "/sub"))))
    for _, name in ipairs({ "link", "sub" }) do
      local ok, _, code = ar.create(dir .. "/" .. name, "x")
      assert.is_nil(ok)
      assert.equal("exists", code)
      ok, _, code = ar.create(dir .. "/" .. name)
      assert.is_nil(ok)
      assert.equal("exists", code)
    end
    assert.is_false(H.exists(dir .. "/nowhere"))
    assert.same({ "link", "sub" }, listdir(dir))
  end)

  it("applies opts.mode exactly, with and without data", function()
    assert.is_true(ar.create(dir .. "/a", "x", { mode = octal("640") }))
    assert.is_true(ar.create(dir .. "/b", nil, { mode = octal("600") }))
    assert.equal(octal("640"), perm(dir .. "/a"))
    assert.equal(octal("600"), perm(dir .. "/b"))
  end)

  it("lets exactly one of 16 racing processes win, with and without data", function()
    local racer = script(dir, "racer.lua", [[
      local a = require "atomrun"
      local dir, id = arg[1], arg[2]
      local f = assert(io.open(dir .. "/ready." .. id, "w")); f:close()
      while not a.stat(dir .. "/go") do a.sleep(0.001) end
      local ok1, _, c1 = a.create(dir .. "/race/data", "winner " .. id .. "\n")
      local ok2, _, c2 = a.create(dir .. "/race/empty")
      f = assert(io.open(dir .. "/res." .. id, "w"))
      f:write(tostring(ok1 or c1), " ", tostring(ok2 or c2), "\n")
      f:close()
    ]])
    assert.is_true(ar.mkdir(dir .. "/race"))
    local n, pids = 16, {}
    for i = 1, n do pids[i] = H.spawn(atomrun_cmd(racer, dir, i)) end
    assert.is_true(H.wait_until(function()
      for i = 1, n do if not H.exists(dir .. "/ready." .. i) then return false end end
      return true
    end, 30), "racers did not start")
    H.write(dir .. "/go", "")
    for i = 1, n do assert.is_true(wait_gone(pids[i], 30)) end
    local wins1, wins2, winner = 0, 0, nil
    for i = 1, n do
      local a, b = H.slurp(dir .. "/res." .. i):match("^(%S+) (%S+)\n$")
      assert.truthy(a, "racer " .. i .. " left no result")
      assert.truthy(a == "true" or a == "exists", a)
      assert.truthy(b == "true" or b == "exists", b)
      if a == "true" then wins1, winner = wins1 + 1, i end
      if b == "true" then wins2 = wins2 + 1 end
    end
    assert.equal(1, wins1)
    assert.equal(1, wins2)
    assert.equal("winner " .. winner .. "\n", H.slurp(dir .. "/race/data"))
    assert.same({ "data", "empty" }, listdir(dir .. "/race"))
  end)

  it("is never observed partially written (8 MiB, parallel readers)", function()
    local size = 8 * 1024 * 1024
    local reader = script(dir, "reader.lua", [[
      local a = require "atomrun"
      local path, marker, size = arg[1], arg[2], tonumber(arg[3])
      local block = {}
      for i = 0, 4095 do block[#block + 1] = string.char(33 + (i * 7 + i // 64) % 90) end
      local expected = string.rep(table.concat(block), size // 4096)
      local misses, seen, bad, ready = 0, 0, nil, false
      local deadline = a.now() + 60
      while seen < 2 and a.now() < deadline do
        local d, err, code = a.read(path)
        if d then
          seen = seen + 1
          if d ~= expected then bad = "torn: " .. #d .. " bytes"; break end
        elseif code == "ENOENT" then
          misses = misses + 1
          if not ready then   -- "ready" only once we are surely reading
            ready = true
            local f = assert(io.open(marker .. ".ready", "w")); f:close()
          end
        else
          bad = err; break
        end
      end
      local f = assert(io.open(marker, "w"))
      f:write(bad or ("ok " .. seen .. " " .. misses))
      f:close()
    ]])
    local path = dir .. "/big"
    local n, pids = 2, {}
    for i = 1, n do pids[i] = H.spawn(atomrun_cmd(reader, path, dir .. "/r" .. i, size)) end
    assert.is_true(H.wait_until(function()
      for i = 1, n do if not H.exists(dir .. "/r" .. i .. ".ready") then return false end end
      return true
    end, 30), "readers did not start")
    local block = {}
    for i = 0, 4095 do block[#block + 1] = string.char(33 + (i * 7 + i // 64) % 90) end
    assert.is_true(ar.create(path, string.rep(table.concat(block), size // 4096)))
    for i = 1, n do
      assert.is_true(wait_gone(pids[i], 60))
      local res = H.slurp(dir .. "/r" .. i)
      assert.matches("^ok 2 %d+$", res)
    end
    assert.equal(size, ar.stat(path).size)
  end)
end)

describe("atomrun.replace", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  it("replaces the contents, swapping the inode (never writing in place)", function()
    local p = dir .. "/f"
    H.write(p, "old contents\n")
    local ino = ar.stat(p).ino
    assert.is_true(ar.replace(p, "new\n"))
    assert.equal("new\n", H.slurp(p))
    assert.not_equal(ino, ar.stat(p).ino)
    assert.is_true(ar.replace(p, "again\n", { durable = false }))
    assert.equal("again\n", H.slurp(p))
    assert.same({ "f" }, listdir(dir))
  end)

  it("keeps the old file's mode (0640) and, as root, its owner", function()
    local p = dir .. "/f"
    H.write(p, "old")
    assert.equal(0, (H.sh("chmod 640 " .. H.q(p))))
    local root = ar.uid() == 0
    if root then assert.equal(0, (H.sh("chown 65534:65534 " .. H.q(p)))) end
    assert.is_true(ar.replace(p, "new"))
    local st = ar.stat(p)
    assert.equal(octal("640"), st.mode)
    if root then
      assert.equal(65534, st.uid)
      assert.equal(65534, st.gid)
    end
    -- set-id bits survive too (fchmod after fchown, which clears them)
    assert.equal(0, (H.sh("chmod 2750 " .. H.q(p))))
    assert.is_true(ar.replace(p, "newer"))
    assert.equal(octal("2750"), ar.stat(p).mode)
  end)

  it("uses opts.mode when given", function()
    local p = dir .. "/f"
    H.write(p, "old")
    assert.is_true(ar.replace(p, "new", { mode = octal("600") }))
    assert.equal(octal("600"), perm(p))
    assert.is_true(ar.replace(dir .. "/fresh", "x", { mode = octal("604") }))
    assert.equal(octal("604"), perm(dir .. "/fresh"))
  end)

  it("creates new files 0666 & ~umask (create and replace alike)", function()
    local job = script(dir, "umask.lua", [[
      local a = require "atomrun"
      local d = arg[1]
      assert(a.replace(d .. "/r", "x"))
      assert(a.create(d .. "/c", "x"))
      assert(a.create(d .. "/e"))
    ]])
    local st, _, err = H.sh("umask 027 && " .. atomrun_cmd(job, dir))
    assert.equal(0, st, err)
    for _, name in ipairs({ "r", "c", "e" }) do
      assert.equal(octal("640"), perm(dir .. "/" .. name), name)
    end
    st, _, err = H.sh("umask 002 && " .. atomrun_cmd("-e", "assert(atomrun.replace(arg[1], 'x'))",
      dir .. "/r2"))
    assert.equal(0, st, err)
    assert.equal(octal("664"), perm(dir .. "/r2"))
  end)

  it("with follow=false replaces a symlink itself, leaving its target alone", function()
    H.write(dir .. "/target", "target\n")
    assert.equal(0, (H.sh("ln -s target " .. H.q(dir .. "/link"))))
    assert.is_true(ar.replace(dir .. "/link", "new\n"))
    assert.equal("file", ar.stat(dir .. "/link", false).type)
    assert.equal("new\n", H.slurp(dir .. "/link"))
    assert.equal("target\n", H.slurp(dir .. "/target"))
    assert.same({ "link", "target" }, listdir(dir))
  end)

  it("with follow=true replaces the target (through a chain), keeping the links", function()
    assert.is_true(ar.mkdir(dir .. "/real"))
    H.write(dir .. "/real/target", "target\n")
    assert.equal(0, (H.sh("chmod 600 " .. H.q(dir .. "/real/target"))))
    assert.equal(0, (H.sh("ln -s real/target " .. H.q(dir .. "/l1"))))
    assert.equal(0, (H.sh("ln -s " .. H.q(dir .. "/l1") .. " " .. H.q(dir .. "/l2"))))
    assert.is_true(ar.replace(dir .. "/l2", "via link\n", { follow = true }))
    assert.equal("link", ar.stat(dir .. "/l2", false).type)
    assert.equal("link", ar.stat(dir .. "/l1", false).type)
    assert.equal("via link\n", H.slurp(dir .. "/real/target"))
    assert.equal(octal("600"), perm(dir .. "/real/target"))
    -- a dangling link: its target is created
    assert.equal(0, (H.sh("ln -s real/new " .. H.q(dir .. "/l3"))))
    assert.is_true(ar.replace(dir .. "/l3", "born\n", { follow = true }))
    assert.equal("born\n", H.slurp(dir .. "/real/new"))
    assert.equal("link", ar.stat(dir .. "/l3", false).type)
    -- a loop is ELOOP, not a hang
    assert.equal(0, (H.sh("ln -s loopB " .. H.q(dir .. "/loopA") .. " && ln -s loopA "
      .. H.q(dir .. "/loopB"))))
    local ok, _, code = ar.replace(dir .. "/loopA", "x", { follow = true })
    assert.is_nil(ok)
    assert.equal("ELOOP", code)
    assert.same({ "l1", "l2", "l3", "loopA", "loopB", "real" }, listdir(dir))
    assert.same({ "new", "target" }, listdir(dir .. "/real"))
  end)

  it("is binary-safe (NULs, every byte value), as are create and read", function()
    local t = {}
    for i = 0, 255 do t[#t + 1] = string.char(i) end
    local bin = "\0head\0" .. table.concat(t) .. "\0\0tail\0"
    assert.is_true(ar.replace(dir .. "/r", bin))
    assert.is_true(ar.create(dir .. "/c", bin))
    assert.equal(bin, H.slurp(dir .. "/r"))
    assert.equal(bin, ar.read(dir .. "/r"))
    assert.equal(bin, ar.read(dir .. "/c"))
    assert.is_true(ar.replace(dir .. "/r", ""))
    assert.equal("", ar.read(dir .. "/r"))
  end)
end)

describe("a mistyped etcd name is refused, never a local file", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  it("lock, open, create, replace and read: nil, the expected form, EINVAL; nothing created", function()
    local cwd = H.root
    for _, name in ipairs({ "etcd:/127.0.0.1:2379/x", "etcd:127.0.0.1:2379/x",
        "etcd//127.0.0.1:2379/x", "ETCD:/h/x", "etcd+https:/h:2379/x", "etcd+https//h/x" }) do
      local calls = {
        function() return ar.lock(name, { wait = false }) end,
        function() return ar.open(name) end,
        function() return ar.create(name, "x") end,
        function() return ar.replace(name, "x") end,
        function() return ar.read(name) end,
      }
      for i, call in ipairs(calls) do
        local v, msg, code = call()
        assert.is_nil(v, name .. " #" .. i)
        assert.equal("EINVAL", code, name .. " #" .. i)
        assert.matches("looks like a mistyped etcd name, not a file: the form is etcd://HOST:PORT",
          msg, nil, true)
      end
      assert.is_falsy(H.exists(cwd .. "/" .. name:match("^[^/]*")), name)
    end
    -- a path that merely starts with the word is a path; literal takes any name
    local lk = assert(ar.lock(dir .. "/etcd.lock"))
    lk:unlock()
    local old = H.sh("cd " .. H.q(dir) .. " && " .. H.q(H.atomrun) .. " -e "
      .. H.q("assert(atomrun.lock('etcd:x', { literal = true })):unlock()"))
    assert.equal(0, old)
    assert.is_true(H.exists(dir .. "/etcd:x"))
  end)
end)

describe("create/replace/read failures", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  local function fails(code, ok, msg, c)
    assert.is_nil(ok)
    assert.equal("string", type(msg))
    assert.equal(code, c, msg)
    return msg
  end

  it("creates a missing directory (with its parents), as lock does", function()
    assert.is_true(ar.replace(dir .. "/a/b/f", "x"))
    assert.equal("x", H.slurp(dir .. "/a/b/f"))
    assert.is_true(ar.create(dir .. "/c/d/f", "y"))
    assert.equal("y", H.slurp(dir .. "/c/d/f"))
    assert.is_true(ar.create(dir .. "/e/f/g"))
    assert.equal("", H.slurp(dir .. "/e/f/g"))
    assert.equal("directory", ar.stat(dir .. "/a/b").type)
    fails("ENOENT", ar.read(dir .. "/missing/f"))     -- read creates nothing
    assert.is_false(H.exists(dir .. "/missing"))
  end)

  it("names a directory that cannot be made as such, not as 'cannot open'", function()
    H.write(dir .. "/plain", "p")
    local p = dir .. "/plain/sub/f"
    for _, call in ipairs({ function() return ar.replace(p, "x") end,
        function() return ar.create(p, "x") end, function() return ar.create(p) end }) do
      local msg = fails("ENOTDIR", call())
      assert.truthy(msg:find(p, 1, true), msg)
      assert.matches("cannot create its directory", msg)
      assert.is_nil(msg:find("intact", 1, true), msg)
      assert.is_nil(msg:find("cannot open", 1, true), msg)
    end
    assert.equal("p", H.slurp(dir .. "/plain"))
  end)

  it("EISDIR when path is a directory (replace, read)", function()
    assert.is_true(ar.mkdir(dir .. "/sub"))
    H.write(dir .. "/sub/keep", "k")
    fails("EISDIR", ar.replace(dir .. "/sub", "x"))
    fails("EISDIR", ar.replace(dir .. "/sub/", "x"))
    fails("EISDIR", ar.read(dir .. "/sub"))
    assert.same({ "sub" }, listdir(dir))
    assert.same({ "keep" }, listdir(dir .. "/sub"))
  end)

  it("EACCES for a user who cannot write the directory; the old file is intact", function()
    local ro = dir .. "/ro"
    assert.is_true(ar.mkdir(ro))
    H.write(ro .. "/f", "old\n")
    assert.equal(0, (H.sh("chmod 755 " .. H.q(dir) .. " " .. H.q(ro) .. " && chmod 666 "
      .. H.q(ro .. "/f"))))
    local job = script(dir, "eacces.lua", [[
      local a = require "atomrun"
      local ro = arg[1]
      local out = {}
      local msgs = {}
      local function rec(ok, msg, code)
        out[#out + 1] = tostring(ok or code)
        msgs[#msgs + 1] = tostring(msg)
      end
      rec(a.replace(ro .. "/f", "new\n"))
      rec(a.replace(ro .. "/g", "new\n"))
      rec(a.create(ro .. "/g", "new\n"))
      rec(a.create(ro .. "/g"))
      print(table.concat(out, " "))
      for _, m in ipairs(msgs) do print(m) end
    ]])
    local cmd = atomrun_cmd(job, ro)
    if ar.uid() == 0 then
      -- a copy of the binary: the build tree may not be reachable for
      -- nobody (a checkout under /root); the binary is self-contained
      local st, _, err = H.sh("cp " .. H.q(H.atomrun) .. " " .. H.q(dir .. "/atomrun"))
      assert.equal(0, st, err)
      cmd = "setpriv --reuid=65534 --regid=65534 --clear-groups " .. H.q(dir .. "/atomrun")
        .. " " .. H.q(job) .. " " .. H.q(ro)
    end
    local st, out, err = H.sh(cmd)
    assert.equal(0, st, err)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal("EACCES EACCES EACCES EACCES", lines[1])
    -- the directory is named as what cannot be written; "intact" only
    -- where there were old contents
    for i = 2, 5 do
      assert.truthy(lines[i]:find("cannot create a file in directory " .. ro, 1, true), lines[i])
    end
    assert.truthy(lines[2]:find("(the old contents are intact)", 1, true), lines[2])
    for i = 3, 5 do assert.is_nil(lines[i]:find("intact", 1, true), lines[i]) end
    assert.equal("old\n", H.slurp(ro .. "/f"))
    assert.same({ "f" }, listdir(ro))
  end)

  it("read: a FIFO fails at once (no blocking), /proc files are read whole", function()
    assert.equal(0, (H.sh("mkfifo " .. H.q(dir .. "/fifo"))))
    -- in a child under timeout(1): if the open blocked, the spec must not hang
    local st, out = H.sh("timeout 10 " .. atomrun_cmd("-e",
      "print(select(3, atomrun.read(arg[1])))", dir .. "/fifo"))
    assert.equal(0, st)
    assert.equal("EINVAL\n", out)
    local ok, msg, code = ar.read(dir .. "/fifo")
    assert.is_nil(ok)
    assert.equal("EINVAL", code)
    assert.matches("not a regular file", msg)
    local status = assert(ar.read("/proc/self/status"))
    assert.matches("\nUmask:", status)
    assert.matches("\nVmRSS:", status)     -- st_size is 0 there: read to EOF
    assert.equal("\n", status:sub(-1))
    local maps = assert(ar.read("/proc/self/maps"))
    assert.truthy(#maps > 0)
    fails("ENOENT", ar.read(dir .. "/nope"))
  end)

  it("raises an error naming the argument for bad input, leaving nothing behind", function()
    local p = dir .. "/f"
    local cases = {
      { "#2", function() ar.create(p, {}) end },
      { "#2", function() ar.create(p, true) end },
      { "#2", function() ar.create(p, 42) end },
      { "#2", function() ar.replace(p, 42) end },
      { "#2", function() ar.replace(p) end },
      { "#2", function() ar.replace(p, {}) end },
      { "#3", function() ar.replace(p, "x", { bogus = 1 }) end },
      { "#3", function() ar.create(p, "x", { follow = true }) end },
      { "#3", function() ar.replace(p, "x", { mode = "0640" }) end },
      { "#3", function() ar.replace(p, "x", { mode = 1.5 }) end },
      { "#3", function() ar.replace(p, "x", { mode = -1 }) end },
      { "#3", function() ar.create(p, "x", { mode = 65536 }) end },
      { "#3", function() ar.replace(p, "x", { durable = "yes" }) end },
      { "#3", function() ar.replace(p, "x", { follow = 1 }) end },
      { "#3", function() ar.replace(p, "x", "durable") end },
      { "#1", function() ar.replace(p .. "\0x", "x") end },
      { "#1", function() ar.create(p .. "\0x", "x") end },
      { "#1", function() ar.read(p .. "\0x") end },
      { "#1", function() ar.replace(nil, "x") end },
      { "#1", function() ar.create({}) end },
    }
    for i, c in ipairs(cases) do
      local ok, err = pcall(c[2])
      assert.is_false(ok, "case " .. i .. " did not raise")
      assert.truthy(tostring(err):find("bad argument " .. c[1], 1, true),
        "case " .. i .. ": " .. tostring(err))
    end
    local _, err = pcall(ar.replace, p, "x", { bogus = 1 })
    assert.matches("unknown option 'bogus'", err)
    _, err = pcall(ar.replace, p, "x", { mode = "0640" })
    assert.matches("mode", err)
    _, err = pcall(ar.replace, p .. "\0x", "x")
    assert.matches("NUL", err)
    assert.same({}, listdir(dir))
  end)
end)

describe("special files: create/replace work on regular files only", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  -- Nodes of our own in a temp dir: never the system's /dev/null.
  local function nodes()
    local list = {}
    assert.equal(0, (H.sh("mkfifo " .. H.q(dir .. "/fifo"))))
    list[#list + 1] = { "fifo", "fifo", "EINVAL", "a FIFO" }
    if ar.uid() == 0 then
      assert.equal(0, (H.sh("mknod " .. H.q(dir .. "/null") .. " c 1 3")))
      list[#list + 1] = { "null", "char", "EINVAL", "a character device" }
      assert.equal(0, (H.sh("mknod " .. H.q(dir .. "/loop") .. " b 7 200")))
      list[#list + 1] = { "loop", "block", "EINVAL", "a block device" }
    end
    assert.equal(0, (H.sh(H.python .. " -c 'import socket,sys; socket.socket(socket.AF_UNIX)"
      .. ".bind(sys.argv[1])' " .. H.q(dir .. "/sock"))))
    list[#list + 1] = { "sock", "socket", "EINVAL", "a socket" }
    assert.is_true(ar.mkdir(dir .. "/sub"))
    list[#list + 1] = { "sub", "directory", "EISDIR", "a directory" }
    return list
  end

  local function same_node(name, kind, before)
    local st = assert(ar.stat(dir .. "/" .. name, false))
    assert.equal(kind, st.type, name)
    assert.equal(before.ino, st.ino, name .. ": replaced by another inode")
  end

  it("replace refuses each with a message naming what it is, and leaves it as it was", function()
    for _, n in ipairs(nodes()) do
      local name, kind, code, text = n[1], n[2], n[3], n[4]
      local before = ar.stat(dir .. "/" .. name, false)
      for _, follow in ipairs({ false, true }) do
        local ok, msg, c = ar.replace(dir .. "/" .. name, "x", { follow = follow })
        assert.is_nil(ok, name)
        assert.equal(code, c, msg)
        assert.truthy(msg:find("is " .. text .. ", not a regular file", 1, true), msg)
        assert.is_nil(msg:find("intact", 1, true), msg)
        same_node(name, kind, before)
      end
      -- create: "exists", and untouched
      local ok, _, c = ar.create(dir .. "/" .. name, "x")
      assert.is_nil(ok)
      assert.equal("exists", c)
      same_node(name, kind, before)
    end
    local names = listdir(dir)
    for _, n in ipairs(names) do assert.is_nil(n:match("^%."), "temp file left: " .. n) end
  end)

  it("with follow, a symlink to a node is refused and both stay as they were", function()
    for _, n in ipairs(nodes()) do
      local name, kind = n[1], n[2]
      local before = ar.stat(dir .. "/" .. name, false)
      local link = dir .. "/to" .. name
      assert.equal(0, (H.sh("ln -s " .. name .. " " .. H.q(link))))
      local ok, msg, c = ar.replace(link, "x", { follow = true })
      assert.is_nil(ok)
      assert.equal(n[3], c, msg)
      assert.truthy(msg:find("target " .. dir .. "/" .. name .. " is " .. n[4], 1, true), msg)
      assert.equal("link", ar.stat(link, false).type)
      same_node(name, kind, before)
      -- without follow the link itself is replaced by a file (documented)
      assert.is_true(ar.replace(link, "x"))
      assert.equal("file", ar.stat(link, false).type)
      same_node(name, kind, before)
    end
  end)
end)

describe("create/replace from a file or a reader function (streamed)", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  local function no_temp()
    for _, n in ipairs(listdir(dir)) do assert.is_nil(n:match("^%."), "temp file left: " .. n) end
  end

  it("copies an open io file (from where it stands), byte for byte", function()
    local src = dir .. "/src"
    local chunk = {}
    for i = 0, 255 do chunk[#chunk + 1] = string.char(i) end
    local body = string.rep(table.concat(chunk), 4 * 1024 + 3)    -- ~1 MiB, not a chunk multiple
    H.write(src, "header\n" .. body)
    local fh = assert(io.open(src, "rb"))
    assert.equal("header", fh:read("l"))        -- buffered bytes are not lost
    assert.is_true(ar.replace(dir .. "/dst", fh))
    fh:close()
    assert.equal(body, H.slurp(dir .. "/dst"))
    fh = assert(io.open(src, "rb"))
    assert.is_true(ar.create(dir .. "/new", fh, { mode = tonumber("600", 8) }))
    fh:close()
    assert.equal("header\n" .. body, H.slurp(dir .. "/new"))
    assert.equal(tonumber("600", 8), ar.stat(dir .. "/new").mode)
    -- io.stdin, in a child
    local st, out = H.sh(atomrun_cmd("-e", "assert(atomrun.replace(arg[1], io.stdin)) print('ok')",
      dir .. "/fromstdin"), "piped\0bytes")
    assert.equal(0, st)
    assert.equal("ok\n", out)
    assert.equal("piped\0bytes", H.slurp(dir .. "/fromstdin"))
    no_temp()
  end)

  it("calls a reader until nil or \"\", and writes what it returned", function()
    local parts = { "a", "bc", string.rep("d", 100000), "e" }
    local i = 0
    assert.is_true(ar.replace(dir .. "/f", function() i = i + 1 return parts[i] end))
    assert.equal(table.concat(parts), H.slurp(dir .. "/f"))
    i = 0
    local eparts = { "x", "y", "", "never" }
    assert.is_true(ar.create(dir .. "/g", function() i = i + 1 return eparts[i] end))
    assert.equal("xy", H.slurp(dir .. "/g"))
    assert.equal(3, i)
    assert.is_true(ar.replace(dir .. "/empty", function() return nil end))
    assert.equal("", H.slurp(dir .. "/empty"))
    -- create where something exists: "exists", and the reader is never called
    local called = false
    local ok, _, code = ar.create(dir .. "/g", function() called = true end)
    assert.is_nil(ok)
    assert.equal("exists", code)
    assert.is_false(called)
    no_temp()
  end)

  it("an error in the reader aborts: old contents intact, no temp file, the error goes on", function()
    H.write(dir .. "/f", "old")
    local n = 0
    local ok, err = pcall(ar.replace, dir .. "/f", function()
      n = n + 1
      if n == 3 then error("reader broke") end
      return string.rep("z", 70000)
    end)
    assert.is_false(ok)
    assert.matches("reader broke", err)
    assert.equal("old", H.slurp(dir .. "/f"))
    ok, err = pcall(ar.create, dir .. "/g", function() error({ code = 7 }) end)
    assert.is_false(ok)
    assert.equal(7, err.code)                      -- the error value itself
    assert.is_false(H.exists(dir .. "/g"))
    -- a reader that returns something else than a string: an error too
    ok, err = pcall(ar.replace, dir .. "/f", function() return 42 end)
    assert.is_false(ok)
    assert.matches("bad argument #2 to '[%w.]*replace'.*reader.*number", err)
    assert.equal("old", H.slurp(dir .. "/f"))
    -- a closed file is a programming error
    local fh = assert(io.open(dir .. "/f"))
    fh:close()
    ok, err = pcall(ar.replace, dir .. "/h", fh)
    assert.is_false(ok)
    assert.matches("bad argument #2 to '[%w.]*replace' %(attempt to use a closed file%)", err)
    no_temp()
    assert.same({ "f" }, listdir(dir))
  end)

  it("a file that cannot be read fails with stage 'read', old contents intact", function()
    H.write(dir .. "/f", "old")
    assert.is_true(ar.mkdir(dir .. "/d"))
    local fh = assert(io.open(dir .. "/d"))       -- opens; reading says EISDIR
    local ok, msg, code, stage = ar.replace(dir .. "/f", fh)
    fh:close()
    assert.is_nil(ok)
    assert.equal("EISDIR", code)
    assert.equal("read", stage)
    assert.matches("reading the new contents from the file failed", msg)
    assert.matches("the old contents are intact", msg)
    assert.equal("old", H.slurp(dir .. "/f"))
    no_temp()
  end)

  it("streams: 512 MiB through a reader in a child whose peak memory stays small #heavy", function()
    local job = [[
      local path = arg[1]
      local chunk = string.rep("0123456789abcdef", 4096)     -- 64 KiB
      local n = 0
      assert(atomrun.replace(path, function()
        n = n + 1
        if n > 8192 then return nil end
        return chunk
      end, { durable = false }))
      for l in io.lines("/proc/self/status") do
        local hwm = l:match("^VmHWM:%s+(%d+)")
        if hwm then print(hwm) end
      end
    ]]
    local st, out, err = H.sh(atomrun_cmd("-e", job, dir .. "/big"))
    assert.equal(0, st, err)
    local hwm_kib = tonumber(out:match("%d+"))
    assert.equal(512 * 1024 * 1024, ar.stat(dir .. "/big").size)
    assert.truthy(hwm_kib < 64 * 1024, "peak RSS " .. tostring(hwm_kib) .. " KiB")
    os.remove(dir .. "/big")
  end)
end)
