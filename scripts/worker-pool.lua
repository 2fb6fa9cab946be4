#!/usr/bin/env atomrun
-- scripts/worker-pool.lua -- at most N copies of a command at once,
-- machine-wide.  Its usage, environment and exit statuses: USAGE below
-- (`atomrun worker-pool.lua --help`).
--
-- The N slots are N bytes of SLOTS_FILE, each taken with a byte-range lock.
-- A worker that dies (kill -9, OOM) frees its slot at once: there is no
-- counter to decrement and so nothing to leak.
local atomrun = require "atomrun"

local NAME = "worker-pool"
local SYNOPSIS = "usage: atomrun worker-pool.lua SLOTS_FILE N CMD [ARGS...]\n"
local USAGE = SYNOPSIS .. [[

Run CMD in one of N slots of SLOTS_FILE: start as many as you like; only N
run at a time, machine-wide, and the rest queue in the kernel and start the
moment a slot frees (no polling loop, no sleep 1).  A worker that dies
(kill -9, OOM) frees its slot at once.  CMD sees its slot number (1..N) in
$POOL_SLOT, handy for per-slot scratch directories or GPUs.  What follows N
is CMD's, its options too.

  -h, --help   print this and exit

Environment: POOL_WAIT  seconds to wait for a free slot (default: forever);
             then exit 75 (EX_TEMPFAIL) naming the pids that hold the slots.

Exit status: CMD's own (128+N for a signal); 75 no slot within POOL_WAIT;
127 CMD cannot be started; 64 usage.

Example (4 encoders at a time):
  ls *.wav | xargs -P 32 -I{} atomrun worker-pool.lua /run/lock/encode.slots 4 \
      ffmpeg -loglevel error -i {} {}.opus
]]

-- The command line: atomrun.args (bundled in atomrun, so this script still
-- runs alone when copied): -h and --help print USAGE and exit 0; an option
-- the script does not know, or one missing its value, is a usage error on
-- stderr, exit 64 (EX_USAGE, as `atomrun` itself).
local cmdline = require("atomrun.args").new(NAME, SYNOPSIS, USAGE)
local usage_error, parse_args = cmdline.error, cmdline.parse

local _, operands = parse_args(arg, {}, true)
local slots_file, n = operands[1], math.tointeger(tonumber(operands[2] or ""))
local argv = table.move(operands, 3, #operands, 1, {})
if not slots_file then usage_error("no SLOTS_FILE given") end
if not operands[2] then usage_error("no slot count N given") end
if not n or n < 1 then usage_error("N must be a whole number >= 1, not '" .. operands[2] .. "'") end
if #argv == 0 then usage_error("no command given") end
local wait = tonumber(os.getenv("POOL_WAIT") or "")

local pool = atomrun.semaphore(slots_file, n)
local slot <close>, err = pool:acquire({ timeout = wait })
if not slot then
  io.stderr:write("worker-pool: ", err, "\n")    -- "... all 4 slots of ... are taken (held by pids ...)"
  os.exit(75)
end

-- The command inherits the slot: if this script is killed, the slot stays
-- taken until the command itself ends.
local ok, how, status = atomrun.run(argv, { env = { POOL_SLOT = tostring(slot.index) } })
if ok == nil and how ~= "exit" and how ~= "signal" then
  io.stderr:write("worker-pool: ", how, "\n")
  os.exit(127)
end
slot:release()
os.exit(how == "signal" and 128 + status or status)
