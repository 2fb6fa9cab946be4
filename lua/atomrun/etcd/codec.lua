-- atomrun.etcd.codec -- how keys and values travel on etcd's JSON gateway:
-- base64 both ways, and the range_end that makes a key a prefix.  Shared
-- by update, status:list() and watch, the recipes still on the raw
-- gateway (core._etcd_call); they go when the binding takes typed txns
-- (ARCHITECTURE-REVIEW.md (b)1).
local M = {}

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(s)
  return ((s:gsub(".", function(c)
    local b, bits = c:byte(), {}
    for i = 8, 1, -1 do bits[#bits + 1] = (b >> (i - 1)) & 1 end
    return table.concat(bits)
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local n = tonumber(x, 2)
    return B64:sub(n + 1, n + 1)
  end) .. ({ "", "==", "=" })[#s % 3 + 1])
end

local UNB64 = {}
for i = 1, 64 do UNB64[B64:byte(i)] = i - 1 end
local function unb64(s)
  local out, acc, nbits = {}, 0, 0
  for i = 1, #s do
    local v = UNB64[s:byte(i)]
    if v then
      acc, nbits = (acc << 6) | v, nbits + 6
      if nbits >= 8 then
        nbits = nbits - 8
        out[#out + 1] = string.char((acc >> nbits) & 0xff)
      end
    end
  end
  return table.concat(out)
end

-- The smallest key after every key that starts with p (etcd's range_end).
local function prefix_end(p)
  for i = #p, 1, -1 do
    local b = p:byte(i)
    if b < 255 then return p:sub(1, i - 1) .. string.char(b + 1) end
  end
  return "\0"
end

M.b64, M.unb64, M.prefix_end = b64, unb64, prefix_end

return M
