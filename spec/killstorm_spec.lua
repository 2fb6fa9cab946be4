-- spec/killstorm_spec.lua -- SIGKILL at random, then look at what is left.
--
-- Workers loop over: a whole-file lock, update() of a counter, replace() of
-- a self-checking document, once(), and a semaphore slot.  The spec
-- SIGKILLs a random worker every few tens of milliseconds and starts a new
-- one, while readers (never killed) read the document and the counter
-- continuously.  Afterwards:
--   * every lock is free at once (wait = false): a killed holder's locks
--     die with it, and nothing was left locked by a half-finished recipe;
--   * no reader ever saw a torn document or a counter that is not a number;
--   * the counter equals the number of completed updates (see below);
--   * no temp file is left, except the documented one: replace() links its
--     unnamed O_TMPFILE to a hidden name (a slot ".name.~N") and renames that
--     over the target, and a writer killed during that linkat() or before
--     the rename leaves that complete hidden file.  The next replace() of
--     the same file reclaims such slots (their flock died with the writer),
--     so what remains is what the last kills left.  They are counted,
--     checked complete, and reported.
--
-- Counting updates.  A worker logs "B" (begin) before update() and "U" after
-- it returns, each line one O_APPEND write(2), so lines never interleave.
-- A kill can land anywhere, so a worker's log can end in "B" with the
-- update in any state: not started, lock taken, renamed into place (the
-- counter went up) but not yet returned, or returned but "U" not yet
-- written.  Only in that last group of cases did the counter change
-- without a "U".  A "U" is only ever written after the rename, so
--     U-lines  <=  counter  <=  U-lines + (workers whose log ends in "B").
-- Nothing tighter can be known from outside, and anything outside that range
-- is a lost or a doubled update.
--
-- Heavy (atomrun pass only).  AR_STORM_SECONDS sets the length (default 8;
-- 20 or more for a harder storm where there is time).
local H = require "spec.helper"
local ar = H.ar
local dead = H.gone

local SECONDS = tonumber(os.getenv("AR_STORM_SECONDS") or "") or 8
local WORKERS = 6
local READERS = 2

local WORKER = [=[
local A = require "atomrun"
local dir, wid = ...
math.randomseed(A.pid() * 7919 + math.floor(A.now() * 1000))
local log = assert(io.open(dir .. "/log", "a"))
log:setvbuf("no")                       -- one write(2) per line, O_APPEND
local function note(s) log:write(wid .. " " .. s .. "\n") end
local seq = 0
local sem = A.semaphore(dir .. "/sem", 2)
local function doc(n)
  local len = math.random(1, 96) * 1024
  local c = string.char(97 + n % 26)
  return string.format("DOC %s %d %d\n%s\nEND %s %d\n", wid, n, len, c:rep(len), wid, n)
end
while true do
  local op = math.random(5)
  local durable = math.random(2) == 1
  if op == 1 then
    local lk = A.lock(dir .. "/whole.lock", { timeout = 2 })
    if lk then A.sleep(math.random() * 0.003); lk:unlock() end
  elseif op == 2 then
    note("B")
    local new = A.update(dir .. "/counter", function(old)
      return tostring((tonumber(old) or 0) + 1)
    end, { timeout = 5, durable = durable })
    note(new and "U" or "F")
  elseif op == 3 then
    seq = seq + 1
    A.replace(dir .. "/data", doc(seq), { durable = durable })
  elseif op == 4 then
    local g = A.once("storm", { dir = dir .. "/once" })
    if g then A.sleep(math.random() * 0.003); g:release() end
  else
    local slot = sem:acquire({ timeout = 1 })
    if slot then A.sleep(math.random() * 0.003); slot:release() end
  end
end
]=]

