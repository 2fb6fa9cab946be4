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

function M.watch(url, fn, opts)
  local check = require "atomrun.check"
  check.arg("watch", 2, fn, "function")
  opts = check.opts("watch", 3, opts, watch_names)
  local json = require "atomrun.json"   -- the stream's results (core._etcd_watch)
  local key, shown = atomrun._etcd_key(url)
  if not key then return nil, shown, "EINVAL" end
  local prefix = key:sub(-1) == "/"
  local copts = { ca = opts.ca, cert = opts.cert, key = opts.key, timeout = 5 }
  local deadline = opts.timeout and atomrun.now() + opts.timeout or math.huge
  -- A read of the key (or the prefix) on core.etcd.txn: the answer's one
  -- response and the revision it was read at.
  local function range(extra)
    local op = { key = key, prefix = prefix or nil }
    for k, v in pairs(extra or {}) do op[k] = v end
    local a, err, code = atomrun.etcd.txn(url, { success = { { range = op } } }, copts)
    if not a then return nil, err, code end
    return a.responses[1], a.revision
  end
  local function event(kv, deleted)
    local k = kv.key
    local ev = { key = k, name = prefix and k:sub(#key + 1) or k, revision = kv.mod_revision }
    if deleted then ev.deleted = true
    else ev.value, ev.create_revision, ev.version = kv.value, kv.create_revision, kv.version end
    return ev
  end
  -- The stream still comes as the gateway's JSON (atomrun_remote_watch's
  -- results), keys and values base64: the one decoding left in Lua, until
  -- the core has a typed watch as it has a typed txn.
  local function int(v) return math.tointeger(tonumber(v or 0)) or 0 end
  local function stream_kv(kv)
    return { key = unb64(kv.key or ""), value = unb64(kv.value or ""),
             mod_revision = int(kv.mod_revision), create_revision = int(kv.create_revision),
             version = int(kv.version) }
  end
  local function pause()
    if atomrun.now() >= deadline then return false end
    atomrun.sleep(math.min(0.2, math.max(0, deadline - atomrun.now())))
    return true
  end

  local last, stopped = opts.since, false
  while not last do
    local r, rev, code = range({ count_only = true })
    if r then last = rev
    elseif not pause() then return nil, rev, code end
  end
  local function deliver(ev)
    last = math.max(last, ev.revision)
    if fn(ev) == false then stopped = true end
    return stopped
  end
  local function on_result(text)
    local r = json.decode(text)
    for _, e in ipairs(r.events or {}) do
      if deliver(event(stream_kv(e.kv or {}), e.type == "DELETE")) then return true end
    end
    return false
  end

  while true do
    -- compacted past `last`?  Then report the gap and start from now.
    if last > 0 then
      local r, err = range({ revision = last, count_only = true })
      if not r and tostring(err):find("compacted", 1, true) then
        local cur, head = range()
        if cur then
          if fn({ gap = true, from = last + 1, to = head }) == false then return head end
          local evs = {}
          for _, kv in ipairs(cur.kvs or {}) do evs[#evs + 1] = event(kv) end
          table.sort(evs, function(x, y) return x.revision < y.revision end)
          for _, ev in ipairs(evs) do if deliver(ev) then return last end end
          last = head
        end
      end
    end
    local left = deadline - atomrun.now()
    if left <= 0 then return last end
    local r, err, code = atomrun._etcd_watch(url, last + 1, math.min(left, 30), on_result,
      { ca = opts.ca, cert = opts.cert, key = opts.key })
    if stopped or r == 1 then return last end
    if r == nil then
      if code == "EINVAL" or code == "EACCES" then return nil, err, code end
      if not pause() then return nil, err, code end
    end
  end
end

return M
