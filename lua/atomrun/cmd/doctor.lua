-- atomrun doctor -- what the filesystem under DIR supports, tested for real
--   atomrun doctor [DIR] [--json]: and what each atomrun primitive will do
--   there.
local atomrun = require "atomrun"

local cli = require "atomrun.cli"
local prog = cli.program("atomrun", "atomrun", "atomrun doctor")

-- Options anywhere (getopt's permute order): `doctor /srv --json` too.
local dir, as_json = nil, false
local operands = prog:getopt({ ... }, {
  short = "hV", permute = true,
  long = { { "json", "json" }, { "help", "h" }, { "version", "V" } },
}, function(key)
  if key == "json" then as_json = true
  elseif key == "V" then prog:version()
  else
    io.stdout:write("usage: atomrun doctor [DIR] [--json]\n"
      .. "  what the filesystem under DIR (default .), or an etcd cluster\n"
      .. "  (etcd://HOST:PORT,...), supports, tested for real\n"
      .. "      --json                one JSON object\n"
      .. "  -h, --help                this text\n"
      .. "  -V, --version             atomrun's version\n")
    os.exit(0)
  end
end)
if #operands > 1 then prog:usage_error("doctor takes one directory") end
dir = operands[1]
dir = dir or "."
local mistyped = require("atomrun.backend").near_miss(dir)
if mistyped then prog:usage_error("%s", mistyped) end

-- etcd://...: the cluster instead of a filesystem (lua/atomrun/etcd/doctor.lua)
if require("atomrun.backend").is_etcd(dir) then
  local remote = require "atomrun.etcd.doctor"
  local rep, rerr = remote.doctor(dir)
  if not rep then io.stderr:write("atomrun: ", rerr, "\n") os.exit(64) end
  if as_json then
    local text = atomrun.json.encode(rep)
    if #rep.warnings == 0 then text = text:gsub('"warnings":{}', '"warnings":[]') end
    io.stdout:write(text, "\n")
  else io.stdout:write(remote.doctor_text(rep)) end
  local healthy = false
  for _, e in ipairs(rep.endpoints) do healthy = healthy or e.healthy end
  os.exit(healthy and 0 or 69)
end

-- Exit status: 0 the report is complete; 2 it is printed but some probes
-- could not run (they are named, with why: a read-only filesystem, a
-- directory we cannot write, /proc); 1 no report (DIR cannot be opened):
-- with --json an object {dir, error, message} on stdout too, as `who
-- --json` reports a path it cannot examine.
local p, err, code = atomrun.probe(dir)
if not p then
  io.stderr:write("atomrun: ", err, "\n")
  if as_json then
    io.stdout:write(atomrun.json.encode({ dir = dir, error = code, message = err }), "\n")
  end
  os.exit(1)
end

-- The probes that write in DIR; when no scratch file could be made there
-- they did not run, or ran and failed for that reason alone (O_TMPFILE's
-- EACCES or EROFS says nothing of the filesystem): p.scratch is why.
local needs_scratch = { flock = true, ofd = true, noreplace = true, tmpfile = true }
local function ran(key) return not (p.scratch and needs_scratch[key]) end
local function yes(v) return v == true end
local not_tested = p.scratch and ("not tested here (no scratch file could be created: "
  .. p.scratch .. ")")

-- Each primitive as a machine value (what it uses here; "untested" where
-- the probes it rests on could not run) and, apart, the sentence for people.
local function lock_kind()
  if not ran("flock") then return "untested" end
  return yes(p.flock) and "flock" or "none"
end
local function range_kind()
  if not ran("ofd") then return "untested" end
  return yes(p.ofd) and "ofd" or "posix"
end
local function create_kind()
  if not ran("tmpfile") then return "untested" end
  return yes(p.tmpfile) and "tmpfile" or yes(p.noreplace) and "noreplace" or "link"
end
local function replace_kind()
  if not ran("tmpfile") then return "untested" end
  return yes(p.tmpfile) and "tmpfile" or "rename"
end
local function durability_kind()
  if p.scratch then return "untested" end      -- no write can succeed: no guarantee
  if not yes(p.dirsync) then return "not-crash-safe" end
  return p.volatile and "volatile" or "crash-safe"
end
local sentences = {
  lock = { flock = "flock(2): works", none = "flock(2) does NOT exclude here: locks are unsafe" },
  range_lock = { ofd = "OFD byte-range locks (F_OFD_SETLK): work",
    posix = "OFD locks unavailable: classic POSIX locks (dropped when ANY descriptor of the file closes)" },
  create = { tmpfile = "O_TMPFILE + linkat: a killed writer leaves nothing behind",
    noreplace = "hidden temp + renameat2(RENAME_NOREPLACE): a killed writer may leave .NAME.XXXXXXXX",
    link = "hidden temp + link(2): a killed writer may leave .NAME.XXXXXXXX" },
  replace = { tmpfile = "O_TMPFILE, linked to a hidden name, renamed over the target; readers see old or new, never a mix",
    rename = "hidden temp file renamed over the target; readers see old or new, never a mix" },
  durability = { ["crash-safe"] = "fsync of file and directory: a replace survives a crash",
    volatile = "fsync works, but this filesystem lives in memory: nothing survives a reboot",
    ["not-crash-safe"] = "directory fsync refused: a replace may not survive a crash" },
}
local primitives, explain = {}, {}
for k, kind in pairs({ lock = lock_kind(), range_lock = range_kind(), create = create_kind(),
    replace = replace_kind(), durability = durability_kind() }) do
  primitives[k] = kind
  explain[k] = kind == "untested" and not_tested or sentences[k][kind]
end

-- probes: atomrun.probe()'s names and values; one not run is left out and
-- listed in skipped with why.
local probes, skipped = {}, atomrun.json.array()
for _, k in ipairs({ "flock", "ofd", "tmpfile", "noreplace", "dirsync" }) do
  if ran(k) then probes[k] = p[k]
  else skipped[#skipped + 1] = { probe = k, reason = p.scratch } end
end
local report = {
  dir = dir, fstype = p.fstype, remote = p.remote, volatile = p.volatile,
  probes = probes, primitives = primitives, explain = explain,
  warnings = atomrun.json.array(), skipped = skipped,
}
if p.remote then
  table.insert(report.warnings, p.fstype .. " is a network/FUSE filesystem: locks and "
    .. "durability depend on the server; do not rely on them across machines")
end
if p.volatile then
  table.insert(report.warnings, p.fstype .. " keeps files in memory: durable=true means nothing here")
end
if primitives.lock == "none" then table.insert(report.warnings, "flock does not exclude here") end
local status = #skipped > 0 and 2 or 0

if as_json then
  print(atomrun.json.encode(report))
  os.exit(status)
end

local function mark(key, v)
  if not ran(key) then return "not tested" end
  if v == true then return "yes" elseif v == false then return "NO (no effect)" end
  return "no (" .. tostring(v) .. ")"
end
print(string.format("atomrun doctor: %s (%s%s%s)", dir, p.fstype,
  p.remote and ", remote" or "", p.volatile and ", in memory" or ""))
print("")
print("  kernel feature                       here")
print(string.format("  flock(2) whole-file locks            %s", mark("flock", p.flock)))
print(string.format("  OFD byte-range locks                 %s", mark("ofd", p.ofd)))
print(string.format("  O_TMPFILE unnamed temp files         %s", mark("tmpfile", p.tmpfile)))
print(string.format("  renameat2(RENAME_NOREPLACE)          %s", mark("noreplace", p.noreplace)))
print(string.format("  fsync of a directory                 %s", mark("dirsync", p.dirsync)))
print("")
print("  primitive      what it uses here")
for _, k in ipairs({ "lock", "range_lock", "create", "replace", "durability" }) do
  print(string.format("  %-14s %s", k, explain[k]))
end
if #skipped > 0 then
  local names = {}
  for i, sk in ipairs(skipped) do names[i] = sk.probe end
  print("")
  print(string.format("  not tested: %s: no scratch file could be created in %s (%s)",
    table.concat(names, ", "), dir, p.scratch))
end
if #report.warnings > 0 then
  print("")
  for _, w in ipairs(report.warnings) do print("  warning: " .. w) end
end
os.exit(status)
