#!/usr/bin/env atomrun
-- scripts/fleet-status.lua -- every host's status on one etcd prefix.
--
--   atomrun fleet-status.lua PREFIX publish [--name NAME] [--ttl S] [--every S] [--count N]
--   atomrun fleet-status.lua PREFIX show
--   atomrun fleet-status.lua PREFIX follow [--timeout S]
--
-- PREFIX is an etcd name ending in "/" (etcd:///fleet/).  publish writes
-- this host's record {name, host, pid, load, at, seq} on PREFIX..NAME every
-- S seconds (default 5; N times, default forever), bound to a lease of
-- --ttl seconds (default 15): when publish ends its record goes at once
-- (the lease is revoked at exit), when the host dies it goes a TTL later,
-- so "show" lists only hosts that are alive.  show prints one line
-- per host from one consistent read; follow prints each new record as it
-- is written, in order, "NAME gone" when a record goes, and "gap" when a
-- compaction took some, until --timeout.  Exit status: 0; 1 a failure; 64 usage; 69 no etcd member
-- answered.
local atomrun = require "atomrun"

local function usage()
  io.stderr:write("usage: atomrun fleet-status.lua PREFIX publish|show|follow [options]\n")
  os.exit(64)
end
local function die(msg, code)
  io.stderr:write("fleet-status: ", tostring(msg), "\n")
  os.exit(code == "unavailable" and 69 or 1)
end

local prefix, verb = arg[1], arg[2]
if not prefix or not verb or not prefix:find("^%a[%w+.-]*://") or prefix:sub(-1) ~= "/" then usage() end
local opt = {}
local i = 3
while arg[i] do
  local name = arg[i]:match("^%-%-(%a+)$")
  if not name or not arg[i + 1] then usage() end
  opt[name] = arg[i + 1]
  i = i + 2
end
local function num(name, dflt)
  if opt[name] == nil then return dflt end
  return tonumber(opt[name]) or usage()
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
  if name == "" or name:find("/", 1, true) then usage() end
  local ttl, every, count = math.tointeger(num("ttl", 15)), num("every", 5), num("count", math.huge)
  if not ttl or ttl < 1 then usage() end
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
else
  usage()
end
