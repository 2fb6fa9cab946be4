-- atomrun.cli -- what the subcommands (lua/atomrun/cmd/*.lua) share: the one
-- command-line parser (getopt_long's rules), the sysexits codes flock(1)
-- uses, messages worded from facts (codes, holder tables, our own argv), and
-- running the command with flock(1)'s exit-status conventions.
local atomrun = require "atomrun.core"

local M = {
  EX_USAGE = 64, EX_DATAERR = 65, EX_NOINPUT = 66, EX_UNAVAILABLE = 69,
  EX_SOFTWARE = 70, EX_OSERR = 71, EX_CANTCREAT = 73,
}

-- ------------------------------------------------------------ words

--- The sentence for an error code ("ENOENT" -> "No such file or directory").
M.strerror = atomrun.strerror

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
  if not (h and h.pid) then return "a process atomrun cannot see" end
  if h.cmd and h.cmd ~= "" then return string.format("pid %d (%s)", h.pid, M.safe(h.cmd)) end
  return string.format("pid %d", h.pid)
end

-- ------------------------------------------------------------ the program

local Prog = {}
Prog.__index = Prog

--- The program a command runs as.  name prefixes our own messages ("flock",
-- "atomrun"); argv0 prefixes getopt's, which glibc words with argv[0] as
-- given; cmd is what --help is asked of ("flock", "atomrun lock").
function M.program(name, argv0, cmd)
  return setmetatable({ name = name, argv0 = argv0 or name, cmd = cmd or name }, Prog)
end

--- Who we are when called as `atomrun SUB` or, through a link, by another
-- name (`flock`): arg[-1] is argv[0] as the caller wrote it.
function M.invoked_as(sub, other)
  local argv0 = arg and arg[-1] or "atomrun"
  local base = argv0:match("([^/]*)$")
  if other and base == other then return M.program(other, argv0, other), true end
  return M.program("atomrun", "atomrun", "atomrun " .. sub), false
end

function Prog:say(fmt, ...)
  io.stderr:write(self.name, ": ", string.format(fmt, ...), "\n")
end

--- errx(3): a message and an exit status.
function Prog:fail(status, fmt, ...)
  self:say(fmt, ...)
  os.exit(status)
end

--- A usage error as util-linux words it: the message, then a pointer to
-- --help; exit 64.
function Prog:usage_error(fmt, ...)
  self:say(fmt, ...)
  self:try_help()
end

function Prog:try_help()
  io.stderr:write(string.format("Try '%s --help' for more information.\n", self.cmd))
  os.exit(M.EX_USAGE)
end

-- getopt's own complaints carry argv[0] as given, not the short name.
function Prog:getopt_error(fmt, ...)
  io.stderr:write(self.argv0, ": ", string.format(fmt, ...), "\n")
  self:try_help()
end

-- ------------------------------------------------------------ getopt_long

-- spec.short  getopt's optstring without its leading "+": "sxw:E:" (a
--             colon: the option takes a value)
-- spec.long   { {"timeout", "w", arg = true}, {"verbose", "verbose"}, ... }
--             in the order getopt_long would list them; `exact = true`:
--             matched only when spelled out (never as a prefix)
-- spec.permute  options anywhere among the operands (getopt's default);
--             otherwise the first operand ends the options ("+")
-- on(key, value, as_written) is called for each option in order, so -V or
-- -h acts before a later mistake is seen, as with getopt.

local function find_long(self, spec, name)
  for _, o in ipairs(spec.long) do
    if o[1] == name then return o end
  end
  -- Prefixes: glibc's rule is that a prefix matching several entries is
  -- ambiguous only if they differ (--nonb matches --nonblocking and --nb,
  -- which both mean -n: not ambiguous); it lists the first match and every
  -- later one that differs from it.
  local first, differ
  for _, o in ipairs(spec.long) do
    if not o.exact and o[1]:sub(1, #name) == name then
      if not first then first = o
      elseif o[2] ~= first[2] or (o.arg or false) ~= (first.arg or false) then
        differ = differ or { "'--" .. first[1] .. "'" }
        differ[#differ + 1] = "'--" .. o[1] .. "'"
      end
    end
  end
  return first, differ
end

local function long_option(self, spec, args, i, on)
  local body = args[i]:sub(3)
  local name, value = body:match("^([^=]*)=(.*)$")
  name = name or body
  local o, ambiguous = find_long(self, spec, name)
  if ambiguous then
    self:getopt_error("option '--%s' is ambiguous; possibilities: %s", body,
      table.concat(ambiguous, " "))
  end
  if not o then self:getopt_error("unrecognized option '--%s'", body) end
  if o.arg then
    if not value then
      if i + 1 > #args then self:getopt_error("option '--%s' requires an argument", o[1]) end
      i = i + 1
      value = args[i]
    end
  elseif value then
    self:getopt_error("option '--%s' doesn't allow an argument", o[1])
  end
  on(o[2], value, "--" .. name)
  return i + 1
end

local function short_options(self, spec, args, i, on)
  local a = args[i]
  local j = 2
  while j <= #a do
    local c = a:sub(j, j)
    local at = c ~= ":" and spec.short:find(c, 1, true)
    if not at then self:getopt_error("invalid option -- '%s'", c) end
    if spec.short:sub(at + 1, at + 1) == ":" then
      local value = a:sub(j + 1)       -- attached: -w5
      if value == "" then
        if i + 1 > #args then self:getopt_error("option requires an argument -- '%s'", c) end
        i = i + 1
        value = args[i]
      end
      on(c, value, "-" .. c)
      break
    end
    on(c, nil, "-" .. c)
    j = j + 1
  end
  return i + 1
end

--- Parse args (a list) by spec, calling on() per option; returns the
-- operands.  Every mistake is a usage error (exit 64) worded as getopt's.
function Prog:getopt(args, spec, on)
  local operands, i, n = {}, 1, #args
  while i <= n do
    local a = args[i]
    if a == "--" then
      table.move(args, i + 1, n, #operands + 1, operands)
      break
    elseif a:sub(1, 2) == "--" then
      i = long_option(self, spec, args, i, on)
    elseif a:sub(1, 1) == "-" and #a > 1 then
      i = short_options(self, spec, args, i, on)
    elseif spec.permute then
      operands[#operands + 1] = a
      i = i + 1
    else
      table.move(args, i, n, #operands + 1, operands)
      break
    end
  end
  return operands
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
function Prog:exit_code(s)
  local v, why = M.integer(s)
  if why == "range" then
    self:fail(M.EX_USAGE, "invalid exit code: '%s': %s", s, "Numerical result out of range")
  elseif not v then
    self:fail(M.EX_USAGE, "invalid exit code: '%s'", s)
  elseif v < 0 or v > 255 then
    self:fail(M.EX_USAGE, "exit code out of range (expected 0 to 255)")
  end
  return v
end

-- ------------------------------------------------------------ running

--- The shell for -c: $SHELL, or /bin/sh when it is unset or empty.  As
-- util-linux does since 2.42 (UL_SHELL_NOPWD): the command runs
-- non-interactively, so the passwd login shell is not consulted.
function M.shell()
  local sh = os.getenv("SHELL")
  if sh == nil or sh == "" then sh = "/bin/sh" end
  return sh
end

--- Run argv, call release(), and exit as flock(1) does: the command's
-- status, 128+N when it dies of signal N, 69 (71 for ENOMEM) when it cannot
-- be executed at all ("failed to execute CMD: REASON").
function M.run_and_exit(prog, argv, opts, release)
  local ok, how, status = atomrun.run(argv, opts)
  if ok == nil and how ~= "exit" and how ~= "signal" then
    prog:say("failed to execute %s: %s", argv[1], M.strerror(status))
    os.exit(status == "ENOMEM" and M.EX_OSERR or M.EX_UNAVAILABLE)
  end
  if release then release() end
  os.exit(how == "signal" and 128 + status or status)
end

--- exec argv in place of atomrun; returns only on failure, and exits as
-- run_and_exit does then.
function M.exec_or_exit(prog, argv, opts)
  local _, _, code = atomrun.exec(argv, opts)
  prog:say("failed to execute %s: %s", argv[1], M.strerror(code))
  os.exit(code == "ENOMEM" and M.EX_OSERR or M.EX_UNAVAILABLE)
end

--- Is name an etcd name (a scheme, "etcd://..."), not a path?  The test
-- atomrun.remote.is_url makes, kept here so that a plain path never loads
-- the etcd recipes (a third of `atomrun lock -n F true`'s start-up).
function M.is_url(name)
  return type(name) == "string" and name:find("^%a[%w+.-]*://") ~= nil
end

return M
