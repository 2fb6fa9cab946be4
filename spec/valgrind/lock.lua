-- valgrind: whole-file locks, deadlock detection, with_lock, lock_all.
local atomrun = require "atomrun"
local dir = assert(arg[1], "usage: lock.lua DIR")
local lk = assert(atomrun.lock(dir .. "/a.lock"))
assert(tostring(lk):find("held"))
assert(lk.path == dir .. "/a.lock" and lk.mode == "exclusive")
local again, _, code = atomrun.lock(dir .. "/a.lock", { timeout = 1 })
assert(again == nil and code == "deadlock")
local busy, _, bcode, holder = atomrun.lock(dir .. "/a.lock", { wait = false })
assert(busy == nil and bcode == "busy" and holder and holder.pid == atomrun.pid())
lk:unlock(); lk:unlock()
do
  local s1 <close> = assert(atomrun.lock(dir .. "/s.lock", { mode = "shared" }))
  local s2 <close> = assert(atomrun.lock(dir .. "/s.lock", { mode = "shared" }))
end
assert(atomrun.with_lock(dir .. "/w.lock", { timeout = 1 }, function(x) return x + 1 end, 1) == 2)
assert(not pcall(atomrun.with_lock, dir .. "/w.lock", nil, function() error("boom") end))
local g = assert(atomrun.lock_all({ dir .. "/x", dir .. "/y", dir .. "/x" }, { timeout = 1 }))
g:unlock()
assert(atomrun.held() == 0)
for _ = 1, 50 do atomrun.lock(dir .. "/gc" .. _) end     -- left to the collector
collectgarbage()
-- errors raised from C must not leak what was allocated before them
for _, bad in ipairs({ { timeout = -1 }, { bogus = 1 }, { mode = "x" }, "x" }) do
  assert(not pcall(atomrun.lock, dir .. "/e", bad))
end
assert(not pcall(atomrun.lock, "a\0b"))
print("lock ok")
