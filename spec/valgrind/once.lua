-- valgrind: once, retry, sleep, now.
local atomrun = require "atomrun"
local dir = assert(arg[1], "usage: once.lua DIR")
local g = assert(atomrun.once("vg", { dir = dir .. "/once" }))
local g2, msg, code, rec = atomrun.once("vg", { dir = dir .. "/once" })
assert(g2 == nil and code == "running" and rec.pid == atomrun.pid(), msg)
g:release()
local n = 0
local v = atomrun.retry(function() n = n + 1; if n < 3 then return nil, "not yet" end return n end,
  { attempts = 5, base = 0.001 })
assert(v == 3)
local t0 = atomrun.now()
atomrun.sleep(0.01)
assert(atomrun.now() - t0 >= 0.01)
print("once ok")
