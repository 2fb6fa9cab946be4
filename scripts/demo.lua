-- scripts/demo.lua -- what atomrun does, in one short job (run by `make demo`).
local atomrun = require "atomrun"

local NAME = "demo"
local SYNOPSIS = "usage: atomrun demo.lua\n"
local USAGE = SYNOPSIS .. [[

Show what atomrun does, in one short job: a whole-file lock and who holds
it, a status file readers never see half-written, and an exclusive create
that exactly one of many racers wins.  It takes no arguments; its files go
in $TMPDIR (default /tmp), atomrun-demo.*.

  -h, --help   print this and exit

Exit status: 0; 1 a step failed.

Example:
  atomrun scripts/demo.lua      (what `make demo` runs, with build/atomrun)
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

local _, operands = parse_args(arg, {})
if #operands > 0 then usage_error("takes no arguments, not '" .. operands[1] .. "'") end

local dir = os.getenv("TMPDIR") or "/tmp"
local lockfile = dir .. "/atomrun-demo.lock"
local status = atomrun.status(dir .. "/atomrun-demo.status.json")

-- 1. A whole-file lock, released however this block ends.
local lk <close> = assert(atomrun.lock(lockfile, { timeout = 5 }))
print("locked " .. lk.path)

-- 2. Somebody else trying meanwhile learns who holds it.
local ok, how, code = atomrun.run({ arg[-1] or "atomrun", "lock", "-n", lockfile, "true" },
  { close_locks = true })
print(string.format("a second `atomrun lock -n` exited %s %d (as flock -n would)", how, code))

-- 3. A status file that readers never see half-written.
assert(status:write({ state = "running", pid = atomrun.pid(), at = os.date("!%FT%TZ") }))
print("status file says: " .. atomrun.json.encode(assert(status:read())))

-- 4. Exclusive create: exactly one of many racers wins.
local marker = dir .. "/atomrun-demo.created." .. atomrun.pid()
print("create once:", atomrun.create(marker, "first\n"))
print("create again:", atomrun.create(marker, "second\n"))
os.remove(marker)
print("demo done")
