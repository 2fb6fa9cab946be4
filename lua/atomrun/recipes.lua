-- atomrun.recipes -- with_lock, update, status, lock_all: short recipes on
-- the primitives, each the way you would write it by hand if you knew the
-- traps.
local atomrun = require "atomrun.core"

local M = {}

local check = require "atomrun.check"
local json = require "atomrun.json"
local backend = require "atomrun.backend"
local check_opts, check_path, pick = check.opts, check.path, check.pick

--- with_lock(path, opts, fn, ...) -> fn's results | nil, msg, code [, holder]
-- The lock is released however fn ends: a normal return, an error (which
-- then propagates with its original message and traceback), or a `return`
-- from deep inside.  After a normal return the release is checked: when it
-- failed -- an etcd lock found lost (its lease expired while fn ran: fn's
-- work was not protected all along), or released without an answer -- the
-- result is nil, msg, code instead of fn's, so the caller learns it.  A
-- coroutine left suspended inside fn keeps the lock until it is resumed to
-- the end or collected: that is the caller's to avoid.
local lock_names = { mode = "mode", wait = "boolean", timeout = "seconds", perm = "perm",
  create = "boolean", ttl = "count" }   -- ttl: etcd names
local function released(lk, ...)
  local ok, err, code = lk:unlock()
  if not ok then return nil, err, code end
  return ...
end
function M.with_lock(path, opts, fn, ...)
  check_path("with_lock", 1, path)
  check_opts("with_lock", 2, opts, lock_names)
  check.arg("with_lock", 3, fn, "function")
  local lk, err, code, holder = atomrun.lock(path, opts)
  if not lk then return nil, err, code, holder end
  local guard <close> = lk              -- fn raised: released, the error goes on
  return released(lk, fn(...))
end

--- update(path, fn [, opts]) -> new | nil, msg, code [, holder]
-- Read-modify-write.  The exclusive lock is on a SIDECAR file (path..".lock"),
-- never on the data file: replace() swaps the data file's inode, so the next
-- updater would open and lock the new inode while we still hold the old one,
-- and two updaters would run at once.  The sidecar's inode never changes.
--
-- Through a symlink (follow, the default) everything is done to the file
-- the link points to: its sidecar is locked, so updaters that name the
-- link and updaters that name the target serialise on ONE lock (locking
-- "link.lock" would let both run at once and lose updates), and the
-- target is replaced, so the link stays a link.  follow = false replaces
-- the link itself by a file, as replace() does.
local update_names = { timeout = "seconds", wait = "boolean", durable = "boolean",
  mode = "perm", follow = "boolean" }

-- The file a call acts on: path itself, or with follow the end of the
-- chain of symlinks at path (which need not exist yet).
local function target_of(path, follow)
  if follow == false then return path end
  return atomrun.resolve(path)
end

-- What is at target must be a regular file or nothing (a symlink too,
-- with follow = false: it is replaced, as replace() does), and is checked
-- before the sidecar is made: update("/dev/null") would otherwise create
-- /dev/null.lock and only then find that a device cannot be replaced.
local TYPE_TEXT = { directory = "a directory", fifo = "a FIFO", socket = "a socket",
  char = "a character device", block = "a block device", link = "a symlink" }
local function not_a_file(path, target, follow)
  local st = atomrun.stat(target, false)
  if not st or st.type == "file" or (st.type == "link" and follow == false) then return nil end
  return string.format("cannot update %s: %s is %s, not a regular file (nothing was created)",
    path, target == path and "it" or "the symlink's target " .. target,
    TYPE_TEXT[st.type] or "not a regular file"), st.type == "directory" and "EISDIR" or "EINVAL"
end

