-- Real fault injection into create and replace, with strace(1):
--   strace -f -e inject=SYSCALL:error=EIO:when=N atomrun child.lua ...
-- For every syscall on the path (the directory open, the pre-check, the
-- O_TMPFILE or hidden temp file, write, fchown, fchmod, fsync, linkat,
-- renameat/renameat2, the directory fsync) and every errno tried (EIO, and
-- ENOSPC too for write), the call must return nil, msg, ERRNO; the old
-- file must be byte-for-byte intact (or still absent); and no temp file may
-- be left in the directory.  A failed directory fsync is the one exception:
-- the new contents are in place and the message says so.  The paths without O_TMPFILE and without
-- RENAME_NOREPLACE are reached by injecting EOPNOTSUPP / EINVAL there.
--
-- Which N hits which call: one run without injection, traced, between two
-- marker opens of nonexistent paths that the child makes around the call.
-- strace counts invocations per syscall and per process, and the child's
-- start-up is the same every run, so N is stable for that command line.
local H = require "spec.helper"
local listdir = H.listdir

local TRACED = "openat,newfstatat,faccessat2,write,fchown,fchmod,fsync,fdatasync,"
  .. "linkat,renameat,renameat2"

local CHILD = [[
local a = require "atomrun"
local op, path, data = arg[1], arg[2], arg[3]
io.open("/nonexistent/atomrun-fault-begin")
local ok, msg, code
if op == "create" then
  ok, msg, code = a.create(path, data ~= "-" and data or nil)
else
  ok, msg, code = a.replace(path, data)
end
io.open("/nonexistent/atomrun-fault-end")
io.write(tostring(ok), "\n", tostring(code), "\n", tostring(msg), "\n")
]]

local OLD = "old contents \0 that must survive\n"
local NEW = "the new contents\n"

