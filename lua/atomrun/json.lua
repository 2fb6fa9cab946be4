-- atomrun.json -- the smallest JSON encoder/decoder that keeps numbers exact.
--
-- Why not a Debian package: status files and once records hold
-- microsecond timestamps, byte counts and ids, and both Lua JSON modules
-- in Debian lose them (checked on bookworm):
--   lua-cjson 2.1.0  encodes with 14 significant digits, so
--                    1733040000123456 is written 1.7330400001235e+15, and it
--                    decodes every number as a float (3 comes back 3.0);
--   lua-dkjson 2.6   keeps integers but writes floats with 14 digits
--                    (1/3 -> 0.33333333333333, which reads back different).
-- Here an integer is written as one (%d: exact over the whole int64
-- range) and read back as a Lua integer; a float is written with %.17g,
-- which always reads back as the same double, and stays a float (1.0 is
-- written "1.0").  A number too big for int64 ("1e400" aside) decodes as
-- the nearest float; inf and NaN have no JSON form and are an error.
--
-- Tables: a table whose keys are exactly 1..n is an array; any other
-- non-empty table is an object whose keys must be strings (numbers are
-- refused rather than silently turned into strings: they would not come
-- back as numbers).  An EMPTY table is ambiguous; it is written as an
-- object, {}, unless it is M.array (or has the metatable M.array_mt:
-- setmetatable({}, json.array_mt)), then [].  Decoded arrays get that
-- metatable, so a decoded [] is written back as [].  null decodes to
-- json.null (a unique value), never to a hole that would shorten an array.
--
-- Errors: encode raises "json.encode: ..." naming the path of the value
-- (e.g. at .list[3]); decode raises "json.decode: ... at position N"
-- (1-based byte offset).  Both are programming errors or corrupt input;
-- callers that read foreign files use pcall.
local M = {}

M.null = setmetatable({}, { __tostring = function() return "json.null" end,
  __name = "json.null" })
M.array_mt = { __name = "json.array" }

--- json.array([t]) -> t marked as an array (so that an empty one is [])
function M.array(t) return setmetatable(t or {}, M.array_mt) end

-- ------------------------------------------------------------ encoding

local escapes = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
}
local function escape_char(c)
  return escapes[c] or string.format("\\u%04x", c:byte())
end

local function encode_string(s)
  -- control characters, quote and backslash; DEL too, for terminals.
  -- Other bytes pass through: valid UTF-8 stays readable, and JSON text
  -- is read back byte for byte.
  return '"' .. s:gsub('[%c"\\]', escape_char) .. '"'
end

local function encode_number(v, path)
  if math.type(v) == "integer" then return string.format("%d", v) end
  if v ~= v or v == math.huge or v == -math.huge then
    error("json.encode: " .. (v ~= v and "NaN" or tostring(v)) .. " has no JSON form (at " .. path .. ")", 0)
  end
  local s = string.format("%.17g", v)
  -- shortest form that still reads back as the same double, when there is one
  for digits = 15, 16 do
    local t = string.format("%." .. digits .. "g", v)
    if tonumber(t) == v then s = t break end
  end
  -- keep it a float on the way back: "1" would decode as an integer
  if not s:find("[.eEn]") then s = s .. ".0" end
  return s
end

local function is_array(t)
  local n = 0
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 then return false end
    n = n + 1
  end
  for i = 1, n do if t[i] == nil then return false end end
  return n > 0 or getmetatable(t) == M.array_mt, n
end

local encode_value

