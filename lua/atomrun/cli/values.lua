-- atomrun.cli.values -- the parts of atomrun.cli (lua/atomrun/cli.lua) that
-- the common run of a command does not need: a holder worded, values read
-- as util-linux reads them, exec.  atomrun.cli reaches them by their names
-- (cli.seconds, prog:exit_code, ...) and loads this chunk on the first use
-- of one, so that `atomrun lock -n F CMD` does not pay to load them.
local atomrun = require "atomrun.core"
local cli = require "atomrun.cli"

local M = {}

-- ------------------------------------------------------------ words

local ESCAPE = { ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r", ["\27"] = "\\e" }

--- Another user's text, safe for a terminal: one line, every control
-- character a visible escape.  The core escapes holder command lines
-- already; this is idempotent there (no control character is left) and
-- keeps any other text we show (a record's argv) as safe.
function M.safe(s)
  return (tostring(s):gsub("%c", function(c)
    return ESCAPE[c] or string.format("\\x%02x", c:byte())
  end))
end

--- "pid 4121 (backup.sh)" from a holder table.
function M.holder_text(h)
  if not (h and h.pid) then
    return require("atomrun.core").uid() == 0
      and "a process atomrun cannot see (in another pid namespace: a container's or the host's)"
      or "a process atomrun cannot see (another user's: root, or its owner, can see it)"
  end
  if h.cmd and h.cmd ~= "" then return string.format("pid %d (%s)", h.pid, M.safe(h.cmd)) end
  return string.format("pid %d", h.pid)
end

-- ------------------------------------------------------------ values

-- util-linux reads numbers with strtol/strtold: leading blanks and a sign
-- are fine, anything after the number is not.
local function c_number(s)
  if s:find("%s$") or s:find("^%s*$") then return nil end
  local t = s:match("^%s*(.*)$")
  local lower = t:lower()
  if lower:match("^[+-]?inf$") or lower:match("^[+-]?infinity$") or lower:match("^[+-]?nan$") then
    return 0 / 0
  end
  return tonumber(t)
end

--- The value of -w SECONDS as flock(1) reads it (strtold): a number, or
-- nil when it is not one.  Infinity and NaN come back as NaN: flock takes
-- them and then fails to set its timer.
function M.seconds(s)
  return c_number(s)
end

--- An integer as strtol(3) reads it: v, or nil, "range" for one beyond a
-- long, or nil when it is not a decimal integer at all.
function M.integer(s)
  local t = s:match("^%s*([+-]?%d+)$")
  if not t then return nil end
  local v = math.tointeger(tonumber(t))
  if not v then return nil, "range" end
  return v
end

--- A size as util-linux's strtosize reads it: 4096, 4K, 4KiB (1024s),
-- 4KB (1000s); nil when it is not one.
function M.size(s)
  local digits, unit, i, b = s:match("^%s*(%d+)([KMGTPEZYkmgtpezy]?)(i?)([Bb]?)$")
  if not digits or (i ~= "" and (unit == "" or b == "")) or (b ~= "" and unit == "") then
    return nil
  end
  local v = math.tointeger(tonumber(digits))
  if not v then return nil end
  if unit ~= "" then
    local power = ("kmgtpezy"):find(unit:lower(), 1, true)
    local base = (b ~= "" and i == "") and 1000 or 1024
    for _ = 1, power do
      if v > math.maxinteger // base then return nil end
      v = v * base
    end
  end
  return v
end

--- -E CODE as flock(1) reads and words it: an exit status, 0 to 255.
function M.exit_code(self, s)
  local v, why = M.integer(s)
  if why == "range" then
    self:fail(cli.EX_USAGE, "invalid exit code: '%s': %s", s, "Numerical result out of range")
  elseif not v then
    self:fail(cli.EX_USAGE, "invalid exit code: '%s'", s)
  elseif v < 0 or v > 255 then
    self:fail(cli.EX_USAGE, "exit code out of range (expected 0 to 255)")
  end
  return v
end

-- ------------------------------------------------------------ running

--- exec argv in place of atomrun; returns only on failure, and exits as
-- run_and_exit does then.
function M.exec_or_exit(prog, argv, opts)
  local _, _, code = atomrun.exec(argv, opts)
  prog:say("failed to execute %s: %s", argv[1], cli.strerror(code))
  os.exit(code == "ENOMEM" and cli.EX_OSERR or cli.EX_UNAVAILABLE)
end

return M
