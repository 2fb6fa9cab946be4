-- atomrun.status: a JSON status file over atomic replace (seed 001), with
-- numbers that come back exact, through symlinks, never over a special file.
local H = require "spec.helper"
local ar = H.ar
local listdir = H.listdir

local atomrun_cmd = H.cmd

describe("atomrun.status", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  it("round-trips a table through st:write / st:read", function()
    local st = ar.status(dir .. "/status.json")
    local value = { state = "running", pid = 4121, progress = 0.5,
      steps = { "fetch", "build" }, nested = { ok = true } }
    assert.is_true(st:write(value))
    assert.same(value, st:read())
    -- another process sees the same
    local _, out = H.sh(atomrun_cmd("-e",
      "local t = assert(atomrun.status(arg[1]):read()) print(t.state, t.pid == 4121, t.steps[2])",
      dir .. "/status.json"))
    assert.equal("running\ttrue\tbuild\n", out)
    assert.is_true(st:write({ state = "done" }))
    assert.same({ state = "done" }, st:read())
    assert.same({ "status.json" }, listdir(dir))
  end)

  it("read of a missing or corrupt status file returns nil, msg, code", function()
    local st = ar.status(dir .. "/status.json")
    local v, msg, code = st:read()
    assert.is_nil(v)
    assert.equal("ENOENT", code)
    assert.equal("string", type(msg))
    for _, junk in ipairs({ "{\"state\": \"runn", "", "42", "\0\1\2" }) do
      H.write(dir .. "/status.json", junk)
      v, msg, code = st:read()
      assert.is_nil(v)
      assert.equal("string", type(msg))
      assert.equal("string", type(code))
      assert.truthy(msg:find(dir .. "/status.json", 1, true), msg)
    end
  end)

  it("write rejects what JSON cannot hold, leaving the old file", function()
    local st = ar.status(dir .. "/status.json")
    assert.is_true(st:write({ a = 1 }))
    assert.has_error(function() st:write("nope") end)
    assert.has_error(function() st:write({ f = function() end }) end)
    assert.same({ a = 1 }, st:read())
  end)

  it("keeps integers exact over the whole int64 range and floats exact", function()
    local st = ar.status(dir .. "/status.json")
    local value = { t_us = 1733040000123456, max = math.maxinteger, min = math.mininteger,
      third = 1 / 3, tenth = 0.1, one = 1.0, count = 3 }
    assert.is_true(st:write(value))
    local back = assert(st:read())
    for k, v in pairs(value) do
      assert.equal(v, back[k], k)
      assert.equal(math.type(v), math.type(back[k]), k)
    end
    -- the text itself carries every digit (another reader sees them too)
    local text = H.slurp(dir .. "/status.json")
    assert.truthy(text:find("1733040000123456", 1, true), text)
    assert.truthy(text:find("9223372036854775807", 1, true), text)
    local _, out = H.sh(H.python .. " -c 'import json,sys; d=json.load(open(sys.argv[1])); "
      .. "print(d[\"t_us\"], d[\"max\"], d[\"min\"])' " .. H.q(dir .. "/status.json"))
    assert.equal("1733040000123456 9223372036854775807 -9223372036854775808\n", out)
  end)

  it("writes through a symlink by default: the link stays a link", function()
    H.write(dir .. "/real.json", "{}\n")
    assert.equal(0, (H.sh("ln -s real.json " .. H.q(dir .. "/link.json"))))
    local st = ar.status(dir .. "/link.json")
    assert.is_true(st:write({ n = 1 }))
    assert.equal("link", ar.stat(dir .. "/link.json", false).type)
    assert.same({ n = 1 }, ar.status(dir .. "/real.json"):read())
    assert.same({ n = 1 }, st:read())
    -- follow = false (on status or on the write) replaces the link itself
    assert.is_true(st:write({ n = 2 }, { follow = false }))
    assert.equal("file", ar.stat(dir .. "/link.json", false).type)
    assert.same({ n = 1 }, ar.status(dir .. "/real.json"):read())
    assert.equal(0, (H.sh("rm " .. H.q(dir .. "/link.json") .. " && ln -s real.json "
      .. H.q(dir .. "/link.json"))))
    assert.is_true(ar.status(dir .. "/link.json", { follow = false }):write({ n = 3 }))
    assert.equal("file", ar.stat(dir .. "/link.json", false).type)
    assert.same({ n = 1 }, ar.status(dir .. "/real.json"):read())
    assert.has_error(function() ar.status(dir .. "/x", { follow = 1 }) end)
    assert.has_error(function() ar.status(dir .. "/x", { bogus = true }) end)
  end)

  it("refuses a FIFO, a device node, a socket or a directory, leaving it as it was", function()
    local nodes = H.special_nodes(dir)
    for name, kind in pairs(nodes) do
      local ok, msg, code = ar.status(dir .. "/" .. name):write({ x = 1 })
      assert.is_nil(ok, name)
      assert.equal(kind == "directory" and "EISDIR" or "EINVAL", code, msg)
      assert.matches("not a regular file", msg)
      assert.equal(kind, ar.stat(dir .. "/" .. name, false).type)
    end
    local ok, msg, code = ar.status(dir .. "/tofifo"):write({ x = 1 })
    assert.is_nil(ok)
    assert.equal("EINVAL", code)
    assert.matches("FIFO", msg)
    assert.equal("link", ar.stat(dir .. "/tofifo", false).type)
    assert.equal("fifo", ar.stat(dir .. "/fifo", false).type)
  end)

  it("write{merge = true}: fields over the record as it is, no writer's field lost", function()
    local p = dir .. "/merged.json"
    local st = ar.status(p)
    assert.is_true(st:write({ state = "running", started = 100 }))
    assert.is_true(st:write({ state = "done" }, { merge = true }))
    assert.same({ state = "done", started = 100 }, st:read())
    -- four processes, each counting its own field 25 times by merging
    local pids = {}
    for i = 1, 4 do
      pids[i] = H.bg_lua([=[
        local st = atomrun.status(arg[1])
        for n = 1, 25 do assert(st:write({ ["w" .. arg[2]] = n }, { merge = true })) end
      ]=], p, i)
    end
    for _, pid in ipairs(pids) do assert.is_true(H.wait_exit(pid, 60)) end
    local r = st:read()
    for i = 1, 4 do assert.equal(25, r["w" .. i], "w" .. i) end
    assert.equal(100, r.started)
    -- a file that is not a JSON object is not merged into, and stays
    H.write(p, "not json")
    local ok, err, code = st:write({ x = 1 }, { merge = true })
    assert.is_nil(ok)
    assert.equal("EINVAL", code)
    assert.matches("not a JSON status file to merge into", err)
    assert.equal("not json", H.slurp(p))
    assert.has_error(function() st:write({}, { merge = "yes" }) end,
      "bad argument #2 to 'write' (option 'merge' must be a boolean, not a string)")
  end)

  it("creates a missing directory, as lock and update do", function()
    local st = ar.status(dir .. "/a/b/status.json")
    assert.is_true(st:write({ ok = true }))
    assert.same({ ok = true }, st:read())
  end)
end)
