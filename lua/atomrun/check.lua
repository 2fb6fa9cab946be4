-- atomrun.check -- the one place where the Lua recipes check their
-- arguments and options.
--
-- A wrong type must be an error at the call, naming the function, the
-- argument number and the option, not a confusing failure from deep inside
-- or, worse, a silent default (a timeout = "5" that waits forever, a
-- mode = "755" read as decimal 755 = 01363).  The C binding has its own
-- checker (src/bind/aux.c) with the same rules; the two must agree, and
-- spec/badinput_spec.lua holds both to the same matrix.
--
-- Kinds (the value an option table maps each allowed name to):
--   boolean string table function    that Lua type
--   path      a string without a NUL byte (the kernel would cut it there)
--   seconds   a number >= 0 (NaN is refused: it compares false with all)
--   count     an integer >= 1 (retry{attempts = 1.5} is an error)
--   limit     a count, or math.huge for "no limit"
--   integer   an integer >= 0
--   factor    a number >= 1
--   perm      permission bits: an INTEGER 0..07777.  A string is an error,
--             whatever it looks like: "755" is not octal anywhere in Lua.
--   mode      a lock mode: "exclusive" or "shared"
--   ttl       a lease TTL: an integer 1 .. 1000000 (seconds)
--   request_bytes  an etcd request limit: an integer >= 1024
--   etcd_lock a lock handle on an etcd name (atomrun.lock("etcd://..."))
--   {"a", "b", ...}  one of these strings
local M = {}

-- An integer as lauxlib's luaL_checkinteger (and so the C binding) sees
-- one: 3 or 3.0, never 1.5, never the string "3".
local function is_int(v) return type(v) == "number" and math.tointeger(v) ~= nil end

local tests = {
  boolean = function(v) return type(v) == "boolean" end,
  string = function(v) return type(v) == "string" end,
  table = function(v) return type(v) == "table" end,
  ["function"] = function(v) return type(v) == "function" end,
  path = function(v) return type(v) == "string" and not v:find("\0", 1, true) end,
  seconds = function(v) return type(v) == "number" and v >= 0 end,   -- NaN fails too
  count = function(v) return is_int(v) and v >= 1 end,
  limit = function(v) return (is_int(v) and v >= 1) or v == math.huge end,
  integer = function(v) return is_int(v) and v >= 0 end,
  factor = function(v) return type(v) == "number" and v >= 1 end,
  perm = function(v) return is_int(v) and v >= 0 and v <= 4095 end,
  mode = function(v) return v == "exclusive" or v == "shared" end,
  ttl = function(v) return is_int(v) and v >= 1 and v <= 1000000 end,
  request_bytes = function(v) return is_int(v) and v >= 1024 end,
  etcd_lock = function(v)
    local mt = type(v) == "userdata" and getmetatable(v)
    return type(mt) == "table" and rawget(mt, "__name") == "atomrun.etcd_lock"
  end,
}

local texts = {
  path = "a path (a string without NUL bytes)",
  seconds = "a number of seconds >= 0",
  count = "an integer >= 1",
  limit = "an integer >= 1 (or math.huge: no limit)",
  integer = "an integer >= 0",
  factor = "a number >= 1",
  perm = "permission bits (an integer 0 to 4095, i.e. 0 to 07777; "
    .. "e.g. tonumber('640', 8))",
  mode = "'exclusive' or 'shared'",
  ttl = "a whole number of seconds, 1 to 1000000",
  request_bytes = "an integer >= 1024",
  etcd_lock = "a lock on an etcd name",
}

local function kind_text(kind)
  if type(kind) == "table" then
    local q = {}
    for i, s in ipairs(kind) do q[i] = "'" .. s .. "'" end
    return "one of " .. table.concat(q, ", ")
  end
  return texts[kind] or ("a " .. kind)
end

-- How the offending value reads in a message: the string quoted (so that
-- "755" shows as a string), a number as such, other types by name.
local function shown(v)
  if type(v) == "string" then
    return string.format("the string %q", #v > 40 and v:sub(1, 40) .. "..." or v)
  elseif type(v) == "number" then
    return tostring(v)
  end
  return "a " .. type(v)
end
M.shown = shown

local function fits(kind, v)
  if type(kind) == "table" then
    for _, s in ipairs(kind) do if v == s then return true end end
    return false
  end
  local test = tests[kind]
  assert(test, "atomrun.check: unknown kind " .. tostring(kind))
  return test(v)
end
M.fits = fits

local function where(fname, argn)
  return argn and string.format("bad argument #%d to '%s'", argn, fname)
    or string.format("bad argument to '%s'", fname)
end

--- check.arg(fname, argn, value, kind [, level]) -> value
-- A positional argument.  level as for error(): 1 (default) blames the
-- caller of the function that calls check.arg.
function M.arg(fname, argn, v, kind, level)
  if not fits(kind, v) then
    error(string.format("%s (%s expected, got %s)", where(fname, argn), kind_text(kind),
      shown(v)), (level or 1) + 2)
  end
  return v
end

--- check.optarg(fname, argn, value, kind [, level]) -> value (nil allowed)
function M.optarg(fname, argn, v, kind, level)
  if v == nil then return nil end
  return M.arg(fname, argn, v, kind, (level or 1) + 1)
end

--- check.path(fname, argn, path [, level]) -> path
function M.path(fname, argn, path, level)
  level = (level or 1) + 2
  if type(path) ~= "string" then
    error(string.format("%s (string expected, got %s)", where(fname, argn), type(path)), level)
  end
  if path:find("\0", 1, true) then
    error(string.format("%s (path contains a NUL byte)", where(fname, argn)), level)
  end
  return path
end

--- check.opts(fname, argn, opts, allowed [, level]) -> opts (or {} for nil)
-- allowed maps each option name to its kind.  An unknown name is an error
-- too: a typo (timout = 5) must not be a silently infinite wait.
function M.opts(fname, argn, opts, allowed, level)
  level = (level or 1) + 2
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(string.format("%s (options must be a table, not %s)", where(fname, argn),
      shown(opts)), level)
  end
  for k, v in pairs(opts) do
    local kind = allowed[k]
    if not kind then
      local names = {}
      for n in pairs(allowed) do names[#names + 1] = n end
      table.sort(names)
      error(string.format("%s (unknown option '%s' (expected one of: %s))", where(fname, argn),
        tostring(k), table.concat(names, ", ")), level)
    end
    if not fits(kind, v) then
      error(string.format("%s (option '%s' must be %s, not %s)", where(fname, argn), k,
        kind_text(kind), shown(v)), level)
    end
  end
  return opts
end

--- check.pick(opts, names) -> a new table with only those fields
function M.pick(opts, names)
  local t = {}
  for _, n in ipairs(names) do t[n] = opts[n] end
  return t
end

return M
