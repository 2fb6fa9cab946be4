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
--- prog:version(): "atomrun X.Y.Z" on stdout, exit 0 (every subcommand's
--- --version; `atomrun lock` under the name flock says flock's line).
function Prog:version()
  io.stdout:write(string.format("atomrun %s\n", require("atomrun.core").version))
  os.exit(0)
end

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

--- -E CODE as flock(1) reads and words it: an exit status, 0 to 255.
function Prog:exit_code(s)
  return require("atomrun.cli.values").exit_code(self, s)
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

-- ------------------------------------------------------------ the rest

-- safe, holder_text, seconds, integer, size and exec_or_exit are
-- atomrun.cli.values's, loaded by the first use of one of them.
local EXTRA = { safe = true, holder_text = true, seconds = true, integer = true,
                size = true, exec_or_exit = true }
return setmetatable(M, {
  __index = function(t, key)
    if not EXTRA[key] then return nil end
    local extra = require "atomrun.cli.values"
    for name in pairs(EXTRA) do rawset(t, name, extra[name]) end
    return extra[key]
  end,
})
