-- atomrun.semaphore -- n slots as n bytes of one file.
--
-- Slot i is byte i-1, held with an exclusive OFD byte-range lock.  The
-- kernel frees a dead holder's byte at once, so slots never leak.  On an
-- etcd name the slots are lock keys instead (atomrun.etcd.semaphore, a
-- sem with the same methods); the Slot both hand out is the one below.
local atomrun = require "atomrun.core"
local check = require "atomrun.check"
local backend = require "atomrun.backend"

local M = {}

-- One class for both backends.  slot.lock is what is held: a byte range
-- of slot.file for a file semaphore, an etcd lock for one on etcd; either
-- has unlock() and locked.
local Slot = {}
Slot.__index = Slot
M.Slot = Slot                     -- for atomrun.etcd.semaphore
-- An etcd release whose answer did not come keeps the lock in the slot, so
-- that releasing again says how it stands then (lk:unlock's rule).  A
-- range's unlock always succeeds; the file goes with it.
function Slot:release()
  local lk = self.lock
  if not lk then return true end
  local ok, err, code = lk:unlock()
  if code == "unavailable" then return ok, err, code end
  self.lock = nil
  if self.file then self.file:close() end
  return ok, err, code
end
Slot.unlock = Slot.release
Slot.__close = Slot.release
Slot.__gc = Slot.release
-- false, or why the slot was lost: an etcd lock's lease can expire; a
-- kernel lock on a file's byte is never lost.
function Slot:lost()
  if not self.lock or self.file then return false end
  return self.lock:lost()
end
function Slot:__tostring()
  return string.format("atomrun.slot (%s #%d%s)", self.path, self.index,
    self.lock and self.lock.locked and "" or ", released")
end

local Sem = {}
Sem.__index = Sem
function Sem:__tostring() return string.format("atomrun.semaphore (%s, %d)", self.path, self.n) end

-- The kernel wakes a waiter only for the byte it waits on, so a waiter
-- parked on slot 2 would not notice slot 3 freeing.  We wait in the kernel
-- on one slot for at most this long, then look at all of them again.  A
-- look is n non-blocking fcntl calls (microseconds; no holder lookup), so
-- the slice can be short: a slot freed elsewhere is taken within 20 ms,
-- the one waited on at once.
local SLICE = 0.02

-- A busy or timed-out acquire must cost O(n): it has already made n
-- non-blocking fcntl calls (holder = false: no /proc scan each).  Naming
-- the holders with a holder lookup per slot would cost a walk over /proc
-- per slot (7 s, 6 s of it system time, for 1000 held slots), so the
-- message names them from ONE pass over the file's locks (atomrun.who,
-- where the binding has it); without it, only for a small semaphore
-- (at most LOOKUP_MAX slots: a bounded number of walks), and otherwise
-- says no more than "taken".
local MAX_NAMED, LOOKUP_MAX = 10, 8

local function taken_text(self)
  local text = string.format("all %d slots of %s are taken", self.n, self.path)
  if not atomrun.who and self.n > LOOKUP_MAX then return text end
  local list = self:holders()
  local pids, seen = {}, {}
  for _, h in ipairs(list or {}) do
    if h.pid and h.pid > 0 and not seen[h.pid] then
      seen[h.pid] = true
      pids[#pids + 1] = h.pid
    end
  end
  if #pids == 0 then return text end
  table.sort(pids)
  local shown = {}
  for i = 1, math.min(#pids, MAX_NAMED) do shown[i] = tostring(pids[i]) end
  if #pids > MAX_NAMED then shown[#shown + 1] = "and " .. (#pids - MAX_NAMED) .. " more" end
  return text .. " (held by pids " .. table.concat(shown, ", ") .. ")"
end

local names = { timeout = "seconds", wait = "boolean" }

--- sem:acquire([opts]) -> slot | nil, msg, code
function Sem:acquire(opts)
  opts = check.opts("acquire", 1, opts, names)
  -- Each slot gets its own handle: a range belongs to its handle, and the
  -- slots of one process must exclude each other like anybody's.
  local f, err, code = atomrun.open(self.path)
  if not f then return nil, err, code end
  local deadline = opts.timeout and atomrun.now() + opts.timeout
  local wait = opts.wait ~= false and opts.timeout ~= 0
  local start = math.random(0, self.n - 1)
  while true do
    for k = 0, self.n - 1 do
      local i = (start + k) % self.n
      local r, _, c = f:lock(i, 1, { wait = false, holder = false })
      if r then
        return setmetatable({ index = i + 1, lock = r, file = f, path = self.path }, Slot)
      end
      if c ~= "busy" then f:close(); return nil, _, c end
    end
    if not wait then
      local msg = taken_text(self)
      f:close()
      return nil, msg, "busy"
    end
    local slice = SLICE
    if deadline then
      local left = deadline - atomrun.now()
      if left <= 0 then
        local msg = string.format("timed out after %s s: %s", tostring(opts.timeout),
          taken_text(self))
        f:close()
        return nil, msg, "timeout"
      end
      slice = math.min(slice, left)
    end
    -- Wait in the kernel on one slot that this script does not hold itself
    -- (for those the binding answers "deadlock" at once).
    local waited = false
    for _ = 1, self.n do
      start = (start + 1) % self.n
      local r, rerr, c = f:lock(start, 1, { timeout = slice, holder = false })
      if r then
        return setmetatable({ index = start + 1, lock = r, file = f, path = self.path }, Slot)
      end
      if c == "timeout" then waited = true break end
      if c ~= "deadlock" then f:close() return nil, rerr, c end
    end
    if not waited then
      f:close()
      return nil, string.format("all %d slots of %s are held by this script; "
        .. "waiting would wait forever", self.n, self.path), "deadlock"
    end
  end
end

--- sem:holders() -> { {slot =, pid =, cmd =}, ... } (by slot) | nil, msg, code
-- Who holds which slot now.  One pass over the file's locks (atomrun.who)
-- where the binding has it; otherwise one F_OFD_GETLK and holder lookup per
-- held slot, which is slower but reads only what exists.
function Sem:holders()
  local list = {}
  if atomrun.who then
    local entries, err, code = atomrun.who(self.path)
    if not entries then
      if code == "ENOENT" then return list end
      return nil, err, code
    end
    for _, e in ipairs(entries) do
      local start = math.tointeger(e.start or 0)
      if not e.waiting and start and start < self.n
          and (e.length == 1 or e.length == nil) then
        list[#list + 1] = { slot = start + 1, pid = e.pid, cmd = e.cmd }
      end
    end
  else
    if not atomrun.stat(self.path) then return list end
    local f, err, code = atomrun.open(self.path, { create = false })
    if not f then return nil, err, code end
    for i = 0, self.n - 1 do
      local h = f:test(i, 1)
      if h then list[#list + 1] = { slot = i + 1, pid = h.pid, cmd = h.cmd } end
    end
    f:close()
  end
  table.sort(list, function(a, b) return a.slot < b.slot end)
  return list
end

--- semaphore(path, n) -> sem
function M.semaphore(path, n)
  check.path("semaphore", 1, path)
  check.arg("semaphore", 2, n, "count")
  if backend.is_etcd(path) then
    return require("atomrun.etcd.semaphore").semaphore(path, math.tointeger(n))
  end
  return setmetatable({ path = path, n = math.tointeger(n) }, Sem)
end

return M
