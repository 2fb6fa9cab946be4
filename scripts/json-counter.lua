#!/usr/bin/env atomrun
-- scripts/json-counter.lua -- read-modify-write of a shared JSON file that
-- any number of processes update at once without losing an update.
--
--   atomrun json-counter.lua FILE [KEY [DELTA]]
--
--   atomrun json-counter.lua /var/lib/stats.json downloads     # prints the new count
--
-- Adds DELTA (default 1) to counter KEY (default "count") in FILE, creating
-- either if missing, and prints the new value.
--
-- atomrun.update() holds an exclusive lock on FILE.lock (a sidecar: never
-- FILE itself, whose inode every atomic replace swaps), reads FILE, calls
-- the function, and atomically replaces FILE with what it returns.  So two
-- updaters never both read 41 and both write 42, and a crash mid-write
-- leaves the old file, never a truncated one.  Readers need no lock.
--
-- Environment: COUNTER_TIMEOUT  seconds to wait for the lock (default 10).
local atomrun = require "atomrun"
local json = atomrun.json

local path, key, delta = arg[1], arg[2] or "count", tonumber(arg[3] or "1")
if not path or not delta then
  io.stderr:write("usage: atomrun json-counter.lua FILE [KEY [DELTA]]\n")
  os.exit(64)
end

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
