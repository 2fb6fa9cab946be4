-- atomrun.etcd.doctor -- `atomrun doctor etcd://...`: the health of a
-- cluster as atomrun's locks need it (each endpoint, the leader, the
-- members, the minimum lease TTL, authentication), and the report as text.
local atomrun = require "atomrun.core"
local etcd = require "atomrun.etcd"

local M = {}

local function decode(text)
  local ok, v = pcall(require("atomrun.json").decode, text)
  return ok and type(v) == "table" and v or nil
end

--- doctor(url) -> report: each endpoint's health, version, leader, round
-- trip; the member list; the cluster's minimum lease TTL; whether auth is
-- on.  For `atomrun doctor etcd://...`.
-- A message about the made-up URL .../doctor, about the cluster instead.
local function unnamed(msg)
  return (tostring(msg):gsub("(%a[%w+.-]*://[^%s]-)/doctor: ", "%1: "):gsub("/doctor ", " "))
end

function M.doctor(url)
  -- a cluster, not a lock: etcd://h:2379 needs no /NAME here
  -- (a made-up name, "doctor", that no message may show: see unnamed)
  if url:find("^%a[%w+.-]*://$") then url = url .. "/doctor"        -- etcd:// = ATOMRUN_ETCD's
  elseif not url:find("^%a[%w+.-]*://[^/]*/.") then url = url:gsub("/?$", "/doctor", 1) end
  local eps, shown = atomrun._etcd_endpoints(url)
  if not eps then return nil, unnamed(shown) end
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
      e.healthy, e.error = false, err and unnamed(err) or "not etcd's answer"
      rep.warnings[#rep.warnings + 1] = ep .. " is not healthy: " .. e.error
    end
    rep.endpoints[i] = e
  end
  local n = 0
  for id in pairs(leader_ids) do n = n + 1; rep.leader = ids[id] or id end
  if n == 0 then rep.warnings[#rep.warnings + 1] = "no leader: the cluster cannot grant locks"
  elseif n > 1 then rep.warnings[#rep.warnings + 1] = "endpoints disagree about the leader" end
  -- Nobody answered: the cluster-wide questions would each wait out their
  -- own timeout for the same silence.
  if not next(ids) then
    rep.warnings[#rep.warnings + 1] = "no endpoint answered: the member list, the minimum "
      .. "lease TTL and authentication were not checked"
    return rep
  end
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
  out[#out + 1] = "  keys: " .. etcd.KEY_PREFIX .. "NAME/<lease hex>, as etcdctl lock NAME makes them"
    .. " (etcdctl get --prefix NAME/); atomrun's own under " .. etcd.PREFIX .. " (a lock name there is refused)"
  for _, w in ipairs(rep.warnings) do out[#out + 1] = "  warning: " .. w end
  return table.concat(out, "\n") .. "\n"
end

return M
