#!/usr/bin/env atomrun
-- scripts/retry-command.lua -- run a flaky command until it succeeds, with
-- exponential backoff, jitter and one overall deadline.
--
--   atomrun retry-command.lua [-n ATTEMPTS] [-t SECONDS] [-b BASE] [-m MAX] [--] CMD [ARGS...]
--
--   atomrun retry-command.lua -t 300 -- curl -fsS -o data.json https://example.org/data.json
--
--   -n  at most this many attempts            (default: unlimited with -t, else 5)
--   -t  give up this many seconds from now    (no attempt and no sleep runs past it:
--                                              a hanging attempt is killed at the deadline)
--   -b  first delay in seconds (default 0.5), doubled after every failure ...
--   -m  ... up to this many seconds (default 30)
--
-- The delays are "full jitter" (random between 0 and the current delay), so
-- a hundred cron jobs that all failed at 03:00 do not all retry at 03:00:01.
-- Exit status: 0 once CMD succeeds; CMD's last status when giving up
-- (124 if the deadline killed it); 64 usage; 127 CMD cannot be started.
local atomrun = require "atomrun"

local function usage(msg)
  io.stderr:write("retry-command: ", msg, "\nusage: atomrun retry-command.lua [-n ATTEMPTS] "
    .. "[-t SECONDS] [-b BASE] [-m MAX] [--] CMD [ARGS...]\n")
  os.exit(64)
end

local opts = { base = 0.5, max = 30 }
local flags = { ["-n"] = "attempts", ["-t"] = "timeout", ["-b"] = "base", ["-m"] = "max" }
local i = 1
while arg[i] and flags[arg[i]] do
  local v = tonumber(arg[i + 1] or "")
  if not v or v < 0 then usage("bad value for " .. arg[i]) end
  opts[flags[arg[i]]] = v
  i = i + 2
end
if opts.attempts and (math.type(opts.attempts) ~= "integer" or opts.attempts < 1) then
  usage("-n needs a whole number >= 1")
end
if arg[i] == "--" then i = i + 1 end
local argv = table.move(arg, i, #arg, 1, {})
if #argv == 0 then usage("no command given") end

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
