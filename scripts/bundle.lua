-- scripts/bundle.lua -- turn lua/**/*.lua into a C array (build/bundle.c), so
-- the atomrun binary and libraries carry their recipes with them.  The entry
-- type is src/bind/bundle.h's; lua/atomrun/init.lua is the module "atomrun".
-- usage: lua5.4 scripts/bundle.lua OUT.c lua/atomrun/a.lua lua/atomrun/b.lua ...
--
-- Each entry holds the source and the same chunk precompiled (string.dump,
-- debug information kept, so tracebacks still name files and lines; the
-- CLI's chunks without their local names, see locals_stripped):
-- loading bytecode skips the parser, which was most of the start-up of
-- `atomrun lock`.  Bytecode is only valid for the Lua release that made
-- it, so the release of the interpreter running this script goes in too
-- (AR_BUNDLE_LUA_RELEASE); the loader (src/bind/bundle.c) uses the bytecode
-- only when it matches the Lua it was compiled against, and falls back to
-- the source when Lua refuses the chunk.
--
-- A subcommand, lua/atomrun/cmd/NAME.lua, must start with the line
--   -- atomrun NAME -- one-line summary
-- which `atomrun --help` lists: a new subcommand is that one new file.
local out_path = assert(arg[1], "usage: bundle.lua OUT.c FILES...")

-- Every byte that is not plain printable ASCII, and the characters C gives
-- meaning to inside a string literal ('?' because of trigraphs), is written
-- as an octal escape.
local function c_literal(line)
  return (line:gsub('[^%w %!#%%&\'%(%)%*%+,%-%./:;<=>@%[%]%^_`{|}~]', function(c)
    return string.format("\\%03o", c:byte())
  end))
end

-- A C string literal of any bytes, cut into lines of ~72 source characters.
-- An octal escape takes at most three digits, so "\0011" is unambiguous.
local function c_bytes(s)
  local out, line = {}, {}
  local width = 0
  for i = 1, #s do
    local c = s:sub(i, i)
    local e = c:match('[%w %!#%%&\'%(%)%*%+,%-%./:;<=>@%[%]%^_`{|}~]') or
      string.format("\\%03o", c:byte())
    line[#line + 1] = e
    width = width + #e
    if width >= 72 then
      out[#out + 1] = '    "' .. table.concat(line) .. '"'
      line, width = {}, 0
    end
  end
  if #line > 0 or #out == 0 then out[#out + 1] = '    "' .. table.concat(line) .. '"' end
  return table.concat(out, "\n")
end

-- "Lua 5.4.4" from the interpreter running us (`lua5.4 -v`): _VERSION names
-- only "Lua 5.4", and bytecode may differ between releases of one version.
local function lua_release()
  local interp = arg[-1] or "lua5.4"
  local p = io.popen("'" .. interp:gsub("'", "'\\''") .. "' -v 2>&1")
  local text = p and p:read("a") or ""
  if p then p:close() end
  local release = text:match("^(Lua %d+%.%d+%.%d+)")
  assert(release, "bundle.lua: cannot tell the Lua release from `" .. interp .. " -v`: " .. text)
  return release
end

local function summary_of(name, path, src)
  local cmd = name:match("^atomrun%.cmd%.(.+)$")
  if not cmd then return nil end
  local first = src:match("^[^\n]*")
  local s = first:match("^%-%- atomrun " .. cmd:gsub("%p", "%%%0") .. " %-%- (%S.-)%s*$")
  if not s then
    io.stderr:write(string.format("bundle.lua: %s must start with the line\n"
      .. "  -- atomrun %s -- one-line summary\n(atomrun --help lists it); it starts with:\n  %s\n",
      path, cmd, first))
    os.exit(1)
  end
  return s
end

-- The command line's own chunks (atomrun.cli*, atomrun.cmd.*) go in without
-- the names of their local variables: interning those names was a
-- quarter of what loading them costs, on every `atomrun lock`.  Unlike
-- string.dump(f, true) this keeps the file name and every line number,
-- so tracebacks and errors still say "lua/atomrun/cmd/lock.lua:123:"; only
-- a message about a local by name ("attempt to call a nil value (local
-- 'f')") loses the name, and the CLI words every message it means to give
-- itself.  Upvalue names stay too ("global 'x'" needs the name _ENV).  The
-- recipes users call keep all their debug information.
local function locals_stripped(bin)
  -- Lua 5.4's dump format (ldump.c): sizes are varints, 7 bits a byte,
  -- the high bit on the last byte; a string is its size + 1 (0: none)
  -- and its bytes.  Everything is copied as it is except the locals.
  local pos, out = 1, {}
  local function take(n) local s = bin:sub(pos, pos + n - 1); pos = pos + n; return s end
  local function size()
    local start, x, b = pos, 0, 0
    repeat b = bin:byte(pos); pos = pos + 1; x = x * 128 + (b & 0x7f) until b >= 0x80
    return x, bin:sub(start, pos - 1)
  end
  local function emit(s) out[#out + 1] = s end
  local function copy_size() local x, raw = size(); emit(raw); return x end
  local function copy_string() local n = copy_size(); if n > 0 then emit(take(n - 1)) end end
  local function skip_string() local n = size(); if n > 0 then pos = pos + n - 1 end end
  emit(take(4 + 1 + 1 + 6))            -- signature, version, format, LUAC_DATA
  local sizes = take(3)                -- Instruction, lua_Integer, lua_Number
  emit(sizes)
  local isz, intsz, numsz = sizes:byte(1, 3)
  emit(take(intsz + numsz + 1))        -- LUAC_INT, LUAC_NUM, main's upvalue count
  local function func()
    copy_string()                      -- source
    copy_size(); copy_size()           -- linedefined, lastlinedefined
    emit(take(3))                      -- numparams, is_vararg, maxstacksize
    emit(take(copy_size() * isz))      -- code
    for _ = 1, copy_size() do          -- constants: tag, then the value
      local tt = take(1)
      emit(tt)
      tt = tt:byte()
      if tt == 3 then emit(take(intsz))             -- integer
      elseif tt == 19 then emit(take(numsz))        -- float
      elseif tt == 4 or tt == 20 then copy_string() -- short, long string
      end                                           -- nil, false, true: no value
    end
    emit(take(copy_size() * 3))        -- upvalues: instack, idx, kind
    for _ = 1, copy_size() do func() end
    emit(take(copy_size()))            -- lineinfo
    for _ = 1, copy_size() do copy_size(); copy_size() end   -- abslineinfo
    for _ = 1, size() do skip_string(); size(); size() end   -- locvars: dropped
    emit("\x80")                       -- ... so there are none
    for _ = 1, copy_size() do copy_string() end              -- upvalue names
  end
  func()
  assert(pos == #bin + 1, "bundle.lua: trailing bytes after the dumped chunk")
  return table.concat(out)
end

local parts = {
  "/* Generated by scripts/bundle.lua from lua/ -- do not edit. */",
  '#include "bind/bundle.h"',
  string.format('const char ar_bundle_lua_release[] = "%s";', lua_release()),
  "const ar_bundled ar_bundle[] = {",
}
for i = 2, #arg do
  local path = arg[i]
  local f = assert(io.open(path, "rb"))
  local src = f:read("a")
  f:close()
  -- the module name require uses: lua/atomrun/x/init.lua is "atomrun.x"
  local name = path:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
  local chunk, err = load(src, "@" .. path, "t")
  if not chunk then error("bundle.lua: " .. err, 0) end
  local bin = string.dump(chunk, false)      -- false: keep the debug info
  if name:match("^atomrun%.cli") or name:match("^atomrun%.cmd%.") then
    -- The check that the rewrite dropped the locals and nothing else: the
    -- stripped dumps of both chunks are the same bytes.
    local lean = locals_stripped(bin)
    local again = assert(load(lean, "@" .. path, "b"))
    assert(string.dump(again, true) == string.dump(chunk, true),
      "bundle.lua: dropping the local names changed " .. path)
    bin = lean
  end
  local summary = summary_of(name, path, src)
  parts[#parts + 1] = string.format('  { "%s", "@%s",', name, path)
  if src ~= "" and src:sub(-1) ~= "\n" then src = src .. "\n" end
  for line in src:gmatch("([^\n]*)\n") do
    parts[#parts + 1] = '    "' .. c_literal(line) .. '\\n"'
  end
  if src == "" then parts[#parts + 1] = '    ""' end
  parts[#parts + 1] = string.format("    , %d,", #src)
  parts[#parts + 1] = c_bytes(bin)
  parts[#parts + 1] = string.format("    , %d, %s },", #bin,
    summary and '"' .. c_literal(summary) .. '"' or "NULL")
end
parts[#parts + 1] = "  { NULL, NULL, NULL, 0, NULL, 0, NULL }"
parts[#parts + 1] = "};"
local out = assert(io.open(out_path, "wb"))
out:write(table.concat(parts, "\n"), "\n")
out:close()
