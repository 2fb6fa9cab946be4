-- atomrun -- the module `require "atomrun"` returns: the C primitives of
-- atomrun.core (src/bind/*.c) plus the recipes in lua/atomrun/.
--
-- Data flows one way: the recipes require atomrun.core and each other,
-- never this module, and this module requires them only on first use, so
-- `atomrun -e ''` pays nothing for the ones it does not touch.
local core = require "atomrun.core"

local lazy = {
  with_lock = "atomrun.recipes",
  update    = "atomrun.recipes",
  status    = "atomrun.recipes",
  lock_all  = "atomrun.recipes",
  retry     = "atomrun.retry",
  once      = "atomrun.once",
  once_status = "atomrun.once",
  semaphore = "atomrun.semaphore",
  watch     = "atomrun.etcd.watch",   -- etcd keys and prefixes only
}

-- Lua names a C function in messages and tracebacks after the first module
-- in package.loaded (hash order: random per run) that holds it.  So that
-- it is always 'atomrun.lock', never now and then 'atomrun.core.lock',
-- atomrun.core becomes a view of this module that holds nothing itself.
package.loaded["atomrun.core"] = setmetatable({}, {
  __index = core,
  __newindex = core,
  __pairs = function() return next, core, nil end,
})

-- The module IS the core table, extended (as socket.lua extends
-- socket.core): a recipe's `atomrun.now` and the caller's are one field, so
-- replacing atomrun.now (a test's virtual clock) reaches the recipes too.
return setmetatable(core, {
  __index = function(t, key)
    if key == "json" then      -- atomrun's own, integer-exact (not lua-cjson)
      local json = require "atomrun.json"
      rawset(t, "json", json)
      return json
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