function M.update(path, fn, opts)
  if backend.is_etcd(path) then     -- etcd keys: etcd/update.lua
    return require("atomrun.etcd.update").update(path, fn, opts)
  end
  check_path("update", 1, path)
  check.arg("update", 2, fn, "function")
  opts = check_opts("update", 3, opts, update_names)
  -- "" would lock "./.lock" in whatever the current directory is
  if path == "" then return nil, "cannot update '': No such file or directory", "ENOENT" end
  local target, terr, tcode = target_of(path, opts.follow)
  if not target then return nil, terr, tcode end
  local nerr, ncode = not_a_file(path, target, opts.follow)
  if nerr then return nil, nerr, ncode end
  local lk, err, code, holder = atomrun.lock(target .. ".lock", pick(opts, { "timeout", "wait" }))
  if not lk then return nil, err, code, holder end
  local guard <close> = lk
  local old, rerr, rcode = atomrun.read(target)
  if old == nil and rcode ~= "ENOENT" then return nil, rerr, rcode end
  local new = fn(old)                  -- an error here propagates; guard unlocks
  if new == nil then return old or false end
  if type(new) ~= "string" then
    error("update: the function must return a string (the new contents) or nil, not a "
      .. type(new), 2)
  end
  local ok, werr, wcode = atomrun.replace(target, new, pick(opts, { "durable", "mode" }))
  if not ok then return nil, werr, wcode end
  return new
end

--- status(path [, opts]) -> st;  st:write(tbl [, opts]), st:read()
-- Seed 001's status file: readers never see it half-written, because every
-- write is a whole new file renamed over the old one.  JSON through
-- atomrun.json, so integers (timestamps in microseconds, byte counts) come
-- back exact and floats come back the same double.  Through a symlink
-- (follow, the default) the file the link points to is rewritten and the
-- link stays a link.
--
-- One class for files and etcd keys: read and write are the same on both,
-- since atomrun.read and atomrun.replace take etcd names in C.  What
-- differs is the backend's store, st._store (file_store below, or
-- atomrun.etcd.status): the write options it takes and how they reach
-- replace, the word for a record in messages, and methods of its own --
-- list(), for etcd names only.
local Status = {}
function Status.__index(st, name)
  local m = Status[name]
  if m ~= nil then return m end
  return rawget(st, "_store").methods[name]
end

-- write{merge = true}: the fields of tbl over the record as it is now, in
-- one read-modify-write (update's: under the sidecar lock for a file, a
-- revision-checked txn for a key), so that two writers merging different
-- fields lose neither's.  A record that is not a JSON object is an error,
-- never overwritten.
local function write_merged(st, tbl, wopts)
  local bad
  local new, err, code = M.update(st._name, function(old)
    local cur = {}
    if old and old ~= "" then
      local ok, value = pcall(json.decode, old)
      if not ok or type(value) ~= "table" then
        bad = st.path .. ": not a JSON " .. st._store.what .. " to merge into"
        return nil
      end
      cur = value
    end
    for k, v in pairs(tbl) do cur[k] = v end
    return json.encode(cur) .. "\n"
  end, wopts)
  if bad then return nil, bad, "EINVAL" end
  if new == nil then return nil, err, code end
  return true
end

function Status:write(tbl, opts)
  check.arg("write", 1, tbl, "table")
  local merge
  if type(opts) == "table" then merge = opts.merge end
  if merge ~= nil and type(merge) ~= "boolean" then
    error("bad argument #2 to 'write' (option 'merge' must be a boolean, not a " .. type(merge)
      .. ")", 2)
  end
  if merge ~= nil then
    local copy = {}
    for k, v in pairs(opts) do if k ~= "merge" then copy[k] = v end end
    opts = copy
  end
  opts = check_opts("write", 2, opts, self._store.write_names)
  local ok, text = pcall(json.encode, tbl)
  if not ok then
    error("bad argument #1 to 'write' (cannot encode as JSON: " .. tostring(text) .. ")", 2)
  end
  if merge then return write_merged(self, tbl, self._store.write_opts(self, opts)) end
  return atomrun.replace(self._name, text .. "\n", self._store.write_opts(self, opts))
end

function Status:read()
  local text, err, code = atomrun.read(self._name, self._opts)
  if not text then return nil, err, code end
  local ok, value = pcall(json.decode, text)
  if not ok or type(value) ~= "table" then
    return nil, self.path .. ": not a JSON " .. self._store.what .. " (" .. tostring(value) .. ")",
      "EINVAL"
  end
  return value
end

function Status:__tostring() return "atomrun.status (" .. self.path .. ")" end

