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

--- shown(name) -> name as messages show it: an etcd URL without its
--- credentials ("etcd://user:pw@h/x" -> "etcd://h/x"); a path unchanged.
--- The C side strips them the same way (atomrun_remote_scrub) in what it
--- records and reports.
function M.shown(name)
  if M.of(name) ~= "etcd" then return name end
  return (name:gsub("^([A-Za-z][A-Za-z0-9+.-]*://)[^/]*@", "%1"))
end

return M
