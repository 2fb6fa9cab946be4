-- atomrun who -- who holds each lock file, and who waits for it
--
--   atomrun who [--json] PATH...
--
-- For flock(2), OFD and classic POSIX locks: the live holder (the process
-- that has the open file description now, not whoever took the lock, which
-- /proc/locks and lslocks show), each waiter, mode, whole file or byte
-- range, and since when the process runs.  Exit 0 when every PATH is free,
-- 1 when any is held, 66 when a PATH cannot be examined.
local atomrun = require "atomrun"
local cli = require "atomrun.cli"

local prog = cli.program("atomrun", "atomrun", "atomrun who")

local USAGE = [[
usage: atomrun who [--json] PATH...
  for each lock file: the processes that hold it and those that wait
  (pid, command, mode, lock kind, range, since when); exit 0 when all
  are free, 1 when any is held
      --json                one JSON array, an object per PATH
  -h, --help                this text
]]

local as_json = false
local paths = prog:getopt({ ... }, {
  short = "h", permute = true,
  long = { { "json", "json" }, { "help", "h" } },
}, function(key)
  if key == "json" then as_json = true else io.stdout:write(USAGE) os.exit(0) end
end)
if #paths == 0 then prog:usage_error("no lock file given") end

local function range(e)
  local start, length = e.start or 0, e.length or 0
  if start == 0 and length == 0 then return "whole file" end
  if length == 0 then return string.format("bytes %d to end of file", start) end
  return string.format("bytes %d-%d", start, start + length - 1)
end

local function since(e)
  return e.since and os.date("%Y-%m-%d %H:%M:%S", math.floor(e.since)) or "?"
end

-- One line per process; cmd comes from the core already made safe for a
-- terminal (one line, control characters escaped).
local function line(role, e)
  return string.format("  %-7s pid %-7s %-9s %-5s %-22s since %s  %s", role,
    tostring(e.pid or "?"), e.mode or "?", e.kind or "?", range(e), since(e), e.cmd or "")
end

local function entry(e)
  return { pid = e.pid, cmd = e.cmd, mode = e.mode, kind = e.kind,
           start = e.start or 0, length = e.length or 0, since = e.since }
end

local held, unreadable, report = false, false, {}
for _, path in ipairs(paths) do
  local list, err, code = atomrun.who(path)
  if not list then
    unreadable = true
    prog:say("cannot examine %s: %s", path, cli.strerror(code))
    report[#report + 1] = { path = path, error = code, message = err }
  else
    local holders, waiters = {}, {}
    for _, e in ipairs(list) do
      table.insert(e.waiting and waiters or holders, e)
    end
    held = held or #holders > 0
    if as_json then
      local r = { path = path, held = #holders > 0, holders = {}, waiters = {} }
      for _, e in ipairs(holders) do r.holders[#r.holders + 1] = entry(e) end
      for _, e in ipairs(waiters) do r.waiters[#r.waiters + 1] = entry(e) end
      report[#report + 1] = r
    else
      io.stdout:write(path, ": ", #holders > 0 and "held" or "free", "\n")
      for _, e in ipairs(holders) do io.stdout:write(line("holds", e), "\n") end
      for _, e in ipairs(waiters) do io.stdout:write(line("waits", e), "\n") end
    end
  end
end

if as_json then
  -- lua-cjson writes an empty table as {}: lists here must read [].
  local json = atomrun.json
  local text = json.encode(report):gsub('"holders":{}', '"holders":[]')
    :gsub('"waiters":{}', '"waiters":[]')
  io.stdout:write(#report == 0 and "[]" or text, "\n")
end
os.exit(unreadable and cli.EX_NOINPUT or held and 1 or 0)
