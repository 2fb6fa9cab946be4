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

-- The command line: atomrun.args (bundled in atomrun, so this script still
-- runs alone when copied): -h and --help print USAGE and exit 0; an option
-- the script does not know, or one missing its value, is a usage error on
-- stderr, exit 64 (EX_USAGE, as `atomrun` itself).
local cmdline = require("atomrun.args").new(NAME, SYNOPSIS, USAGE)
local usage_error, parse_args = cmdline.error, cmdline.parse

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
