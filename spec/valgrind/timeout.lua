-- valgrind: deadlines (the timer signal), on whole files and on ranges.
local atomrun = require "atomrun"
local dir = assert(arg[1], "usage: timeout.lua DIR")
local f = dir .. "/held"
-- another process holds the flock, then a range, until we say "done"
-- (valgrind is slow: no fixed sleeps)
local done = dir .. "/done"
local p = io.popen("flock -x " .. f .. " sh -c 'echo held; i=0; while [ ! -e " .. done
  .. " ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done'")
assert(p:read("l") == "held")
for _, t in ipairs({ 0.01, 0.05, 0.1 }) do
  local lk, err, code, holder = atomrun.lock(f, { timeout = t })
  assert(lk == nil and code == "timeout", tostring(err))
  assert(type(holder) == "table")
end
local lk, _, code = atomrun.lock(f, { wait = false })
assert(lk == nil and code == "busy")
io.open(done, "w"):close()
p:close()
os.remove(done)
local got = assert(atomrun.lock(f, { timeout = 5 }))
got:unlock()
-- ranges: a second handle of this script is refused at once ("deadlock"),
-- so another process holds the range
local q = io.popen(arg[-1] .. " -e 'local f = atomrun.open(arg[1]); local r = f:lock(0, 10); "
  .. "print(\"held\"); io.stdout:flush(); local t = atomrun.now() + 30; "
  .. "while not atomrun.stat(arg[2]) and atomrun.now() < t do atomrun.sleep(0.01) end' "
  .. dir .. "/r " .. done)
assert(q:read("l") == "held")
local h = assert(atomrun.open(dir .. "/r"))
-- Not a timed wait here: valgrind (3.19) does not know that
-- fcntl(F_OFD_SETLKW) blocks, so it holds back every signal during it and
-- the deadline could never interrupt the wait (natively it does: see
-- range_spec and spec/tsan).  flock(2) above it does know.
local r, _, rcode, holder = h:lock(5, 10, { wait = false })
assert(r == nil and rcode == "busy" and holder and holder.start == 0, tostring(rcode))
assert(h:test(0, 1))
io.open(done, "w"):close()
q:close()
h:close()
print("timeout ok")
