-- atomrun.update (read-modify-write under the sidecar lock path..".lock"),
-- with real processes competing for the lock.  atomrun.status is in
-- status_spec.lua.
local H = require "spec.helper"
local ar = H.ar
local gone, wait_gone, listdir = H.gone, H.wait_exit, H.listdir
local script, atomrun_cmd = H.script, H.cmd

-- A child that takes the sidecar lock, says so with a marker file, and
-- holds it until the "release" file appears (or 30 s pass).
local HOLDER = [[
  local a = require "atomrun"
  local lockpath, marker = arg[1], arg[2]
  local lk = assert(a.lock(lockpath))
  local f = assert(io.open(marker, "w")); f:close()
  local deadline = a.now() + 30
  while not a.stat(marker .. ".release") and a.now() < deadline do a.sleep(0.005) end
  lk:unlock()
]]

describe("atomrun.update", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  local function counter_storm(nproc, each, durable)
    local job = script(dir, "inc.lua", [[
      local a = require "atomrun"
      local path, id, each, durable = arg[1], arg[2], tonumber(arg[3]), arg[4] == "1"
      local f = assert(io.open(path .. ".ready." .. id, "w")); f:close()
      while not a.stat(path .. ".go") do a.sleep(0.001) end
      for _ = 1, each do
        assert(a.update(path, function(old)
          return tostring((tonumber(old) or 0) + 1)
        end, { durable = durable }))
      end
      f = assert(io.open(path .. ".done." .. id, "w")); f:close()
    ]])
    local path = dir .. "/counter"
    local pids = {}
    for i = 1, nproc do pids[i] = H.spawn(atomrun_cmd(job, path, i, each, durable and "1" or "0")) end
    assert.is_true(H.wait_until(function()
      for i = 1, nproc do if not H.exists(path .. ".ready." .. i) then return false end end
      return true
    end, 30), "workers did not start")
    H.write(path .. ".go", "")
    for i = 1, nproc do assert.is_true(wait_gone(pids[i], 120)) end
    for i = 1, nproc do
      assert.is_true(H.exists(path .. ".done." .. i), "worker " .. i .. " failed")
    end
    assert.equal(tostring(nproc * each), ar.read(path))
    -- the data file and its sidecar, and no temp file
    local left = {}
    for _, n in ipairs(listdir(dir)) do
      if not n:match("%.ready%.") and not n:match("%.done%.") then left[#left + 1] = n end
    end
    assert.same({ "counter", "counter.go", "counter.lock", "inc.lua" }, left)
  end

  if H.heavy then
    -- durable = false: what is tested is the mutual exclusion, and 3200
    -- fsyncs would make this slow on a loaded machine
    it("16 processes x 100 increments end at exactly 1600", function()
      counter_storm(16, 100, false)
    end)
  else
    it("4 processes x 25 increments end at exactly 100", function()
      counter_storm(4, 25, true)
    end)
  end

  it("passes nil for a missing file and creates it", function()
    local p = dir .. "/new"
    local seen = "unset"
    assert.equal("1", ar.update(p, function(old) seen = old; return "1" end))
    assert.is_nil(seen)
    assert.equal("1", H.slurp(p))
    assert.equal("2", ar.update(p, function(old) seen = old; return "2" end))
    assert.equal("1", seen)
  end)

  it("leaves the file alone (same inode, same bytes) when fn returns nil", function()
    local p = dir .. "/f"
    H.write(p, "keep\n")
    local st = ar.stat(p)
    local r = ar.update(p, function(old)
      assert.equal("keep\n", old)
      return nil
    end)
    assert.equal("keep\n", r)
    assert.equal("keep\n", H.slurp(p))
    assert.equal(st.ino, ar.stat(p).ino)
    -- and on a missing file it creates nothing
    assert.is_false(ar.update(dir .. "/absent", function() return nil end))
    assert.is_false(H.exists(dir .. "/absent"))
  end)

  it("propagates an error in fn with its message, after releasing the lock", function()
    local p = dir .. "/f"
    H.write(p, "old")
    local ok, err = pcall(ar.update, p, function() error("fn exploded 42") end)
    assert.is_false(ok)
    assert.matches("fn exploded 42", err)
    assert.equal("old", H.slurp(p))
    -- another process can take the sidecar at once (wait = false)
    local st, out, e = H.sh(atomrun_cmd("-e",
      "local lk, msg, code = atomrun.lock(arg[1], {wait = false}) print(lk and 'locked' or code)",
      p .. ".lock"))
    assert.equal(0, st, e)
    assert.equal("locked\n", out)
    -- and so can this one
    local ok2 = ar.update(p, function(old) return old .. "+" end, { timeout = 5 })
    assert.equal("old+", ok2)
    -- an error object that is not a string passes through unchanged
    local tag = {}
    local _, obj = pcall(ar.update, p, function() error(tag) end)
    assert.equal(tag, obj)
  end)

  it("fails with 'timeout' while another process holds the sidecar, never calling fn", function()
    local p = dir .. "/f"
    H.write(p, "old")
    local holder = script(dir, "holder.lua", HOLDER)
    local marker = dir .. "/held"
    local pid = H.spawn(atomrun_cmd(holder, p .. ".lock", marker))
    assert.is_true(H.wait_file(marker, 30), "holder did not lock")
    local called = false
    local r, msg, code = ar.update(p, function() called = true; return "new" end,
      { timeout = 0.2 })
    assert.is_nil(r)
    assert.equal("timeout", code)
    assert.equal("string", type(msg))
    assert.is_false(called)
    r, msg, code = ar.update(p, function() called = true; return "new" end, { wait = false })
    assert.is_nil(r)
    assert.equal("busy", code)
    assert.is_false(called)
    H.write(marker .. ".release", "")
    assert.is_true(wait_gone(pid, 30))
    assert.equal("new", ar.update(p, function() return "new" end, { timeout = 5 }))
  end)

  it("passes durable and mode to replace, and rejects bad arguments", function()
    local p = dir .. "/f"
    assert.equal("x", ar.update(p, function() return "x" end,
      { durable = false, mode = tonumber("600", 8) }))
    assert.equal(tonumber("600", 8), ar.stat(p).mode)
    assert.has_error(function() ar.update(p, "not a function") end)
    assert.has_error(function() ar.update(p, function() end, { bogus = 1 }) end)
    local ok, err = pcall(ar.update, p, function() return 42 end)
    assert.is_false(ok)
    assert.matches("string", err)
    assert.equal("x", H.slurp(p))
  end)

  it("through a symlink serialises with updaters of the target: one lock, no lost update", function()
    local real, link = dir .. "/real", dir .. "/link"
    H.write(real, "0")
    assert.equal(0, (H.sh("ln -s real " .. H.q(link))))
    local job = script(dir, "inc.lua", [[
      local a = require "atomrun"
      local path, ready, go, each = arg[1], arg[2], arg[3], tonumber(arg[4])
      local f = assert(io.open(ready, "w")); f:close()
      while not a.stat(go) do a.sleep(0.001) end
      for _ = 1, each do
        assert(a.update(path, function(old)
          local n = tonumber(old)
          a.sleep(0.0005)            -- widen the read-modify-write window
          return tostring(n + 1)
        end, { durable = false }))
      end
    ]])
    local each, pids = H.heavy and 50 or 20, {}
    for i = 1, 6 do
      local via = i % 2 == 0 and link or real
      pids[i] = H.spawn(atomrun_cmd(job, via, dir .. "/ready." .. i, dir .. "/go", each))
    end
    assert.is_true(H.wait_until(function()
      for i = 1, 6 do if not H.exists(dir .. "/ready." .. i) then return false end end
      return true
    end, 30))
    H.write(dir .. "/go", "")
    for i = 1, 6 do assert.is_true(wait_gone(pids[i], 120)) end
    assert.equal(tostring(6 * each), H.slurp(real))
    assert.equal("link", ar.stat(link, false).type)     -- still a link
    assert.is_false(H.exists(link .. ".lock"))         -- one lock: the target's
    assert.is_true(H.exists(real .. ".lock"))
  end)

  it("follow = false replaces the link itself (and locks the link's sidecar)", function()
    H.write(dir .. "/real", "r")
    assert.equal(0, (H.sh("ln -s real " .. H.q(dir .. "/link"))))
    assert.equal("r!", ar.update(dir .. "/link", function(old) return old .. "!" end,
      { follow = false }))
    assert.equal("file", ar.stat(dir .. "/link", false).type)
    assert.equal("r", H.slurp(dir .. "/real"))
    assert.is_true(H.exists(dir .. "/link.lock"))
    -- a dangling link: follow creates the target it names
    assert.equal(0, (H.sh("ln -s made " .. H.q(dir .. "/dangling"))))
    assert.equal("new", ar.update(dir .. "/dangling", function(old)
      assert.is_nil(old)
      return "new"
    end))
    assert.equal("new", H.slurp(dir .. "/made"))
    assert.equal("link", ar.stat(dir .. "/dangling", false).type)
    assert.has_error(function() ar.update(dir .. "/link", function() end, { follow = "yes" }) end)
  end)

  it("refuses a FIFO, a device node or a directory without calling fn, leaving it as it was", function()
    local nodes = H.special_nodes(dir)
    nodes.tofifo = "link"
    for name, kind in pairs(nodes) do
      local called = false
      local ok, msg, code = ar.update(dir .. "/" .. name, function() called = true return "x" end)
      assert.is_nil(ok, name)
      assert.is_false(called, name)
      assert.truthy(code == "EINVAL" or code == "EISDIR", name .. ": " .. tostring(code))
      assert.matches("not a regular file", msg)
      assert.equal(kind, ar.stat(dir .. "/" .. name, false).type)
    end
    assert.equal("fifo", ar.stat(dir .. "/fifo", false).type)
  end)

  it("creates a missing directory (the rule of lock, create, replace and status)", function()
    assert.equal("1", ar.update(dir .. "/a/b/c", function() return "1" end))
    assert.equal("1", H.slurp(dir .. "/a/b/c"))
  end)
end)
