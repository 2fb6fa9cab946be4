-- atomrun.json -- lua-cjson, or an error that names the package to install.
-- The recipes that store JSON require it when they first need it.
local ok, cjson = pcall(require, "cjson")
if not ok then
  error("atomrun.json needs lua-cjson (Debian package lua-cjson): " .. tostring(cjson), 0)
end
return cjson
