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
