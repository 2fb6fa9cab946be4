-- atomrun.semaphore -- n slots as n bytes of one file.
--
-- Slot i is byte i-1, held with an exclusive OFD byte-range lock.  The
-- kernel frees a dead holder's byte at once, so slots never leak.
local atomrun = require "atomrun.core"
local check_opts = require("atomrun.recipes")._check_opts

local M = {}

local Slot = {}
Slot.__index = Slot
function Slot:release()
  if self.range then
    self.range:unlock()
    self.file:close()
    self.range = nil
  end
  return true
end
Slot.unlock = Slot.release
Slot.__close = Slot.release
Slot.__gc = Slot.release
function Slot:__tostring()
  return string.format("atomrun.slot (%s #%d%s)", self.path, self.index,
    self.range and "" or ", released")
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

local function holders_text(f, n)
  local pids, seen = {}, {}
  for i = 0, n - 1 do
    local h = f:test(i, 1)
    if h and h.pid and not seen[h.pid] then
      seen[h.pid] = true
      pids[#pids + 1] = tostring(h.pid)
    end
  end
  return #pids > 0 and " (held by pids " .. table.concat(pids, ", ") .. ")" or ""
end

local names = { timeout = "seconds", wait = "boolean" }

--- sem:acquire([opts]) -> slot | nil, msg, code
function Sem:acquire(opts)
  opts = check_opts("acquire", opts, names, 2, 1)
  if opts.timeout ~= nil and (type(opts.timeout) ~= "number" or opts.timeout ~= opts.timeout
      or opts.timeout < 0) then
    error("bad argument #1 to 'acquire' (option 'timeout' must be a number of seconds >= 0)", 2)
  end
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
        return setmetatable({ index = i + 1, range = r, file = f, path = self.path }, Slot)
      end
      if c ~= "busy" then f:close(); return nil, _, c end
    end
    if not wait then
      local msg = string.format("all %d slots of %s are taken%s", self.n, self.path,
        holders_text(f, self.n))
      f:close()
      return nil, msg, "busy"
    end
    local slice = SLICE
    if deadline then
      local left = deadline - atomrun.now()
      if left <= 0 then
        local msg = string.format("timed out after %s s: all %d slots of %s are taken%s",
          tostring(opts.timeout), self.n, self.path, holders_text(f, self.n))
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
        return setmetatable({ index = start + 1, range = r, file = f, path = self.path }, Slot)
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

--- semaphore(path, n) -> sem
function M.semaphore(path, n)
  require("atomrun.recipes")._check_path("semaphore", 1, path, 2)
  if math.type(n) ~= "integer" or n < 1 then
    error("bad argument #2 to 'semaphore' (a whole number of slots >= 1 expected)", 2)
  end
  local remote = require "atomrun.remote"
  if remote.is_url(path) then return remote.semaphore(path, n) end   -- etcd://...
  return setmetatable({ path = path, n = n }, Sem)
end

return M
