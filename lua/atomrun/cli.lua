-- atomrun.cli -- what the subcommands (lua/atomrun/cmd/*.lua) share: the
-- sysexits codes flock(1) uses, messages on stderr, and running the command
-- with flock(1)'s exit-status conventions.
local atomrun = require "atomrun.core"

local M = {
  EX_USAGE = 64, EX_NOINPUT = 66, EX_UNAVAILABLE = 69, EX_OSERR = 71, EX_CANTCREAT = 73,
}

function M.say(fmt, ...)
  io.stderr:write("atomrun: ", string.format(fmt, ...), "\n")
end

function M.usage_error(usage, fmt, ...)
  M.say(fmt, ...)
  io.stderr:write(usage)
  os.exit(M.EX_USAGE)
end

--- The value of -w SECONDS: a number >= 0 (fractions allowed).
function M.seconds(usage, s)
  local v = tonumber(s)
  if not v or v ~= v or v < 0 then M.usage_error(usage, "invalid timeout value: '%s'", s) end
  return v
end

--- The value of -E CODE: an exit status, 0 to 255.
function M.exit_code(usage, s)
  local v = math.tointeger(tonumber(s))
  if not v or v < 0 or v > 255 then M.usage_error(usage, "invalid exit code: '%s' (0 to 255)", s) end
  return v
end

--- Run argv, call release(), and exit as flock(1) does: the command's
-- status, 128+N when it dies of signal N, 69 (71 for ENOMEM) when it cannot
-- be executed at all.
function M.run_and_exit(argv, opts, release)
  local ok, how, status = atomrun.run(argv, opts)
  if ok == nil and how ~= "exit" and how ~= "signal" then
    M.say("failed to execute %s", (how:gsub("^cannot run [^:]*: ", argv[1] .. ": ")))
    os.exit(status == "ENOMEM" and M.EX_OSERR or M.EX_UNAVAILABLE)
  end
  release()
  os.exit(how == "signal" and 128 + status or status)
end

return M
