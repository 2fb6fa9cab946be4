-- atomrun.remote -- the recipes' side of etcd names ("etcd://h:2379/NAME"):
-- a semaphore of n slots on one name, the queue of holders and waiters, and
-- the test the recipes use to tell a name from a path.  atomrun.lock itself
-- takes etcd names directly (src/lremote.c parses the URL, src/rlock.c is
-- the queue), so with_lock, retry and everything built on lock() need
-- nothing from here.
local atomrun = require "atomrun.core"

local M = {}

--- The etcd keys of NAME live under this prefix (readable with
--- `etcdctl get --prefix atomrun/lock/NAME/`).
M.KEY_PREFIX = "atomrun/lock/"

--- True when name has a scheme ("etcd://...", or a refused "foo://..."):
--- such a name is never a path.
function M.is_url(name)
  return type(name) == "string" and name:find("^%a[%w+.-]*://") ~= nil
end

--- queue(url [, opts]) -> {holder...}: holders first, then waiters, in
--- create-revision order; each {pid=, host=, cmd=, since=, token=, mode=,
--- key=, lease=}.  opts: ca, cert, key.
function M.queue(url, opts)
  return atomrun._etcd_queue(url, opts)
end

-- ------------------------------------------------------------ guarded run

--- run(argv, lk [, opts]) -> atomrun.run's results | nil, "lost", why
-- The same as atomrun.run(argv, {guard = lk, ...}): the command gets
-- ATOMRUN_LOCK_TOKEN (the fencing token) and its own process group; if the
-- lock is lost while it runs, the group gets SIGTERM, then SIGKILL
-- opts.kill_after (default 5) seconds later, and run returns nil, "lost"
-- and the reason.
function M.run(argv, lk, opts)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.guard = lk
  return atomrun.run(argv, o)
end

-- ------------------------------------------------------------ command line

-- sysexits for what the cluster said: a bad name or ttl is the caller's
-- mistake (64), a refused login 77, no answer 69, not etcd at all 76.
-- ------------------------------------------------------------ doctor

local function decode(text)
  local ok, v = pcall(require("atomrun.json").decode, text)
  return ok and type(v) == "table" and v or nil
end

