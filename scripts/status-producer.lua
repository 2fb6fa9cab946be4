#!/usr/bin/env atomrun
-- scripts/status-producer.lua -- a long job that publishes its progress in a
-- status file that readers never see half-written.  Its usage: USAGE below
-- (`atomrun status-producer.lua --help`).
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

local NAME = "status-producer"
local SYNOPSIS = "usage: atomrun status-producer.lua STATUS_FILE [STEPS [SECONDS_PER_STEP]]\n"
local USAGE = SYNOPSIS .. [[

A stand-in for a long job: work STEPS steps (default 10) of SECONDS_PER_STEP
seconds each (default 0.5), writing its progress to STATUS_FILE before each
step and "done" at the end, as JSON {state, step, total, pid, started,
updated}.  Every write replaces the file atomically: a reader sees the
previous status or the next, never a half-written file.  Read it any time
with status-watch.lua, `cat`, `jq`, a web page...

  -h, --help   print this and exit

Environment: STATUS_FILE  the file, when no STATUS_FILE argument is given.

Exit status: 0 done; 1 a write failed; 64 usage.

Example (and follow it from another shell):
  atomrun status-producer.lua /tmp/job.status 20 1
  atomrun status-watch.lua /tmp/job.status
]]

-- The command line: atomrun.args (bundled in atomrun, so this script still
-- runs alone when copied): -h and --help print USAGE and exit 0; an option
-- the script does not know, or one missing its value, is a usage error on
-- stderr, exit 64 (EX_USAGE, as `atomrun` itself).
local cmdline = require("atomrun.args").new(NAME, SYNOPSIS, USAGE)
local usage_error, parse_args = cmdline.error, cmdline.parse

local _, operands = parse_args(arg, {})
if #operands > 3 then usage_error("too many arguments: '" .. operands[4] .. "'") end
local path = operands[1] or os.getenv("STATUS_FILE")
if not path then usage_error("no STATUS_FILE given") end
local steps = math.tointeger(tonumber(operands[2] or "10")) or 10
local pause = tonumber(operands[3] or "0.5") or 0.5

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