-- A status on a path: replace's own options, follow defaulting to the
-- status's.
local file_store = { what = "status file", methods = {},
  write_names = { durable = "boolean", mode = "perm", follow = "boolean" } }
function file_store.write_opts(st, opts)
  local wopts = pick(opts, { "durable", "mode" })
  wopts.follow = opts.follow
  if wopts.follow == nil then wopts.follow = st.follow end
  return wopts
end

local status_names = { follow = "boolean" }
function M.status(path, opts)
  check_path("status", 1, path)
  if backend.is_etcd(path) then     -- etcd keys: etcd/status.lua
    return setmetatable(require("atomrun.etcd.status").open(path, opts), Status)
  end
  opts = check_opts("status", 2, opts, status_names)
  return setmetatable({ path = path, follow = opts.follow ~= false, _name = path,
    _store = file_store }, Status)
end

--- lock_all(paths, opts) -> guard | nil, msg, code, holder
-- Several locks, all or none, always taken in one canonical order (device,
-- inode): two jobs that lock the same set in different orders would
-- otherwise deadlock, each holding what the other waits for.  One deadline
-- covers the whole set.
local Guard = {}
Guard.__index = Guard
-- Every lock is released; the first failure (an etcd release without an
-- answer, a lock lost meanwhile) is what it returns, never a blind true.
function Guard:unlock()
  local ok, err, code = true, nil, nil
  for i = #self.locks, 1, -1 do
    local r, e, c = self.locks[i]:unlock()
    if not r and ok then ok, err, code = nil, e, c end
  end
  return ok, err, code
end
Guard.release = Guard.unlock
Guard.__close = Guard.unlock
Guard.__gc = Guard.unlock

local all_names = { mode = "mode", wait = "boolean", timeout = "seconds", perm = "perm",
  ttl = "count" }
function M.lock_all(paths, opts)
  check.arg("lock_all", 1, paths, "table")
  opts = check_opts("lock_all", 2, opts, all_names)
  local entries = {}
  for i, p in ipairs(paths) do
    if not check.fits("path", p) then
      error("bad argument #1 to 'lock_all' (paths[" .. i .. "] must be a string without NUL)", 2)
    end
    if backend.is_etcd(p) then
      -- etcd names: after the files, in name order (every host sorts alike)
      entries[#entries + 1] = { path = p, remote = true }
    else
      -- open (creating) each first, so that every file has its identity,
      -- taken from the descriptor open() got: a second stat by path could
      -- see another file if the path was swapped in between
      local f, err, code = atomrun.open(p, { perm = opts.perm })
      if not f then return nil, err, code end
      entries[#entries + 1] = { path = p, dev = f.dev, ino = f.ino }
      f:close()
    end
  end
  table.sort(entries, function(a, b)
    if a.remote or b.remote then
      if not (a.remote and b.remote) then return b.remote == true end
      return a.path < b.path
    end
    if a.dev ~= b.dev then return a.dev < b.dev end
    return a.ino < b.ino
  end)
  local deadline = opts.timeout and atomrun.now() + opts.timeout
  local guard = setmetatable({ locks = {}, paths = {} }, Guard)
  local last
  for _, e in ipairs(entries) do
    local same = last and (e.remote and last.path == e.path
      or not e.remote and not last.remote and last.dev == e.dev and last.ino == e.ino)
    if not same then                                                 -- same file twice
      local lopts = { mode = opts.mode, wait = opts.wait, perm = not e.remote and opts.perm or nil,
        ttl = e.remote and opts.ttl or nil }
      if deadline then lopts.timeout = math.max(0, deadline - atomrun.now()) end
      local lk, err, code, holder = atomrun.lock(e.path, lopts)
      if not lk then
        guard:unlock()
        -- the shared deadline ran out before this lock's turn: that is a
        -- timeout for the caller, not a "busy" they never asked for
        if code == "busy" and deadline and opts.wait ~= false and opts.timeout ~= 0 then
          code = "timeout"
        end
        return nil, err, code, holder
      end
      guard.locks[#guard.locks + 1] = lk
      guard.paths[#guard.paths + 1] = e.path
    end
    last = e
  end
  return guard
end

return M
