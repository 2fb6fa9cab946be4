-- atomrun who -- who holds each lock file, and who waits for it
--
--   atomrun who [--json] PATH...
--   atomrun who [--json] [--revoke] etcd://HOST:PORT[,...]/NAME...
--
-- For flock(2), OFD and classic POSIX locks: the live holder (the process
-- that has the open file description now, not whoever took the lock, which
-- /proc/locks and lslocks show), each waiter, mode, whole file or byte
-- range, and since when the process runs.  Exit 0 when every PATH is free,
-- 1 when any is held, 66 when a PATH cannot be examined.
--
-- For an etcd name: the holder and the queue of waiters (pid, host,
-- command, since, fencing token), read from the keys directly under
-- "NAME/" (etcd's own lock layout, so `etcdctl lock NAME` and clientv3's
-- Mutex holders are there too, as "an etcd client without an atomrun
-- record"); for a semaphore, each holder's slot rank.  --revoke revokes the holder's lease to break a stuck
-- lock: its keys go, the next waiter gets the lock, and the old holder sees
-- "lost" at its next keepalive (under `atomrun lock` its command is killed).
local atomrun = require "atomrun"
local cli = require "atomrun.cli"

local prog = cli.program("atomrun", "atomrun", "atomrun who")

local USAGE = [[
usage: atomrun who [--json] [--revoke] PATH|etcd://HOST:PORT/NAME...
  for each lock file: the processes that hold it and those that wait
  (pid, command, mode, lock kind, range, since when); for an etcd name the
  holder and the queue (pid, host, command, since, token); exit 0 when all
  are free, 1 when any is held
      --json                one JSON array, an object per PATH
      --revoke              etcd names: revoke the holder's lease (break a
                            stuck lock; the holder then sees "lost")
  -h, --help                this text
  -V, --version             atomrun's version
]]

local as_json, revoke = false, false
local paths = prog:getopt({ ... }, {
  short = "hV", permute = true,
  long = { { "json", "json" }, { "revoke", "revoke" }, { "help", "h" }, { "version", "V" } },
}, function(key)
  if key == "json" then as_json = true
  elseif key == "revoke" then revoke = true
  elseif key == "V" then prog:version()
  else io.stdout:write(USAGE) os.exit(0) end
end)
if #paths == 0 then prog:usage_error("no lock file given") end
for _, path in ipairs(paths) do
  local miss = require("atomrun.backend").near_miss(path)
  if miss then prog:usage_error("%s", miss) end
end

local function range(e)
  local start, length = e.start or 0, e.length or 0
  if start == 0 and length == 0 then return "whole file" end
  if length == 0 then return string.format("bytes %d to end of file", start) end
  return string.format("bytes %d-%d", start, start + length - 1)
end

-- One format for both kinds, in text and JSON: ISO 8601 UTC.  For a file
-- it is when the holding process started (the kernel does not record when
-- a lock was taken); for an etcd name, when its key was written.
local function iso(t)
  return t and os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(t)) or nil
end
local function since(e) return iso(e.since) or "?" end

-- One line per process; cmd comes from the core already made safe for a
-- terminal (one line, control characters escaped).
local function line(role, e)
  return string.format("  %-7s pid %-7s %-9s %-5s %-22s since %s  %s", role,
    tostring(e.pid or "?"), e.mode or "?", e.kind or "?", range(e), since(e), e.cmd or "")
end

local function entry(e)
  return { pid = e.pid, cmd = e.cmd, mode = e.mode, kind = e.kind,
           start = e.start or 0, length = e.length or 0, since = iso(e.since),
           since_epoch = e.since }
end

local is_etcd = require("atomrun.backend").is_etcd
local json = atomrun.json
for _, path in ipairs(paths) do
  if revoke and not is_etcd(path) then
    prog:usage_error("--revoke takes etcd names only, not %s", path)
  end
end

-- An etcd queue in create-revision order, each key marked by the core as
-- holding or waiting by the lock's own rule (src/etcd/lock.c: the kinds
-- exclude each other; a semaphore of n lets in n of its slots).
local function split_queue(queue)
  local holders, waiters = json.array(), json.array()
  for _, e in ipairs(queue) do
    table.insert(e.waiting and waiters or holders, e)
  end
  return holders, waiters
end

local function remote_kind(e)
  if e.slots then return "semaphore of " .. e.slots end
  return e.mode or "?"
end

-- A semaphore's holders are slots: each one's rank among the holders
-- (1 the oldest), as sem:holders() numbers them.
local function number_slots(holders)
  local rank = 0
  for _, e in ipairs(holders) do
    if e.slots then rank = rank + 1; e.slot = rank end
  end
