#!/usr/bin/env atomrun
-- scripts/status-watch.lua -- follow a status file written by
-- status-producer.lua.  Its usage and exit statuses: USAGE below (`atomrun
-- status-watch.lua --help`).
--
-- Reading needs no lock at all: the writer replaces the file atomically,
-- so every read sees one complete status.  A watcher that ever saw an
-- empty or truncated file would exit 2 here; with atomrun it never does.
-- (This is polling, and that is fine: a status file is for looking at.
-- To WAIT for a job to end, take its lock instead: atomrun.lock() or
-- atomrun.once(..., {wait = true}) returns the moment it is released.)
local atomrun = require "atomrun"

local NAME = "status-watch"
local SYNOPSIS = "usage: atomrun status-watch.lua STATUS_FILE [--once] [--timeout SECONDS]\n"
local USAGE = SYNOPSIS .. [[

Follow a status file written by status-producer.lua: print one line per
change ("3/10 running pid 4121"), and exit 0 when the job says "done".  No
lock is needed: the writer replaces the file atomically, so every read sees
one complete status.

  --once               print the current status and exit
  --timeout SECONDS    give up after this long (default 60)
  -h, --help           print this and exit

Environment: STATUS_FILE  the file, when no STATUS_FILE argument is given.

Exit status: 0 done (or printed, with --once); 1 timed out; 2 the file is
missing (--once) or is not a status file; 64 usage.

Example:
  atomrun status-watch.lua /tmp/job.status --timeout 600
]]

-- The command line: atomrun.args (bundled in atomrun, so this script still
-- runs alone when copied): -h and --help print USAGE and exit 0; an option
-- the script does not know, or one missing its value, is a usage error on
-- stderr, exit 64 (EX_USAGE, as `atomrun` itself).
local cmdline = require("atomrun.args").new(NAME, SYNOPSIS, USAGE)
local usage_error, parse_args = cmdline.error, cmdline.parse

local given, operands = parse_args(arg, { ["--once"] = "flag", ["--timeout"] = "value" })
if #operands > 1 then usage_error("too many arguments: '" .. operands[2] .. "'") end
local once = given["--once"]
local timeout = given["--timeout"] and (tonumber(given["--timeout"])
  or usage_error("--timeout needs a number of seconds, not '" .. given["--timeout"] .. "'"))
local path = operands[1] or os.getenv("STATUS_FILE") or usage_error("no STATUS_FILE given")

local status = atomrun.status(path)
local deadline = atomrun.now() + (timeout or 60)
local last
while true do
  local st, err, code = status:read()
  if st then
    local line = string.format("%s/%s %s pid %s", tostring(st.step), tostring(st.total),
      tostring(st.state), tostring(st.pid))
    if line ~= last then
      print(line)
      io.stdout:flush()
      last = line
    end
    if once or st.state == "done" then os.exit(0) end
  elseif code ~= "ENOENT" or once then   -- not there yet is fine; garbage is not
    io.stderr:write("status-watch: ", err, "\n")
    os.exit(2)
  end
  if atomrun.now() >= deadline then
    io.stderr:write("status-watch: no 'done' in ", path, " after ", tostring(timeout or 60), " s\n")
    os.exit(1)
  end
  atomrun.sleep(0.05)
end
