-- atomrun.etcd -- the recipes' side of etcd names ("etcd://h:2379/NAME"):
-- a semaphore of n slots on one name, the queue of holders and waiters, and
-- the test the recipes use to tell a name from a path.  atomrun.lock itself
-- takes etcd names directly (src/bind/etcd.c parses the URL, src/etcd/lock.c is
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
--- key=, lease=}, slots= for a semaphore's slot (mode "semaphore"), and
--- waiting = true for a key that waits.  opts: ca, cert, key.
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
  out[#out + 1] = "  keys: " .. M.KEY_PREFIX .. "NAME/ (etcdctl get --prefix " .. M.KEY_PREFIX .. ")"
  for _, w in ipairs(rep.warnings) do out[#out + 1] = "  warning: " .. w end
  return table.concat(out, "\n") .. "\n"
end

-- ------------------------------------------------------------ semaphore

local Slot = {}
Slot.__index = Slot
-- The lock stays in the slot after a release whose answer did not come,
-- so that releasing again says how it stands then (lk:unlock's rule).
function Slot:release()
  local lk = self.lock
  if not lk then return true end
  local ok, err, code = lk:unlock()
  if code ~= "unavailable" then self.lock = nil end
  return ok, err, code
end
Slot.unlock = Slot.release
Slot.__close = Slot.release
Slot.__gc = Slot.release
function Slot:lost() return self.lock ~= nil and self.lock:lost() end
function Slot:__tostring()
  return string.format("atomrun.slot (%s #%d%s)", self.path, self.index,
    self.lock and self.lock.locked and "" or ", released")
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
    -- "all slots taken" only when slots of this semaphore are what is in
    -- the way; another kind of lock holding the name says so itself
    if code == "busy" and holder and holder.slots == self.n then
      err = string.format("all %d slots of %s are taken%s", self.n, self.path,
        holder and holder.pid and string.format(" (the oldest by pid %d on %s)", holder.pid,
          holder.host) or "")
    end
    return nil, err, code, holder
  end
  return setmetatable({ index = lk.index, token = lk.token, lock = lk, path = lk.path }, Slot)
end

--- sem:holders() -> the name's holders now, oldest first (a lock of
--- another kind too, if one holds it: the kinds exclude each other)
function Sem:holders()
  local q, err, code = atomrun._etcd_queue(self._url)
  if not q then return nil, err, code end
  local t = {}
  for _, e in ipairs(q) do
    if not e.waiting then
      t[#t + 1] = e
      if e.slots then e.slot = #t end  -- as the file semaphore's holders()
    end
  end
  return t
end

--- semaphore(url, n) -> sem (called by atomrun.semaphore for etcd names)
function M.semaphore(url, n)
  -- the path shown in messages: the URL without its credentials
  local shown = url:gsub("^(%a[%w+.-]*://)[^/]*@", "%1")
  return setmetatable({ path = shown, n = n, _url = url }, Sem)
end

-- ------------------------------------------------------------ keys (issue 16)
-- create, replace and read take etcd names in C (src/bind/etcd_kv.c); update is
-- here, a loop around fn, on core._etcd_call's raw txn.

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(s)
  return ((s:gsub(".", function(c)
    local b, bits = c:byte(), {}
    for i = 8, 1, -1 do bits[#bits + 1] = (b >> (i - 1)) & 1 end
    return table.concat(bits)
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local n = tonumber(x, 2)
    return B64:sub(n + 1, n + 1)
  end) .. ({ "", "==", "=" })[#s % 3 + 1])
end

local UNB64 = {}
for i = 1, 64 do UNB64[B64:byte(i)] = i - 1 end
local function unb64(s)
  local out, acc, nbits = {}, 0, 0
  for i = 1, #s do
    local v = UNB64[s:byte(i)]
    if v then
      acc, nbits = (acc << 6) | v, nbits + 6
      if nbits >= 8 then
        nbits = nbits - 8
        out[#out + 1] = string.char((acc >> nbits) & 0xff)
      end
    end
  end
  return table.concat(out)
end
M._b64, M._unb64 = b64, unb64


--- update(url, fn [, opts]) -> new | old or false (fn returned nil) | nil, msg, code
--- Optimistic read-modify-write on the key's mod revision: no lock, no
--- lost update.  opts: timeout (seconds, default 30: the whole call, retries
--- included), fence (a held etcd lock), ttl (the key is bound to this
--- process's lease of that TTL, as replace's), max_request_bytes, ca, cert,
--- key; durable, mode, follow are accepted and ignored, as for replace.
---
--- The trap is the answer that never comes: the txn was sent, the leader
--- died or the connection broke, and etcd may have applied it, may apply it
--- a moment from now (a proposal still in the leader's pipeline), or never.
--- Retrying blindly would increment twice.  So every attempt's txn also
--- writes a nonce of its own on this call's nonce key
--- (atomrun/nonce/KEY/HOST.PID.LEASE.STATE), and every later look at the
--- key -- the next attempt's read, a txn's failure branch -- reads that key
--- in the same linearizable txn: the moment any attempt's nonce shows up,
--- that attempt is committed and its value is the call's result.  Two
--- attempts can never both commit: each compares the mod revisions of the
--- key AND of the nonce key that its own read saw, and every commit of ours
--- moves the nonce key's -- so an older attempt landing late fails its
--- compare even when the key itself was deleted in between.  A read only
--- builds on a state in which no nonce of ours is in.
---
--- The nonce key is bound to a lease of this process (NONCE_TTL), so a
--- crashed updater leaves nothing behind for long; but a lease can also run
--- out under a live process (a partition longer than its TTL), taking the
--- nonce with it.  A sentinel key on the same lease (atomrun/alive/LEASE)
--- is read in the same txns: a missing nonce means "not in" only while the
--- sentinel is there.  When an attempt's outcome is open and can no longer
--- be told -- its lease is gone, the deadline came first, fn now wants no
--- change, a later request was refused -- the call returns nil, msg,
--- "unknown": resolved or reported, never guessed.  A refusal of the write
--- itself (EINVAL, EACCES, too large) is resolved the same way first: the
--- client may have tried another endpoint before, unanswered.
---
--- The nonce key is per Lua state and key, so one state cannot update one
--- key twice at once (fn yielding into another update of the same key): an
--- error says so.
local update_names = { timeout = "seconds", fence = "etcd_lock", max_request_bytes = "request_bytes",
  ca = "string", cert = "string", key = "string", wait = "boolean", ttl = "ttl",
  durable = "boolean", mode = "perm", follow = "boolean" }
M.UPDATE_TIMEOUT = 30
M.NONCE_TTL = 60

-- Sentinels this state has put, by cluster and lease; the keys this state
-- is updating now; and a tag naming this Lua state among others in the
-- same process (a C host may run several, one per thread): the address of
-- a table that lives as long as the state.
local sentinel_put, updating = {}, {}
local state_tag = tostring(sentinel_put):match("0x(%x+)") or tostring(math.random(1 << 30))
local calls = 0                 -- this state's update calls: part of each nonce

local function first_kv(resp)
  local rr = resp and resp.response_range
  return rr and rr.kvs and rr.kvs[1]
end

local FINAL = { EINVAL = true, EACCES = true, ERANGE = true }

function M.update(url, fn, opts)
  local check = require "atomrun.check"
  check.arg("update", 2, fn, "function")
  opts = check.opts("update", 3, opts, update_names)
  local key, shown = atomrun._etcd_key(url)
  if not key then return nil, shown, "EINVAL" end
  local json = require "atomrun.json"
  local limit = opts.max_request_bytes or 1536 * 1024
  local fence = opts.fence
  if fence and not fence.locked then
    return nil, shown .. ": not written: the fence lock was already released", "lost"
  end
  local cluster = url:match("^[^/]*//[^/]*") or url
  local busy = cluster .. "/" .. key
  if updating[busy] then
    error("update: " .. shown .. " is already being updated in this Lua state "
      .. "(fn yielded into another update of the same key)", 2)
  end
  updating[busy] = true
  local _ <close> = setmetatable({}, { __close = function() updating[busy] = nil end })

  local timeout = opts.timeout or M.UPDATE_TIMEOUT
  if opts.wait == false then timeout = 0 end
  local deadline = atomrun.now() + timeout
  local k64 = b64(key)
  local delay, attempt = 0.005, 0
  calls = calls + 1
  local call_no = calls
  local mine = {}               -- nonce -> the value that attempt wrote
  local pending = nil           -- the lease of an attempt whose outcome is open
  local unanswered = false      -- an attempt got no answer at all
  local refused = nil           -- {msg, code}: the last write refused by etcd
  local last, last_code = shown .. " changed under every attempt", "timeout"

  local function left() return deadline - atomrun.now() end
  local function copts()
    return { timeout = math.max(0.5, math.min(5, left())), ca = opts.ca, cert = opts.cert,
             key = opts.key }
  end
  local function call(path, body) return atomrun._etcd_call(url, path, json.encode(body), copts()) end
  local function unknown(why)
    return nil, string.format("%s: outcome unknown: an update was sent and its answer never "
      .. "came; %s", shown, why), "unknown"
  end
  local LEASE_GONE = "the lease that held its nonce expired before it could be read"
  -- A failure that ends the call: reported as is, unless an attempt's
  -- outcome is still open.
  local function final(msg, code)
    if pending then return unknown("then: " .. msg) end
    return nil, msg, code
  end
  local function give_up()
    if pending then return unknown("no etcd member could tell before the deadline (" .. last .. ")") end
    if last_code == "timeout" then return nil, "timed out after " .. timeout .. " s: " .. last, "timeout" end
    return nil, last, last_code
  end
  local function backoff()
    if left() <= 0 then return false end
    atomrun.sleep(math.min(left(), math.random() * delay))
    delay = math.min(delay * 2, 0.5)
    return true
  end
  -- This process's nonce lease and its sentinel key (put once per lease).
  local function nonce_lease()
    local lease, err, code = atomrun._etcd_lease(url, M.NONCE_TTL, copts())
    if not lease then return nil, err, code end
    local skey = "atomrun/alive/" .. string.format("%x", lease)
    local seen = cluster .. "/" .. lease
    if not sentinel_put[seen] then
      local ans, e2, c2 = call("/v3/kv/put", { key = b64(skey), lease = tostring(lease),
        value = b64(atomrun.hostname() .. " " .. atomrun.pid()) })
      if not ans then return nil, e2, c2 end
      sentinel_put[seen] = true
    end
    return lease, b64(skey)
  end
  -- A look at the nonce key and the sentinel, in the same txn: true and
  -- the value when an attempt of ours is committed; false when an open
  -- attempt can no longer be told (its nonce's lease is gone); nil: go on
  -- (and the sentinel is there).
  local function look(nkv, skv)
    local v = nkv and mine[unb64(nkv.value or "")]
    if v then return true, v end
    if pending and not skv then return false end
  end
  local function settled(done, v)
    if done then return v end
    return unknown(LEASE_GONE)
  end

  -- One attempt: true and the call's results, or false, msg, code for a
  -- failure another attempt may get past.
  local function step()
    local lease, s64, code = nonce_lease()
    if not lease then
      if FINAL[code] then return true, final(s64, code) end
      return false, s64, code
    end
    if pending and lease ~= pending then return true, unknown(LEASE_GONE) end
    local n64 = b64("atomrun/nonce/" .. key .. "/" .. atomrun.hostname() .. "." .. atomrun.pid() .. "."
      .. string.format("%x", lease) .. "." .. state_tag)
    -- the read: the key, our nonce key and the sentinel at one revision
    local ans, err, ecode = call("/v3/kv/txn", { success = {
      { request_range = { key = k64 } }, { request_range = { key = n64 } },
      { request_range = { key = s64 } } } })
    if not ans then
      if FINAL[ecode] then return true, final(err, ecode) end
      return false, err, ecode
    end
    local r = json.decode(ans).responses or {}
    local nkv, skv = first_kv(r[2]), first_kv(r[3])
    local done, v = look(nkv, skv)
    if done ~= nil then return true, settled(done, v) end
    if refused then
      -- the refused write (and any earlier try of it) is not in: its
      -- refusal stands -- unless another attempt got no answer at all
      if unanswered then return true, unknown("then etcd refused one: " .. refused[1]) end
      return true, nil, refused[1], refused[2]
    end
    if not skv then
      -- our lease is gone and nothing of ours is open: a new one next time
      return false, shown .. ": this process's lease for update's nonces expired", "unavailable"
    end
    local kv = first_kv(r[1])
    local old = kv and unb64(kv.value or "") or nil
    local new = fn(old)
    if new == nil then
      if pending then
        return true, unknown("fn now wants no change, and the unanswered write may still land")
      end
      return true, old or false
    end
    if type(new) ~= "string" then
      error("update: the function must return a string (the new value) or nil, not a "
        .. type(new), 3)
    end
    if (#new + 2) // 3 * 4 + #key * 2 + #n64 * 2 + 768 > limit then
      return true, final(string.format("%s: a value of %d bytes is over the etcd request limit "
        .. "of %d bytes (base64 in JSON; option max_request_bytes follows a cluster's "
        .. "--max-request-bytes)", shown, #new, limit), "E2BIG")
    end
    local nonce = string.format("%d.%d.%d", call_no, attempt, math.random(1 << 30))
    mine[nonce] = new
    local cmp = { { key = k64, target = "MOD", result = "EQUAL",
                    mod_revision = kv and kv.mod_revision or "0" },
                  { key = n64, target = "MOD", result = "EQUAL",
                    mod_revision = nkv and nkv.mod_revision or "0" } }
    local put = { key = k64, value = b64(new) }
    if opts.ttl then
      local klease, kerr, kcode = atomrun._etcd_lease(url, opts.ttl, copts())
      if not klease then
        if FINAL[kcode] then return true, final(kerr, kcode) end
        return false, kerr, kcode
      end
      put.lease = tostring(klease)
    end
    local failure = { { request_range = { key = n64 } }, { request_range = { key = s64 } } }
    if fence then
      cmp[3] = { key = b64(fence.key), target = "CREATE", result = "EQUAL",
        create_revision = tostring(fence.token) }
      failure[3] = { request_range = { key = b64(fence.key) } }
    end
    ans, err, ecode = call("/v3/kv/txn", { compare = cmp,
      success = { { request_put = put },
                  { request_put = { key = n64, value = b64(nonce), lease = tostring(lease) } } },
      failure = failure })
    if ans then
      local a = json.decode(ans)
      if a.succeeded then return true, new end
      r = a.responses or {}
      -- a resend of an attempt already applied, or an earlier attempt
      -- that landed late: committed, and the call's result
      done, v = look(first_kv(r[1]), first_kv(r[2]))
      if done ~= nil then return true, settled(done, v) end
      local lkv = fence and first_kv(r[3])
      if fence and not (lkv and math.tointeger(tonumber(lkv.create_revision)) == fence.token) then
        -- no attempt of ours can land now: each compared the fence too
        return true, nil, string.format("%s: not written: the lock %s is no longer held with "
          .. "token %d (its lease expired or it was broken)", shown, fence.key, fence.token), "lost"
      end
      return false, shown .. " changed under every attempt", "timeout"
    end
    -- No answer, or a refusal after which an earlier try of the same post
    -- may still be unanswered: open either way, resolved by the next read.
    pending = lease
    if tostring(err):find("too large", 1, true) then
      refused = { string.format("%s: a value of %d bytes is over the etcd request limit "
        .. "(the server refused it as too large; option max_request_bytes)", shown, #new), "E2BIG" }
    elseif FINAL[ecode] then
      refused = { err, ecode }
    else
      unanswered = true
    end
    return false, err, ecode
  end

  while true do
    attempt = attempt + 1
    local res = table.pack(step())
    if res[1] then return table.unpack(res, 2, res.n) end
    last, last_code = res[2], res[3]
    if not backoff() then return give_up() end
  end
end

--- status(url) -> st (called by atomrun.status for etcd names): JSON status
--- records on keys, as status files are on paths.  st:write(tbl [, opts])
--- (ttl: the record goes a TTL after this process dies -- "this host is
--- alive"; fence; max_request_bytes), st:read(), and st:list(): every record
--- under the key as a prefix, one range read (one revision: a consistent
--- snapshot of the fleet).
local RStatus = {}
RStatus.__index = RStatus

local rstatus_write = { ttl = "ttl", fence = "etcd_lock", max_request_bytes = "request_bytes",
  durable = "boolean", mode = "perm", follow = "boolean" }

function RStatus:write(tbl, opts)
  local json = require "atomrun.json"
  if type(tbl) ~= "table" then
    error("bad argument #1 to 'write' (table expected, got " .. type(tbl) .. ")", 2)
  end
  local wopts = {}
  for k, v in pairs(require("atomrun.check").opts("write", 2, opts, rstatus_write)) do
    wopts[k] = v
  end
  local ok, text = pcall(json.encode, tbl)
  if not ok then
    error("bad argument #1 to 'write' (cannot encode as JSON: " .. tostring(text) .. ")", 2)
  end
  return atomrun.replace(self._url, text .. "\n", wopts)
end

function RStatus:read()
  local json = require "atomrun.json"
  local text, err, code = atomrun.read(self._url, self._opts)
  if not text then return nil, err, code end
  local ok, value = pcall(json.decode, text)
  if not ok or type(value) ~= "table" then
    return nil, self.path .. ": not a JSON status record (" .. tostring(value) .. ")", "EINVAL"
  end
  return value
end

-- The smallest key after every key that starts with p (etcd's range_end).
local function prefix_end(p)
  for i = #p, 1, -1 do
    local b = p:byte(i)
    if b < 255 then return p:sub(1, i - 1) .. string.char(b + 1) end
  end
  return "\0"
end

--- st:list() -> { {key=, name=, status=tbl | nil, error=msg | nil}, ... }
--- sorted by key, revision = the snapshot's revision | nil, msg, code.
--- name is the key after the prefix; a value that is not a JSON record is
--- an entry with error set (listed, never silently skipped).
function RStatus:list()
  local json = require "atomrun.json"
  local key = self._key
  local ans, err, code = atomrun._etcd_call(self._url, "/v3/kv/range",
    json.encode({ key = b64(key), range_end = b64(prefix_end(key)) }), self._opts)
  if not ans then return nil, err, code end
  local a = json.decode(ans)
  local out = {}
  for _, kv in ipairs(a.kvs or {}) do
    local k = unb64(kv.key or "")
    -- atomrun's own bookkeeping keys (update's nonces and sentinels,
    -- create's creator records) are not anybody's status
    if not (k:find("^atomrun/nonce/") or k:find("^atomrun/alive/") or k:find("^atomrun/creator/")) then
      local text = unb64(kv.value or "")
      local ok, value = pcall(json.decode, text)
      local e = { key = k, name = k:sub(#key + 1):gsub("^/", "") }
      if ok and type(value) == "table" then e.status = value
      else e.error = k .. ": not a JSON status record" end
      out[#out + 1] = e
    end
  end
  table.sort(out, function(x, y) return x.key < y.key end)
  out.revision = a.header and math.tointeger(tonumber(a.header.revision))
  return out
end

function RStatus:__tostring() return "atomrun.status (" .. self.path .. ")" end

local status_names = { ca = "string", cert = "string", key = "string", follow = "boolean" }

function M.status(url, opts)
  local key, shown = atomrun._etcd_key(url)
  if not key then error("bad argument #1 to 'status' (" .. tostring(shown) .. ")", 3) end
  local check = require "atomrun.check"
  local o = check.pick(check.opts("status", 2, opts, status_names), { "ca", "cert", "key" })
  return setmetatable({ path = shown, _url = url, _key = key, _opts = o }, RStatus)
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
    local r, err, code = atomrun._etcd_watch(url, last + 1, math.min(left, 30), on_result)
    if stopped or r == 1 then return last end
    if r == nil then
      if code == "EINVAL" or code == "EACCES" then return nil, err, code end
      if not pause() then return nil, err, code end
    end
  end
end

return M
