-- make install / uninstall honour PREFIX and DESTDIR, and what they install
-- works: a C host built with pkg-config, and stock lua5.4 requiring the module.
local H = require "spec.helper"

local function make(args)
  return H.sh("make -s --no-print-directory -C " .. H.q(H.root) .. " " .. args)
end

-- Runs `make`, which builds in build/: only in the main pass (#heavy).
describe("make install #heavy", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  it("puts every file where DESTDIR/PREFIX say, and uninstall removes them", function()
    local st, _, err = make("install DESTDIR=" .. H.q(dir) .. " PREFIX=/usr/local")
    assert.equal(0, st, err)
    local root = dir .. "/usr/local"
    for _, f in ipairs({ "bin/atomrun", "include/atomrun.h", "lib/libatomrun.a",
        "lib/libatomrun.so", "lib/pkgconfig/atomrun.pc", "lib/lua/5.4/atomrun/core.so",
        "share/lua/5.4/atomrun/init.lua", "share/lua/5.4/atomrun/recipes.lua",
        "share/lua/5.4/atomrun/cmd/lock.lua", "share/doc/atomrun/API.md",
        "share/doc/atomrun/examples/cron-job.lua", "share/bash-completion/completions/atomrun" }) do
      assert.truthy(H.exists(root .. "/" .. f), f)
    end
    -- /usr/local/lib/lua/5.4 is on stock lua5.4's default cpath and
    -- /usr/local/share/lua/5.4 on its default path, so after a real
    -- `make install`, plain `lua5.4 -e 'require "atomrun"'` finds
    -- atomrun/init.lua and the atomrun/core.so it requires.
    local _, cpath = H.sh("env -u LUA_CPATH -u LUA_CPATH_5_4 lua5.4 -e 'io.write(package.cpath)'")
    assert.truthy(cpath:find("/usr/local/lib/lua/5.4/?.so", 1, true))
    local _, lpath = H.sh("env -u LUA_PATH -u LUA_PATH_5_4 lua5.4 -e 'io.write(package.path)'")
    assert.truthy(lpath:find("/usr/local/share/lua/5.4/?/init.lua", 1, true))
    assert.matches("prefix=/usr/local", H.slurp(root .. "/lib/pkgconfig/atomrun.pc"))
    st, _, err = make("uninstall DESTDIR=" .. H.q(dir) .. " PREFIX=/usr/local")
    assert.equal(0, st, err)
    local _, left = H.sh("find " .. H.q(dir) .. " -type f -o -type l")
    assert.equal("", left)
  end)

  it("gives a working pkg-config file, C library and Lua module under PREFIX", function()
    local st, _, err = make("install PREFIX=" .. H.q(dir))
    assert.equal(0, st, err)
    local env = "PKG_CONFIG_PATH=" .. H.q(dir .. "/lib/pkgconfig")
    local out
    st, out, err = H.sh("cd " .. H.q(dir) .. " && " .. env .. " cc " .. H.q(H.root .. "/spec/host.c")
      .. " $(" .. env .. " pkg-config --cflags --libs atomrun) -o host && LD_LIBRARY_PATH="
      .. H.q(dir .. "/lib") .. " ./host " .. H.q(H.root .. "/spec/embed_job.lua") .. " via pkg-config")
    assert.equal(0, st, err)
    assert.equal("embedded: via pkg-config\n", out)
    local lmod = dir .. "/share/lua/5.4/"
    local paths = "LUA_CPATH=" .. H.q(dir .. "/lib/lua/5.4/?.so;;") .. " LUA_PATH="
      .. H.q(lmod .. "?.lua;" .. lmod .. "?/init.lua;;")
    st, out, err = H.sh(paths .. " lua5.4 -e 'local a = require \"atomrun\"; io.write(a.version, \" \", "
      .. "type(a.once), \" \", package.searchpath(\"atomrun\", package.path), \" \", "
      .. "package.searchpath(\"atomrun.core\", package.cpath))'")
    assert.equal(0, st, err)
    assert.equal(table.concat({ "", "function", lmod .. "atomrun/init.lua",
      dir .. "/lib/lua/5.4/atomrun/core.so" }, " "), (out:gsub("^%d+%.%d+%.%d+", "")))
    -- the C table alone, as the recipes see it
    st, out, err = H.sh(paths .. " lua5.4 -e 'local c = require \"atomrun.core\"; "
      .. "io.write(type(c.lock), \" \", tostring(c.once))'")
    assert.equal(0, st, err)
    assert.equal("function nil", out)
    st, out = H.sh(H.q(dir .. "/bin/atomrun") .. " --version")
    assert.equal(0, st)
    assert.matches("^atomrun ", out)
  end)

  -- A staged install (DESTDIR) used before it is moved into place, as a
  -- package build does: the .pc file's paths follow ${prefix}, so
  -- pkg-config's --define-prefix and PKG_CONFIG_SYSROOT_DIR find it there.
  it("a host builds from a staged install (DESTDIR) with pkg-config", function()
    local st, _, err = make("install DESTDIR=" .. H.q(dir) .. " PREFIX=/usr/local")
    assert.equal(0, st, err)
    local pcdir = dir .. "/usr/local/lib/pkgconfig"
    local pc = H.slurp(pcdir .. "/atomrun.pc")
    assert.matches("\nlibdir=%${prefix}/lib\n", pc)
    assert.matches("\nincludedir=%${prefix}/include\n", pc)
    local env = "PKG_CONFIG_PATH=" .. H.q(pcdir)
    local _, inc = H.sh(env .. " pkg-config --define-prefix --variable=includedir atomrun")
    assert.equal(dir .. "/usr/local/include\n", inc)
    local _, lib = H.sh(env .. " pkg-config --define-prefix --variable=libdir atomrun")
    assert.equal(dir .. "/usr/local/lib\n", lib)
    -- Lua's own flags apart: Debian's lua5.4.pc does not move with a sysroot
    local out
    st, out, err = H.sh("cd " .. H.q(dir) .. " && cc " .. H.q(H.root .. "/spec/host.c")
      .. " $(PKG_CONFIG_SYSROOT_DIR=" .. H.q(dir) .. " " .. env .. " pkg-config --cflags --libs atomrun)"
      .. " $(pkg-config --cflags lua5.4) -o host && LD_LIBRARY_PATH=" .. H.q(dir .. "/usr/local/lib")
      .. " ./host " .. H.q(H.root .. "/spec/embed_job.lua") .. " staged")
    assert.equal(0, st, err)
    assert.equal("embedded: staged\n", out)
  end)
end)
