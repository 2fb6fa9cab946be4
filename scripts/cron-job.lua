#!/usr/bin/env atomrun
-- scripts/cron-job.lua -- a cron-safe, single-instance job with a run-time limit.
--
--   atomrun cron-job.lua NAME CMD [ARGS...]
--
-- crontab:  */5 * * * *  atomrun /usr/local/share/atomrun/cron-job.lua sync rsync -a src/ dst/
--
-- If the previous run of NAME is still going, this one does not start a
-- second copy: it says who runs it (pid, since when, what) and exits 75
-- (EX_TEMPFAIL: "try again later"), so cron's mail tells you which run is
-- stuck.  The exclusion is a kernel lock, not a pid file: if the previous
-- run was killed (OOM, reboot, kill -9) the next one starts at once.
--
-- Environment (all optional):
--   JOB_DIR      where NAME.lock and NAME.json live (default: atomrun's runtime dir)
--   JOB_WAIT     seconds to queue behind a running instance before giving up (default 0)
--   JOB_TIMEOUT  seconds CMD may run; then it is sent SIGTERM, and SIGKILL 5 s later
--
-- Exit status: CMD's own; 75 when another instance runs; 124 when
-- JOB_TIMEOUT killed CMD (as timeout(1)); 127 when CMD cannot be started.
local atomrun = require "atomrun"

local name = arg[1]
local argv = table.move(arg, 2, #arg, 1, {})
if not name or #argv == 0 then
  io.stderr:write("usage: atomrun cron-job.lua NAME CMD [ARGS...]\n")
  os.exit(64)
end

local function env(var)                  -- unset and empty are the same
  local v = os.getenv(var)
  return v ~= "" and v or nil
end
local function seconds(var)
  local v = env(var)
  return v and (tonumber(v) or error(var .. " must be a number of seconds, not '" .. v .. "'"))
end
local wait, limit = seconds("JOB_WAIT"), seconds("JOB_TIMEOUT")

-- One instance of NAME per machine.  `<close>` releases it however the
-- script ends; a crash or kill -9 releases it too, because the kernel does.
local guard <close>, err, code, who = atomrun.once(name, {
  dir = env("JOB_DIR"),
  timeout = wait,
  argv = argv,                     -- what the record shows to the next run
})
if not guard then
  -- "sync is already running: pid 4121 since 2026-11-23T02:00:01Z (rsync -a src/ dst/)"
  io.stderr:write(err, who and who.host and " on " .. who.host or "", "\n")
  os.exit(code == "running" and 75 or 69)
end

local started = atomrun.now()
-- The child inherits the lock (like flock(1)): if this script is killed,
-- the command still counts as running until it ends too.
local ok, how, status, timed_out = atomrun.run(argv, { timeout = limit, kill_after = 5 })
local took = atomrun.now() - started

if ok == nil and how ~= "exit" and how ~= "signal" then    -- never started
  io.stderr:write(name, ": ", how, "\n")
  os.exit(127)
end
if timed_out then
  io.stderr:write(string.format("%s: killed after %.1f s (JOB_TIMEOUT=%s)\n", name, took,
    tostring(limit)))
  os.exit(124)
end
if not ok then       -- cron mails whatever a job prints: stay quiet on success
  io.stderr:write(string.format("%s: %s %d after %.1f s\n", name, how, status, took))
end
os.exit(how == "signal" and 128 + status or status)