local function encode_table(t, path, seen, out)
  if seen[t] then error("json.encode: a table that contains itself (at " .. path .. ")", 0) end
  seen[t] = true
  local arr, n = is_array(t)
  if arr then
    out[#out + 1] = "["
    for i = 1, n do
      if i > 1 then out[#out + 1] = "," end
      encode_value(t[i], path .. "[" .. i .. "]", seen, out)
    end
    out[#out + 1] = "]"
  else
    local keys = {}
    for k in pairs(t) do
      if type(k) ~= "string" then
        error(string.format("json.encode: object keys must be strings, not %s %s (at %s)",
          type(k), tostring(k), path), 0)
      end
      keys[#keys + 1] = k
    end
    table.sort(keys)            -- the same table always gives the same text
    out[#out + 1] = "{"
    for i, k in ipairs(keys) do
      if i > 1 then out[#out + 1] = "," end
      out[#out + 1] = encode_string(k)
      out[#out + 1] = ":"
      encode_value(t[k], path .. "." .. k, seen, out)
    end
    out[#out + 1] = "}"
  end
  seen[t] = nil
end

function encode_value(v, path, seen, out)
  local tv = type(v)
  if v == M.null or v == nil then out[#out + 1] = "null"
  elseif tv == "boolean" then out[#out + 1] = v and "true" or "false"
  elseif tv == "number" then out[#out + 1] = encode_number(v, path)
  elseif tv == "string" then out[#out + 1] = encode_string(v)
  elseif tv == "table" then encode_table(v, path, seen, out)
  else
    error("json.encode: a " .. tv .. " has no JSON form (at " .. path .. ")", 0)
  end
end

--- json.encode(value) -> string
function M.encode(v)
  local out = {}
  encode_value(v, "$", {}, out)
  return table.concat(out)
end

-- ------------------------------------------------------------ decoding

local function fail(pos, what)
  error(string.format("json.decode: %s at position %d", what, pos), 0)
end

local function skip(s, pos)
  return s:find("[^ \t\r\n]", pos) or #s + 1
end

local function utf8_of(cp) return utf8.char(cp) end

local simple = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f",
  n = "\n", r = "\r", t = "\t" }

local function decode_string(s, pos)     -- pos at the opening quote
  local parts, i = {}, pos + 1
  while true do
    local j = s:find('["\\%c]', i)
    if not j then fail(pos, "unterminated string") end
    parts[#parts + 1] = s:sub(i, j - 1)
    local c = s:sub(j, j)
    if c == '"' then return table.concat(parts), j + 1 end
    if c ~= "\\" then fail(j, "control character in a string") end
    local e = s:sub(j + 1, j + 1)
    if simple[e] then
      parts[#parts + 1] = simple[e]
      i = j + 2
    elseif e == "u" then
      local hex = s:match("^%x%x%x%x", j + 2)
      if not hex then fail(j, "bad \\u escape") end
      local cp = tonumber(hex, 16)
      i = j + 6
      if cp >= 0xD800 and cp <= 0xDBFF then        -- a surrogate pair
        local lo = s:match("^\\u(%x%x%x%x)", i)
        lo = lo and tonumber(lo, 16)
        if not lo or lo < 0xDC00 or lo > 0xDFFF then
          fail(j, "unpaired UTF-16 surrogate")
        end
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
        i = i + 6
      elseif cp >= 0xDC00 and cp <= 0xDFFF then
        fail(j, "unpaired UTF-16 surrogate")
      end
      parts[#parts + 1] = utf8_of(cp)
    else
      fail(j, "bad escape \\" .. e)
    end
  end
end

-- JSON's grammar, strictly: -?(0|[1-9]digits)(.digits)?([eE][-+]?digits)?
local function decode_number(s, pos)
  local int = s:match("^-?%d+", pos)
  if not int or int:match("^-?0%d") then fail(pos, "bad number") end
  local e = pos + #int
  local frac = s:match("^%.%d+", e) or ""
  if frac == "" and s:sub(e, e) == "." then fail(e, "bad number (no digits after '.')") end
  e = e + #frac
  local exp = s:match("^[eE][-+]?%d+", e) or ""
  if exp == "" and s:match("^[eE]", e) then fail(e, "bad number (no exponent digits)") end
  e = e + #exp
  local text = s:sub(pos, e - 1)
  local v
  if frac ~= "" or exp ~= "" then
    v = tonumber(text)
  else
    -- beyond int64 tonumber gives a float: the nearest double, never a
    -- wrapped-around integer
    v = math.tointeger(tonumber(text)) or tonumber(text .. ".0")
  end
  return v, e
end

local decode_value

local function decode_array(s, pos, depth)
  local t, n = setmetatable({}, M.array_mt), 0
  pos = skip(s, pos + 1)
  if s:sub(pos, pos) == "]" then return t, pos + 1 end
  while true do
    local v
    v, pos = decode_value(s, pos, depth)
    n = n + 1
    t[n] = v
    pos = skip(s, pos)
    local c = s:sub(pos, pos)
    if c == "]" then return t, pos + 1 end
    if c ~= "," then fail(pos, "expected ',' or ']'") end
    pos = skip(s, pos + 1)
  end
end

local function decode_object(s, pos, depth)
  local t = {}
  pos = skip(s, pos + 1)
  if s:sub(pos, pos) == "}" then return t, pos + 1 end
  while true do
    if s:sub(pos, pos) ~= '"' then fail(pos, "expected a string key") end
    local k
    k, pos = decode_string(s, pos)
    pos = skip(s, pos)
    if s:sub(pos, pos) ~= ":" then fail(pos, "expected ':'") end
    local v
    v, pos = decode_value(s, skip(s, pos + 1), depth)
    t[k] = v
    pos = skip(s, pos)
    local c = s:sub(pos, pos)
    if c == "}" then return t, pos + 1 end
    if c ~= "," then fail(pos, "expected ',' or '}'") end
    pos = skip(s, pos + 1)
  end
end

local literals = { t = { "true", true }, f = { "false", false }, n = { "null", M.null } }

function decode_value(s, pos, depth)
  pos = skip(s, pos)
  local c = s:sub(pos, pos)
  if c == "" then fail(pos, "unexpected end of input") end
  if c == "{" or c == "[" then
    if depth >= 1000 then fail(pos, "nested too deeply") end
    if c == "{" then return decode_object(s, pos, depth + 1) end
    return decode_array(s, pos, depth + 1)
  end
  if c == '"' then return decode_string(s, pos) end
  if c == "-" or c:match("%d") then return decode_number(s, pos) end
  local lit = literals[c]
  if lit and s:sub(pos, pos + #lit[1] - 1) == lit[1] then
    return lit[2], pos + #lit[1]
  end
  fail(pos, "unexpected character '" .. c .. "'")
end

--- json.decode(text) -> value
function M.decode(s)
  if type(s) ~= "string" then
    error("bad argument #1 to 'decode' (string expected, got " .. type(s) .. ")", 2)
  end
  local v, pos = decode_value(s, 1, 0)
  pos = skip(s, pos)
  if pos <= #s then fail(pos, "trailing characters") end
  return v
end

return M
