-- atomrun.backend -- the one place the Lua side decides "file or etcd".
--
-- A name with a URL scheme ("etcd://h:2379/NAME", or a refused "foo://...")
-- is never a path; everything else is one.  The C twin is
-- src/bind/etcd.c:arL_isurl, which makes the same decision for lock,
-- create, replace and read: the two must agree character for character, or
-- a recipe would treat as a file a name that lock() sends to etcd (or the
-- reverse).  Hence the explicit ASCII classes: %a and %w follow the C
-- locale's isalpha, arL_isurl does not.
--
-- Tiny on purpose, and it loads nothing: a plain path must never pay for
-- the etcd recipes (they were a third of `atomrun lock -n F true`'s
-- start-up).
local M = {}

--- of(name) -> "etcd" | "file"
function M.of(name)
  if type(name) == "string" and name:find("^[A-Za-z][A-Za-z0-9+.-]*://") then return "etcd" end
  return "file"
end

--- is_etcd(name) -> true when of(name) is "etcd"
function M.is_etcd(name) return M.of(name) == "etcd" end

--- near_miss(name) -> message | nil: a name that looks like a mistyped
--- etcd URL ("etcd:/h:2379/x", "etcd:h:2379/x", "etcd//h:2379/x", any
--- case), which lock, open, create, replace and read refuse, and the CLI
--- turns into a usage error, never a local file.  The rule and its words
--- are the binding's (arL_nearurl), asked, not written again here.
function M.near_miss(name)
  if type(name) ~= "string" then return nil end
  return require("atomrun.core")._etcd_mistyped(name)
end

--- shown(name) -> name as messages show it: an etcd URL without its
--- credentials ("etcd://user:pw@h/x" -> "etcd://h/x"), as the binding's URL
--- parser shows it (the one place credentials are stripped); a path
--- unchanged.  A URL the parser refuses is not shown at all, lest it carry
--- a password.
function M.shown(name)
  if M.of(name) ~= "etcd" then return name end
  local key, shown = require("atomrun.core")._etcd_key(name)
  if key then return shown end
  return name:match("^[A-Za-z][A-Za-z0-9+.-]*://") .. "... (not a valid etcd name)"
end

return M
