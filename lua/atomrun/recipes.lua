-- atomrun.recipes -- with_lock, update, status, lock_all: short recipes on
-- the primitives, each the way you would write it by hand if you knew the
-- traps.
local atomrun = require "atomrun.core"

local M = {}

-- What an option may hold (allowed[name]): true (anything) or one of these.
-- A wrong type must be an error here, naming the caller's argument, not a
-- confusing one from deep inside (or, worse, a silent default: a
-- timeout = "5" that waits forever).
local opt_kinds = {
  boolean = function(v) return type(v) == "boolean" end,
  string = function(v) return type(v) == "string" end,
  table = function(v) return type(v) == "table" end,
  ["function"] = function(v) return type(v) == "function" end,
  seconds = function(v) return type(v) == "number" and v >= 0 end,   -- NaN fails too
  perm = function(v) return math.type(v) == "integer" and v >= 0 and v <= 4095 end,
  mode = function(v) return v == "exclusive" or v == "shared" end,
}
local kind_text = {
  seconds = "a number of seconds >= 0", perm = "permission bits (an integer 0 to 4095)",
  mode = "'exclusive' or 'shared'",
}

-- check_opts(fname, opts, allowed, level [, argn]) -> opts (or {})
local function check_opts(fname, opts, allowed, level, argn)
  local where = argn and string.format("bad argument #%d to '%s'", argn, fname)
    or string.format("bad argument to '%s'", fname)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(string.format("%s (options must be a table, not a %s)", where, type(opts)), level + 1)
  end
  for k, v in pairs(opts) do
    local kind = allowed[k]
    if not kind then
      local names = {}
      for n in pairs(allowed) do names[#names + 1] = n end
      table.sort(names)
      error(string.format("%s (unknown option '%s' (expected one of: %s))",
        where, tostring(k), table.concat(names, ", ")), level + 1)
    end
    if opt_kinds[kind] and not opt_kinds[kind](v) then
      error(string.format("%s (option '%s' must be %s, not %s)", where, k,
        kind_text[kind] or ("a " .. kind), type(v) == "string" and string.format("%q", v)
        or type(v) == "number" and tostring(v) or "a " .. type(v)), level + 1)
    end
  end
  return opts
end
M._check_opts = check_opts

-- A path argument: a string the kernel will see unchanged.
local function check_path(fname, argn, path, level)
  if type(path) ~= "string" then
    error(string.format("bad argument #%d to '%s' (string expected, got %s)", argn, fname,
      type(path)), level + 1)
  end
  if path:find("\0", 1, true) then
    error(string.format("bad argument #%d to '%s' (path contains a NUL byte)", argn, fname),
      level + 1)
  end
end
M._check_path = check_path

local function pick(opts, names)
  local t = {}
  for _, n in ipairs(names) do t[n] = opts[n] end
  return t
end

--- with_lock(path, opts, fn, ...) -> fn's results
-- The lock is released however fn ends: a normal return, an error (which
-- then propagates with its original message and traceback), or a `return`
-- from deep inside.  A coroutine left suspended inside fn keeps the lock
-- until it is resumed to the end or collected: that is the caller's to avoid.
local lock_names = { mode = "mode", wait = "boolean", timeout = "seconds", perm = "perm",
  create = "boolean", ttl = true }   -- ttl: etcd names (atomrun.lock checks it)
function M.with_lock(path, opts, fn, ...)
  check_path("with_lock", 1, path, 2)
  check_opts("with_lock", opts, lock_names, 2, 2)
  if type(fn) ~= "function" then
    error("bad argument #3 to 'with_lock' (function expected, got " .. type(fn) .. ")", 2)
  end
  local lk, err, code, holder = atomrun.lock(path, opts)
  if not lk then return nil, err, code, holder end
  local guard <close> = lk
  return fn(...)
end

--- update(path, fn [, opts]) -> new | nil, msg, code [, holder]
-- Read-modify-write.  The exclusive lock is on a SIDECAR file (path..".lock"),
-- never on the data file: replace() swaps the data file's inode, so the next
-- updater would open and lock the new inode while we still hold the old one,
-- and two updaters would run at once.  The sidecar's inode never changes.
local update_names = { timeout = "seconds", wait = "boolean", durable = "boolean", mode = "perm" }
function M.update(path, fn, opts)
  check_path("update", 1, path, 2)
  if type(fn) ~= "function" then
    error("bad argument #2 to 'update' (function expected, got " .. type(fn) .. ")", 2)
  end
  opts = check_opts("update", opts, update_names, 2, 3)
  -- "" would lock "./.lock" in whatever the current directory is
  if path == "" then return nil, "cannot update '': No such file or directory", "ENOENT" end
  local lk, err, code, holder = atomrun.lock(path .. ".lock", pick(opts, { "timeout", "wait" }))
  if not lk then return nil, err, code, holder end
  local guard <close> = lk
  local old, rerr, rcode = atomrun.read(path)
  if old == nil and rcode ~= "ENOENT" then return nil, rerr, rcode end
  local new = fn(old)                  -- an error here propagates; guard unlocks
  if new == nil then return old or false end
  if type(new) ~= "string" then
    error("update: the function must return a string (the new contents) or nil, not a "
      .. type(new), 2)
  end
  local ok, werr, wcode = atomrun.replace(path, new, pick(opts, { "durable", "mode" }))
  if not ok then return nil, werr, wcode end
  return new
end

--- status(path) -> st;  st:write(tbl), st:read()
-- Seed 001's status file: readers never see it half-written, because every
-- write is a whole new file renamed over the old one.
local Status = {}
Status.__index = Status

local write_names = { durable = "boolean", mode = "perm", follow = "boolean" }
function Status:write(tbl, opts)
  if type(tbl) ~= "table" then
    error("bad argument #1 to 'write' (table expected, got " .. type(tbl) .. ")", 2)
  end
  check_opts("write", opts, write_names, 2, 2)
  local ok, text = pcall(require("atomrun.json").encode, tbl)
  if not ok then
    error("bad argument #1 to 'write' (cannot encode as JSON: " .. tostring(text) .. ")", 2)
  end
  return atomrun.replace(self.path, text .. "\n", opts)
end

-- lua-cjson decodes every number as a float: 3 comes back as 3.0 and
-- prints as "3.0".  JSON has one kind of number, so whole numbers are
-- handed back as Lua integers, the way the writer most likely meant them.
local function integers(v)
  if type(v) == "table" then
    for k, x in pairs(v) do v[k] = integers(x) end
  elseif math.type(v) == "float" then
    return math.tointeger(v) or v
  end
  return v
end

function Status:read()
  local text, err, code = atomrun.read(self.path)
  if not text then return nil, err, code end
  local ok, value = pcall(require("atomrun.json").decode, text)
  if not ok or type(value) ~= "table" then
    return nil, self.path .. ": not a JSON status file (" .. tostring(value) .. ")", "EINVAL"
  end
  return integers(value)
end

function Status:__tostring() return "atomrun.status (" .. self.path .. ")" end

function M.status(path)
  check_path("status", 1, path, 2)
  return setmetatable({ path = path }, Status)
end

--- lock_all(paths, opts) -> guard | nil, msg, code, holder
-- Several locks, all or none, always taken in one canonical order (device,
-- inode): two jobs that lock the same set in different orders would
-- otherwise deadlock, each holding what the other waits for.  One deadline
-- covers the whole set.
local Guard = {}
Guard.__index = Guard
function Guard:unlock()
  for i = #self.locks, 1, -1 do self.locks[i]:unlock() end
  return true
end
Guard.release = Guard.unlock
Guard.__close = Guard.unlock
Guard.__gc = Guard.unlock

local all_names = { mode = "mode", wait = "boolean", timeout = "seconds", perm = "perm",
  ttl = true }
function M.lock_all(paths, opts)
  if type(paths) ~= "table" then
    error("bad argument #1 to 'lock_all' (table of paths expected, got " .. type(paths) .. ")", 2)
  end
  opts = check_opts("lock_all", opts, all_names, 2, 2)
  local entries = {}
  for i, p in ipairs(paths) do
    if type(p) ~= "string" or p:find("\0", 1, true) then
      error("bad argument #1 to 'lock_all' (paths[" .. i .. "] must be a string without NUL)", 2)
    end
    if require("atomrun.remote").is_url(p) then
      -- etcd names: after the files, in name order (every host sorts alike)
      entries[#entries + 1] = { path = p, remote = true }
    else
      -- open (creating) each first, so that every file has its identity
      local f, err, code = atomrun.open(p, { perm = opts.perm })
      if not f then return nil, err, code end
      local st = assert(atomrun.stat(p))
      f:close()
      entries[#entries + 1] = { path = p, dev = st.dev, ino = st.ino }
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
