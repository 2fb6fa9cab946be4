-- atomrun.semaphore(path, n): n slots as n bytes of one file, proved with
-- competing processes.
local H = require "spec.helper"
local ar = H.ar

local esc = H.pat

-- A worker: takes a slot, logs "enter", holds it until the go file exists
-- (then a little longer), logs "leave" and releases.  Each log line is one
-- write(2) to an O_APPEND file, so lines from processes never mix.
local WORKER = [[
  local sem_path, n, log, go = ...
  local sem = atomrun.semaphore(sem_path, math.tointeger(tonumber(n)))
  local slot = assert(sem:acquire({ timeout = 60 }))
  local out = assert(io.open(log, "a"))
  local function say(what)
    out:write(string.format("%s %d %d\n", what, atomrun.pid(), slot.index))
    out:flush()
  end
  say("enter")
  local t = atomrun.now() + 60
  while not atomrun.stat(go) and atomrun.now() < t do atomrun.sleep(0.005) end
  atomrun.sleep(0.02)
  say("leave")
  out:close()
  slot:release()
]]

-- A holder: takes a slot, says which (pid and index) and keeps it.
local HOLD = [[
  local sem_path, n, ready = ...
  local sem = atomrun.semaphore(sem_path, math.tointeger(tonumber(n)))
  local slot = assert(sem:acquire({ timeout = 30 }))
  assert(atomrun.replace(ready, atomrun.pid() .. " " .. slot.index, { durable = false }))
  local t = atomrun.now() + 60
  while atomrun.now() < t do atomrun.sleep(0.05) end
]]

