-- Timed waits (src/core/wait.c) in a process where no real-time signal can be
-- had: every one of SIGRTMIN..SIGRTMAX is ignored, as a host may leave them.
-- atomrun never replaces a disposition it did not set, so it has no signal
-- to end a blocking flock(2) at the deadline; the wait must still end at
-- its deadline, and a free lock must still be taken -- never a "busy" or an
-- EAGAIN at once.
local H = require "spec.helper"
local ar = H.ar

-- Runs the rest of its command line with every real-time signal ignored
-- (dispositions set to SIG_IGN survive execve).
local NO_RT = [[
import os, signal, sys
for s in range(signal.SIGRTMIN, signal.SIGRTMAX + 1):
    signal.signal(s, signal.SIG_IGN)
os.execv(sys.argv[1], sys.argv[1:])
]]

describe("timed waits with every real-time signal ignored", function()
  local dir, f, wrapper
  before_each(function()
    dir = H.tmpdir()
    f = dir .. "/w.lock"
    wrapper = H.script(dir, "no_rt.py", NO_RT)
  end)
  after_each(H.cleanup_procs)

  local function no_rt(...)
    return H.python .. " " .. H.q(wrapper) .. " " .. H.cmd(...)
  end

  it("the wrapper really ignores them (SigIgn in /proc)", function()
    local st, out = H.sh(no_rt("-e", [[
      for l in io.lines("/proc/self/status") do
        local m = l:match("^SigIgn:%s+(%x+)") if m then print(m) end
      end]]))
    assert.equal(0, st)
    -- SIGRTMIN (34) .. SIGRTMAX (64): the top 31 bits of the 64-bit mask
    local mask = math.tointeger(tonumber(out:match("%x+"), 16))
    assert.equal(0xfffffffe00000000, mask & 0xfffffffe00000000)
  end)

  it("atomrun lock -w 0.5 on a held lock exits 1 after about 0.5 s", function()
    H.hold(dir, f)
    local t0 = ar.now()
    local st, out, err = H.sh(no_rt("lock", "--verbose", "-w", "0.5", f, "echo", "ran"))
    local took = ar.now() - t0
    assert.equal(1, st, err)
    assert.equal("", out)
    assert.matches("^atomrun: timeout while waiting to get lock\n", err)
    assert.is_true(took >= 0.5, "gave up after " .. took .. " s")
    assert.is_true(took < 8, "took " .. took .. " s")
  end)

  it("atomrun lock -w 0.5 on a free lock takes it and runs the command", function()
    local st, out, err = H.sh(no_rt("lock", "-w", "0.5", f, "echo", "ran"))
    assert.equal(0, st, err)
    assert.equal("ran\n", out)
  end)

  it("a lock released during the wait is taken", function()
    local stop = dir .. "/stop"
    H.hold(dir, f, stop)
    H.track(H.spawn("sleep 0.4; touch " .. H.q(stop)))
    local t0 = ar.now()
    local st, out, err = H.sh(no_rt("lock", "-w", "20", f, "echo", "ran"))
    local took = ar.now() - t0
    assert.equal(0, st, err)
    assert.equal("ran\n", out)
    assert.is_true(took < 15, "took " .. took .. " s")
  end)

  it("atomrun.lock{timeout} in such a process says timeout, then takes a free lock", function()
    H.hold(dir, f)
    local st, out, err = H.sh(no_rt("-e", [[
      local held, free = ...
      local t0 = atomrun.now()
      local lk, _, code = atomrun.lock(held, { timeout = 0.3 })
      print(lk, code, atomrun.now() - t0 >= 0.3)
      lk = assert(atomrun.lock(free, { timeout = 0.3 }))
      print(lk ~= nil)
    ]], f, dir .. "/free.lock"))
    assert.equal(0, st, err)
    assert.equal("nil\ttimeout\ttrue\ntrue\n", out)
  end)
end)
