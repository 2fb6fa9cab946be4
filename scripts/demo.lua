-- scripts/demo.lua -- what atomrun does, in one short job (run by `make demo`).
local atomrun = require "atomrun"

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
