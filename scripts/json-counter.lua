#!/usr/bin/env atomrun
-- scripts/json-counter.lua -- read-modify-write of a shared JSON file that
-- any number of processes update at once without losing an update.  Its
-- usage: USAGE below (`atomrun json-counter.lua --help`).
--
-- atomrun.update() holds an exclusive lock on FILE.lock (a sidecar: never
-- FILE itself, whose inode every atomic replace swaps), reads FILE, calls
-- the function, and atomically replaces FILE with what it returns.  So two
-- updaters never both read 41 and both write 42, and a crash mid-write
-- leaves the old file, never a truncated one.  Readers need no lock.
local atomrun = require "atomrun"
local json = atomrun.json

local NAME = "json-counter"
local SYNOPSIS = "usage: atomrun json-counter.lua FILE [KEY [DELTA]]\n"
local USAGE = SYNOPSIS .. [[

Add DELTA (default 1, may be negative or fractional) to the counter KEY
(default "count") in the JSON file FILE, creating either if missing, and
print the new value.  Any number of processes may count in FILE at once:
no update is lost, and readers never see a half-written file.  A KEY that
starts with "-" goes after "--".

  -h, --help   print this and exit

Environment: COUNTER_TIMEOUT  seconds to wait for the lock (default 10).

Exit status: 0; 1 FILE is not JSON or its lock could not be had in time
(FILE is left as it was); 64 usage.

Example (prints the new count):
  atomrun json-counter.lua /var/lib/stats.json downloads
]]

-- The command line: atomrun.args (bundled in atomrun, so this script still
-- runs alone when copied): -h and --help print USAGE and exit 0; an option
-- the script does not know, or one missing its value, is a usage error on
-- stderr, exit 64 (EX_USAGE, as `atomrun` itself).
local cmdline = require("atomrun.args").new(NAME, SYNOPSIS, USAGE)
local usage_error, parse_args = cmdline.error, cmdline.parse

local _, operands = parse_args(arg, {})
if #operands == 0 then usage_error("no FILE given") end
if #operands > 3 then usage_error("too many arguments: '" .. operands[4] .. "'") end
local path, key, delta = operands[1], operands[2] or "count", tonumber(operands[3] or "1")
if not delta then usage_error("DELTA must be a number, not '" .. operands[3] .. "'") end

local value
local ok, err = atomrun.update(path, function(old)
  -- Runs with the lock held: keep it short, and do not call anything
  -- that could wait for this same file.
  local data = old and old ~= "" and json.decode(old) or {}
  -- atomrun.json reads integers back as integers, exact to 2^63
  value = (data[key] or 0) + delta
  data[key] = value
  return json.encode(data) .. "\n"   -- the new contents; nil would leave FILE alone
end, { timeout = tonumber(os.getenv("COUNTER_TIMEOUT") or "10") })

if not ok then
  io.stderr:write("json-counter: ", err, "\n")   -- e.g. who holds FILE.lock
  os.exit(1)
end
print(value)
