-- spec/leftover_spec.lua -- issue 23, point 12: a SIGKILLed replace must
-- not make every later replace fail on a nearly full filesystem.  A small
-- real tmpfs (mounted here, unmounted after), real replaces killed for real:
-- mid-write (a reader function that blocks), and at the very moment of the
-- rename (strace delivers SIGKILL as the process enters rename(2), the one
-- window in which a full copy has a name).
local H = require "spec.helper"
local ar = H.ar

local KIB = 1024
local SIZE = 1024 * KIB          -- the filesystem
local BIG = 600 * KIB            -- one copy fits, two do not

describe("leftovers of a killed replace", function()
  local mnt, out, f

  before_each(function()
    mnt, out = nil, H.tmpdir()     -- out: ready files, outside the small fs
    if ar.uid() ~= 0 then return end
    local d = H.tmpdir()
    if H.sh("mount -t tmpfs -o size=" .. SIZE .. " tmpfs " .. H.q(d)) ~= 0 then return end
    mnt = d
    f = mnt .. "/f"
    H.write(f, "old\n")
  end)
  after_each(function()
    -- lazily: a holder still running cannot keep the mount
    if mnt then os.execute("umount -l " .. H.q(mnt)) end
    H.cleanup_procs()
  end)

  local function need_fs()
    if not mnt then pending("needs root to mount a small tmpfs") return false end
    return true
  end

  local function need_strace()
    if not need_fs() then return false end
    if H.sh("command -v strace") ~= 0 then pending("needs strace to kill at rename(2)") return false end
    return true
  end

  -- A replace of f with size (default BIG) bytes of c, SIGKILLed as it
  -- enters rename(2): what it leaves is what a writer killed between link
  -- and rename leaves.
  local function killed_at_rename(c, size)
    local code = "require('atomrun').replace(..., string.rep(" .. string.format("%q", c)
      .. ", " .. (size or BIG) .. "))"
    local st = H.sh("strace -o /dev/null -f -e trace=rename,renameat,renameat2 "
      .. "-e inject=rename,renameat,renameat2:signal=SIGKILL " .. H.cmd("-e", code, f))
    assert.equal(128 + 9, st)
  end

  -- A process holding an flock on path, as a live writer holds its slot.
  local holders = 0
  local function held(path)
    holders = holders + 1                 -- a ready file of its own each
    local ready = out .. "/held" .. holders
    local pid = H.bg_lua("local ar = require('atomrun'); local p, ready = ...; local lk = assert(ar.lock(p)); "
      .. "io.open(ready, 'w'):close(); ar.sleep(60)", path, ready)
    assert(H.wait_file(ready, 10), "holder did not start")
    return pid
  end

  -- A filesystem without O_TMPFILE (some network and FUSE ones): none can
  -- be mounted here, so an LD_PRELOAD shim makes openat(O_TMPFILE) fail
  -- with EOPNOTSUPP, as such a filesystem does; everything else is real.
  local function no_tmpfile_shim()
    if H.asan then return nil, "ASan must come first: no LD_PRELOAD shim" end
    local so = H.build .. "/notmpfile.so"
    assert(H.exists(so), so .. " not built (make test-bins)")
    return "LD_PRELOAD=" .. H.q(so) .. " "
  end

  it("without O_TMPFILE: a writer killed mid-write leaves a slot, which the next replace removes", function()
    if not need_fs() then return end
    local shim, why = no_tmpfile_shim()
    if not shim then pending(why) return end
    local ready = out .. "/writing"
    local code = "local ar = require('atomrun'); local n = 0; "
      .. "ar.replace(..., function() n = n + 1; if n > 3 then "
      .. "io.open(" .. string.format("%q", ready) .. ", 'w'):close(); ar.sleep(60) end; "
      .. "return string.rep('w', 65536) end)"
    local pid = H.track(H.spawn(shim .. H.cmd("-e", code, f)))
    assert(H.wait_file(ready, 20), "the writer never got going")
    H.kill(pid, "KILL")
    assert(H.wait_until(function() return H.gone(pid) end, 10))
    local names = H.listdir(mnt)
    assert.same({ ".f.~0", "f" }, names)                 -- a slot, not a random name
    assert.equal("old\n", H.slurp(f))
    -- the next replace (also without O_TMPFILE) removes it first
    local st, _, err = H.sh(shim .. H.cmd("-e", "assert(require('atomrun').replace(..., 'new'))", f))
    assert.equal(0, st, err)
    assert.same({ "f" }, H.listdir(mnt))
    assert.equal("new", H.slurp(f))
  end)

  it("killed mid-write: nothing is left, and the next replace has the room", function()
    if not need_fs() then return end
    local ready = out .. "/writing"
    local code = "local ar = require('atomrun'); local n = 0; "
      .. "ar.replace(..., function() n = n + 1; if n > 9 then "
      .. "io.open(" .. string.format("%q", ready) .. ", 'w'):close(); ar.sleep(60) end; "
      .. "return string.rep('w', 65536) end)"
    local pid = H.track(H.spawn(H.cmd("-e", code, f)))
    assert(H.wait_file(ready, 20), "the writer never got going")
    H.kill(pid, "KILL")
    assert(H.wait_until(function() return H.gone(pid) end, 10))
    assert.same({ "f" }, H.listdir(mnt))
    assert.is_true(ar.replace(f, string.rep("n", BIG)))
    assert.same({ "f" }, H.listdir(mnt))
    assert.equal(BIG, #ar.read(f))
  end)

  it("killed at the rename: the next replace removes the full copy before it writes", function()
    if not need_strace() then return end
    killed_at_rename("a")
    assert.same({ ".f.~0", "f" }, H.listdir(mnt))       -- the fault, made for real
    assert.equal("old\n", H.slurp(f))
    assert.is_true(ar.replace(f, string.rep("b", BIG)))
    assert.same({ "f" }, H.listdir(mnt))
    assert.equal(string.rep("b", BIG), ar.read(f))
  end)

  it("a failed replace leaves the old file and no temp file", function()
    if not need_fs() then return end
    local ok, _, code = ar.replace(f, string.rep("x", 2 * SIZE))
    assert.is_nil(ok)
    assert.equal("ENOSPC", code)
    assert.equal("old\n", H.slurp(f))
    assert.same({ "f" }, H.listdir(mnt))
  end)

  it("every stale slot goes, not only the first free one; a live writer's stays", function()
    if not need_strace() then return end
    local small = 100 * KIB
    killed_at_rename("a", small)                        -- dead: .f.~0
    local holder = held(mnt .. "/.f.~0")
    killed_at_rename("b", small)                        -- ~0 held: dead at .f.~1
    assert.same({ ".f.~0", ".f.~1", "f" }, H.listdir(mnt))
    H.kill(holder, "KILL")
    assert(H.wait_until(function() return H.gone(holder) end, 10))
    -- ~0 and ~1 are both stale now; the next replace takes ~0 and must
    -- also remove ~1 (spec/crash_spec.lua once found a stale .data.~2)
    assert.is_true(ar.replace(f, "c"))
    assert.same({ "f" }, H.listdir(mnt))
    -- a slot whose file someone holds is a live writer's: never removed
    killed_at_rename("d", small)
    holder = held(mnt .. "/.f.~0")
    assert.is_true(ar.replace(f, "e"))
    assert.same({ ".f.~0", "f" }, H.listdir(mnt))
    assert.equal("e", H.slurp(f))
  end)
end)
