-- atomrun.etcd.watch -- atomrun.watch: every change of an etcd key or
-- prefix, in revision order, across broken streams and compactions.
local atomrun = require "atomrun.core"

local M = {}

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
  -- each result's events, typed by the binding (keys and values as bytes)
  local function on_result(events)
    for _, e in ipairs(events) do
      if deliver(w, event(w, e, e.deleted)) then return true end
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
