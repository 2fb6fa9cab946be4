-- atomrun.etcd.update -- atomrun.update on an etcd key: an optimistic
-- read-modify-write whose txns also write and read a nonce, so that an
-- answer that never came is resolved, never guessed.  create, replace and
-- read take etcd names in C (src/bind/etcd_kv.c); update is here, a loop
-- around fn, on core._etcd_call's raw txn.
local atomrun = require "atomrun.core"
local etcd = require "atomrun.etcd"      -- its UPDATE_TIMEOUT and NONCE_TTL
local codec = require "atomrun.etcd.codec"
local b64, unb64 = codec.b64, codec.unb64

local M = {}

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

  local timeout = opts.timeout or etcd.UPDATE_TIMEOUT
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
    local lease, err, code = atomrun._etcd_lease(url, etcd.NONCE_TTL, copts())
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

return M