-- The syscalls the call made: { name=, n= (ordinal of that syscall in the
-- process), line=, dirsync= (an fsync of a directory descriptor) }.
local function parse_trace(path)
  local count, calls, inside, dirfds, excl = {}, {}, false, {}, false
  for line in io.lines(path) do
    local name, rest = line:match("^%d+%s+([%w_]+)%((.*)$")
    if name then
      count[name] = (count[name] or 0) + 1
      if rest:find("atomrun-fault-begin", 1, true) then
        inside = true
      elseif rest:find("atomrun-fault-end", 1, true) then
        inside = false
      elseif inside then
        local c = { name = name, n = count[name], line = line }
        if name == "openat" and rest:find("O_DIRECTORY", 1, true) then
          local fd = rest:match("= (%d+)$")
          if fd then dirfds[fd] = true end
          -- create without data opens the directory only to fsync it,
          -- after the file exists: failing there is failing that fsync
          if excl then c.dirsync = true end
        end
        if name == "openat" and rest:find("O_EXCL", 1, true) then excl = true end
        if (name == "fsync" or name == "fdatasync") and dirfds[rest:match("^(%d+)")] then
          c.dirsync = true
        end
        calls[#calls + 1] = c
      end
    end
  end
  return calls
end

describe("fault injection (strace) #heavy", function()
  local dir, child, trace, base
  local seq = 0
  setup(function()
    assert.equal(0, (H.sh("strace -V")), "strace is needed (Debian package strace)")
    base = H.tmpdir()
    child = base .. "/child.lua"
    trace = base .. "/trace"
    H.write(child, CHILD)
  end)
  teardown(H.cleanup)

  -- A fresh directory as a scenario starts: the old file, or nothing.
  -- (No shell here: the sweep runs ~100 of these.)
  local function reset(sc)
    seq = seq + 1
    dir = base .. "/d" .. seq
    assert.is_true(H.ar.mkdir(dir))
    if sc.old then
      assert.is_true(H.ar.create(dir .. "/f", OLD, { mode = tonumber("640", 8),
        durable = false }))
    end
  end

  -- --seccomp-bpf: the child stops only at the syscalls injected into,
  -- not at each of the few hundred of its start-up.
  local function run(sc, injects)
    local parts, names = { "strace -f --seccomp-bpf -o /dev/null" }, {}
    for _, inj in ipairs(injects) do
      parts[#parts + 1] = "-e inject=" .. inj
      names[#names + 1] = inj:match("^(%w+)")
    end
    parts[#parts + 1] = "-e trace=" .. table.concat(names, ",")
    parts[#parts + 1] = table.concat({ H.q(H.atomrun), H.q(child), H.q(sc.op),
      H.q(dir .. "/f"), H.q(sc.data or NEW) }, " ")
    local st, out, err = H.sh(table.concat(parts, " "))
    assert.equal(0, st, err)
    local ok, code, msg = out:match("^(.-)\n(.-)\n(.*)\n$")
    assert.truthy(ok, "child printed: " .. out .. err)
    return ok == "true", code, msg
  end

  -- Everything the call did, traced without injection.
  local function calls_of(sc)
    reset(sc)
    local cmd = { "strace -f -o " .. H.q(trace) .. " -e trace=" .. TRACED }
    for _, inj in ipairs(sc.force or {}) do cmd[#cmd + 1] = "-e inject=" .. inj end
    cmd[#cmd + 1] = table.concat({ H.q(H.atomrun), H.q(child), H.q(sc.op),
      H.q(dir .. "/f"), H.q(sc.data or NEW) }, " ")
    local st, out, err = H.sh(table.concat(cmd, " "))
    assert.equal(0, st, err)
    assert.matches("^true\n", out)
    local calls = parse_trace(trace)
    assert.truthy(#calls > 0, "no syscalls between the markers")
    return calls
  end

  -- Failures the code tolerates on purpose: reading the umask from /proc
  -- (falls back to 022), create's early "is the name taken?" check (the
  -- link decides), and the two best-effort steps of the temp slots
  -- (src/core/file.c): looking at a slot for a dead writer's file before a
  -- replace writes (a slot not cleaned now is cleaned next time), and,
  -- without O_TMPFILE, moving the random-named temp file into a slot (it
  -- is then written and renamed from its random name).  Injecting there
  -- must not make the call fail.
  local SLOT = '"%.f%.~%d+"'
  local function benign(c)
    return c.line:find("/proc/self/status", 1, true)
      or (c.name == "newfstatat" and c.line:find("AT_EMPTY_PATH", 1, true))
      or c.name == "faccessat2"
      or (c.name == "openat" and c.line:find("^%d+%s+openat%(%d+, " .. SLOT .. ", O_RDONLY"))
      or ((c.name == "renameat2" or c.name == "linkat")
          and c.line:find('%(%d+, "%.f%.[%w]+", %d+, ' .. SLOT))
  end

  local function errnos_for(c)
    if c.name == "write" then return { "EIO", "ENOSPC" } end
    return { "EIO" }
  end

  -- One scenario: every traced syscall x its errnos.
  local function sweep(sc)
    local calls = calls_of(sc)
    local tried, names = 0, {}
    for _, c in ipairs(calls) do
      local skip = false      -- strace takes one injection per syscall
      for _, f in ipairs(sc.force or {}) do skip = skip or c.name == f:match("^(%w+)") end
      if sc.only and not sc.only[c.name] then skip = true end
      if not skip then
        names[#names + 1] = c.name .. (c.dirsync and "(dir)" or "")
        for _, e in ipairs(errnos_for(c)) do
          reset(sc)
          local inj = { c.name .. ":error=" .. e .. ":when=" .. c.n }
          for _, f in ipairs(sc.force or {}) do inj[#inj + 1] = f end
          local ok, code, msg = run(sc, inj)
          local what = sc.op .. " " .. c.line .. " <- " .. e .. ": " .. msg
          local content = H.ar.read(dir .. "/f")
          if benign(c) then
            assert.is_true(ok, what)
            assert.equal(sc.data or NEW, content, what)
          elseif c.dirsync then
            assert.is_false(ok, what)
            assert.equal(e, code, what)
            assert.matches("may not be durable", msg)
            assert.matches(sc.op == "create" and "created" or "replaced", msg)
            assert.equal(sc.data == "-" and "" or (sc.data or NEW), content, what)
          else
            assert.is_false(ok, what)
            assert.equal(e, code, what)
            assert.truthy(msg:find(dir .. "/f", 1, true), what)
            assert.equal(sc.old and OLD or nil, content, what)
            if sc.old then
              assert.equal(tonumber("640", 8), H.ar.stat(dir .. "/f").mode, what)
            end
          end
          assert.same(content and { "f" } or {}, listdir(dir), what)
          tried = tried + 1
        end
      end
    end
    return tried, names
  end

  -- Each test checks its own sweep (no test reads what another left): every
  -- syscall in `want` was hit, with at least one injection each.
  local function must_cover(tried, names, want)
    local have = {}
    for _, n in ipairs(names) do have[n] = true end
    for _, n in ipairs(want) do assert.truthy(have[n], "not swept: " .. n) end
    assert.truthy(tried >= #want, "only " .. tried .. " injections")
  end

  it("replace of an existing file (durable)", function()
    local tried, names = sweep({ op = "replace", old = true })
    must_cover(tried, names, { "openat", "newfstatat", "write", "fchown", "fchmod", "fsync",
      "linkat", "renameat", "fsync(dir)" })
  end)

  it("create with data", function()
    local tried, names = sweep({ op = "create" })
    must_cover(tried, names, { "openat", "write", "fchmod", "fsync", "linkat", "fsync(dir)" })
  end)

  it("create without data (O_EXCL)", function()
    local tried, names = sweep({ op = "create", data = "-" })
    must_cover(tried, names, { "openat", "fsync(dir)" })
  end)

  -- Without O_TMPFILE (forced by injecting EOPNOTSUPP into that openat):
  -- a hidden named temp file, renameat2(RENAME_NOREPLACE) for create.
  local function tmpfile_ordinal(sc)
    for _, c in ipairs(calls_of(sc)) do
      if c.name == "openat" and c.line:find("O_TMPFILE", 1, true) then return c.n end
    end
    error("no O_TMPFILE openat in the trace")
  end

  it("replace with a hidden temp name (no O_TMPFILE)", function()
    local k = tmpfile_ordinal({ op = "replace", old = true })
    local sc = { op = "replace", old = true, force = { "openat:error=EOPNOTSUPP:when=" .. k } }
    local tried, names = sweep(sc)
    must_cover(tried, names, { "write", "fchown", "fchmod", "fsync", "renameat", "fsync(dir)" })
    -- the named temp file's own open failing (EOPNOTSUPP for it as well)
    reset(sc)
    local ok, code = run(sc, { "openat:error=EOPNOTSUPP:when=" .. k .. ".." .. (k + 1) })
    assert.is_false(ok)
    assert.equal("EOPNOTSUPP", code)
    assert.equal(OLD, H.ar.read(dir .. "/f"))
    assert.same({ "f" }, listdir(dir))
  end)

  it("create with a hidden temp name (no O_TMPFILE), and without RENAME_NOREPLACE", function()
    local k = tmpfile_ordinal({ op = "create" })
    local notmp = "openat:error=EOPNOTSUPP:when=" .. k
    local sc = { op = "create", force = { notmp } }
    local tried, names = sweep(sc)
    must_cover(tried, names, { "write", "fchmod", "fsync", "renameat2", "fsync(dir)" })
    -- renameat2 refused (an old kernel or filesystem), every time: link(2),
    -- then the temp name is unlinked (for the move into a slot too); the
    -- final link failing must clean up too
    local tried2, names2 = sweep({ op = "create", force = { notmp, "renameat2:error=EINVAL" },
      only = { linkat = true, fsync = true } })
    must_cover(tried2, names2, { "linkat", "fsync(dir)" })
  end)

  it("write interrupted (EINTR) is retried, not reported", function()
    local sc = { op = "replace", old = true }
    local n
    for _, c in ipairs(calls_of(sc)) do if c.name == "write" then n = c.n end end
    reset(sc)
    local ok, _, msg = run(sc, { "write:error=EINTR:when=" .. n })
    assert.is_true(ok, msg)
    assert.equal(NEW, H.ar.read(dir .. "/f"))
    assert.same({ "f" }, listdir(dir))
  end)
end)
