-- Run by spec/host.c (make check-embed): the module and its recipes are
-- there without any search path, and arguments arrive as in lua(1).
local atomrun = require "atomrun"
assert(type(atomrun.with_lock) == "function", "recipes missing")
local dir = os.tmpname()
os.remove(dir)
assert(atomrun.mkdir(dir))
local n = atomrun.with_lock(dir .. "/x.lock", nil, function() return atomrun.held() end)
assert(n == 1 and atomrun.held() == 0)
os.execute("rm -rf '" .. dir .. "'")
print("embedded: " .. table.concat({ ... }, " "))
