#!/usr/bin/env atomrun
-- scripts/fleet-status.lua -- every host's status on one etcd prefix.  Its
-- usage and exit statuses: USAGE below (`atomrun fleet-status.lua --help`).
--
-- A published record is bound to a lease: when publish ends its record
-- goes at once (the lease is revoked at exit), when the host dies it goes
-- a TTL later, so "show" lists only hosts that are alive.
local atomrun = require "atomrun"

local NAME = "fleet-status"
local SYNOPSIS = [[
usage: atomrun fleet-status.lua PREFIX publish [--name NAME] [--ttl S] [--every S] [--count N]
       atomrun fleet-status.lua PREFIX show
       atomrun fleet-status.lua PREFIX follow [--timeout S]
]]
local USAGE = SYNOPSIS .. [[

Every host's status on one etcd prefix.  PREFIX is an etcd name ending in
"/" (etcd:///fleet/).

  publish  write this host's record {name, host, pid, load, at, seq} on
           PREFIX..NAME every S seconds, bound to a lease: when publish
           ends its record goes at once, when the host dies it goes a TTL
           later, so "show" lists only hosts that are alive.
             --name NAME  the record's name (default: the host name)
             --ttl S      the lease's seconds (default 15)
             --every S    seconds between writes (default 5)
             --count N    write N times, then end (default: forever)
  show     print one line per host, from one consistent read.
  follow   print each new record as it is written, in order, "NAME gone"
           when a record goes, and "gap" when a compaction took some.
             --timeout S  end after S seconds (default: never)
  -h, --help  print this and exit

Exit status: 0; 1 a failure; 64 usage; 69 no etcd member answered.

Example (on every host, then anywhere):
  atomrun fleet-status.lua etcd://10.0.0.5:2379/fleet/ publish --every 10
  atomrun fleet-status.lua etcd://10.0.0.5:2379/fleet/ show
]]

-- The command line: atomrun.args (bundled in atomrun, so this script still
-- runs alone when copied): -h and --help print USAGE and exit 0; an option
-- the script does not know, or one missing its value, is a usage error on
-- stderr, exit 64 (EX_USAGE, as `atomrun` itself).
local cmdline = require("atomrun.args").new(NAME, SYNOPSIS, USAGE)
local usage_error, parse_args = cmdline.error, cmdline.parse

local function die(msg, code)
  io.stderr:write("fleet-status: ", tostring(msg), "\n")
  os.exit(code == "unavailable" and 69 or 1)
end

local VERB_OPTIONS = {
  publish = { ["--name"] = "value", ["--ttl"] = "value", ["--every"] = "value",
    ["--count"] = "value" },
  show = {},
  follow = { ["--timeout"] = "value" },
}
local any_verb = {}
for _, options in pairs(VERB_OPTIONS) do
  for o, kind in pairs(options) do any_verb[o] = kind end
end
local given, operands = parse_args(arg, any_verb)
local prefix, verb = operands[1], operands[2]
if not prefix then usage_error("no PREFIX given") end
if not prefix:find("^%a[%w+.-]*://") or prefix:sub(-1) ~= "/" then
  usage_error("PREFIX must be an etcd name ending in \"/\" (etcd:///fleet/), not '"
    .. prefix .. "'")
end
if not verb then usage_error("no verb given: publish, show or follow") end
local verb_options = VERB_OPTIONS[verb]
  or usage_error("unknown verb '" .. verb .. "': publish, show or follow")
if #operands > 2 then usage_error("too many arguments: '" .. operands[3] .. "'") end
local opt = {}
for o, v in pairs(given) do
  if not verb_options[o] then usage_error(verb .. " has no option " .. o) end
  opt[o:sub(3)] = v
end
local function num(name, dflt)
  if opt[name] == nil then return dflt end
  return tonumber(opt[name])
    or usage_error("--" .. name .. " needs a number, not '" .. opt[name] .. "'")
end

local function hostname()
  local f = io.open("/proc/sys/kernel/hostname", "r")
  local h = f and f:read("l") or "?"
  if f then f:close() end
  return h
end
local function load1()
  local f = io.open("/proc/loadavg", "r")
  local l = f and tonumber(f:read("n")) or 0
  if f then f:close() end
  return l
end

local function line(name, rec)
  return string.format("%s %s pid %s load %.2f seq %s", name, tostring(rec.host),
    tostring(rec.pid), tonumber(rec.load) or 0, tostring(rec.seq))
end

if verb == "publish" then
  local name = opt.name or hostname()
  if name == "" or name:find("/", 1, true) then
    usage_error("--name needs a name without \"/\", not '" .. name .. "'")
  end
  local ttl, every, count = math.tointeger(num("ttl", 15)), num("every", 5), num("count", math.huge)
  if not ttl or ttl < 1 then usage_error("--ttl needs a whole number of seconds >= 1") end
  local st = atomrun.status(prefix .. name)
  local seq = 0
  while seq < count do
    seq = seq + 1
    local ok, err, code = st:write({ name = name, host = hostname(), pid = atomrun.pid(),
      load = load1(), at = os.time(), seq = seq }, { ttl = ttl })
    if not ok then die(err, code) end
    if seq < count then atomrun.sleep(every) end
  end
elseif verb == "show" then
  local list, err, code = atomrun.status(prefix):list()
  if not list then die(err, code) end
  for _, e in ipairs(list) do
    if e.status then print(line(e.name, e.status)) else print(e.name .. " ? " .. e.error) end
  end
elseif verb == "follow" then
  local json = atomrun.json
  local last, err, code = atomrun.watch(prefix, function(ev)
    if ev.gap then
      print(string.format("gap: revisions %d..%d were compacted", ev.from, ev.to))
    elseif ev.deleted then
      print(ev.name .. " gone")
    else
      local ok, rec = pcall(json.decode, ev.value)
      print(ok and type(rec) == "table" and line(ev.name, rec) or (ev.name .. " ? not a status record"))
    end
    io.stdout:flush()
  end, { timeout = num("timeout", nil), interval = 0.1 })
  if not last then die(err, code) end
end
