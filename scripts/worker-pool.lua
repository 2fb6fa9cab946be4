#!/usr/bin/env atomrun
-- scripts/worker-pool.lua -- at most N copies of a command at once, machine-wide.
--
--   atomrun worker-pool.lua SLOTS_FILE N CMD [ARGS...]
--
-- Start as many as you like; only N run at a time, the rest queue in the
-- kernel and start the moment a slot frees (no polling loop, no sleep 1):
--
--   ls *.wav | xargs -P 32 -I{} atomrun worker-pool.lua /run/lock/encode.slots 4 \
--       ffmpeg -loglevel error -i {} {}.opus
--
-- The N slots are N bytes of SLOTS_FILE, each taken with a byte-range lock.
-- A worker that dies (kill -9, OOM) frees its slot at once: there is no
-- counter to decrement and so nothing to leak.  CMD sees its slot number
-- (1..N) in $POOL_SLOT, handy for per-slot scratch directories or GPUs.
--
-- Environment: POOL_WAIT  seconds to wait for a free slot (default: forever);
--              then exit 75 (EX_TEMPFAIL) naming the pids that hold the slots.
-- Exit status: CMD's own (128+N for a signal), 127 if it cannot be started.
local atomrun = require "atomrun"

local slots_file, n = arg[1], math.tointeger(tonumber(arg[2] or ""))
local argv = table.move(arg, 3, #arg, 1, {})
if not slots_file or not n or n < 1 or #argv == 0 then
  io.stderr:write("usage: atomrun worker-pool.lua SLOTS_FILE N CMD [ARGS...]\n")
  os.exit(64)
end
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
