-- atomrun.json: integers exact over the whole int64 range, floats that
-- read back as the same double, full string escaping, arrays vs objects,
-- errors with a position.  Compared against lua-cjson where it matters:
-- the point of the module is what cjson gets wrong.
local H = require "spec.helper"
local ar = H.ar
local J = ar.json

local function roundtrip(v)
  local text = J.encode(v)
  return J.decode(text), text
end

describe("atomrun.json", function()
  it("is atomrun's own module, not lua-cjson", function()
    assert.equal(require("atomrun.json"), J)
    assert.is_function(J.encode)
    assert.is_function(J.decode)
    assert.truthy(J.null)
  end)

  it("keeps integers exact over the whole int64 range, as integers", function()
    for _, v in ipairs({ 0, 1, -1, 1733040000123456, 9007199254740993, math.maxinteger,
        math.mininteger, math.maxinteger - 1, math.mininteger + 1 }) do
      local back, text = roundtrip(v)
      assert.equal(string.format("%d", v), text)
      assert.equal("integer", math.type(back), text)
      assert.equal(v, back)
    end
    -- in a table too, and read by another process
    local back = roundtrip({ t = 1733040000123456, list = { math.maxinteger, math.mininteger } })
    assert.equal(1733040000123456, back.t)
    assert.equal(math.maxinteger, back.list[1])
    assert.equal(math.mininteger, back.list[2])
  end)

  it("writes floats so that they read back as the same double, and as floats", function()
    for _, v in ipairs({ 0.1, 1 / 3, 2 / 3, 1.0, -0.0, 0.5, 1e300, -1e-300, 5e-324,
        2 ^ 63, 2 ^ 53 + 0.0, 123.456, math.pi, 1.7976931348623157e308 }) do
      local back, text = roundtrip(v)
      assert.equal("float", math.type(back), text)
      assert.equal(v, back, text)
    end
    assert.equal("1.0", J.encode(1.0))
    assert.equal("0.1", J.encode(0.1))          -- the shortest exact form
    assert.equal("0.3333333333333333", J.encode(1 / 3))
  end)

  it("does what lua-cjson 2.1 does not (the reason it exists)", function()
    local ok, cjson = pcall(require, "cjson")
    if not ok then pending("lua-cjson not installed") return end
    -- cjson's 14 significant digits: this is the bug the module fixes
    assert.are_not.equal(1733040000123456, cjson.decode(cjson.encode(1733040000123456)))
    assert.equal(1733040000123456, J.decode(J.encode(1733040000123456)))
    -- and its text is still read right by cjson (it is plain JSON)
    assert.equal(1733040000123456, math.tointeger(cjson.decode(J.encode(1733040000123456))))
    assert.same({ a = { 1, 2 }, s = "x\ny" }, cjson.decode(J.encode({ a = { 1, 2 }, s = "x\ny" })))
  end)

  it("decodes integer literals beyond int64 as the nearest float, not wrapped", function()
    local v = J.decode("9223372036854775808")
    assert.equal("float", math.type(v))
    assert.equal(2 ^ 63, v)
    v = J.decode("-92233720368547758080")
    assert.equal("float", math.type(v))
    assert.is_true(v < 0)
    assert.equal("float", math.type(J.decode("1e2")))
    assert.equal(100.0, J.decode("1E+2"))
    assert.equal(-0.5, J.decode("-5e-1"))
  end)

  it("refuses numbers JSON cannot hold", function()
    for _, v in ipairs({ 0 / 0, math.huge, -math.huge }) do
      local ok, err = pcall(J.encode, { x = v })
      assert.is_false(ok)
      assert.matches("no JSON form", err)
      assert.matches("%$%.x", err)            -- where it was
    end
  end)

  it("escapes strings fully and decodes \\u escapes and surrogate pairs to UTF-8", function()
    local s = "quote \" backslash \\ slash / nl \n cr \r tab \t bs \b ff \f nul \0 ctl \1 del \127 é 😀"
    local back, text = roundtrip(s)
    assert.equal(s, back)
    assert.is_nil(text:find("[%z\1-\31\127]"), "raw control character in " .. text)
    assert.truthy(text:find("\\u0000", 1, true))
    assert.equal("é", J.decode('"\\u00e9"'))
    assert.equal("😀", J.decode('"\\ud83d\\ude00"'))
    assert.equal("\u{10FFFF}", J.decode('"\\udbff\\udfff"'))
    assert.equal("/", J.decode('"\\/"'))
    for _, bad in ipairs({ '"\\ud83d"', '"\\ude00"', '"\\ud83d\\u0041"', '"\\x41"', '"\\u12"' }) do
      local ok, err = pcall(J.decode, bad)
      assert.is_false(ok, bad)
      assert.matches("at position %d+", err)
    end
  end)

  it("tells arrays from objects; an empty table is {} unless marked json.array", function()
    assert.equal("[1,2,3]", J.encode({ 1, 2, 3 }))
    assert.equal('{"a":1,"b":[true,false]}', J.encode({ b = { true, false }, a = 1 }))
    assert.equal("{}", J.encode({}))
    assert.equal("[]", J.encode(J.array()))
    assert.equal('{"x":[]}', J.encode({ x = J.array() }))
    -- a decoded [] stays an array when written back; {} stays an object
    assert.equal('{"a":[],"o":{}}', J.encode(J.decode('{"a": [], "o": {}}')))
    -- null is a value, not a hole that would shorten the array
    local t = J.decode("[1, null, 3]")
    assert.equal(3, #t)
    assert.equal(J.null, t[2])
    assert.equal("[1,null,3]", J.encode(t))
    -- keys that are not strings, and holes, are refused, not guessed
    assert.has_error(function() J.encode({ [1] = 1, [3] = 3 }) end)
    assert.has_error(function() J.encode({ 1, 2, x = 3 }) end)
    assert.has_error(function() J.encode({ [true] = 1 }) end)
    local cyc = {}
    cyc.self = cyc
    local ok, err = pcall(J.encode, cyc)
    assert.is_false(ok)
    assert.matches("contains itself", err)
    assert.has_error(function() J.encode({ f = print }) end)
  end)

  it("reports malformed input with its position", function()
    local cases = {
      { "", 1 }, { "   ", 4 }, { "[1,]", 4 }, { "[1 2]", 4 }, { '{"a" 1}', 6 },
      { '{"a":1,}', 8 }, { "01", 1 }, { "1.", 2 }, { "1e", 2 }, { "-", 1 }, { "tru", 1 },
      { "[1] x", 5 }, { '"abc', 1 }, { '"a\nb"', 3 }, { "{1:2}", 2 }, { "nul", 1 },
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(J.decode, c[1])
      assert.is_false(ok, string.format("%q decoded", c[1]))
      assert.matches("^json%.decode: ", err)
      assert.matches("at position " .. c[2] .. "$", err, string.format("%q: %s", c[1], err))
    end
    assert.has_error(function() J.decode(42) end, "bad argument #1 to 'decode' (string expected, got number)")
    assert.has_error(function() J.decode(string.rep("[", 2000)) end)
  end)

  it("reads what others write: whitespace, nesting, every literal", function()
    local v = J.decode(' \n\t{ "a" : [ 1 , 2.5 , "x" , true , false , null ] , "b" : { } }\r\n')
    assert.equal(1, v.a[1])
    assert.equal(2.5, v.a[2])
    assert.is_true(v.a[4])
    assert.is_false(v.a[5])
    assert.equal(J.null, v.a[6])
    assert.same({}, v.b)
    local _, out = H.sh("printf '%s' '{\"n\": 1733040000123456, \"f\": 0.1}' | " .. H.python
      .. " -c 'import json,sys; d=json.load(sys.stdin); print(d[\"n\"], repr(d[\"f\"]))'")
    assert.equal("1733040000123456 0.1\n", out)
    -- and Python's output for a big integer reads back exactly here
    local _, py = H.sh(H.python .. " -c 'import json; print(json.dumps({\"n\": 2**63 - 1, \"f\": 1/3}))'")
    local d = J.decode(py)
    assert.equal(math.maxinteger, d.n)
    assert.equal(1 / 3, d.f)
  end)
end)