local READER = [=[
local A = require "atomrun"
local dir, id = ...
local reads, torn = 0, 0
local function bad(what, s)
  torn = torn + 1
  local f = io.open(dir .. "/torn", "a")
  f:write(string.format("reader %s: %s (%d bytes: %q...)\n", id, what, #s, s:sub(1, 60)))
  f:close()
end
local function check_doc(s)
  local wid, n, len = s:match("^DOC (%S+) (%d+) (%d+)\n")
  if not wid then return bad("no header", s) end
  len = tonumber(len)
  local body = s:sub(#s:match("^[^\n]*\n") + 1)
  local payload, trailer = body:sub(1, len), body:sub(len + 1)
  local c = string.char(97 + tonumber(n) % 26)
  if #payload ~= len or payload:find("[^" .. c .. "]") then return bad("payload", s) end
  if trailer ~= string.format("\nEND %s %s\n", wid, n) then return bad("trailer", s) end
end
while not A.stat(dir .. "/stop") do
  local s = A.read(dir .. "/data")
  if s then reads = reads + 1; check_doc(s) end
  local fh = io.open(dir .. "/data", "rb")       -- and through stdio, as others would
  if fh then
    local s2 = fh:read("a"); fh:close()
    reads = reads + 1; check_doc(s2)
  end
  local c = A.read(dir .. "/counter")
  if c then
    reads = reads + 1
    if not c:match("^%d+$") then bad("counter", c) end
  end
  A.sleep(0.001)
end
local f = io.open(dir .. "/reader" .. id .. ".out", "w")
f:write(reads, " ", torn, "\n")
f:close()
]=]

describe("kill storm #heavy", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  it("SIGKILL at random: locks free, no torn reads, counter exact, no temp files", function()
    H.write(dir .. "/worker.lua", WORKER)
    H.write(dir .. "/reader.lua", READER)
    local function start_worker(wid)
      return H.spawn(H.q(H.atomrun) .. " " .. H.q(dir .. "/worker.lua") .. " " .. H.q(dir) .. " " .. wid)
    end
    local readers = {}
    for i = 1, READERS do
      readers[i] = H.spawn(H.q(H.atomrun) .. " " .. H.q(dir .. "/reader.lua") .. " " .. H.q(dir) .. " " .. i)
    end
    local workers, all = {}, {}
    local next_id = 0
    for i = 1, WORKERS do
      next_id = next_id + 1
      workers[i] = start_worker("w" .. next_id)
      all[#all + 1] = workers[i]
    end
    math.randomseed(os.time())
    local kills = 0
    local stop_at = ar.now() + SECONDS
    while ar.now() < stop_at do
      ar.sleep(0.01 + math.random() * 0.06)
      local i = math.random(#workers)
      H.kill(workers[i], "KILL")
      kills = kills + 1
      next_id = next_id + 1
      workers[i] = start_worker("w" .. next_id)
      all[#all + 1] = workers[i]
    end
    for _, pid in ipairs(workers) do
      H.kill(pid, "KILL")
      kills = kills + 1
    end
    assert.is_true(H.wait_until(function()
      for _, pid in ipairs(all) do if not dead(pid) then return false end end
      return true
    end, 30), "workers still alive after SIGKILL")
    H.write(dir .. "/stop", "")
    local reads, torn = 0, 0
    for i, pid in ipairs(readers) do
      assert.is_true(H.wait_file(dir .. "/reader" .. i .. ".out", 30), "reader " .. i .. " did not stop")
      local r, t = H.slurp(dir .. "/reader" .. i .. ".out"):match("(%d+) (%d+)")
      reads, torn = reads + tonumber(r), torn + tonumber(t)
      H.kill(pid, "KILL")
    end

    -- every lock is free at once
    local lk = ar.lock(dir .. "/whole.lock", { wait = false })
    assert.is_not_nil(lk, "whole.lock still held")
    lk:unlock()
    lk = ar.lock(dir .. "/counter.lock", { wait = false })
    assert.is_not_nil(lk, "the update lock is still held")
    lk:unlock()
    local g, gerr = ar.once("storm", { dir = dir .. "/once" })
    assert.is_not_nil(g, gerr)
    g:release()
    local sem = ar.semaphore(dir .. "/sem", 2)
    local s1 = assert(sem:acquire({ wait = false }))
    local s2 = assert(sem:acquire({ wait = false }))
    s1:release(); s2:release()

    -- nobody saw a torn file
    assert.equal("", H.slurp(dir .. "/torn"))
    assert.equal(0, torn)
    assert.is_true(reads > 0)

    -- the counter: see the top of this file
    local last, updated = {}, 0
    for wid, what in H.slurp(dir .. "/log"):gmatch("(%S+) (%a)\n") do
      last[wid] = what
      if what == "U" then updated = updated + 1 end
    end
    local open_b = 0
    for _, what in pairs(last) do if what == "B" then open_b = open_b + 1 end end
    local counter = tonumber(H.slurp(dir .. "/counter")) or 0
    assert.is_true(counter >= updated and counter <= updated + open_b,
      string.format("counter %d, completed updates %d, killed inside update %d", counter, updated, open_b))

    -- temp files: only complete ones, only from the linkat -> rename window
    local _, hidden = H.sh("cd " .. H.q(dir) .. " && find . -mindepth 1 -name '.*'")
    local left = {}
    for name in hidden:gmatch("[^\n]+") do left[#left + 1] = name end
    for _, name in ipairs(left) do
      assert.matches("^%./[%w/]*%.[%w.]+%.~?[%w]+$", name)
      if name:match("^%./%.data%.") then
        local s = H.slurp(dir .. "/" .. name:sub(3))
        assert.matches("\nEND %S+ %d+\n$", s, "an incomplete temp file " .. name)
      end
    end
    assert.is_true(#left <= kills)
    local fs = ar.probe(dir) or {}
    print(string.format("\nkillstorm: %.0f s, %d processes SIGKILLed, %d updates completed "
      .. "(counter %d, %d killed inside update), %d reads, 0 torn; %d hidden temp files left "
      .. "by writers killed between link and rename and not yet reclaimed (%s, O_TMPFILE %s)", SECONDS, kills, updated, counter,
      open_b, reads, #left, tostring(fs.fstype), tostring(fs.tmpfile)))
  end)
end)
