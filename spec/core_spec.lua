-- atomrun.core and the module built on it: the C table alone, one-way
-- requires (no recipe needs "atomrun" while it loads), the handles'
-- methods and fields, and the facts the binding returns (strerror, the
-- failed stage of create/replace).
local H = require "spec.helper"
local ar = H.ar

-- A Lua script in this pass's interpreter; its stdout.
local function script(dir, body)
  local p = dir .. "/job.lua"
  H.write(p, body)
  local cmd = H.q(H.atomrun)
  if H.pass == "lua5.4" then cmd = "lua5.4" end   -- LUA_PATH/CPATH from spec/run.sh
  local st, out, err = H.sh(cmd .. " " .. H.q(p))
  assert.equal(0, st, err)
  return out
end

describe("atomrun.core", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  it("is the C table: primitives, no recipes", function()
    local core = require "atomrun.core"
    assert.equal("function", type(core.lock))
    assert.equal("function", type(core.strerror))
    assert.equal(ar.version, core.version)
    assert.equal(core.lock, ar.lock)
  end)

  it("is what atomrun extends, so a replaced field reaches the recipes", function()
    local core = require "atomrun.core"
    local real = ar.now
    ar.now = function() return 42 end
    local seen = core.now()
    ar.now = real
    assert.equal(42, seen)
    assert.equal(real, core.now)
  end)

  it("leaves one name for each function in messages: atomrun.lock", function()
    -- which module Lua names a function after depends on hash order, which
    -- changes from run to run: try a few runs
    for _ = 1, 6 do
      local dir = H.tmpdir()
      local out = script(dir, [[
        require "atomrun"
        local ok, e = pcall(require("atomrun.core").lock, 1)
        io.write(e)
      ]])
      assert.matches("^bad argument #1 to 'atomrun.lock'", out)
    end
  end)

  it("loads every recipe without loading the atomrun module", function()
    -- The binary has loaded atomrun already: forget it, and make any
    -- require of it from here on an error.
    local out = script(dir, [[
      package.loaded.atomrun = nil
      package.preload.atomrun = function() error("a recipe required atomrun") end
      for _, m in ipairs({ "atomrun.recipes", "atomrun.once", "atomrun.retry",
                           "atomrun.semaphore", "atomrun.cli" }) do
        package.loaded[m] = nil
        require(m)
      end
      io.write(tostring(package.loaded.atomrun))
    ]])
    assert.equal("nil", out)
  end)

  it("adds the recipes to the atomrun module on first use", function()
    local out = script(dir, [[
      local a = require "atomrun"
      local before = rawget(a, "with_lock")
      io.write(tostring(before), " ", type(a.with_lock), " ", type(rawget(a, "update")))
    ]])
    assert.equal("nil function function", out)
  end)
end)

describe("scripts/bundle.lua", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  it("turns Lua files into src/bind/bundle.h entries, init.lua named after its directory", function()
    H.write(dir .. "/a.lua", "return 'a\0\"?'\n")
    H.write(dir .. "/init.lua", "")
    local c = dir .. "/b.c"
    H.write(dir .. "/main.c", [[
#include <stdio.h>
#include <string.h>
#include "bind/bundle.h"
int main(void)
{
    for (const ar_bundled *m = ar_bundle; m->name; m++)
        printf("%s %s %zu %d\n", m->name, m->chunkname, m->len,
               strlen(m->source) == m->len);
    return 0;
}
]])
    -- run from a fake tree: the bundler names modules after lua/-relative paths
    local st, _, err = H.sh("cd " .. H.q(dir) .. " && mkdir -p lua/x && mv a.lua lua/x/a.lua"
      .. " && mv init.lua lua/x/init.lua && lua5.4 " .. H.q(H.root .. "/scripts/bundle.lua")
      .. " b.c lua/x/a.lua lua/x/init.lua && cc -std=c11 -Wall -Werror -I"
      .. H.q(H.root .. "/src") .. " -o t main.c b.c")
    assert.equal(0, st, err)
    local out
    st, out = H.sh(H.q(dir .. "/t"))
    assert.equal(0, st)
    -- a.lua is 14 bytes with a NUL: strlen stops early, len does not
    assert.equal("x.a @lua/x/a.lua 14 0\nx @lua/x/init.lua 0 1\n", out)
    assert.truthy(H.exists(c))
  end)
end)

