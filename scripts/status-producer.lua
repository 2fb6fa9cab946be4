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

-- The command line.  These lines are the same in every script in scripts/
-- (each is copied and run alone, so they cannot share a module): -h and
-- --help print USAGE on stdout and exit 0; an option the script does not
-- know, or one missing its value, is a usage error on stderr, exit 64
-- (EX_USAGE, as `atomrun` itself).  "--" ends the options.  A lone "-" is
-- refused too (no script here reads stdin); a negative number ("-1") is an
-- operand, not an option.
local function usage_error(msg)
  io.stderr:write(NAME, ": ", msg, "\n", SYNOPSIS,
    "Try 'atomrun ", NAME, ".lua --help' for more information.\n")
  os.exit(64)
end

-- OPTIONS maps each option the script knows to "flag" or "value" (it takes
-- the next argument).  Returns the options given (option -> true or its
-- value) and the operands.  With in_front, the options end at the first
-- operand: what follows is a command, whose own options are not ours.
local function parse_args(argv, options, in_front)
  local given, operands, i = {}, {}, 1
  while argv[i] ~= nil do
    local a = argv[i]
    local is_option = a:sub(1, 1) == "-" and not tonumber(a)
    if a == "--" or (in_front and not is_option) then
      table.move(argv, a == "--" and i + 1 or i, #argv, #operands + 1, operands)
      break
    elseif a == "-h" or a == "--help" then
      io.stdout:write(USAGE)
      os.exit(0)
    elseif not is_option then
      operands[#operands + 1] = a
    elseif options[a] == "value" then
      i = i + 1
      given[a] = argv[i] or usage_error(a .. " needs a value")
    elseif options[a] == "flag" then
      given[a] = true
    else
      usage_error("unknown option '" .. a .. "'")
    end
    i = i + 1
  end
  return given, operands
end

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
