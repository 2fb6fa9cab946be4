#!/usr/bin/env atomrun
-- scripts/status-watch.lua -- follow a status file written by status-producer.lua.
--
--   atomrun status-watch.lua STATUS_FILE [--once] [--timeout SECONDS]
--
-- Prints one line per change ("3/10 running pid 4121"), and exits 0 when the
-- job says "done".  --once prints the current status and exits.
-- Exit status: 0 done (or printed, with --once); 1 timed out (default 60 s);
-- 2 the file is missing (--once) or is not a status file.
--
-- Reading needs no lock at all: the writer replaces the file atomically,
-- so every read sees one complete status.  A watcher that ever saw an
-- empty or truncated file would exit 2 here; with atomrun it never does.
-- (This is polling, and that is fine: a status file is for looking at.
-- To WAIT for a job to end, take its lock instead: atomrun.lock() or
-- atomrun.once(..., {wait = true}) returns the moment it is released.)
local atomrun = require "atomrun"

local function usage()
  io.stderr:write("usage: atomrun status-watch.lua STATUS_FILE [--once] [--timeout SECONDS]\n")
  os.exit(64)
end
local path, once, timeout
local i = 1
while arg[i] do
  if arg[i] == "--once" then once = true
  elseif arg[i] == "--timeout" then
    i = i + 1
    timeout = tonumber(arg[i] or "") or usage()
  else path = arg[i] end
  i = i + 1
end
path = path or os.getenv("STATUS_FILE") or usage()

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
