-- atomrun.once -- one instance of a job per machine, and who is running it.
--
-- Pid files go stale: the process dies, the file stays, and the next run
-- either refuses forever or guesses by pid (which the kernel reuses).  Here
-- the exclusion is a kernel lock, freed the instant its holder dies, and
-- the pid file is demoted to what it is good for: a record of who runs it,
-- read only while the lock says somebody does.
local atomrun = require "atomrun.core"
local check = require "atomrun.check"
local json = require "atomrun.json"
local backend = require "atomrun.backend"

local M = {}


local function own_argv()
  local argv = {}
  if arg then
    local first = arg[-1] and -1 or 0
    for i = first, #arg do argv[#argv + 1] = tostring(arg[i]) end
  end
  return argv
end

-- /run/lock/atomrun for root; $XDG_RUNTIME_DIR/atomrun, else
-- /tmp/atomrun-UID, for everybody else.
local function default_dir()
  local uid = atomrun.uid()
  if uid == 0 and atomrun.stat("/run/lock") then return "/run/lock/atomrun" end
  local xdg = os.getenv("XDG_RUNTIME_DIR")
  if xdg and xdg ~= "" and atomrun.stat(xdg) then return xdg .. "/atomrun" end
  return "/tmp/atomrun-" .. uid
end

-- The directory must be ours: in a shared place like /tmp another user
-- could otherwise pre-create it and hold our lock, or swap our records.
local function ensure_dir(dir)
  local ok, err, code = atomrun.mkdir(dir, atomrun.uid() == 0 and tonumber("755", 8) or tonumber("700", 8))
  if not ok then return nil, err, code end
  local st, serr, scode = atomrun.stat(dir, false)
  if not st then return nil, serr, scode end
  if st.type ~= "directory" then
    return nil, dir .. " is not a directory", "ENOTDIR"
  end
  if st.uid ~= atomrun.uid() and st.uid ~= 0 then
    return nil, string.format("refusing %s: it belongs to uid %d, not to us (uid %d)",
      dir, st.uid, atomrun.uid()), "EPERM"
  end
  return true
end

-- A record is fresh only while its pid is alive and holds the lock now:
-- one left by a dead holder, or naming a pid the kernel has since reused,
-- is stale.  (Comparing with the holder the lock failure named is not
-- enough: atomrun and the command it runs share one lock, and either may
-- be the one named.)
local function fresh(rec, lockpath)
  if type(rec) ~= "table" then return false end
  local pid = math.tointeger(rec.pid)
  return pid ~= nil and pid > 0 and atomrun.holds(lockpath, pid) == true
end

-- The record at base.json if it is fresh (its pid holds base.lock now),
-- else nil: missing, not JSON, or a stale one of an earlier run.
local function fresh_record(base)
  local ok, rec = pcall(json.decode, atomrun.read(base .. ".json") or "")
  if ok and type(rec) == "table" and fresh(rec, base .. ".lock") then return rec end
  return nil
end

local function describe(name, rec, holder)
  if rec and rec.pid then
    local argv = type(rec.argv) == "table" and table.concat(rec.argv, " ") or "?"
    return string.format("%s is already running: pid %d since %s (%s)", name, rec.pid,
      tostring(rec.since), argv)
  end
  if holder and holder.pid then
    return string.format("%s is already running: pid %d (%s)", name, holder.pid,
      holder.cmd or "?")
  end
  return name .. " is already running (holder unknown)"
end

-- The record, written after the lock is ours (a stale one of a dead holder
-- is simply overwritten).  Not durable: it describes a running process.
local function write_record(path, record)
  return atomrun.replace(path, json.encode(record) .. "\n", { durable = false })
end

-- One guard for both backends.  On a file name its record is a file
-- beside the lock (record_path); on an etcd name the record is the lock's
-- key, written with the lock, so there is no record_path and update()
-- keeps the fields for this process only.
local Guard = {}
Guard.__index = Guard
function Guard:release()
  if self.lock then return self.lock:unlock() end    -- an etcd release may fail: say so
  return true
end
--- guard:update(fields) -> true | nil, msg, code
-- Merge fields into the record and rewrite it atomically (readers see the
-- old record or the new one): `atomrun once` records its command's pid.
function Guard:update(fields)
  if type(fields) ~= "table" then
    error("bad argument #1 to 'update' (table expected, got " .. type(fields) .. ")", 2)
  end
  if self.record_path and not (self.lock and self.lock.locked) then
    error("update: the guard of " .. self.name .. " was released", 2)
  end
  for k, v in pairs(fields) do self.record[k] = v end
  if not self.record_path then return true end      -- etcd: the key was written with the lock
  return write_record(self.record_path, self.record)
end
Guard.unlock = Guard.release
Guard.__close = Guard.release
Guard.__gc = Guard.release
function Guard:__tostring() return "atomrun.once (" .. self.name .. ")" end

local names = { dir = "path", wait = "boolean", timeout = "seconds", argv = "table" }