end

local function remote_line(role, e)
  if e.slot then role = string.format("slot %d/%d", e.slot, e.slots) end
  if e.foreign then
    -- a key without our record (etcdctl lock, clientv3's Mutex): its lease
    -- and token are all that is known (core text, hex digits only)
    return string.format("  %-7s %s, token %s", role, e.foreign, tostring(e.token))
  end
  return string.format("  %-7s pid %-7s on %-16s %-9s token %-8s since %s  %s", role,
    tostring(e.pid or "?"), cli.safe(e.host or "?"), remote_kind(e), tostring(e.token),
    since(e), cli.safe(e.cmd or ""))
end

local function remote_entry(e)
  return { pid = e.pid, host = e.host, cmd = e.cmd, mode = e.mode, slots = e.slots,
           slot = e.slot, since = iso(e.since), since_epoch = e.since, token = e.token,
           key = e.key, lease = e.lease, foreign = e.foreign }
end

-- Revoke each holder's lease (core.etcd.revoke; the queue shows its ID in
-- hex, as etcdctl does).  Returns the number revoked.
local function revoke_holders(url, holders)
  local n = 0
  for _, e in ipairs(holders) do
    -- "of pid 4121 on web-3", or for another client's key what is known
    local whose = e.foreign and "of " .. e.foreign:gsub(", lease %x+$", "")
      or string.format("of pid %s on %s", tostring(e.pid or "?"), cli.safe(e.host or "?"))
    local id = math.tointeger(tonumber(e.lease, 16))
    local ok, err = atomrun.etcd.revoke(url, id)
    if not ok then
      prog:say("cannot revoke lease %s %s: %s", e.lease, whose, err)
    else
      n = n + 1
      prog:say("revoked lease %s %s (token %d): that holder now sees 'lost'",
        e.lease, whose, e.token)
    end
  end
  return n
end

-- One name's holders and waiters, to the JSON report or as lines; to_entry
-- and to_line word an entry of its kind (a file's lock, an etcd key).
-- "held", or for a semaphore's slots "2 of 3 slots taken".
local function state(holders)
  local e = holders[1]
  if not e then return "free" end
  if e.slots then return string.format("%d of %d slots taken", #holders, e.slots) end
  return "held"
end

local function show(report, path, holders, waiters, to_entry, to_line)
  if as_json then
    local r = { path = path, held = #holders > 0, holders = json.array(),
                waiters = json.array() }
    for _, e in ipairs(holders) do r.holders[#r.holders + 1] = to_entry(e) end
    for _, e in ipairs(waiters) do r.waiters[#r.waiters + 1] = to_entry(e) end
    report[#report + 1] = r
  else
    io.stdout:write(path, ": ", state(holders), "\n")
    for _, e in ipairs(holders) do io.stdout:write(to_line("holds", e), "\n") end
    for _, e in ipairs(waiters) do io.stdout:write(to_line("waits", e), "\n") end
  end
end

-- unreadable: the exit status for a path that could not be examined -- 66
-- (EX_NOINPUT) for a file, for an etcd name lock's own (69 when no
-- endpoint answered, 64 for a bad name, 77 a refused login), so that
-- "the cluster is down" is one status across subcommands.
local held, unreadable, report = false, nil, {}
local revoked = 0
for _, path in ipairs(paths) do
  local list, err, code
  if is_etcd(path) then
    list, err, code = require("atomrun.etcd").queue(path)
  else
    list, err, code = atomrun.who(path)
  end
  if list and is_etcd(path) then
    local holders, waiters = split_queue(list)
    number_slots(holders)
    held = held or #holders > 0
    show(report, path, holders, waiters, remote_entry, remote_line)
    if revoke then revoked = revoked + revoke_holders(path, holders) end
  elseif not list then
    if is_etcd(path) then       -- etcd's message names the endpoints and the last error
      unreadable = unreadable or require("atomrun.cli.etcd").exit_status(code)
      prog:say("cannot examine %s", err)
    else
      unreadable = unreadable or cli.EX_NOINPUT
      prog:say("cannot examine %s: %s", path, cli.strerror(code))
    end
    report[#report + 1] = { path = path, error = code, message = err }
  else
    local holders, waiters = {}, {}
    for _, e in ipairs(list) do
      table.insert(e.waiting and waiters or holders, e)
    end
    held = held or #holders > 0
    show(report, path, holders, waiters, entry, line)
  end
end

if as_json then
  io.stdout:write(json.encode(json.array(report)), "\n")
end
if revoke then os.exit(unreadable or revoked > 0 and 0 or 1) end
os.exit(unreadable or held and 1 or 0)