--- doctor(url) -> report: each endpoint's health, version, leader, round
-- trip; the member list; the cluster's minimum lease TTL; whether auth is
-- on.  For `atomrun doctor etcd://...`.
function M.doctor(url)
  -- a cluster, not a lock: etcd://h:2379 needs no /NAME here
  if not url:find("^%a[%w+.-]*://[^/]*/.") then url = url:gsub("/?$", "/doctor", 1) end
  local eps, shown = atomrun._etcd_endpoints(url)
  if not eps then return nil, shown end
  shown = shown:gsub("/doctor$", "")
  local rep = { url = shown, endpoints = {}, warnings = {} }
  local leader_ids, ids = {}, {}
  for i, ep in ipairs(eps) do
    local t0 = atomrun.now()
    local text, err = atomrun._etcd_call(url, "/v3/maintenance/status", "{}",
      { endpoint = i, timeout = 3 })
    local e = { endpoint = ep, rtt_ms = math.floor((atomrun.now() - t0) * 1e5 + 0.5) / 100 }
    local st = text and decode(text)
    if st then
      e.healthy, e.version = true, st.version
      e.member_id = st.header and st.header.member_id
      e.leader = st.leader ~= nil and st.leader == e.member_id
      e.raft_term = tonumber(st.raftTerm)
      if st.leader and st.leader ~= "0" then leader_ids[st.leader] = true end
      if e.member_id then ids[e.member_id] = ep end
    else
      e.healthy, e.error = false, err or "not etcd's answer"
      rep.warnings[#rep.warnings + 1] = ep .. " is not healthy: " .. e.error
    end
    rep.endpoints[i] = e
  end
  local n = 0
  for id in pairs(leader_ids) do n = n + 1; rep.leader = ids[id] or id end
  if n == 0 then rep.warnings[#rep.warnings + 1] = "no leader: the cluster cannot grant locks"
  elseif n > 1 then rep.warnings[#rep.warnings + 1] = "endpoints disagree about the leader" end
  local ml = atomrun._etcd_call(url, "/v3/cluster/member/list", "{}", { timeout = 3 })
  ml = ml and decode(ml)
  if ml and ml.members then
    rep.members = {}
    for _, m in ipairs(ml.members) do
      rep.members[#rep.members + 1] = { name = m.name, id = m.ID,
        client_urls = m.clientURLs or {}, peer_urls = m.peerURLs or {} }
    end
  end
  -- etcd raises a TTL below its minimum silently: ask for 1 s and see
  local g = atomrun._etcd_call(url, "/v3/lease/grant", '{"TTL":1}', { timeout = 3 })
  g = g and decode(g)
  if g and g.ID then
    rep.min_ttl = tonumber(g.TTL)
    atomrun._etcd_call(url, "/v3/lease/revoke", '{"ID":"' .. g.ID .. '"}', { timeout = 3 })
  end
  local _, aerr = atomrun._etcd_call(url, "/v3/auth/authenticate",
    '{"name":"atomrun-doctor","password":""}', { anonymous = true, timeout = 3 })
  if aerr and aerr:find("authentication is not enabled", 1, true) then rep.auth = false
  elseif aerr and aerr:find("authentication failed", 1, true) then rep.auth = true end
  return rep
end

--- The doctor's report as lines of text.
function M.doctor_text(rep)
  local out = { "etcd cluster " .. rep.url }
  for _, e in ipairs(rep.endpoints) do
    out[#out + 1] = e.healthy and string.format("  %-24s healthy, etcd %s%s, %.2f ms", e.endpoint,
      tostring(e.version), e.leader and ", LEADER" or "", e.rtt_ms)
      or string.format("  %-24s UNHEALTHY (see the warning below)", e.endpoint)
  end
  if rep.members then
    local names = {}
    for _, m in ipairs(rep.members) do names[#names + 1] = (m.name ~= "" and m.name or m.id) end
    out[#out + 1] = "  members: " .. table.concat(names, ", ")
  end
  if rep.leader then out[#out + 1] = "  leader: " .. rep.leader end
  if rep.min_ttl then out[#out + 1] = string.format("  minimum lease TTL: %d s (--ttl below it is refused)", rep.min_ttl) end
  if rep.auth ~= nil then out[#out + 1] = "  authentication: " .. (rep.auth and "on" or "off") end
  out[#out + 1] = "  keys: " .. M.KEY_PREFIX .. "NAME/ (etcdctl get --prefix " .. M.KEY_PREFIX .. ")"
  for _, w in ipairs(rep.warnings) do out[#out + 1] = "  warning: " .. w end
  return table.concat(out, "\n") .. "\n"
end

-- ------------------------------------------------------------ semaphore

local Slot = {}
Slot.__index = Slot
function Slot:release()
  local lk = self.lock
  if not lk then return true end
  self.lock = nil
  return lk:unlock()
end
Slot.unlock = Slot.release
Slot.__close = Slot.release
Slot.__gc = Slot.release
function Slot:lost() return self.lock ~= nil and self.lock:lost() end
function Slot:__tostring()
  return string.format("atomrun.slot (%s #%d%s)", self.path, self.index,
    self.lock and "" or ", released")
end

local Sem = {}
Sem.__index = Sem
function Sem:__tostring() return string.format("atomrun.semaphore (%s, %d)", self.path, self.n) end

local acquire_names = { timeout = true, wait = true, ttl = true }

--- sem:acquire([opts]) -> slot | nil, msg, code [, holder]
-- A slot is held while its key is among the n oldest under the name; its
-- index is its rank among the holders when it was granted.
function Sem:acquire(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #1 to 'acquire' (options must be a table, not a " .. type(opts) .. ")", 2)
  end
  local lopts = { slots = self.n }
  for k, v in pairs(opts or {}) do
    if not acquire_names[k] then
      error("bad argument #1 to 'acquire' (unknown option '" .. tostring(k)
        .. "' (expected one of: timeout, ttl, wait))", 2)
    end
    lopts[k] = v
  end
  local lk, err, code, holder = atomrun.lock(self._url, lopts)
  if not lk then
    if code == "busy" then
      err = string.format("all %d slots of %s are taken%s", self.n, self.path,
        holder and holder.pid and string.format(" (the oldest by pid %d on %s)", holder.pid,
          holder.host) or "")
    end
    return nil, err, code, holder
  end
  return setmetatable({ index = lk.index, token = lk.token, lock = lk, path = lk.path }, Slot)
end

--- sem:holders() -> the slots' holders now, oldest first
function Sem:holders()
  local q, err, code = atomrun._etcd_queue(self._url)
  if not q then return nil, err, code end
  local t = {}
  for i = 1, math.min(self.n, #q) do
    t[i] = q[i]
    t[i].slot = i                     -- as the file semaphore's holders()
  end
  return t
end

--- semaphore(url, n) -> sem (called by atomrun.semaphore for etcd names)
function M.semaphore(url, n)
  -- the path shown in messages: the URL without its credentials
  local shown = url:gsub("^(%a[%w+.-]*://)[^/]*@", "%1")
  return setmetatable({ path = shown, n = n, _url = url }, Sem)
end

return M