describe("handles", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  it("lock: method unlock, fields path/mode/locked, nil for anything else", function()
    local lk = assert(ar.lock(dir .. "/a", { mode = "shared" }))
    assert.equal(dir .. "/a", lk.path)
    assert.equal("shared", lk.mode)
    assert.is_true(lk.locked)
    assert.is_nil(lk.nosuch)
    assert.is_nil(lk[1])
    assert.is_true(lk:unlock())
    assert.is_false(lk.locked)
  end)

  it("file and range: methods and fields", function()
    local f = assert(ar.open(dir .. "/b"))
    assert.equal(dir .. "/b", f.path)
    assert.is_true(f.writable)
    local r = assert(f:lock(4, 2, { mode = "shared" }))
    assert.equal(4, r.start)
    assert.equal(2, r.length)
    assert.equal("shared", r.mode)
    assert.is_true(r.locked)
    assert.equal(f, r.file)
    assert.is_nil(r.nosuch)
    assert.is_nil(f:test(0, 1))
    assert.is_true(r:unlock())
    assert.is_false(r.locked)
    assert.is_true(f:close())
  end)

  it("a failed lock leaves nothing held and no descriptor open", function()
    local fds = #H.listdir("/proc/self/fd")
    for _ = 1, 20 do
      assert.is_nil(ar.lock(dir .. "/missing/x", { create = false }))
      assert.is_nil(ar.open(dir .. "/missing/y", { create = false }))
    end
    collectgarbage()
    collectgarbage()
    assert.equal(0, ar.held())
    assert.is_true(#H.listdir("/proc/self/fd") <= fds)
  end)
end)

describe("facts, not messages", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  it("strerror gives the sentence for a code or an errno", function()
    assert.equal(ar.strerror(2), ar.strerror("ENOENT"))
    assert.equal(ar.strerror(-2), ar.strerror("ENOENT"))
    assert.equal("lock is busy", ar.strerror("busy"))
    assert.equal("timed out", ar.strerror("timeout"))
    assert.equal(ar.strerror("EEXIST"), ar.strerror("exists"))
    assert.equal(ar.strerror("EDEADLK"), ar.strerror("deadlock"))
    assert.matches("[Pp]ermission", ar.strerror("EACCES"))
  end)

  it("strerror refuses what is no code", function()
    assert.error_matches(function() ar.strerror("ENOSUCH") end, "unknown error code 'ENOSUCH'")
    assert.error_matches(function() ar.strerror(0) end, "non%-zero")
    assert.error_matches(function() ar.strerror({}) end, "number expected")
  end)

  it("errname names errno numbers both signs", function()
    assert.equal("ENOENT", ar.errname(2))
    assert.equal("ENOENT", ar.errname(-2))
    assert.equal("deadlock", ar.errname(35))
  end)

  it("create and replace name the failed stage as a 4th value", function()
    -- a missing directory is created (the one rule for every call that
    -- makes a file); one that cannot be, a file being in the way, is "dir"
    local f = io.open(dir .. "/plain", "w"); f:close()
    local ok, msg, code, stage = ar.replace(dir .. "/plain/such/x", "data")
    assert.is_nil(ok)
    assert.equal("ENOTDIR", code)
    assert.equal("dir", stage)
    assert.truthy(msg:find(dir .. "/plain/such/x", 1, true))
    ok, msg, code, stage = ar.create(dir .. "/plain/such/y", "data")
    assert.equal("ENOTDIR", code)
    assert.equal("dir", stage)
    assert.is_true(ar.create(dir .. "/z", "1"))
    ok, msg, code, stage = ar.create(dir .. "/z", "2")
    assert.equal("exists", code)
    assert.equal("link", stage)
    os.execute("mkfifo " .. H.q(dir .. "/fifo"))
    ok, msg, code, stage = ar.replace(dir .. "/fifo", "x")
    assert.equal("EINVAL", code)
    assert.equal("open", stage)
  end)

  it("replace through a symlink loop fails at the resolve stage", function()
    os.execute("ln -s loop " .. H.q(dir .. "/loop"))
    local ok, _, code, stage = ar.replace(dir .. "/loop", "x", { follow = true })
    assert.is_nil(ok)
    assert.equal("ELOOP", code)
    assert.equal("resolve", stage)
  end)
end)
