-- atomrun.etcd.semaphore -- atomrun.semaphore on an etcd name: n slots of
-- one name, each slot a lock key of its own (src/etcd/lock.c lets in the n
-- oldest); acquire and holders, as the file semaphore's.  The slot it
-- hands out is atomrun.semaphore's Slot, the same class for both.
local atomrun = require "atomrun.core"
local Slot = require("atomrun.semaphore").Slot

local M = {}

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
  return setmetatable({ path = require("atomrun.backend").shown(url), n = n, _url = url }, Sem)
end

return M
