#!/usr/bin/env atomrun
-- scripts/retry-command.lua -- run a flaky command until it succeeds, with
-- exponential backoff, jitter and one overall deadline.  Its usage, options
-- and exit statuses: USAGE below (`atomrun retry-command.lua --help`).
local atomrun = require "atomrun"

local NAME = "retry-command"
local SYNOPSIS = "usage: atomrun retry-command.lua [-n ATTEMPTS] [-t SECONDS] [-b BASE] [-m MAX]"
  .. " [--] CMD [ARGS...]\n"
local USAGE = SYNOPSIS .. [[

Run CMD until it succeeds, with exponential backoff, jitter and one overall
deadline.  The options come before CMD; CMD's own options are its own.

  -n ATTEMPTS  at most this many attempts   (default: unlimited with -t, else 5)
  -t SECONDS   give up this many seconds from now (no attempt and no sleep
               runs past it: a hanging attempt is killed at the deadline)
  -b BASE      first delay in seconds (default 0.5), doubled after every failure ...
  -m MAX       ... up to this many seconds (default 30)
  -h, --help   print this and exit

The delays are "full jitter" (random between 0 and the current delay), so a
hundred cron jobs that all failed at 03:00 do not all retry at 03:00:01.

Exit status: 0 once CMD succeeds; CMD's last status when giving up (124 if
the deadline killed it); 64 usage; 127 CMD cannot be started.

Example:
  atomrun retry-command.lua -t 300 -- curl -fsS -o data.json https://example.org/data.json
]]

-- The command line: atomrun.args (bundled in atomrun, so this script still
-- runs alone when copied): -h and --help print USAGE and exit 0; an option
-- the script does not know, or one missing its value, is a usage error on
-- stderr, exit 64 (EX_USAGE, as `atomrun` itself).
local cmdline = require("atomrun.args").new(NAME, SYNOPSIS, USAGE)
local usage_error, parse_args = cmdline.error, cmdline.parse

local given, argv = parse_args(arg, { ["-n"] = "value", ["-t"] = "value", ["-b"] = "value",
  ["-m"] = "value" }, true)
local opts = { base = 0.5, max = 30 }
local flags = { ["-n"] = "attempts", ["-t"] = "timeout", ["-b"] = "base", ["-m"] = "max" }
for _, flag in ipairs({ "-n", "-t", "-b", "-m" }) do
  if given[flag] then
    local v = tonumber(given[flag])
    if not v or v < 0 then usage_error("bad value for " .. flag) end
    opts[flags[flag]] = v
  end
end
if opts.attempts and (math.type(opts.attempts) ~= "integer" or opts.attempts < 1) then
  usage_error("-n needs a whole number >= 1")
end
if #argv == 0 then usage_error("no command given") end

local deadline = opts.timeout and atomrun.now() + opts.timeout
local last_status, last_why = 1, "no attempt ran"

local ok, err, code = atomrun.retry(function(attempt)
  -- An attempt may not outlive the deadline either: run() kills it there.
  -- (retry() sleeps at most until the deadline and calls once more there;
  -- with no time left, there is nothing to run.)
  local left = deadline and deadline - atomrun.now()
  if left and left <= 0 then return nil, last_why, "failed" end
  local done, how, status, timed_out = atomrun.run(argv, { timeout = left, kill_after = 1 })
  if done then return true end
  if how ~= "exit" and how ~= "signal" then
    return nil, how, "ENOEXEC"                  -- cannot start: no point retrying
  end
  last_status = timed_out and 124 or (how == "signal" and 128 + status or status)
  last_why = timed_out and "killed at the deadline" or how .. " " .. status
  io.stderr:write(string.format("retry-command: attempt %d: %s\n", attempt, last_why))
  return nil, last_why, "failed"
end, {
  attempts = opts.attempts, timeout = opts.timeout, base = opts.base, max = opts.max,
  retry_on = function(_, c) return c ~= "ENOEXEC" end,
})

if ok then os.exit(0) end
io.stderr:write("retry-command: ", err, "\n")
os.exit(code == "ENOEXEC" and 127 or last_status)
