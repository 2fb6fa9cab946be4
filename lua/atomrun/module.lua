-- atomrun.module -- the Lua half of `require "atomrun"`.
--
-- luaopen_atomrun (src/latomrun.c) builds the table of C primitives and
-- calls the function returned here with it.  Recipes are loaded on first
-- use, so `atomrun -e ''` pays nothing for the ones it does not touch.

local lazy = {
  with_lock = "atomrun.recipes",
  update    = "atomrun.recipes",
  status    = "atomrun.recipes",
  lock_all  = "atomrun.recipes",
  retry     = "atomrun.retry",
  once      = "atomrun.once",
  semaphore = "atomrun.semaphore",
}

-- Whole modules that are fields of atomrun.  json is atomrun's own, not
-- lua-cjson: see lua/atomrun/json.lua for the digits cjson loses.
local modules = { json = "atomrun.json" }

return function(M)
  setmetatable(M, {
    __index = function(t, key)
      if modules[key] then
        local mod = require(modules[key])
        rawset(t, key, mod)
        return mod
      end
      local modname = lazy[key]
      if not modname then return nil end
      local mod = require(modname)
      for name, value in pairs(mod) do
        if lazy[name] == modname then rawset(t, name, value) end
      end
      return rawget(t, key)
    end,
  })
end
