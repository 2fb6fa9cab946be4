-- atomrun.etcd.update -- atomrun.update on an etcd key: an optimistic
-- read-modify-write whose txns also write and read a nonce, so that an
-- answer that never came is resolved, never guessed.  create, replace and
-- read take etcd names in C (src/bind/etcd_kv.c); update is a recipe, as
-- etcd's STM is one (clientv3/concurrency/stm.go): a loop around fn on
-- core.etcd.txn, whose keys and values are plain strings.
local atomrun = require "atomrun.core"
local etcd = require "atomrun.etcd"      -- its UPDATE_TIMEOUT and NONCE_TTL
local txn, lease_of, PREFIX = atomrun.etcd.txn, atomrun.etcd.lease, atomrun.etcd.PREFIX

local M = {}

--- update(url, fn [, opts]) -> new | old or false (fn returned nil) | nil, msg, code
--- Optimistic read-modify-write on the key's mod revision: no lock, no
--- lost update.  opts: timeout (seconds, default 30: the whole call, retries
--- included), fence (a held etcd lock), ttl (the key is bound to this
--- process's lease of that TTL, as replace's), max_request_bytes (a bigger
--- txn is refused before it is sent: E2BIG), ca, cert, key; durable, mode,
--- follow are accepted and ignored, as for replace.
---
--- The trap is the answer that never comes: the txn was sent, the leader
--- died or the connection broke, and etcd may have applied it, may apply it
--- a moment from now (a proposal still in the leader's pipeline), or never.
--- Retrying blindly would increment twice.  So every attempt's txn also
--- writes a nonce of its own on this call's nonce key
--- (PREFIX.nonce .. "KEY/HOST.PID.LEASE.STATE"), and every later look at the
--- key -- the next attempt's read, a txn's failure branch -- reads that key
--- in the same linearizable txn: the moment any attempt's nonce shows up,
--- that attempt is committed and its value is the call's result.  Two
--- attempts can never both commit: each compares the mod revisions of the
--- key AND of the nonce key that its own read saw, and every commit of ours
--- moves the nonce key's -- so an older attempt landing late fails its
--- compare even when the key itself was deleted in between.
---
--- The nonce key is bound to a lease of this process (NONCE_TTL), so a
--- crashed updater leaves nothing behind for long; but a lease can also run
--- out under a live process (a partition longer than its TTL), taking the
--- nonce with it.  A sentinel key on the same lease (PREFIX.alive .. LEASE)
--- is read in the same txns: a missing nonce means "not in" only while the
--- sentinel is there.  When an attempt's outcome is open and can no longer
--- be told -- its lease is gone, the deadline came first, fn now wants no
--- change, a later request was refused -- the call returns nil, msg,
--- "unknown": resolved or reported, never guessed.  A refusal of the write
--- (EINVAL, EACCES) is resolved the same way first: the client may have
--- tried another endpoint before, unanswered.  The nonce key is per Lua
--- state and key, so one state cannot update one key twice at once (fn
--- yielding into another update of the same key): an error says so.
local update_names = { timeout = "seconds", fence = "etcd_lock", max_request_bytes = "request_bytes",
  ca = "string", cert = "string", key = "string", wait = "boolean", ttl = "ttl",
  durable = "boolean", mode = "perm", follow = "boolean" }

-- Sentinels this state has put, by cluster and lease; the keys this state
-- is updating now; and a tag naming this Lua state among others in the
-- same process (a C host may run several, one per thread): the address of
-- a table that lives as long as the state.
local sentinel_put, updating = {}, {}
local state_tag = tostring(sentinel_put):match("0x(%x+)") or tostring(math.random(1 << 30))
local calls = 0                 -- this state's update calls: part of each nonce

-- The txn's words, as STM's Get/Put/Cmp.
local function get(key) return { range = { key = key } } end
local function put(key, value, lease) return { put = { key = key, value = value, lease = lease } } end
local function mod_is(key, kv) return { key = key, target = "mod", result = "==",
                                        value = kv and kv.mod_revision or 0 } end
local function first(resp) return resp and resp.kvs and resp.kvs[1] end

local FINAL = { EINVAL = true, EACCES = true, ERANGE = true }
local GONE = {}                 -- look()'s word for "can no longer be told"

-- One call's state, u: url, key, shown (the URL as messages show it),
-- cluster, fn, opts, fence, timeout, deadline, the backoff delay, the
-- attempt number, call_no, mine (nonce -> the value that attempt wrote),
-- pending (the lease of an attempt whose outcome is open), unanswered (an
-- attempt got no answer at all), refused ({msg, code}: the last write etcd
-- refused), and last/last_code (why the last attempt did not commit).

local function left(u) return u.deadline - atomrun.now() end

local function copts(u, extra)
  local opts = u.opts
  return { timeout = math.max(0.5, math.min(5, left(u))), ca = opts.ca, cert = opts.cert,
           key = opts.key, max_request_bytes = extra and opts.max_request_bytes or nil }
end

local function send(u, t) return txn(u.url, t, copts(u, true)) end

local function unknown(u, why)
  return nil, string.format("%s: outcome unknown: an update was sent and its answer never "
    .. "came; %s", u.shown, why), "unknown"
end

-- A failure that ends the call: reported as is, unless an attempt's
-- outcome is still open.
local function final(u, msg, code)
  if u.pending then return unknown(u, "then: " .. msg) end
  return nil, msg, code
end

local function give_up(u)
  if u.pending then
    return unknown(u, "no etcd member could tell before the deadline (" .. u.last .. ")")
  end
  if u.last_code == "timeout" then
    return nil, "timed out after " .. u.timeout .. " s: " .. u.last, "timeout"
  end
  return nil, u.last, u.last_code
end

local function backoff(u)
  if left(u) <= 0 then return false end
  atomrun.sleep(math.min(left(u), math.random() * u.delay))
  u.delay = math.min(u.delay * 2, 0.5)
  return true
end

-- This process's nonce lease and its sentinel key (put once per lease).
local function nonce_lease(u)
  local lease, err, code = lease_of(u.url, etcd.NONCE_TTL, copts(u))
  if not lease then return nil, err, code end
  local skey = PREFIX.alive .. string.format("%x", lease)
  if not sentinel_put[u.cluster .. "/" .. lease] then
    local ok, e2, c2 = send(u, { success = { put(skey, atomrun.hostname() .. " " .. atomrun.pid(),
      lease) } })
    if not ok then return nil, e2, c2 end
    sentinel_put[u.cluster .. "/" .. lease] = true
  end
  return lease, skey
end

-- A look at the nonce key and the sentinel, read in one txn: the value of
-- an attempt of ours that is committed; GONE when an open attempt can no
-- longer be told (its nonce's lease is gone); nil: go on.
local function look(u, nkv, skv)
  local v = nkv and u.mine[nkv.value]
  if v then return v end
  if u.pending and not skv then return GONE end
end

local LEASE_GONE = "the lease that held its nonce expired before it could be read"
local function settled(u, v)
  if v == GONE then return unknown(u, LEASE_GONE) end
  return v
end

-- A failure of a call before the write: ends the call, or try again.
local function failed(u, err, code)
  if FINAL[code] then return true, final(u, err, code) end
  return false, err, code
end

-- A write's txn failed (r: its answer): committed after all (a resend of
-- an attempt already applied, or an earlier attempt that landed late), the
-- fence lost, or the key changed under us.
local function write_failed(u, r)
  local fence = u.fence
  local v = look(u, first(r.responses[1]), first(r.responses[2]))
  if v then return true, settled(u, v) end
  local lkv = fence and first(r.responses[3])
  if fence and not (lkv and lkv.create_revision == fence.token) then
    -- no attempt of ours can land now: each compared the fence too
    return true, nil, string.format("%s: not written: the lock %s is no longer held with "
      .. "token %d (its lease expired or it was broken)", u.shown, fence.key, fence.token), "lost"
  end
  return false, u.shown .. " changed under every attempt", "timeout"
end

-- The write of new over what the read saw (kv, nkv): true and the call's
-- results, or false, msg, code for a failure another attempt may get past.
local function write(u, new, kv, nkey, nkv, skey, lease)
  local klease, kerr, kcode
  if u.opts.ttl then
    klease, kerr, kcode = lease_of(u.url, u.opts.ttl, copts(u))
    if not klease then return failed(u, kerr, kcode) end
  end
  local nonce = string.format("%d.%d.%d", u.call_no, u.attempt, math.random(1 << 30))
  u.mine[nonce] = new
  local t = { compare = { mod_is(u.key, kv), mod_is(nkey, nkv) },
              success = { put(u.key, new, klease), put(nkey, nonce, lease) },
              failure = { get(nkey), get(skey) } }
  if u.fence then
    t.compare[3] = { key = u.fence.key, target = "create", result = "==", value = u.fence.token }
    t.failure[3] = get(u.fence.key)
  end
  local r, err, code = send(u, t)
  if r and r.succeeded then return true, new end
  if r then return write_failed(u, r) end
  -- Too big for the cluster is too big for every member: no copy of it
  -- can be in, whatever the client tried before.
  if code == "E2BIG" then return true, final(u, err, code) end
  -- No answer, or a refusal after which an earlier try of the same post
  -- may still be unanswered: open either way, resolved by the next read.
  u.pending = lease
  if FINAL[code] then u.refused = { err, code } else u.unanswered = true end
  return false, err, code
end

-- What the read found settles the call (true and its results), or nil:
-- go on to fn and the write.
local function settle_read(u, nkv, skv)
  local v = look(u, nkv, skv)
  if v then return true, settled(u, v) end
  if u.refused then
    -- the refused write (and any earlier try of it) is not in: its
    -- refusal stands -- unless another attempt got no answer at all
    if u.unanswered then return true, unknown(u, "then etcd refused one: " .. u.refused[1]) end
    return true, nil, u.refused[1], u.refused[2]
  end
  if not skv then
    -- our lease is gone and nothing of ours is open: a new one next time
    return false, u.shown .. ": this process's lease for update's nonces expired", "unavailable"
  end
end

-- One attempt: read the key, our nonce key and the sentinel at one
-- revision; settle what an earlier attempt left open; else write.
local function step(u)
  local lease, skey, code = nonce_lease(u)
  if not lease then return failed(u, skey, code) end
  if u.pending and lease ~= u.pending then return true, unknown(u, LEASE_GONE) end
  local nkey = PREFIX.nonce .. u.key .. "/" .. atomrun.hostname() .. "." .. atomrun.pid() .. "."
    .. string.format("%x", lease) .. "." .. state_tag
  local r, err, ecode = send(u, { success = { get(u.key), get(nkey), get(skey) } })
  if not r then return failed(u, err, ecode) end
  local kv, nkv, skv = first(r.responses[1]), first(r.responses[2]), first(r.responses[3])
  local settled_res = table.pack(settle_read(u, nkv, skv))
  if settled_res.n > 0 then return table.unpack(settled_res, 1, settled_res.n) end
  local old = kv and kv.value
  local new = u.fn(old)
  if new == nil then
    if u.pending then
      return true, unknown(u, "fn now wants no change, and the unanswered write may still land")
    end
    return true, old or false
  end
  if type(new) ~= "string" then
    error("update: the function must return a string (the new value) or nil, not a "
      .. type(new), 4)
  end
  return write(u, new, kv, nkey, nkv, skey, lease)
end

function M.update(url, fn, opts)
  local check = require "atomrun.check"
  check.arg("update", 2, fn, "function")
  opts = check.opts("update", 3, opts, update_names)
  local key, shown = atomrun._etcd_key(url)
  if not key then return nil, shown, "EINVAL" end
  if opts.fence and not opts.fence.locked then
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

  local timeout = opts.timeout or etcd.UPDATE_TIMEOUT
  if opts.wait == false then timeout = 0 end
  calls = calls + 1
  local u = { url = url, key = key, shown = shown, cluster = cluster, fn = fn, opts = opts,
    fence = opts.fence, timeout = timeout, deadline = atomrun.now() + timeout, delay = 0.005,
    attempt = 0, call_no = calls, mine = {}, pending = nil, unanswered = false, refused = nil,
    last = shown .. " changed under every attempt", last_code = "timeout" }
  while true do
    u.attempt = u.attempt + 1
    local res = table.pack(step(u))
    if res[1] then return table.unpack(res, 2, res.n) end
    u.last, u.last_code = res[2], res[3]
    if not backoff(u) then return give_up(u) end
  end
end

return M
