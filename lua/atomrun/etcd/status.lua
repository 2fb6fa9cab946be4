-- atomrun.etcd.status -- what is etcd's own in atomrun.status on a key:
-- the options write and read take there, and list() (every record under
-- the key as a prefix, one range read on core.etcd.txn).  The class itself is recipes.lua's
-- Status, one for both backends (read and write go through atomrun.read
-- and atomrun.replace, which take etcd names in C); this module is its
-- etcd store, with the same field names as the file store there.
local atomrun = require "atomrun.core"
local check = require "atomrun.check"

local M = {}

M.what = "status record"          -- in "URL: not a JSON status record"

-- write's options: ttl (the record goes a TTL after this process dies --
-- "this host is alive"), fence, max_request_bytes; durable, mode and follow
-- are accepted and ignored, as replace does on a key.
M.write_names = { ttl = "ttl", fence = "etcd_lock", max_request_bytes = "request_bytes",
  durable = "boolean", mode = "perm", follow = "boolean" }

--- write_opts(st, opts) -> replace's options for st:write: all of them
function M.write_opts(_, opts)
  local wopts = {}
  for k, v in pairs(opts) do wopts[k] = v end
  return wopts
end

M.methods = {}

--- st:list() -> { {key=, name=, status=tbl | nil, error=msg | nil}, ... }
--- sorted by key, revision = the snapshot's revision | nil, msg, code.
--- name is the key after the prefix; a value that is not a JSON record is
--- an entry with error set (listed, never silently skipped).
function M.methods.list(self)
  local json = require "atomrun.json"
  local key, P = self._key, atomrun.etcd.PREFIX
  local a, err, code = atomrun.etcd.txn(self._name, { success = { { range = { key = key,
    prefix = true } } } }, self._opts)
  if not a then return nil, err, code end
  local out = {}
  for _, kv in ipairs(a.responses[1].kvs) do
    local k = kv.key
    -- atomrun's own bookkeeping keys (update's nonces and sentinels,
    -- create's creator records) are not anybody's status
    if not (k:find(P.nonce, 1, true) == 1 or k:find(P.alive, 1, true) == 1
            or k:find(P.creator, 1, true) == 1) then
      local ok, value = pcall(json.decode, kv.value)
      local e = { key = k, name = k:sub(#key + 1):gsub("^/", "") }
      if ok and type(value) == "table" then e.status = value
      else e.error = k .. ": not a JSON status record" end
      out[#out + 1] = e
    end
  end
  table.sort(out, function(x, y) return x.key < y.key end)
  out.revision = a.revision
  return out
end

local status_names = { ca = "string", cert = "string", key = "string", follow = "boolean" }

--- open(url [, opts]) -> the fields of a status on the key (for
--- recipes.status, whose caller an error blames); opts: ca, cert, key for
--- read and list, follow (ignored).
function M.open(url, opts)
  local key, shown = atomrun._etcd_key(url)
  if not key then error("bad argument #1 to 'status' (" .. tostring(shown) .. ")", 3) end
  local o = check.pick(check.opts("status", 2, opts, status_names, 2), { "ca", "cert", "key" })
  return { path = shown, _name = url, _key = key, _opts = o, _store = M }
end

return M