describe("atomrun.semaphore", function()
  local dir, path, pids

  before_each(function()
    dir = H.tmpdir()
    path = dir .. "/sem"
    pids = {}
  end)

  after_each(function()
    for _, pid in ipairs(pids) do H.kill(pid, "KILL") end
    collectgarbage()
    collectgarbage()
    H.cleanup()
  end)

  -- Start a holder child; returns its pid and slot index.
  local function holder(n, name)
    local ready, errf = dir .. "/" .. name .. ".ready", dir .. "/" .. name .. ".err"
    H.spawn(table.concat({ H.q(H.atomrun), "-e", H.q(HOLD), H.q(path), tostring(n),
      H.q(ready) }, " ") .. " 2>" .. H.q(errf))
    assert(H.wait_file(ready, 30), "holder did not start: " .. H.slurp(errf))
    local pid, index = H.slurp(ready):match("^(%d+) (%d+)$")
    pids[#pids + 1] = tonumber(pid)
    return tonumber(pid), tonumber(index)
  end

  local function count(text, what)
    local k = 0
    for _ in text:gmatch(what .. " %d+ %d+\n") do k = k + 1 end
    return k
  end

  it("lets at most 3 of 6 competing processes in at once, and all 6 eventually", function()
    local log, go = dir .. "/log", dir .. "/go"
    finally(function() H.write(go, "") end)     -- let them all go, whatever happens
    for _ = 1, 6 do
      pids[#pids + 1] = H.spawn(table.concat({ H.q(H.atomrun), "-e", H.q(WORKER), H.q(path),
        "3", H.q(log), H.q(go) }, " ") .. " 2>>" .. H.q(dir .. "/workers.err"))
    end
    local function errs() return "workers said: " .. H.slurp(dir .. "/workers.err") end
    -- three get in and stay in...
    assert(H.wait_until(function() return count(H.slurp(log), "enter") >= 3 end, 30), errs())
    -- ...and nobody else does while they hold their slots
    ar.sleep(0.3)
    assert.equal(3, count(H.slurp(log), "enter"), errs())
    assert.equal(0, count(H.slurp(log), "leave"))
    H.write(go, "")
    assert(H.wait_until(function() return count(H.slurp(log), "leave") == 6 end, 60), errs())
    -- replay the log: never more than 3 inside, never two in one slot
    local inside, most, by_slot, entered, left = 0, 0, {}, {}, {}
    for what, pid, index in H.slurp(log):gmatch("(%a+) (%d+) (%d+)\n") do
      index = tonumber(index)
      assert.is_true(index >= 1 and index <= 3)
      if what == "enter" then
        inside = inside + 1
        assert.is_nil(by_slot[index], "two holders in slot " .. index)
        by_slot[index] = pid
        entered[pid] = true
      else
        inside = inside - 1
        assert.equal(pid, by_slot[index])
        by_slot[index] = nil
        left[pid] = true
      end
      most = math.max(most, inside)
    end
    assert.equal(3, most)
    local n_entered, n_left = 0, 0
    for _ in pairs(entered) do n_entered = n_entered + 1 end
    for _ in pairs(left) do n_left = n_left + 1 end
    assert.equal(6, n_entered)
    assert.equal(6, n_left)
    assert.equal("", H.slurp(dir .. "/workers.err"))
  end)

  it("frees a SIGKILLed holder's slot at once, even for a waiter", function()
    local sem = ar.semaphore(path, 2)
    local p1, i1 = holder(2, "one")
    local p2, i2 = holder(2, "two")
    assert.not_equal(i1, i2)
    -- full: busy at once, naming both holders
    local slot, msg, code = sem:acquire({ wait = false })
    assert.is_nil(slot)
    assert.equal("busy", code)
    assert.matches("^all 2 slots of " .. esc(path) .. " are taken %(held by pids ", msg)
    assert.matches("[ (]" .. p1 .. "[,)]", msg)
    assert.matches("[ (]" .. p2 .. "[,)]", msg)
    -- a waiter in another process
    local got, errf = dir .. "/waiter.got", dir .. "/waiter.err"
    H.spawn(H.q(H.atomrun) .. " -e " .. H.q([[
      local slot = assert(atomrun.semaphore(arg[1], 2):acquire({ timeout = 30 }))
      assert(atomrun.replace(arg[2], tostring(slot.index), { durable = false }))
      atomrun.sleep(0.2)
    ]]) .. " " .. H.q(path) .. " " .. H.q(got) .. " 2>" .. H.q(errf))
    -- it waits (in slices, on one slot at a time) before the holder dies
    assert.is_true(H.wait_lock_waited(path, 20), "the waiter never waited: " .. H.slurp(errf))
    assert.is_false(H.exists(got))
    H.kill(p1, "KILL")
    assert(H.wait_file(got, 30), "the waiter did not get the slot: " .. H.slurp(errf))
    assert.equal(tostring(i1), H.slurp(got))
    -- and when the waiter is gone, the slot is free for us
    assert(H.wait_until(function()
      local s = sem:acquire({ wait = false })
      if s then
        assert.equal(i1, s.index)
        s:release()
        return true
      end
    end, 30))
    H.kill(p2, "KILL")
    assert(H.wait_until(function()
      local s = sem:acquire({ wait = false })
      if s then s:release() return true end
    end, 30))
  end)

  it("times out after the timeout, naming the holders", function()
    local sem = ar.semaphore(path, 1)
    local pid = holder(1, "one")
    local t0 = ar.now()
    local slot, msg, code = sem:acquire({ timeout = 0.3 })
    local took = ar.now() - t0
    assert.is_nil(slot)
    assert.equal("timeout", code)
    assert.matches("^timed out after 0%.3 s: all 1 slots of " .. esc(path)
      .. " are taken %(held by pids " .. pid .. "%)$", msg)
    assert.is_true(took >= 0.29, "returned after " .. took .. " s")
    assert.is_true(took < 20, "returned after " .. took .. " s")
    slot, msg, code = sem:acquire({ timeout = 0 })
    assert.equal("busy", code)
  end)

  it("waits (not 'deadlock') when it holds some slots and other processes the rest",
    function()
      local sem = ar.semaphore(path, 2)
      local _, theirs = holder(2, "one")
      local mine = assert(sem:acquire({ wait = false }))
      assert.not_equal(theirs, mine.index)
      local slot, msg, code = sem:acquire({ timeout = 0.3 })
      assert.is_nil(slot)
      assert.equal("timeout", code, msg)
      mine:release()
    end)

  it("says 'deadlock' when this script holds every slot and would wait", function()
    local sem = ar.semaphore(path, 2)
    local a = assert(sem:acquire())
    local b = assert(sem:acquire())
    local slot, msg, code = sem:acquire({ timeout = 20 })
    assert.is_nil(slot)
    assert.equal("deadlock", code)
    assert.equal("all 2 slots of " .. path .. " are held by this script; waiting would "
      .. "wait forever", msg)
    -- not waiting: busy, and the holder named is this process
    slot, msg, code = sem:acquire({ wait = false })
    assert.equal("busy", code)
    assert.matches("held by pids " .. ar.pid() .. "%)", msg)
    a:release()
    b:release()
    -- without a timeout too (in a child, so that a bug could not hang the suite)
    local st, out, err = H.sh("timeout 20 " .. H.q(H.atomrun) .. " -e " .. H.q([[
      local sem = atomrun.semaphore(arg[1], 1)
      local a = assert(sem:acquire())
      print(select(3, sem:acquire()))
    ]]) .. " " .. H.q(path))
    assert.equal(0, st, err)
    assert.equal("deadlock\n", out)
  end)

  it("with 1000 slots all held, a busy acquire answers at once (O(n), not O(n^2))", function()
    local n = 1000
    local ready = dir .. "/big.ready"
    local pid = H.bg_lua([[
      local path, n, ready = arg[1], math.tointeger(tonumber(arg[2])), arg[3]
      local sem = atomrun.semaphore(path, n)
      local slots = {}
      for i = 1, n do slots[i] = assert(sem:acquire({ wait = false })) end
      assert(atomrun.replace(ready, tostring(atomrun.pid()), { durable = false }))
      atomrun.sleep(120)
    ]], path, n, ready)
    pids[#pids + 1] = pid
    assert(H.wait_file(ready, 60), "the holder of 1000 slots did not start")
    local sem = ar.semaphore(path, n)
    local t0 = ar.now()
    local slot, msg, code = sem:acquire({ wait = false })
    local took = ar.now() - t0
    assert.is_nil(slot)
    assert.equal("busy", code, msg)
    assert.matches("^all 1000 slots of " .. esc(path) .. " are taken", msg)
    -- holders named only from one pass (atomrun.who), never a lookup per slot
    if not ar.who then assert.is_nil(msg:find("held by", 1, true), msg) end
    -- milliseconds in fact (6.6 s, 17 s of system time on a busy host,
    -- before); the window is generous for a loaded machine
    assert.is_true(took < 3, "busy acquire took " .. took .. " s")
    t0 = ar.now()
    slot, msg, code = sem:acquire({ timeout = 0.2 })
    took = ar.now() - t0
    assert.equal("timeout", code, msg)
    assert.is_true(took < 5, "timed-out acquire took " .. took .. " s")
  end)

  it("sem:holders() lists the holders by slot, with pid and command", function()
    local sem = ar.semaphore(path, 3)
    assert.same({}, sem:holders())                 -- no file yet: nobody
    local p1, i1 = holder(3, "one")
    local p2, i2 = holder(3, "two")
    local mine = assert(sem:acquire({ wait = false }))
    local list = assert(sem:holders())
    assert.equal(3, #list)
    local by_slot = {}
    for k, h in ipairs(list) do
      if k > 1 then assert.is_true(list[k - 1].slot < h.slot) end
      by_slot[h.slot] = h
    end
    assert.equal(p1, by_slot[i1].pid)
    assert.equal(p2, by_slot[i2].pid)
    assert.equal(ar.pid(), by_slot[mine.index].pid)
    assert.matches("atomrun", by_slot[i1].cmd)
    mine:release()
    H.kill(p1, "KILL")
    assert(H.wait_until(function() return #assert(sem:holders()) == 1 end, 30))
    assert.equal(p2, sem:holders()[1].pid)
    assert.equal(i2, sem:holders()[1].slot)
  end)

  it("hands out distinct slot indexes; release is idempotent; <close> releases", function()
    local sem = ar.semaphore(path, 3)
    assert.equal("atomrun.semaphore (" .. path .. ", 3)", tostring(sem))
    local held = ar.held()
    local a = assert(sem:acquire())
    local b = assert(sem:acquire())
    local c = assert(sem:acquire({ timeout = 1 }))
    local seen = {}
    for _, s in ipairs({ a, b, c }) do
      assert.is_true(s.index >= 1 and s.index <= 3)
      assert.is_nil(seen[s.index])
      seen[s.index] = true
    end
    assert.equal(held + 3, ar.held())
    assert.matches("^atomrun%.slot %(" .. esc(path) .. " #" .. b.index .. "%)$", tostring(b))
    local _, _, code = sem:acquire({ wait = false })
    assert.equal("busy", code)
    assert.is_true(b:release())
    assert.is_true(b:release())
    assert.matches("released", tostring(b))
    assert.equal(held + 2, ar.held())
    do
      local again <close> = assert(sem:acquire({ wait = false }))
      assert.equal(b.index, again.index)
    end
    assert.equal(held + 2, ar.held())
    local d = assert(sem:acquire({ wait = false }))
    assert.equal(b.index, d.index)
    -- another process sees the slots as taken bytes of the file
    local st, out = H.run("-e", [[
      local f = atomrun.open(arg[1])
      for i = 0, 2 do io.write(f:test(i, 1) and "x" or "-") end
    ]], path)
    assert.equal(0, st)
    assert.equal("xxx", out)
    a:release()
    c:release()
    d:release()
    assert.equal(held, ar.held())
  end)

  it("a collected slot frees its byte", function()
    local sem = ar.semaphore(path, 1)
    local function take_and_drop() assert(sem:acquire()) end
    take_and_drop()
    collectgarbage()
    collectgarbage()
    local s = assert(sem:acquire({ wait = false }))
    s:release()
  end)

  describe("bad arguments are Lua errors", function()
    local cases = {
      { "path not a string", function() return ar.semaphore(42, 3) end, "#1 to 'semaphore'" },
      { "no n", function() return ar.semaphore(path) end, "#2 to 'semaphore'" },
      { "n = 0", function() return ar.semaphore(path, 0) end, "#2 to 'semaphore'" },
      { "n = -2", function() return ar.semaphore(path, -2) end, "#2 to 'semaphore'" },
      { "n = 1.5", function() return ar.semaphore(path, 1.5) end, "#2 to 'semaphore'" },
      { "n = '3'", function() return ar.semaphore(path, "3") end, "#2 to 'semaphore'" },
      { "options not a table", function() return ar.semaphore(path, 2):acquire(5) end,
        "'acquire'.*options must be a table" },
      { "unknown option", function() return ar.semaphore(path, 2):acquire({ timout = 1 }) end,
        "'acquire'.*unknown option 'timout'" },
      { "negative timeout", function() return ar.semaphore(path, 2):acquire({ timeout = -1 }) end,
        "'acquire'.*option 'timeout' must be a number of seconds >= 0" },
      { "NaN timeout", function() return ar.semaphore(path, 2):acquire({ timeout = 0 / 0 }) end,
        "'acquire'.*option 'timeout'" },
      { "string timeout", function() return ar.semaphore(path, 2):acquire({ timeout = "1" }) end,
        "'acquire'.*option 'timeout'" },
      { "wait not a boolean", function() return ar.semaphore(path, 2):acquire({ wait = "no" }) end,
        "'acquire'.*option 'wait'" },
    }
    H.bad_arg_cases(it, cases)
  end)
end)
