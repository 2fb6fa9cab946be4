-- valgrind: byte ranges, the semaphore, handles closed with ranges held.
local atomrun = require "atomrun"
local dir = assert(arg[1], "usage: ranges.lua DIR")
local f = assert(atomrun.open(dir .. "/r"))
local a = assert(f:lock(0, 10))
local b = assert(f:lock(10, 0, { mode = "shared" }))
assert(not pcall(f.lock, f, 5, 10))                  -- overlap: an error
local g = assert(atomrun.open(dir .. "/r"))
assert(select(3, g:lock(0, 1, { timeout = 1 })) == "deadlock")
assert(g:test(0, 1) == nil or true)
a:unlock(); a:unlock()
f:close()                                            -- b goes with it
assert(not b.locked)
assert(not pcall(f.lock, f, 0, 1))                   -- closed handle: an error
g:close()
local sem = atomrun.semaphore(dir .. "/sem", 2)
local s1 = assert(sem:acquire())
local s2 = assert(sem:acquire())
local s3, _, code = sem:acquire({ wait = false })
assert(s3 == nil and code == "busy")
local s4, _, code4 = sem:acquire({ timeout = 0.05 })
assert(s4 == nil and code4 ~= nil)
s1:release(); s2:release()
for i = 1, 20 do
  local h = atomrun.open(dir .. "/gc")
  h:lock(i, 1)                                       -- left to the collector
end
collectgarbage()
print("ranges ok")
