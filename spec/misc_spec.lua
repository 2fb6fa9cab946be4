-- The odds and ends of lua/API.md that no other spec covers.
local H = require "spec.helper"
local ar = H.ar

describe("atomrun.errname", function()
  it("names the codes that atomrun's own results carry", function()
    assert.equal("OK", ar.errname(0))
    assert.equal("exists", ar.errname(17))        -- EEXIST, as create says it
    assert.equal("deadlock", ar.errname(35))      -- EDEADLK
    assert.equal("busy", ar.errname(20001))       -- ATOMRUN_EBUSY
    assert.equal("timeout", ar.errname(20002))    -- ATOMRUN_ETIMEOUT
  end)

  it("says EUNKNOWN for a number beyond an int, never what its cast would name", function()
    assert.equal("EUNKNOWN", ar.errname(1 << 32))          -- (int) would make it 0, "OK"
    assert.equal("EUNKNOWN", ar.errname(-(1 << 32) - 2))   -- ... or -2, "ENOENT"
    assert.equal("EUNKNOWN", ar.errname(math.maxinteger))
    assert.equal("EUNKNOWN", ar.errname(math.mininteger))
    assert.equal("EUNKNOWN", ar.errname(0x80000000))
    assert.equal("EUNKNOWN", ar.errname(-0x7fffffff))      -- an int, but no errno
    assert.equal("EUNKNOWN", ar.errname(4096))
    assert.equal("EPERM", ar.errname(-1))
    assert.matches("integer representation", H.err_of(function() ar.errname(1.5) end))
  end)

  it("takes an errno as a positive or a negative number (the C API's -errno)", function()
    assert.equal("ENOENT", ar.errname(2))
    assert.equal("ENOENT", ar.errname(-2))
    assert.equal("busy", ar.errname(-20001))
    assert.equal("timeout", ar.errname(-20002))
  end)

  it("gives every other errno its C name, as Python's errno module knows it", function()
    -- Python's table is the kernel's list, built independently of atomrun;
    -- where one number has two names (EAGAIN/EWOULDBLOCK, ENOTSUP/EOPNOTSUPP,
    -- EDEADLK/EDEADLOCK) either name is right.
    local st, out, err = H.sh(H.python .. " -c " .. H.q([[
import errno
for n in sorted(errno.errorcode):
    names = [k for k in dir(errno) if k.startswith("E") and getattr(errno, k) == n]
    print(n, " ".join(sorted(names)))
]]))
    assert.equal(0, st, err)
    local checked = 0
    for n, names in out:gmatch("(%d+) ([^\n]+)") do
      n = math.tointeger(tonumber(n))
      if n ~= 17 and n ~= 35 then
        local got = ar.errname(n)
        assert.truthy((" " .. names .. " "):find(" " .. got .. " ", 1, true),
          n .. ": errname says " .. got .. ", errno knows " .. names)
        checked = checked + 1
      end
    end
    assert.truthy(checked > 100, "only " .. checked .. " errnos checked")
  end)

  it("says EUNKNOWN for a number that is no errno", function()
    assert.equal("EUNKNOWN", ar.errname(99999))
  end)

  it("matches the code a failed call returns", function()
    local dir = H.tmpdir()
    -- (create makes a missing directory, so ENOENT comes from read)
    local ok, _, code = ar.read(dir .. "/no/such/dir/f")
    assert.is_nil(ok)
    assert.equal(ar.errname(2), code)
    assert.is_true(ar.create(dir .. "/f", "x"))
    ok, _, code = ar.create(dir .. "/f", "x")
    assert.is_nil(ok)
    assert.equal(ar.errname(17), code)
    H.cleanup()
  end)

  it("raises an error naming the argument for a non-integer", function()
    assert.matches("bad argument #1 to '[%w.]*errname'", H.err_of(function() ar.errname("x") end))
    assert.matches("bad argument #1", H.err_of(function() ar.errname(1.5) end))
    assert.matches("bad argument #1", H.err_of(function() ar.errname() end))
  end)
end)

describe("atomrun.hostname", function()
  it("is the kernel's host name, the one holder, once and status records carry", function()
    assert.equal(H.slurp("/proc/sys/kernel/hostname"):gsub("\n$", ""), ar.hostname())
    local st, out = H.sh("hostname")
    assert.equal(0, st)
    assert.equal(out:gsub("\n$", ""), ar.hostname())
  end)
end)

describe("the bundle", function()
  it("atomrun --help lists every lua/atomrun/cmd/NAME.lua with its first-line summary", function()
    local st, out = H.run("--help")
    assert.equal(0, st)
    local p = io.popen("cd " .. H.q(H.root) .. " && ls lua/atomrun/cmd/*.lua")
    local n = 0
    for path in p:lines() do
      local name = path:match("([^/]+)%.lua$")
      local first = io.open(H.root .. "/" .. path):read("l")
      local summary = first:match("^%-%- atomrun " .. H.pat(name) .. " %-%- (.-)%s*$")
      assert.truthy(summary, path .. " does not start with '-- atomrun " .. name .. " -- summary'")
      assert.matches("\n  atomrun " .. H.pat(name) .. " +" .. H.pat(summary) .. "\n", out)
      n = n + 1
    end
    p:close()
    assert.truthy(n >= 3)
    -- and the usage line of a usage error names them too
    local _, _, err = H.run("--bogus")
    assert.truthy(err:find("atomrun doctor|lock|once|who ", 1, true), err)
  end)

  it("carries each module precompiled, debug information kept", function()
    local f = assert(io.open(H.build .. "/bundle.c", "rb"))
    local c = f:read("a")
    f:close()
    local entries, chunks = 0, 0
    for _ in c:gmatch('\n  { "atomrun[%w._]*", "@') do entries = entries + 1 end
    -- a binary chunk starts with ESC "Lua", written as the escape \033
    for _ in c:gmatch('"\\033Lua') do chunks = chunks + 1 end
    assert.truthy(entries >= 5)
    assert.equal(entries, chunks)
    -- functions from the bundle still know their file and lines (the
    -- lua5.4 pass loads lua/ from the tree instead: a longer path)
    local cli = require "atomrun.cli"
    local info = debug.getinfo(cli.program, "S")
    assert.truthy(info.source:find("lua/atomrun/cli/init.lua", 1, true), info.source)
    if H.pass ~= "lua5.4" then assert.equal("@lua/atomrun/cli/init.lua", info.source) end
    assert.truthy(info.linedefined > 0)
  end)
end)
