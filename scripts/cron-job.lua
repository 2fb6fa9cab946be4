#!/usr/bin/env atomrun
-- scripts/cron-job.lua -- a cron-safe, single-instance job with a run-time
-- limit.  Its usage, environment and exit statuses: USAGE below (`atomrun
-- cron-job.lua --help`).
--
-- The exclusion is a kernel lock, not a pid file: if the previous run was
-- killed (OOM, reboot, kill -9) the next one starts at once.
local atomrun = require "atomrun"

local NAME = "cron-job"
local SYNOPSIS = "usage: atomrun cron-job.lua NAME CMD [ARGS...]\n"
local USAGE = SYNOPSIS .. [[

Run CMD as the one instance of the job NAME on this machine, with a
run-time limit.  If the previous run of NAME is still going, this one does
not start a second copy: it says who runs it (pid, since when, what) and
exits 75 (EX_TEMPFAIL: "try again later"), so cron's mail tells you which
run is stuck.  If the previous run was killed (OOM, reboot, kill -9) the
next one starts at once.  What follows NAME is CMD's, its options too.

  -h, --help   print this and exit

Environment (all optional):
  JOB_DIR      where NAME.lock and NAME.json live (default: atomrun's runtime dir)
  JOB_WAIT     seconds to queue behind a running instance before giving up (default 0)
  JOB_TIMEOUT  seconds CMD may run; then it is sent SIGTERM, and SIGKILL 5 s later

Exit status: CMD's own; 75 when another instance runs; 124 when
JOB_TIMEOUT killed CMD (as timeout(1)); 127 when CMD cannot be started;
69 when NAME's lock cannot be taken at all; 64 usage.

Example (crontab):
  */5 * * * *  /usr/local/bin/atomrun /usr/local/share/doc/atomrun/examples/cron-job.lua sync rsync -a src/ dst/
]]

-- The command line: atomrun.args (bundled in atomrun, so this script still
-- runs alone when copied): -h and --help print USAGE and exit 0; an option
-- the script does not know, or one missing its value, is a usage error on
-- stderr, exit 64 (EX_USAGE, as `atomrun` itself).
local cmdline = require("atomrun.args").new(NAME, SYNOPSIS, USAGE)
local usage_error, parse_args = cmdline.error, cmdline.parse

local _, operands = parse_args(arg, {}, true)
local name = operands[1]
local argv = table.move(operands, 2, #operands, 1, {})
if not name then usage_error("no job NAME given") end
if #argv == 0 then usage_error("no command given") end

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
