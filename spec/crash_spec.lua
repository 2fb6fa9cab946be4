-- A kill storm: writers replacing one file in a loop are SIGKILLed at random
-- moments while readers read it continuously.  Every version is a
-- self-checking payload (a header with the line count, then that many copies
-- of one line), so a torn, truncated, mixed or empty file cannot pass.
--
-- What may remain afterwards: O_TMPFILE leaves nothing for a writer killed
-- while writing or syncing.  The one window is in replace, between linkat()
-- of the finished temp file to a hidden ".data.XXXXXXXX" name and the
-- renameat() over the target (src/core/file.c, ar_replace_in): a writer killed
-- there -- including during the linkat() itself, which completes before
-- the kill takes effect and waits for the directory lock while other
-- writers rename -- leaves a complete, synced hidden file.  With several
-- writers in one directory that is a large share of the kills, not a rare
-- event.  So those names are flock-guarded slots: a slot whose writer is
-- dead is taken over by the next writer.  The spec checks that what is left
-- is whole, at most one file per writer, and gone after one more replace.
local H = require "spec.helper"
local ar = H.ar
local gone, listdir = H.gone, H.listdir

local PAYLOAD = [[
local function payload(version, nlines)
  local line = version .. ":" .. string.rep("abcdefghij", 3) .. "\n"
  return "V " .. version .. " " .. nlines .. "\n" .. string.rep(line, nlines)
end
local function check(d)
  if d == nil then return "no data" end
  if d == "" then return "empty file" end
  local header, version, nlines = d:match("^(V (%S+) (%d+)\n)")
  if not header then return "bad header: " .. string.format("%q", d:sub(1, 60)) end
  local want = payload(version, tonumber(nlines))
  if #d ~= #want then return ("torn: %d bytes, expected %d (%s)"):format(#d, #want, version) end
  if d ~= want then return "mixed contents in " .. version end
  return nil, version
end
]]

local WRITER = PAYLOAD .. [[
local a = require "atomrun"
local path, id, durable, maxlines = arg[1], arg[2], arg[3] == "1", tonumber(arg[4])
local pid = a.pid()
math.randomseed(pid)
local i = 0
while true do
  i = i + 1
  local ok, err = a.replace(path, payload(id .. "." .. pid .. "." .. i,
    math.random(1, maxlines)), { durable = durable })
  if not ok then
    local f = io.open(path .. ".writer-error", "a")
    f:write(err, "\n"); f:close()
    os.exit(1)
  end
end
]]

local READER = PAYLOAD .. [[
local a = require "atomrun"
local path, out = arg[1], arg[2]
local reads, changes, last, bad = 0, 0, nil, nil
local f = assert(io.open(out .. ".ready", "w")); f:close()
while not a.stat(path .. ".stop") do
  local d, err = a.read(path)
  local problem, version = check(d)
  if problem then bad = problem .. (err and (" / " .. err) or ""); break end
  reads = reads + 1
  if version ~= last then changes = changes + 1; last = version end
end
f = assert(io.open(out, "w"))
f:write(bad or ("ok " .. reads .. " " .. changes))
f:close()
]]

local function cmd(...)
  local parts = { H.q(H.atomrun) }
  for _, a in ipairs({ ... }) do parts[#parts + 1] = H.q(a) end
  return table.concat(parts, " ")
end

describe("SIGKILL storm on replace #heavy", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  it("readers never see a torn or empty file; what a kill leaves is whole and hidden", function()
    local storm = 3.0           -- seconds of killing
    local path = dir .. "/data"
    local checker = load(PAYLOAD .. " return payload, check")
    local payload, check = checker()
    assert.is_true(ar.create(path, payload("initial", 10)))
    local writer, reader = dir .. "/writer.lua", dir .. "/reader.lua"
    H.write(writer, WRITER)
    H.write(reader, READER)

    local readers = {}
    for i = 1, 2 do
      readers[i] = H.spawn(cmd(reader, path, dir .. "/reader" .. i))
    end
    assert.is_true(H.wait_until(function()
      return H.exists(dir .. "/reader1.ready") and H.exists(dir .. "/reader2.ready")
    end, 30), "readers did not start")

    -- writer kinds: durable with big files (killed mostly in write/fsync),
    -- and non-durable small ones (killed more often near link/rename)
    local kinds = { { "1", 3000 }, { "0", 50 }, { "0", 400 } }
    local writers, kills = {}, 0
    local function start(i)
      writers[i] = H.spawn(cmd(writer, path, "w" .. i, kinds[i][1], kinds[i][2]))
    end
    for i = 1, #kinds do start(i) end
    math.randomseed(os.time())
    local stop_at = ar.now() + storm
    while ar.now() < stop_at do
      ar.sleep(0.001 + math.random() * 0.02)
      local i = math.random(1, #kinds)
      H.kill(writers[i], "KILL")
      kills = kills + 1
      start(i)
    end
    for i = 1, #kinds do H.kill(writers[i], "KILL"); kills = kills + 1 end
    H.write(path .. ".stop", "")
    for i = 1, #kinds do
      assert.is_true(H.wait_until(function() return gone(writers[i]) end, 30))
    end
    for i = 1, 2 do
      assert.is_true(H.wait_until(function() return gone(readers[i]) end, 30))
    end

    assert.is_false(H.exists(path .. ".writer-error"), H.slurp(path .. ".writer-error"))
    local total_reads, total_changes = 0, 0
    for i = 1, 2 do
      local res = H.slurp(dir .. "/reader" .. i)
      local reads, changes = res:match("^ok (%d+) (%d+)$")
      assert.truthy(reads, "reader " .. i .. ": " .. res)
      total_reads = total_reads + tonumber(reads)
      total_changes = total_changes + tonumber(changes)
    end
    assert.truthy(total_changes > 10, "readers saw only " .. total_changes .. " versions")
    assert.is_nil((check(ar.read(path))))

    -- leftovers: only complete payloads under a hidden name, from the
    -- link-to-rename window
    local leftovers = 0
    for _, name in ipairs(listdir(dir)) do
      if name:match("^%.data%.") then
        leftovers = leftovers + 1
        assert.is_nil((check(ar.read(dir .. "/" .. name))), "leftover " .. name .. " is not whole")
      else
        assert.truthy(name == "data" or name == "data.stop" or name:match("^reader")
          or name:match("^writer"), "unexpected file " .. name)
      end
    end
    -- Temp names are flock-guarded slots (src/core/file.c, link_slot): at most
    -- one per writer killed at once, and the next replace removes them.
    assert.truthy(leftovers <= #kinds, leftovers .. " leftovers for " .. #kinds .. " writers")
    assert.is_true(ar.replace(path, payload("final", 3)))
    for _, name in ipairs(listdir(dir)) do
      assert.is_nil(name:match("^%.data%."), "not cleaned up by the next replace: " .. name)
    end
    io.stderr:write(("\n[crash_spec] %d kills, %d reads (%d versions seen), "
      .. "%d hidden temp files left (%.2f%% of kills)\n"):format(kills, total_reads,
      total_changes, leftovers, 100 * leftovers / kills))
  end)
end)
