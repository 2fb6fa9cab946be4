-- atomrun.etcd.watch -- atomrun.watch: every change of an etcd key or
-- prefix, in revision order, across broken streams and compactions.
local atomrun = require "atomrun.core"
local codec = require "atomrun.etcd.codec"
local b64, unb64, prefix_end = codec.b64, codec.unb64, codec.prefix_end

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

function M.watch(url, fn, opts)
  local check = require "atomrun.check"
  check.arg("watch", 2, fn, "function")
  opts = check.opts("watch", 3, opts, watch_names)
  local json = require "atomrun.json"
  local key, shown = atomrun._etcd_key(url)
  if not key then return nil, shown, "EINVAL" end
  local prefix = key:sub(-1) == "/"
  local copts = { ca = opts.ca, cert = opts.cert, key = opts.key, timeout = 5 }
  local deadline = opts.timeout and atomrun.now() + opts.timeout or math.huge
  local base = { key = b64(key) }
  if prefix then base.range_end = b64(prefix_end(key)) end
  local function call(path, req)
    local ans, err, code = atomrun._etcd_call(url, path, json.encode(req), copts)
    if not ans then return nil, err, code end
    return json.decode(ans)
  end
  local function int(v) return math.tointeger(tonumber(v or 0)) or 0 end
  local function event(kv, deleted)
    local k = unb64(kv.key or "")
    local ev = { key = k, name = prefix and k:sub(#key + 1) or k, revision = int(kv.mod_revision) }
    if deleted then ev.deleted = true
    else
      ev.value, ev.create_revision, ev.version = unb64(kv.value or ""), int(kv.create_revision),
        int(kv.version)
    end
    return ev
  end
  local function pause()
    if atomrun.now() >= deadline then return false end
    atomrun.sleep(math.min(0.2, math.max(0, deadline - atomrun.now())))
    return true
  end

  local last, stopped = opts.since, false
  while not last do
    local a, err, code = call("/v3/kv/range", { key = base.key, range_end = base.range_end,
      count_only = true })
    if a then last = int(a.header and a.header.revision)
    elseif not pause() then return nil, err, code end
  end
  local function deliver(ev)
    last = math.max(last, ev.revision)
    if fn(ev) == false then stopped = true end
    return stopped
  end
  local function on_result(text)
    local r = json.decode(text)
    for _, e in ipairs(r.events or {}) do
      if deliver(event(e.kv or {}, e.type == "DELETE")) then return true end
    end
    return false
  end

  while true do
    -- compacted past `last`?  Then report the gap and start from now.
    if last > 0 then
      local a, err = call("/v3/kv/range", { key = base.key, range_end = base.range_end,
        revision = tostring(last), count_only = true })
      if not a and tostring(err):find("compacted", 1, true) then
        local cur = call("/v3/kv/range", { key = base.key, range_end = base.range_end })
        if cur then
          local head = int(cur.header and cur.header.revision)
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
