-- atomrun.check: the one argument/option checker of the Lua recipes.
-- Every kind, the message format (function, argument number, option, the
-- value), and the level: the error points at the caller's line.
local H = require "spec.helper"
local check = require "atomrun.check"

local function err_of(fn, ...)
  local args = table.pack(...)
  return H.err_of(function() return fn(table.unpack(args, 1, args.n)) end)
end

describe("atomrun.check", function()
  it("accepts what each kind allows and refuses the rest", function()
    local cases = {
      boolean = { ok = { true, false }, bad = { 1, "true", {} } },
      string = { ok = { "", "x" }, bad = { 5, {}, true } },
      table = { ok = { {} }, bad = { "x", 5 } },
      ["function"] = { ok = { print }, bad = { "print", {} } },
      path = { ok = { "/tmp/x", "" }, bad = { "a\0b", 5, {} } },
      seconds = { ok = { 0, 0.5, 1e300, math.huge }, bad = { -1, 0 / 0, -math.huge, "5", {} } },
      count = { ok = { 1, 2, 3.0, math.maxinteger }, bad = { 0, -1, 1.5, math.huge, 0 / 0, "3" } },
      limit = { ok = { 1, 7, math.huge }, bad = { 0, 1.5, -math.huge, "3" } },
      integer = { ok = { 0, 5 }, bad = { -1, 0.5, "0" } },
      factor = { ok = { 1, 1.5, 10 }, bad = { 0.99, 0 / 0, "2" } },
      perm = { ok = { 0, 420, 4095, 420.0 }, bad = { -1, 4096, 1.5, "644", "0644", 0 / 0 } },
      mode = { ok = { "exclusive", "shared" }, bad = { "", "x", 1 } },
    }
    for kind, c in pairs(cases) do
      for _, v in ipairs(c.ok) do assert.is_true(check.fits(kind, v), kind .. " " .. tostring(v)) end
      for _, v in ipairs(c.bad) do
        assert.is_false(check.fits(kind, v), kind .. " " .. tostring(v))
      end
    end
    assert.is_true(check.fits({ "a", "b" }, "b"))
    assert.is_false(check.fits({ "a", "b" }, "c"))
  end)

  it("names the function, the argument number, the option and the value", function()
    local allowed = { mode = "perm", wait = "boolean", jitter = { "full", "none" } }
    local function f(opts) return check.opts("f", 3, opts, allowed) end
    assert.equal("bad argument #3 to 'f' (option 'mode' must be permission bits (an integer "
      .. "0 to 4095, i.e. 0 to 07777; e.g. tonumber('640', 8)), not the string \"755\")",
      err_of(f, { mode = "755" }):gsub("^[^:]*:%d+: ", ""))
    assert.matches("bad argument #3 to 'f' %(unknown option 'bogus' %(expected one of: "
      .. "jitter, mode, wait%)%)", err_of(f, { bogus = 1 }))
    assert.matches("option 'wait' must be a boolean, not 1", err_of(f, { wait = 1 }))
    assert.matches("option 'jitter' must be one of 'full', 'none', not the string \"half\"",
      err_of(f, { jitter = "half" }))
    assert.matches("options must be a table, not the string \"x\"", err_of(f, "x"))
    assert.same({}, f(nil))
    local t = { wait = true }
    assert.equal(t, f(t))
    assert.matches("bad argument #1 to 'g' %(path contains a NUL byte%)",
      err_of(check.path, "g", 1, "a\0b"))
    assert.matches("bad argument #2 to 'g' %(an integer >= 1 expected, got 1.5%)",
      err_of(check.arg, "g", 2, 1.5, "count"))
    assert.is_nil(check.optarg("g", 2, nil, "count"))
  end)

  it("raises at the caller of the recipe (level 1 = the recipe's caller)", function()
    local function recipe(opts) check.opts("recipe", 1, opts, { x = "boolean" }) end
    local line = debug.getinfo(1, "l").currentline + 1
    local ok, e = pcall(function() recipe({ x = 1 }) end)
    assert.is_false(ok)
    assert.matches("check_spec.lua:" .. line .. ":", e)
  end)

  it("is the only checker the recipes use (recipes no longer export _check_opts)", function()
    assert.is_nil(require("atomrun.recipes")._check_opts)
    assert.is_nil(require("atomrun.recipes")._check_path)
    for _, m in ipairs({ "recipes", "retry", "semaphore", "once" }) do
      local src = assert(io.open(H.root .. "/lua/atomrun/" .. m .. ".lua")):read("a")
      assert.truthy(src:find('require "atomrun.check"', 1, true), m)
      assert.is_nil(src:find("_check_opts", 1, true), m)
    end
  end)

  it("agrees with the C binding's checker, value for value", function()
    local dir = H.tmpdir()
    local values = { 420, 420.0, 0, 4095, 4096, -1, 1.5, "644", "0644", 0 / 0, true, {} }
    for i, v in ipairs(values) do
      -- perm: C (lock's perm, checked in src/bind/aux.c) and Lua (with_lock's
      -- perm, checked by atomrun.check before lock is called)
      local c_ok = pcall(H.ar.lock, dir .. "/c" .. i, { perm = v })
      local lua_ok = pcall(H.ar.with_lock, dir .. "/l" .. i, { perm = v }, function() end)
      assert.equal(c_ok, lua_ok, "perm = " .. tostring(v))
      assert.equal(c_ok, check.fits("perm", v), "perm = " .. tostring(v))
      -- mode of replace (C) and of update (Lua)
      c_ok = pcall(H.ar.replace, dir .. "/r" .. i, "x", { mode = v })
      lua_ok = pcall(H.ar.update, dir .. "/u" .. i, function() return "x" end, { mode = v })
      assert.equal(c_ok, lua_ok, "mode = " .. tostring(v))
    end
    for _, v in ipairs({ 0, 1.5, 1e300, math.huge, -1, 0 / 0, "5", true }) do
      local c_ok = pcall(H.ar.lock, dir .. "/t", { timeout = v, wait = false })
      local lua_ok = pcall(H.ar.retry, function() return 1 end, { timeout = v })
      assert.equal(c_ok, lua_ok, "timeout = " .. tostring(v))
    end
    H.cleanup()
  end)
end)