-- once on an etcd name: the lock's key already records host, pid,
-- command and since for everybody to see; no record file.
local remote_names = { wait = "boolean", timeout = "seconds", argv = "table", ttl = "count" }
local function once_remote(url, opts)
  opts = check.opts("once", 2, opts, remote_names)   -- tail-called by once()
  local cmd = opts.argv and table.concat(opts.argv, " ") or nil
  local lk, err, code, holder = atomrun.lock(url, { wait = opts.wait or (opts.timeout ~= nil),
    timeout = opts.timeout, ttl = opts.ttl, cmd = cmd })
  if not lk then
    if code ~= "busy" and code ~= "timeout" then return nil, err, code end
    local msg = holder and holder.pid and string.format("%s is already running: pid %d on %s "
      .. "since %s (%s)", require("atomrun.backend").shown(url), holder.pid, holder.host,
      holder.since and os.date("!%Y-%m-%dT%H:%M:%SZ", holder.since) or "an unknown time",
      holder.cmd) or err
    if code == "timeout" then msg = msg .. " (gave up waiting)" end
    return nil, msg, "running", holder or {}
  end
  local record = { name = lk.name, pid = atomrun.pid(), host = atomrun.hostname(),
    since = os.date("!%Y-%m-%dT%H:%M:%SZ"), argv = opts.argv or own_argv(), token = lk.token }
  return setmetatable({ name = lk.name, lock = lk, record = record, path = lk.path }, Guard)
end

-- ------------------------------------------------------------ status

-- Who runs NAME, asked of the lock without taking it: a look that took the
-- lock, even for a moment, could make a real start of the job find it
-- "already running".
local function status_remote(url)
  local queue, err, code = require("atomrun.etcd").queue(url)
  if not queue then return nil, err, code end
  for _, e in ipairs(queue) do
    if not e.waiting then
      return { pid = e.pid, host = e.host, cmd = e.cmd, token = e.token, foreign = e.foreign,
               since = e.since and os.date("!%Y-%m-%dT%H:%M:%SZ", e.since) }
    end
  end
  return false
end

local function status_local(name, dir)
  local base = dir .. "/" .. name
  local list, err, code = atomrun.who(base .. ".lock")
  if not list then
    if code == "ENOENT" then return false end       -- never ran here
    return nil, err, code
  end
  for _, e in ipairs(list) do
    if not e.waiting then
      local rec = fresh_record(base)
      if rec then
        rec.host = rec.host or atomrun.hostname()
        return rec
      end
      return { pid = e.pid, cmd = e.cmd, host = atomrun.hostname() }
    end
  end
  return false
end

--- once_status(name [, opts]) -> record | false | nil, msg, code.
--- Whether an instance of NAME runs now, and who: its record (pid, host,
--- since, argv or cmd; for etcd also token), false when none does.
--- opts.dir as for once().
function M.once_status(name, opts)
  if backend.is_etcd(name) then return status_remote(name) end
  if type(name) ~= "string" or not name:match("^[%w][%w._-]*$") then
    error("bad argument #1 to 'once_status' (a job name of letters, digits, '.', '_' and '-' "
      .. "expected, got " .. (type(name) == "string" and string.format("%q", name) or type(name))
      .. ")", 2)
  end
  opts = check.opts("once_status", 2, opts, { dir = "path" })
  return status_local(name, opts.dir or default_dir())
end

--- once(name [, opts]) -> guard | nil, msg, "running", record
function M.once(name, opts)
  if backend.is_etcd(name) then return once_remote(name, opts) end
  if type(name) ~= "string" or not name:match("^[%w][%w._-]*$") then
    error("bad argument #1 to 'once' (a job name of letters, digits, '.', '_' and '-' expected, got "
      .. (type(name) == "string" and string.format("%q", name) or type(name)) .. ")", 2)
  end
  opts = check.opts("once", 2, opts, names)
  local dir = opts.dir or default_dir()
  local ok, err, code = ensure_dir(dir)
  if not ok then return nil, err, code end
  local base = dir .. "/" .. name
  local lopts = { wait = opts.wait or (opts.timeout ~= nil), timeout = opts.timeout }
  local lk, lerr, lcode, holder = atomrun.lock(base .. ".lock", lopts)
  if not lk then
    if lcode ~= "busy" and lcode ~= "timeout" then return nil, lerr, lcode end
    -- The holder writes its record just after it gets the lock: if we
    -- lost a race by microseconds, give the record a moment to appear.
    -- (Only for the message; the lock alone decided who runs.)
    local rec
    local until_t = atomrun.now() + 0.5
    repeat
      rec = fresh_record(base)
      if rec or not (holder and holder.pid) then break end
      atomrun.sleep(0.01)
    until atomrun.now() >= until_t
    local msg = describe(name, rec, holder)
    local record = rec or {}
    if holder and not rec then
      record.pid = holder.pid
      record.cmd = holder.cmd
    elseif holder and holder.pid == record.pid then
      record.cmd = holder.cmd
    end
    if lcode == "timeout" then msg = msg .. " (gave up waiting)" end
    return nil, msg, "running", record
  end
  local record = {
    name = name, pid = atomrun.pid(), host = atomrun.hostname(),
    since = os.date("!%Y-%m-%dT%H:%M:%SZ"), argv = opts.argv or own_argv(),
  }
  write_record(base .. ".json", record)
  return setmetatable({ name = name, lock = lk, record = record, path = base .. ".lock",
    record_path = base .. ".json" }, Guard)
end

return M
