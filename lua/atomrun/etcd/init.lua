-- atomrun.etcd -- the recipes' side of etcd names ("etcd://h:2379/NAME"):
-- the front door.  Here: the key space and the tunables every part reads,
-- the queue of holders and waiters, and a guarded run.  atomrun.lock itself
-- takes etcd names directly (src/bind/etcd.c parses the URL, src/etcd/lock.c
-- is the queue), so with_lock, retry and everything built on lock() need
-- nothing from here.
--
-- One subject a file, each loaded on first use of one of its names below:
--   atomrun.etcd.semaphore  the semaphore's storage (slots as lock keys)
--   atomrun.etcd.update     update's nonce-resolved read-modify-write
--   atomrun.etcd.status     status's etcd store (options, list())
--   atomrun.etcd.watch      watch over broken streams and compactions
--   atomrun.etcd.doctor     `atomrun doctor etcd://...`
-- Which names are etcd's is atomrun.backend's to say (is_url below is its
-- old name here).
local atomrun = require "atomrun.core"

local M = {}

--- The etcd keys of the lock NAME are KEY_PREFIX .. "NAME/" .. <lease hex>,
--- etcd's own layout (`etcdctl lock NAME` and clientv3's Mutex make the same
--- keys, so they exclude atomrun and atomrun them): KEY_PREFIX is "",
--- core.etcd.PREFIX.lock as src/atomrun.h spells it.  atomrun's bookkeeping
--- (tickets, creator records, nonces) lives under PREFIX, "atomrun/"; a
--- lock name equal to it or under it is refused.
M.KEY_PREFIX = atomrun.etcd.PREFIX.lock
M.PREFIX = atomrun.etcd.PREFIX.creator:match("^(.*/)creator/$")

-- update's defaults, read at each call (a test may lower NONCE_TTL): the
-- whole call's timeout, and the TTL of the lease that holds its nonces.
M.UPDATE_TIMEOUT = 30
M.NONCE_TTL = 60

--- True when name has a scheme ("etcd://...", or a refused "foo://..."):
--- such a name is never a path.  atomrun.backend.is_etcd, kept under the
--- name scripts know.
M.is_url = require("atomrun.backend").is_etcd

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

-- ------------------------------------------------------------ the parts

-- name -> the module that has it, and its name there
local parts = {
  semaphore   = { "atomrun.etcd.semaphore", "semaphore" },
  update      = { "atomrun.etcd.update", "update" },
  watch       = { "atomrun.etcd.watch", "watch" },
  doctor      = { "atomrun.etcd.doctor", "doctor" },
  doctor_text = { "atomrun.etcd.doctor", "doctor_text" },
  status      = { "atomrun.recipes", "status" },   -- the one Status class
}

return setmetatable(M, {
  __index = function(t, name)
    local where = parts[name]
    if not where then return nil end
    local value = require(where[1])[where[2]]
    rawset(t, name, value)
    return value
  end,
})
