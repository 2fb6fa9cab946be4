-- atomrun.etcd.watch -- atomrun.watch: every change of an etcd key or
-- prefix, in revision order, across broken streams and compactions.
local atomrun = require "atomrun.core"

local M = {}

-- base64 to bytes, for the stream's events (see stream_kv below).
local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local UNB64 = {}
for i = 1, 64 do UNB64[B64:byte(i)] = i - 1 end
local function unb64(s)
  local out, acc, nbits = {}, 0, 0
  for i = 1, #s do
    local v = UNB64[s:byte(i)]
    if v then
      acc, nbits = ((acc << 6) | v) & 0xffffff, nbits + 6
      if nbits >= 8 then
        nbits = nbits - 8
        out[#out + 1] = string.char((acc >> nbits) & 0xff)
      end
    end
  end
  return table.concat(out)
end

--- watch(url, fn [, opts]) -> last revision | nil, msg, code
--- fn(ev) for each change of the key (or, for a name ending in "/", of
--- every key under that prefix), in revision order: ev = {key=, name=,
--- value=, revision=, create_revision=, version=}, or {deleted = true, key=,
--- name=, revision=} (a delete: a ttl key whose writer died).  fn returning
--- false stops the watch.  opts: since (a revision: changes after it;
--- default the current revision, i.e. only new ones), timeout (seconds,
--- then return; default forever), ca, cert, key.
---
--- etcd's watch stream (core._etcd_watch).  When the stream breaks (a
--- member restarts, the connection drops) it is opened again from the
--- revision after the last one fn saw, on the next member: nothing lost,
--- nothing repeated.  Before each (re)open a read at that revision asks
--- whether it was compacted: if so the changes in between are gone, fn gets
--- {gap = true, from = first missing revision, to = the revision resumed
--- at}, then the current value of each key, and the watch goes on from there.
local watch_names = { since = "integer", timeout = "seconds", interval = "seconds",
  ca = "string", cert = "string", key = "string" }

-- One watch's state, w: url, key, prefix (a name ending in "/"), fn, copts
-- (the reads' options), tls (the stream's), deadline, last (the last
-- revision fn saw) and stopped (fn returned false).

-- A read of the key (or the prefix) on core.etcd.txn: the answer's one
-- response and the revision it was read at.
local function range(w, extra)
  local op = { key = w.key, prefix = w.prefix or nil }
  for k, v in pairs(extra or {}) do op[k] = v end
  local a, err, code = atomrun.etcd.txn(w.url, { success = { { range = op } } }, w.copts)
  if not a then return nil, err, code end
  return a.responses[1], a.revision
end

local function event(w, kv, deleted)
  local k = kv.key
  local ev = { key = k, name = w.prefix and k:sub(#w.key + 1) or k, revision = kv.mod_revision }
  if deleted then ev.deleted = true
  else ev.value, ev.create_revision, ev.version = kv.value, kv.create_revision, kv.version end
  return ev
end

-- The stream still comes as the gateway's JSON (atomrun_etcd_watch's
-- results), keys and values base64: the one decoding left in Lua, until
-- the core has a typed watch as it has a typed txn.
local function int(v) return math.tointeger(tonumber(v or 0)) or 0 end
local function stream_kv(kv)
  return { key = unb64(kv.key or ""), value = unb64(kv.value or ""),
           mod_revision = int(kv.mod_revision), create_revision = int(kv.create_revision),
           version = int(kv.version) }
end

local function pause(w)
  if atomrun.now() >= w.deadline then return false end
  atomrun.sleep(math.min(0.2, math.max(0, w.deadline - atomrun.now())))
  return true
end

local function deliver(w, ev)
  w.last = math.max(w.last, ev.revision)
  if w.fn(ev) == false then w.stopped = true end
  return w.stopped
end

-- Compacted past w.last?  Then fn hears of the gap and gets each key's
-- current value, and the watch goes on from the revision read.  A return
-- value: the watch ends with it (fn stopped it).
local function catch_up(w)
  local r, err = range(w, { revision = w.last, count_only = true })
  if r or not tostring(err):find("compacted", 1, true) then return nil end
  local cur, head = range(w)
  if not cur then return nil end
  if w.fn({ gap = true, from = w.last + 1, to = head }) == false then return head end
  local evs = {}
  for _, kv in ipairs(cur.kvs or {}) do evs[#evs + 1] = event(w, kv) end
  table.sort(evs, function(x, y) return x.revision < y.revision end)
  for _, ev in ipairs(evs) do if deliver(w, ev) then return w.last end end
  w.last = head
end

function M.watch(url, fn, opts)
  local check = require "atomrun.check"
  check.arg("watch", 2, fn, "function")
  opts = check.opts("watch", 3, opts, watch_names)
  local json = require "atomrun.json"   -- the stream's results (core._etcd_watch)
  local key, shown = atomrun._etcd_key(url)
  if not key then return nil, shown, "EINVAL" end
  local w = { url = url, key = key, prefix = key:sub(-1) == "/", fn = fn, stopped = false,
    copts = { ca = opts.ca, cert = opts.cert, key = opts.key, timeout = 5 },
    tls = { ca = opts.ca, cert = opts.cert, key = opts.key },
    deadline = opts.timeout and atomrun.now() + opts.timeout or math.huge, last = opts.since }
  while not w.last do
    local r, rev, code = range(w, { count_only = true })
    if r then w.last = rev
    elseif not pause(w) then return nil, rev, code end
  end
  local function on_result(text)
    local r = json.decode(text)
    for _, e in ipairs(r.events or {}) do
      if deliver(w, event(w, stream_kv(e.kv or {}), e.type == "DELETE")) then return true end
    end
    return false
  end
  while true do
    if w.last > 0 then
      local done = catch_up(w)
      if done then return done end
    end
    local left = w.deadline - atomrun.now()
    if left <= 0 then return w.last end
    local r, err, code = atomrun._etcd_watch(url, w.last + 1, math.min(left, 30), on_result, w.tls)
    if w.stopped or r == 1 then return w.last end
    if r == nil then
      if code == "EINVAL" or code == "EACCES" then return nil, err, code end
      if not pause(w) then return nil, err, code end
    end
  end
end

return M
