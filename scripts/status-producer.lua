#!/usr/bin/env atomrun
-- scripts/status-producer.lua -- a long job that publishes its progress in a
-- status file that readers never see half-written.
--
--   atomrun status-producer.lua STATUS_FILE [STEPS [SECONDS_PER_STEP]]
--
-- Read it any time with scripts/status-watch.lua, `cat`, `jq`, a web page...
--
-- Each write is a whole new file renamed over the old one (atomrun.replace
-- underneath), so a reader opens either the previous status or the next,
-- never an empty or half-written file, and never "no file" in between.
-- Writing in place (open "w", write) or deleting before renaming is exactly
-- what makes readers see garbage.
--
-- Progress updates are written with durable = false: if the machine
-- crashes, an older progress line is fine and skipping the fsync keeps
-- frequent updates cheap.  The final "done" is durable: it must survive.
local atomrun = require "atomrun"

local path = arg[1] or os.getenv("STATUS_FILE")
if not path then
  io.stderr:write("usage: atomrun status-producer.lua STATUS_FILE [STEPS [SECONDS_PER_STEP]]\n")
  os.exit(64)
end
local steps = math.tointeger(tonumber(arg[2] or "10")) or 10
local pause = tonumber(arg[3] or "0.5") or 0.5

local status = atomrun.status(path)
local started = os.time()

local function publish(state, step, durable)
  assert(status:write({
    state = state, step = step, total = steps,
    pid = atomrun.pid(), started = started, updated = os.time(),
  }, { durable = durable }))
end

for step = 1, steps do
  publish("running", step - 1, false)
  atomrun.sleep(pause)                  -- the real work goes here
end
publish("done", steps, true)
