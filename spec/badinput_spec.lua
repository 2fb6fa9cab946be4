-- spec/badinput_spec.lua -- the bad-input matrix.
--
-- Every public Lua function, one argument at a time, against the values
-- scripts really get wrong: nil, a wrong type, "", a path with an embedded
-- NUL, a path longer than PATH_MAX (and a name longer than NAME_MAX),
-- negative / NaN / huge numbers, unknown option names and options of the
-- wrong type.  Each case must end in exactly one of:
--   a Lua error "bad argument #N to 'fname' (...)", N and fname as the
--   caller wrote them, raised at the caller (not inside lua/atomrun/);
--   nil, message, code  -- for what the environment refuses;
--   a documented success, where the value is legal (a huge timeout);
--   blocking, only where the value means "forever" (sleep(math.huge)).
-- Never a crash, a hang, or a silent success.
--
-- Then the paths a job meets in the wild: a missing directory, a directory,
-- a symlink, a FIFO (must not block), /proc files, files without permission
-- (as uid 65534), a read-only filesystem and a full one (small tmpfs mounts
-- in a private mount namespace; skipped, with the reason printed, where the
-- machine does not allow them).
--
-- The cases run in a child process (this same file: `INTERP THIS --child
-- GROUP DIR`) under `timeout -s KILL`, one line per case, so that a crash
-- or a hang is caught and named instead of taking the test runner down.

local CHILD = describe == nil    -- busted defines it; the child has none

local function build(A, D)
  local pk = table.pack
  local cases = {}
  local seq = 0
  local function fresh(name)
    seq = seq + 1
    return D .. "/" .. (name or "f") .. seq
  end
  local function add(c) cases[#cases + 1] = c end

  local NUL = D .. "/nul\0byte"
  local LONG = D .. "/" .. string.rep("d/", 2100) .. "x"          -- > PATH_MAX (4096)
  local LONGNAME = D .. "/" .. string.rep("n", 300)              -- > NAME_MAX (255)
  local NAN = 0 / 0

  ---------------------------------------------------------------- kinds
  -- A kind is a list of {label, value, expectation}; expectation strings:
  --   "err"              Lua error naming this argument
  --   "fail" / "fail:E"  nil, msg, code (code E)
  --   "ok"               a legal value: success is right
  --   "blocks"           a legal value meaning "forever" (run apart)
  local PATH = {
    { "nil", nil, "err" }, { "a table", {}, "err" }, { "a boolean", true, "err" },
    { "a number", 42, "err" }, { "empty string", "", "fail" },
    { "embedded NUL", NUL, "err" },
    { "longer than PATH_MAX", LONG, "fail:ENAMETOOLONG" },
    { "name longer than NAME_MAX", LONGNAME, "fail:ENAMETOOLONG" },
  }
  local INT = {
    { "nil", nil, "err" }, { "a word", "x", "err" }, { "a table", {}, "err" },
    { "-1", -1, "err" }, { "NaN", NAN, "err" }, { "1.5", 1.5, "err" },
    { "1e300", 1e300, "err" }, { "math.huge", math.huge, "err" },
    { "math.mininteger", math.mininteger, "err" },
  }
  local FN = {
    { "nil", nil, "err" }, { "a string", "x", "err" }, { "a number", 5, "err" },
    { "a table", {}, "err" },
  }
  local OPTS_WHOLE = {
    { "a string", "x", "err" }, { "a number", 5, "err" }, { "true", true, "err" },
    { "unknown option", { bogus = 1 }, "err" }, { "positional entry", { 1 }, "err" },
    { "misspelt option", { timout = 5 }, "err" },
  }
  local OPT_VALUES = {
    boolean = { { "a string", "yes", "err" }, { "a number", 1, "err" } },
    seconds = {
      { "-1", -1, "err" }, { "NaN", NAN, "err" }, { "-math.huge", -math.huge, "err" },
      { "a string", "5", "err" }, { "a table", {}, "err" },
      { "1e300", 1e300, "ok" }, { "math.huge", math.huge, "ok" },
    },
    perm = {
      { "-1", -1, "err" }, { "4096", 4096, "err" }, { "1.5", 1.5, "err" },
      { "NaN", NAN, "err" }, { "a string", "644", "err" },
    },
    mode = { { "unknown", "bogus", "err" }, { "empty", "", "err" }, { "a number", 1, "err" } },
    string = { { "a number", 5, "err" }, { "embedded NUL", "a\0b", "err" } },
    table = { { "a string", "x", "err" } },
    ["function"] = { { "a string", "x", "err" } },
    env = {
      { "a string", "x", "err" }, { "positional", { "A=1" }, "err" },
      { "empty name", { [""] = "x" }, "err" }, { "name with =", { ["A=B"] = "x" }, "err" },
      { "name with NUL", { ["A\0B"] = "x" }, "err" },
      { "value with NUL", { A = "x\0y" }, "err" }, { "value a table", { A = {} }, "err" },
      { "value true", { A = true }, "err" },
    },
    attempts = { { "0", 0, "err" }, { "NaN", NAN, "err" }, { "a string", "3", "err" },
      { "1.5", 1.5, "err" }, { "1e300", 1e300, "err" }, { "math.huge", math.huge, "ok" } },
    factor = { { "0.5", 0.5, "err" }, { "NaN", NAN, "err" } },
    nonneg = { { "-1", -1, "err" }, { "NaN", NAN, "err" }, { "a string", "1", "err" } },
    jitter = { { "unknown", "bogus", "err" }, { "a number", 5, "err" } },
    follow = { { "a word", "yes", "err" }, { "a number", 1, "err" }, { "a table", {}, "err" } },
    offset = { { "-1", -1, "err" }, { "1.5", 1.5, "err" }, { "NaN", NAN, "err" },
      { "a string", "5", "err" }, { "math.huge", math.huge, "err" } },
  }
  local LOCK_OPTS = { mode = "mode", wait = "boolean", timeout = "seconds", perm = "perm",
    create = "boolean" }

  local function OPTS(names, base)
    local list = {}
    for _, v in ipairs(OPTS_WHOLE) do
      local val = v[2]
      if type(val) == "table" and base then
        val = {}
        for k, x in pairs(v[2]) do val[k] = x end
        for k, x in pairs(base) do val[k] = x end
      end
      list[#list + 1] = { v[1], val, v[3] }
    end
    local keys = {}
    for k in pairs(names) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do
      for _, v in ipairs(OPT_VALUES[names[k]]) do
        local t = {}
        for bk, bv in pairs(base or {}) do t[bk] = bv end
        t[k] = v[2]
        list[#list + 1] = { k .. " = " .. v[1], t, v[3] }
      end
    end
    return list
  end

  -- gen(fname, kinds, valid, call): one case per bad value of each argument,
  -- the other arguments valid.  kinds[i] is the list for argument #i as the
  -- caller counts it (methods: self not counted); names = accepted fnames.
  local function gen(fname, kinds, valid, call, names)
    for i, kind in ipairs(kinds) do
      for _, v in ipairs(kind) do
        local exp = {}
        local what, code = v[3]:match("^(%a+):?(.*)$")
        if what == "err" then exp.err = i; exp.fn = names or { fname }
        elseif what == "fail" then exp.fail = code ~= "" and code or true
        elseif what == "ok" then exp.ok = true
        elseif what == "blocks" then exp.blocks = true end
        local value = v[2]
        add({
          id = string.format("%s #%d %s", fname, i, v[1]),
          group = exp.blocks and "block" or "matrix",
          expect = exp,
          call = function()
            local a = valid()
            a[i] = value
            return call(a)
          end,
        })
      end
    end
  end

  local function existing()
    local p = fresh("file")
    local fh = assert(io.open(p, "w")); fh:write("old"); fh:close()
    return p
  end

  --------------------------------------------------------- the matrix
  gen("lock", { PATH, OPTS(LOCK_OPTS) }, function() return { fresh("lk"), nil } end,
    function(a) return pk(A.lock(a[1], a[2])) end)
  -- lock()'s own options (not f:lock()'s): follow, fcntl, start, length
  gen("lock", { PATH, OPTS({ follow = "follow", fcntl = "boolean" }) },
    function() return { fresh("lk"), nil } end,
    function(a) return pk(A.lock(a[1], a[2])) end)
  gen("lock", { PATH, OPTS({ start = "offset", length = "offset" }, { fcntl = true }) },
    function() return { fresh("lk"), { fcntl = true } } end,
    function(a) return pk(A.lock(a[1], a[2])) end)
  add({ id = "lock: start without fcntl = true", group = "matrix", expect = { err = 2, fn = { "lock" } },
    call = function() return pk(A.lock(fresh("lk"), { start = 5 })) end })
  -- lockfd(fd, opts) / unlockfd(fd, opts): a descriptor that is not open is
  -- nil, msg, "EBADF"; every option is checked before the descriptor
  local FD = {
    { "nil", nil, "err" }, { "a string", "9", "err" }, { "a table", {}, "err" },
    { "-1", -1, "err" }, { "1.5", 1.5, "err" }, { "NaN", NAN, "err" },
    { "math.huge", math.huge, "err" }, { "2^40", 2 ^ 40, "err" },
    { "not open", 999, "fail:EBADF" },
  }
  local function no_ok(list)
    local t = {}
    for _, v in ipairs(list) do if v[3] ~= "ok" then t[#t + 1] = v end end
    return t
  end
  gen("lockfd", { FD, no_ok(OPTS({ mode = "mode", wait = "boolean", timeout = "seconds",
      holder = "boolean", fcntl = "boolean", start = "offset", length = "offset" })) },
    function() return { 999, nil } end,
    function(a) return pk(A.lockfd(a[1], a[2])) end)
  gen("unlockfd", { FD, no_ok(OPTS({ fcntl = "boolean", start = "offset", length = "offset" })) },
    function() return { 999, nil } end,
    function(a) return pk(A.unlockfd(a[1], a[2])) end)
  gen("who", { PATH }, function() return { existing() } end,
    function(a) return pk(A.who(a[1])) end)
  gen("holds", { PATH, {
      { "nil", nil, "err" }, { "a word", "x", "err" }, { "0", 0, "err" }, { "-1", -1, "err" },
      { "1.5", 1.5, "err" }, { "NaN", NAN, "err" }, { "2^40", 2 ^ 40, "err" },
    } }, function() return { existing(), 1 } end,
    function(a) return pk(A.holds(a[1], a[2])) end)
  gen("open", { PATH, OPTS({ create = "boolean", perm = "perm" }) },
    function() return { fresh("op"), nil } end,
    function(a) return pk(A.open(a[1], a[2])) end)
  gen("lock", { INT, INT, OPTS(LOCK_OPTS) }, function() return { 0, 1, nil } end,
    function(a)
      local f = assert(A.open(fresh("rg")))
      return pk(f:lock(a[1], a[2], a[3]))
    end)
  gen("test", { INT, INT, { { "unknown mode", "bogus", "err" }, { "empty mode", "", "err" },
    { "a table", {}, "err" } } }, function() return { 0, 1, nil } end,
    function(a)
      local f = assert(A.open(fresh("rg")))
      return pk(f:test(a[1], a[2], a[3]))
    end)
  gen("create", { PATH,
    { { "a number", 5, "err" }, { "a table", {}, "err" }, { "true", true, "err" },
      { "a closed file", (function() local f = io.tmpfile() f:close() return f end)(), "err" },
      { "a reader returning a number", function() return 5 end, "err" },
      { "a reader returning nil at once", function() return nil end, "ok" },
      { "an open file", io.tmpfile(), "ok" } },
    OPTS({ durable = "boolean", mode = "perm" }) },
    function() return { fresh("cr"), "data", nil } end,
    function(a) return pk(A.create(a[1], a[2], a[3])) end)
  gen("replace", { PATH,
    { { "nil", nil, "err" }, { "a number", 5, "err" }, { "a table", {}, "err" },
      { "true", true, "err" },
      { "a closed file", (function() local f = io.tmpfile() f:close() return f end)(), "err" },
      { "a reader returning a table", function() return {} end, "err" },
      { "a reader returning nil at once", function() return nil end, "ok" },
      { "an open file", io.tmpfile(), "ok" } },
    OPTS({ durable = "boolean", mode = "perm", follow = "boolean" }) },
    function() return { fresh("rp"), "data", nil } end,
    function(a) return pk(A.replace(a[1], a[2], a[3])) end)
  gen("read", { PATH }, function() return { existing() } end,
    function(a) return pk(A.read(a[1])) end)
  gen("update", { PATH, FN, OPTS({ timeout = "seconds", wait = "boolean", durable = "boolean",
    mode = "perm", follow = "boolean" }) },
    function() return { fresh("up"), function(old) return (old or "") .. "+" end, nil } end,
    function(a) return pk(A.update(a[1], a[2], a[3])) end)
  gen("status", { PATH, OPTS({ follow = "boolean" }) }, function() return { fresh("st"), nil } end,
    function(a) return pk(A.status(a[1], a[2]):write({ x = 1 })) end)
  gen("write", { { { "nil", nil, "err" }, { "a string", "x", "err" }, { "a number", 5, "err" },
      { "a function inside", { f = print }, "err" } },
    OPTS({ durable = "boolean", mode = "perm", follow = "boolean" }) },
    function() return { { x = 1 }, nil } end,
    function(a)
      local st = A.status(fresh("st"))
      return pk(st:write(a[1], a[2]))
    end)
  gen("with_lock", { PATH, OPTS(LOCK_OPTS), FN },
    function() return { fresh("wl"), nil, function() return true end } end,
    function(a) return pk(A.with_lock(a[1], a[2], a[3])) end)
  gen("lock_all", { {
      { "nil", nil, "err" }, { "a string", "x", "err" }, { "a number in it", { 5 }, "err" },
      { "embedded NUL", { NUL }, "err" }, { "a table in it", { {} }, "err" },
      { "an empty path", { "" }, "fail" }, { "a long path", { LONG }, "fail:ENAMETOOLONG" },
    }, OPTS({ mode = "mode", wait = "boolean", timeout = "seconds", perm = "perm" }) },
    function() return { { fresh("la"), fresh("la") }, nil } end,
    function(a) return pk(A.lock_all(a[1], a[2])) end)
  gen("retry", { FN, OPTS({ attempts = "attempts", timeout = "seconds", base = "nonneg",
    factor = "factor", max = "nonneg", jitter = "jitter", retry_on = "function" }) },
    function() return { function() return true end, nil } end,
    function(a) return pk(A.retry(a[1], a[2])) end)
  local once_dir = D .. "/once"
  gen("once", { {
      { "nil", nil, "err" }, { "empty", "", "err" }, { "a slash", "a/b", "err" },
      { "dot-dot", "..", "err" }, { "hidden", ".x", "err" }, { "a dash first", "-x", "err" },
      { "embedded NUL", "a\0b", "err" }, { "a table", {}, "err" }, { "a number", 5, "err" },
      { "name longer than NAME_MAX", string.rep("n", 300), "fail:ENAMETOOLONG" },
    }, OPTS({ dir = "string", wait = "boolean", timeout = "seconds", argv = "table" },
      { dir = once_dir }) },
    function() return { "job" .. (seq + 1) .. "x", { dir = once_dir } } end,
    function(a)
      seq = seq + 1
      return pk(A.once(a[1], a[2]))
    end)
  gen("semaphore", { PATH, {
      { "nil", nil, "err" }, { "0", 0, "err" }, { "-1", -1, "err" }, { "1.5", 1.5, "err" },
      { "NaN", NAN, "err" }, { "a string", "2", "err" }, { "a table", {}, "err" },
      { "math.huge", math.huge, "err" },
    } },
    function() return { fresh("sem"), 2 } end,
    function(a)
      local s = A.semaphore(a[1], a[2])
      return pk(s:acquire({ wait = false }))
    end)
  gen("acquire", { OPTS({ timeout = "seconds", wait = "boolean" }) },
    function() return { nil } end,
    function(a)
      local s = A.semaphore(fresh("sem"), 2)
      return pk(s:acquire(a[1]))
    end)
  local ARGV = {
    { "nil", nil, "err" }, { "a string", "true", "err" }, { "empty", {}, "err" },
    { "a table in it", { {} }, "err" }, { "a boolean in it", { true }, "err" },
    { "embedded NUL", { "tr\0ue" }, "err" }, { "NUL in an argument", { "true", "a\0b" }, "err" },
    { "__len says maxinteger", setmetatable({}, { __len = function() return math.maxinteger end }),
      "err" },
    { "empty command", { "" }, "fail:ENOENT" },
    { "missing command", { D .. "/no/such/command" }, "fail:ENOENT" },
    { "command longer than PATH_MAX", { LONG }, "fail:ENAMETOOLONG" },
  }
  local RUN_OPTS = { timeout = "seconds", kill_after = "seconds", close_locks = "boolean",
    env = "env", cwd = "string", forward_signals = "boolean", on_start = "function",
    die_with_parent = "boolean" }
  gen("run", { ARGV, OPTS(RUN_OPTS) }, function() return { { "true" }, nil } end,
    function(a) return pk(A.run(a[1], a[2])) end)
  -- exec: the command never exists, so nothing here can replace the child
  local EXEC_ARGV = {}
  for _, v in ipairs(ARGV) do EXEC_ARGV[#EXEC_ARGV + 1] = v end
  gen("exec", { EXEC_ARGV, OPTS({ close_locks = "boolean", env = "env", cwd = "string" }) },
    function() return { { D .. "/no/such/command" }, nil } end,
    function(a) return pk(A.exec(a[1], a[2])) end)
  gen("sleep", { {
      { "nil", nil, "err" }, { "a word", "x", "err" }, { "a table", {}, "err" },
      { "-1", -1, "err" }, { "NaN", NAN, "err" }, { "-math.huge", -math.huge, "err" },
      { "math.huge", math.huge, "blocks" }, { "1e300", 1e300, "blocks" },
    } }, function() return { 0 } end,
    function(a) return pk(A.sleep(a[1])) end)
  gen("stat", { PATH, { { "a string", "yes", "err" }, { "a number", 1, "err" },
      { "a table", {}, "err" } } },
    function() return { existing(), nil } end,
    function(a) return pk(A.stat(a[1], a[2])) end)
  gen("mkdir", { PATH, { { "-1", -1, "err" }, { "4096", 4096, "err" }, { "1.5", 1.5, "err" },
      { "NaN", NAN, "err" }, { "a word", "x", "err" }, { "a table", {}, "err" },
      { "the string 755", "755", "err" }, { "the string 0755", "0755", "err" },
      { "a boolean", true, "err" } } },
    function() return { fresh("md"), nil } end,
    function(a) return pk(A.mkdir(a[1], a[2])) end)
  gen("probe", { PATH }, function() return { D } end,
    function(a) return pk(A.probe(a[1])) end)

  ----------------------------------------------- hand-written extras
  local function extra(id, expect, call, group)
    add({ id = id, group = group or "matrix", expect = expect, call = call })
  end
  extra("lock: an option table whose __index raises", { err_match = "boom" }, function()
    return pk(A.lock(fresh("lk"), setmetatable({}, { __index = function() error("boom") end })))
  end)
  extra("lock: held by this script, timeout 1e300 -> deadlock, not a hang", { fail = "deadlock" },
    function()
      local p = fresh("lk")
      local lk = assert(A.lock(p))
      local r = pk(A.lock(p, { timeout = 1e300 }))
      lk:unlock()
      return r
    end)
  extra("range: held through another handle, wait forever -> deadlock", { fail = "deadlock" },
    function()
      local p = fresh("rg")
      local f1, f2 = assert(A.open(p)), assert(A.open(p))
      local r1 = assert(f1:lock(0, 10))
      local r = pk(f2:lock(5, 10))
      r1:unlock(); f1:close(); f2:close()
      return r
    end)
  extra("range: overlapping through the same handle", { err_match = "overlaps" }, function()
    local f = assert(A.open(fresh("rg")))
    local r1 = assert(f:lock(0, 10))
    local ok, e = pcall(f.lock, f, 5, 10)
    r1:unlock(); f:close()
    if not ok then error(e, 0) end
    return pk(e)
  end)
  extra("range: start maxinteger, length 1 overflows", { err = 2, fn = { "lock" } }, function()
    local f = assert(A.open(fresh("rg")))
    return pk(f:lock(math.maxinteger, 1))
  end)
  extra("range: start maxinteger to end of file is legal", { ok = true }, function()
    local f = assert(A.open(fresh("rg")))
    return pk(f:lock(math.maxinteger, 0))
  end)
  extra("range: length maxinteger from 0 is legal", { ok = true }, function()
    local f = assert(A.open(fresh("rg")))
    return pk(f:lock(0, math.maxinteger))
  end)
  extra("file: lock after close", { err_match = "closed" }, function()
    local f = assert(A.open(fresh("rg")))
    f:close()
    return pk(f:lock(0, 1))
  end)
  extra("file: a method called on the wrong self", { err = 1, fn = { "lock", "?" } }, function()
    local f = assert(A.open(fresh("rg")))
    return pk(f.lock(5, 0, 1))
  end)
  extra("lock: unlock twice is harmless", { ok = true }, function()
    local lk = assert(A.lock(fresh("lk")))
    lk:unlock()
    return pk(lk:unlock())
  end)
  extra("update: fn returns a number", { err_match = "must return a string" }, function()
    return pk(A.update(fresh("up"), function() return 5 end))
  end)
  extra("update: fn raises; the lock is released", { err_match = "inside fn" }, function()
    local p = fresh("up")
    local ok, e = pcall(A.update, p, function() error("inside fn", 0) end)
    local lk = A.lock(p .. ".lock", { wait = false })
    if not lk then error("the update lock stayed held after fn raised") end
    lk:unlock()
    if not ok then error(e, 0) end
    return pk(e)
  end)
  extra("with_lock: fn raises; the lock is released", { err_match = "inside fn" }, function()
    local p = fresh("wl")
    local ok, e = pcall(A.with_lock, p, nil, function() error("inside fn", 0) end)
    local lk = A.lock(p, { wait = false })
    if not lk then error("with_lock kept the lock after fn raised") end
    lk:unlock()
    if not ok then error(e, 0) end
    return pk(e)
  end)
  extra("status: read of a file that is not JSON", { fail = "EINVAL" }, function()
    local p = existing()
    return pk(A.status(p):read())
  end)
  extra("retry: a function that never succeeds, 2 attempts", { fail = "timeout" }, function()
    return pk(A.retry(function() return nil, "nope", "busy" end, { attempts = 2, base = 0 }))
  end)
  extra("run: a timeout of 1e300 s on a quick command", { ok = true }, function()
    return pk(A.run({ "true" }, { timeout = 1e300, kill_after = 1e300 }))
  end)
  extra("run: cwd is a missing directory", { fail = "ENOENT" }, function()
    return pk(A.run({ "true" }, { cwd = D .. "/no/such/dir" }))
  end)
  extra("exec: a failed exec leaves cwd and lock descriptors as they were", { fail = "ENOENT" },
    function()
      local lk = assert(A.lock(fresh("lk")))
      local function fds()       -- ls's descriptors >= 3, but its own handle on the directory
        local p = io.popen("ls -l /proc/self/fd")
        local t = {}
        for fd, target in p:read("a"):gmatch(" (%d+) %-> ([^\n]*)") do
          if tonumber(fd) > 2 and not target:find("^/proc/%d+/fd$") then
            t[#t + 1] = fd .. " -> " .. target .. "\n"
          end
        end
        p:close()
        table.sort(t)
        return table.concat(t)
      end
      local before, fds_before = io.popen("pwd"):read("l"), fds()
      local r = pk(A.exec({ D .. "/no/such/command" }, { cwd = "/" }))
      local after, fds_after = io.popen("pwd"):read("l"), fds()
      lk:unlock()
      if before ~= after then error("exec changed the directory to " .. after) end
      -- the lock is close-on-exec again, inherited descriptors inheritable again
      if fds_before ~= fds_after then
        error("a child's descriptors before a failed exec:\n" .. fds_before .. "after:\n" .. fds_after)
      end
      return r
    end)

  -- values that legitimately mean "wait forever" (run apart, then killed)
  -- A fresh file held by flock(1) for longer than the case may run, once the
  -- hold has really begun; "ARMED" said, so the wait that follows is timed.
  local function held_by_flock(tag)
    local p = fresh(tag)    -- each blocking case runs in its own child: own names
    os.execute("flock -x " .. p .. " sleep 4 >/dev/null 2>&1 &")      -- outlives our 3 s
    for _ = 1, 500 do
      local lk = A.lock(p, { wait = false })
      if not lk then break end
      lk:unlock()
      A.sleep(0.01)
    end
    io.write("ARMED\n"); io.stdout:flush()       -- the wait really begins here
    return p
  end
  extra("lock: timeout 1e300 while another process holds it", { blocks = true, armed = true }, function()
    return pk(A.lock(held_by_flock("held-1e300"), { timeout = 1e300 }))
  end, "block")
  extra("lock: timeout math.huge while another process holds it", { blocks = true, armed = true },
    function()
    return pk(A.lock(held_by_flock("held-huge"), { timeout = math.huge }))
  end, "block")
  extra("retry: attempts math.huge, never succeeding", { blocks = true }, function()
    return pk(A.retry(function() return nil end, { attempts = math.huge, base = 0.01, max = 0.05 }))
  end, "block")

  --------------------------------------------------- environment: paths
  -- group "env": as root, in D/e.
  local E = D .. "/e"
  local function sh(cmd) assert(os.execute(cmd), cmd) end
  local function list(dir)
    local p = io.popen("ls -A '" .. dir .. "' 2>&1")
    local s = p:read("a"); p:close()
    return s
  end
  local function content(path)
    local fh = io.open(path, "rb")
    if not fh then return nil end
    local s = fh:read("a"); fh:close()
    return s
  end
  local function intact(path, want)
    return function()
      local got = content(path)
      if got ~= want then
        return string.format("%s holds %q, expected %q", path, tostring(got), want)
      end
    end
  end
  -- nothing here makes hidden files: any ".name.XXXXXXXX" is a leftover temp
  local function no_temp(dir)
    return function()
      local l = list(dir)
      if ("\n" .. l):find("\n%.") then
        return "a temp file was left in " .. dir .. ": " .. l:gsub("\n", " ")
      end
    end
  end
  local function both(f, g) return function(...) return f(...) or g(...) end end
  local function env(id, expect, call, check, group)
    add({ id = id, group = group or "env", expect = expect, call = call, check = check })
  end
  local SETUP = {}
  SETUP.env = function()
    sh("mkdir -p " .. E .. "/dir && cd " .. E .. " && printf old > file && ln -s file link"
      .. " && ln -s nowhere dangling && mkfifo fifo && ln -s dir dirlink")
  end
  local up = function(old) return (old or "") .. "+" end
  env("lock: in a missing directory (created, by design)", { ok = true },
    function() return pk(A.lock(E .. "/missing/sub/l")) end,
    function() if not A.stat(E .. "/missing/sub") then return "no directory made" end end)
  env("lock: a directory (flock(1) allows it)", { ok = true },
    function() return pk(A.lock(E .. "/dir")) end)
  env("lock: a symlink", { fail = "ELOOP", path = "link" }, function() return pk(A.lock(E .. "/link")) end)
  env("lock: a FIFO (must not block)", { ok = true }, function() return pk(A.lock(E .. "/fifo")) end)
  env("lock: /proc/self/status (read-only: still a lock)", { ok = true },
    function() return pk(A.lock("/proc/self/status")) end)
  env("lock: a new file under /proc", { fail = true },
    function() return pk(A.lock("/proc/self/atomrun-nope")) end)
  env("open: a symlink", { fail = "ELOOP" }, function() return pk(A.open(E .. "/link")) end)
  env("open: create = false, missing file", { fail = "ENOENT" },
    function() return pk(A.open(E .. "/nope", { create = false })) end)
  env("range: a FIFO (an inode like any other; must not block)", { ok = true }, function()
    local f = assert(A.open(E .. "/fifo"))
    return pk(f:lock(0, 1))
  end)
  env("create: in a missing directory (created, as lock does)", { ok = true },
    function() return pk(A.create(E .. "/missing2/x", "data")) end)
  env("create: over a directory", { fail = "exists" }, function() return pk(A.create(E .. "/dir", "x")) end)
  env("create: over a symlink", { fail = "exists" }, function() return pk(A.create(E .. "/link", "x")) end,
    intact(E .. "/file", "old"))
  env("create: over a dangling symlink (never through it)", { fail = "exists" },
    function() return pk(A.create(E .. "/dangling", "x")) end,
    function() if A.stat(E .. "/nowhere") then return "created the link's target" end end)
  env("create: empty, over a dangling symlink", { fail = "exists" },
    function() return pk(A.create(E .. "/dangling")) end,
    function() if A.stat(E .. "/nowhere") then return "created the link's target" end end)
  env("create: over a FIFO (must not block)", { fail = "exists" },
    function() return pk(A.create(E .. "/fifo", "x")) end)
  env("create: under /proc", { fail = true }, function() return pk(A.create("/proc/self/nope", "x")) end)
  env("replace: in a missing directory (created, as lock does)", { ok = true },
    function() return pk(A.replace(E .. "/missing3/x", "new")) end)
  env("replace: a directory", { fail = "EISDIR" }, function() return pk(A.replace(E .. "/dir", "new")) end,
    function() if (A.stat(E .. "/dir") or {}).type ~= "directory" then return "dir is gone" end end)
  env("replace: /proc/self/status", { fail = true },
    function() return pk(A.replace("/proc/self/status", "new")) end)
  env("read: a missing directory", { fail = "ENOENT" }, function() return pk(A.read(E .. "/missing4/x")) end)
  env("read: a directory", { fail = "EISDIR" }, function() return pk(A.read(E .. "/dir")) end)
  env("read: a dangling symlink", { fail = "ENOENT" }, function() return pk(A.read(E .. "/dangling")) end)
  env("read: a FIFO (must not block)", { fail = "EINVAL" }, function() return pk(A.read(E .. "/fifo")) end)
  env("read: /proc/self/status", { ok = true }, function() return pk(A.read("/proc/self/status")) end)
  env("read: /proc/self/mem", { fail = true }, function() return pk(A.read("/proc/self/mem")) end)
  env("read: /dev/null (not a regular file)", { fail = "EINVAL" }, function() return pk(A.read("/dev/null")) end)
  -- update of what is not a regular file: refused before its sidecar
  -- (path .. ".lock") is made -- never /dev/null.lock (issue 23, point 13)
  local function no_sidecar(path)
    return function()
      if content(path .. ".lock") then
        os.remove(path .. ".lock")             -- never leave it, even failing
        return "the sidecar " .. path .. ".lock was created"
      end
    end
  end
  env("update: a directory", { fail = "EISDIR" }, function() return pk(A.update(E .. "/dir", up)) end,
    no_sidecar(E .. "/dir"))
  env("update: a FIFO (must not block)", { fail = "EINVAL" },
    function() return pk(A.update(E .. "/fifo", up)) end, no_sidecar(E .. "/fifo"))
  env("update: /dev/null, a device", { fail = "EINVAL" },
    function() return pk(A.update("/dev/null", up)) end, no_sidecar("/dev/null"))
  env("update: through a symlink to a FIFO", { fail = "EINVAL" },
    function()
      os.execute("ln -s fifo " .. E .. "/upfifo")
      return pk(A.update(E .. "/upfifo", up))
    end, no_sidecar(E .. "/fifo"))
  env("update: under /proc", { fail = true }, function() return pk(A.update("/proc/self/status", up)) end)
  env("status: read a FIFO (must not block)", { fail = "EINVAL" },
    function() return pk(A.status(E .. "/fifo"):read()) end)
  env("status: write over a directory", { fail = "EISDIR" },
    function() return pk(A.status(E .. "/dir"):write({ x = 1 })) end)
  env("lock_all: one of them a symlink", { fail = "ELOOP" },
    function() return pk(A.lock_all({ E .. "/file", E .. "/link" })) end,
    function()
      local lk = A.lock(E .. "/file", { wait = false })
      if not lk then return "lock_all kept a lock after failing" end
      lk:unlock()
    end)
  env("semaphore: a directory", { fail = true },
    function() return pk(A.semaphore(E .. "/dir", 2):acquire({ wait = false })) end)
  env("once: dir is a file", { fail = "ENOTDIR" },
    function() return pk(A.once("job", { dir = E .. "/file" })) end)
  env("once: dir is a symlink to a directory (refused)", { fail = "ENOTDIR" },
    function() return pk(A.once("job", { dir = E .. "/dirlink" })) end)
  env("mkdir: over a file", { fail = "ENOTDIR" }, function() return pk(A.mkdir(E .. "/file")) end)
  env("mkdir: over a FIFO", { fail = "ENOTDIR" }, function() return pk(A.mkdir(E .. "/fifo")) end)
  env("mkdir: an existing directory", { ok = true }, function() return pk(A.mkdir(E .. "/dir")) end)
  env("mkdir: below a file", { fail = "ENOTDIR" }, function() return pk(A.mkdir(E .. "/file/sub")) end)
  env("probe: a file", { fail = "ENOTDIR" }, function() return pk(A.probe(E .. "/file")) end)
  env("probe: a FIFO (must not block)", { fail = "ENOTDIR" }, function() return pk(A.probe(E .. "/fifo")) end)
  env("probe: /proc/self (a report; scratch probes not run)", { ok = true },
    function() return pk(A.probe("/proc/self")) end,
    function(r) if not (r and r[1] and r[1].fstype == "proc" and r[1].scratch) then
      return "expected fstype proc and scratch set" end end)
  env("stat: a dangling symlink, followed", { fail = "ENOENT" },
    function() return pk(A.stat(E .. "/dangling")) end)
  env("run: a file that is not executable", { fail = "EACCES" },
    function() return pk(A.run({ E .. "/file" })) end)
  env("run: a directory", { fail = "EACCES" }, function() return pk(A.run({ E .. "/dir" })) end)
  env("run: a FIFO (must not block)", { fail = "EACCES" }, function() return pk(A.run({ E .. "/fifo" })) end)
  env("run: cwd is a file", { fail = "ENOTDIR" },
    function() return pk(A.run({ "true" }, { cwd = E .. "/file" })) end)
  env("exec: a file that is not executable", { fail = "EACCES" },
    function() return pk(A.exec({ E .. "/file" })) end)
  -- replace's documented behaviour with a symlink at the path: the link
  -- itself is replaced (follow = false) or its target (follow = true).
  env("replace: a symlink is replaced by the file, its target untouched", { ok = true },
    function() return pk(A.replace(E .. "/link", "new")) end,
    function()
      if (A.stat(E .. "/link", false) or {}).type ~= "file" then return "link not replaced" end
      return intact(E .. "/file", "old")()
    end)
  env("replace: a FIFO is refused, never opened, left a FIFO", { fail = "EINVAL" },
    function() return pk(A.replace(E .. "/fifo", "new")) end,
    function() if (A.stat(E .. "/fifo", false) or {}).type ~= "fifo" then
      return "the FIFO is gone" end end, "env-last")
  env("replace: through a link to a FIFO (follow) is refused", { fail = "EINVAL" },
    function()
      os.execute("ln -s fifo " .. E .. "/tofifo")
      return pk(A.replace(E .. "/tofifo", "new", { follow = true }))
    end,
    function() if (A.stat(E .. "/fifo", false) or {}).type ~= "fifo" then
      return "the FIFO is gone" end end, "env-last")
  env("status: write over a FIFO is refused", { fail = "EINVAL" },
    function() return pk(A.status(E .. "/fifo"):write({ x = 1 })) end, nil, "env-last")

  ----------------------------------------- environment: no permission
  -- group "nobody": set up as root, run as uid 65534.
  local N = D .. "/n"
  SETUP.nobody = function()
    sh("mkdir -p " .. N .. "/rodir " .. N .. "/closed && cd " .. N
      .. " && printf old > secret && chmod 600 secret && printf old > pub && chmod 644 pub"
      .. " && printf old > rodir/f && chmod 644 rodir/f && printf old > closed/f"
      .. " && chmod 755 . rodir && chmod 700 closed")
  end
  local function nb(id, expect, call, check) env(id, expect, call, check, "nobody") end
  nb("lock: a root file with mode 600", { fail = "EACCES" }, function() return pk(A.lock(N .. "/secret")) end)
  nb("lock: a root file with mode 644 (flock needs only read access)", { ok = true },
    function() return pk(A.lock(N .. "/pub")) end)
  nb("lock: a new file in a root directory", { fail = "EACCES" },
    function() return pk(A.lock(N .. "/rodir/new")) end)
  nb("lock: below a closed directory", { fail = "EACCES" },
    function() return pk(A.lock(N .. "/closed/f")) end)
  nb("range: exclusive on a read-only file", { fail = "EBADF" }, function()
    local f = assert(A.open(N .. "/pub"))
    return pk(f:lock(0, 1))
  end)
  nb("range: shared on a read-only file", { ok = true }, function()
    local f = assert(A.open(N .. "/pub"))
    return pk(f:lock(0, 1, { mode = "shared" }))
  end)
  nb("read: mode 600", { fail = "EACCES" }, function() return pk(A.read(N .. "/secret")) end)
  nb("read: below a closed directory", { fail = "EACCES" },
    function() return pk(A.read(N .. "/closed/f")) end)
  nb("create: in a root directory", { fail = "EACCES" },
    function() return pk(A.create(N .. "/rodir/new", "x")) end, no_temp(N .. "/rodir"))
  nb("create: empty, in a root directory", { fail = "EACCES" },
    function() return pk(A.create(N .. "/rodir/new")) end)
  nb("replace: in a root directory (old contents intact)", { fail = "EACCES" },
    function() return pk(A.replace(N .. "/rodir/f", "new")) end,
    both(intact(N .. "/rodir/f", "old"), no_temp(N .. "/rodir")))
  nb("update: in a root directory", { fail = "EACCES" },
    function() return pk(A.update(N .. "/rodir/f", up)) end, intact(N .. "/rodir/f", "old"))
  nb("status: write in a root directory", { fail = "EACCES" },
    function() return pk(A.status(N .. "/rodir/s"):write({ x = 1 })) end)
  nb("mkdir: in a root directory", { fail = "EACCES" }, function() return pk(A.mkdir(N .. "/rodir/sub")) end)
  nb("probe: a root directory (a report; scratch probes not run)", { ok = true },
    function() return pk(A.probe(N .. "/rodir")) end,
    function(r) if not (r and r[1] and r[1].scratch == "EACCES") then
      return "expected scratch = EACCES" end end)
  nb("stat: below a closed directory", { fail = "EACCES" },
    function() return pk(A.stat(N .. "/closed/f")) end)
  nb("once: dir inside a root directory", { fail = "EACCES" },
    function() return pk(A.once("job", { dir = N .. "/rodir/once" })) end)
  nb("semaphore: a read-only file", { fail = "EBADF" },
    function() return pk(A.semaphore(N .. "/pub", 2):acquire({ wait = false })) end)
  nb("run: a file without execute permission", { fail = "EACCES" },
    function() return pk(A.run({ N .. "/pub" })) end)
  nb("run: cwd is a closed directory", { fail = "EACCES" },
    function() return pk(A.run({ "true" }, { cwd = N .. "/closed" })) end)

  ----------------------------------------- environment: read-only fs
  -- group "rofs": D/ro is a tmpfs, populated, then remounted read-only.
  local R = D .. "/ro"
  SETUP.rofs = function()
    sh("cd " .. R .. " && printf old > f && printf old > g && : > f.lock && mkdir d")
  end
  local function ro(id, expect, call, check) env(id, expect, call, check, "rofs") end
  ro("lock: an existing file (read-only open, still a lock)", { ok = true },
    function() return pk(A.lock(R .. "/f")) end)
  ro("lock: a new file", { fail = "EROFS" }, function() return pk(A.lock(R .. "/new")) end)
  ro("range: exclusive needs write access", { fail = "EBADF" }, function()
    local f = assert(A.open(R .. "/f"))
    return pk(f:lock(0, 1))
  end)
  ro("create", { fail = "EROFS" }, function() return pk(A.create(R .. "/new", "x")) end)
  ro("create: empty", { fail = "EROFS" }, function() return pk(A.create(R .. "/new")) end)
  ro("replace (old contents intact)", { fail = "EROFS" },
    function() return pk(A.replace(R .. "/f", "new")) end, intact(R .. "/f", "old"))
  ro("update: sidecar exists (lock works, replace refused)", { fail = "EROFS" },
    function() return pk(A.update(R .. "/f", up)) end, intact(R .. "/f", "old"))
  ro("update: no sidecar", { fail = "EROFS" },
    function() return pk(A.update(R .. "/g", up)) end, intact(R .. "/g", "old"))
  ro("read", { ok = true }, function() return pk(A.read(R .. "/f")) end)
  ro("status: write", { fail = "EROFS" }, function() return pk(A.status(R .. "/s"):write({ x = 1 })) end)
  ro("mkdir", { fail = "EROFS" }, function() return pk(A.mkdir(R .. "/sub")) end)
  ro("mkdir: existing directory", { ok = true }, function() return pk(A.mkdir(R .. "/d")) end)
  ro("probe (a report; scratch probes not run)", { ok = true }, function() return pk(A.probe(R)) end,
    function(r) if not (r and r[1] and r[1].fstype == "tmpfs" and r[1].scratch == "EROFS") then
      return "expected fstype tmpfs and scratch = EROFS" end end)
  ro("once: dir on it", { fail = "EROFS" }, function() return pk(A.once("job", { dir = R .. "/once" })) end)

  ----------------------------------------- environment: full fs
  -- group "fullfs": D/full is a 1 MiB tmpfs.
  local F = D .. "/full"
  local BIG = string.rep("0123456789abcdef", 2 * 65536)        -- 2 MiB
  SETUP.fullfs = function() sh("cd " .. F .. " && printf old > f && printf old > g") end
  local function ff(id, expect, call, check) env(id, expect, call, check, "fullfs") end
  ff("replace: 2 MiB into 1 MiB (old intact, no temp)", { fail = "ENOSPC" },
    function() return pk(A.replace(F .. "/f", BIG)) end, both(intact(F .. "/f", "old"), no_temp(F)))
  ff("replace: durable = false", { fail = "ENOSPC" },
    function() return pk(A.replace(F .. "/f", BIG, { durable = false })) end,
    both(intact(F .. "/f", "old"), no_temp(F)))
  ff("create: 2 MiB into 1 MiB (nothing appears)", { fail = "ENOSPC" },
    function() return pk(A.create(F .. "/new", BIG)) end,
    function()
      if A.stat(F .. "/new") then return "a partial file appeared" end
      return no_temp(F)()
    end)
  ff("update: 2 MiB into 1 MiB", { fail = "ENOSPC" },
    function() return pk(A.update(F .. "/g", function() return BIG end)) end,
    both(intact(F .. "/g", "old"), no_temp(F)))
  ff("status: a table too big for the disk", { fail = "ENOSPC" },
    function() return pk(A.status(F .. "/s"):write({ blob = BIG })) end, no_temp(F))
  ff("replace: a small payload still fits afterwards", { ok = true },
    function() return pk(A.replace(F .. "/f", "new")) end, intact(F .. "/f", "new"))


  ----------------------------------------- etcd names (issue 16)
  -- group "etcd": create/replace/read/update/status on etcd URLs.  The
  -- child gets a live one-member cluster's endpoint in ATOMRUN_BADINPUT_ETCD
  -- (the spec starts it); rows that must fail before any request go to
  -- 127.0.0.1:1, where nothing listens.  Extra expectations:
  --   msg = "text"   the message (of an error or a failure) contains it
  --   within = s     the call returns within s seconds (no retrying a
  --                  refusal that no retry can change)
  local EP = os.getenv("ATOMRUN_BADINPUT_ETCD") or "127.0.0.1:1"
  local U = "etcd://" .. EP .. "/badinput/"
  -- The client of an etcd URL lives on (its keep-alive connection, for the
  -- next call): opened here, before the descriptors are counted.
  SETUP.etcd = function()
    assert(A.replace(U .. "warm", "1"))
    assert(A.update(U .. "warm", up))
  end
  local BIGV = string.rep("v", 1300 * 1024)      -- base64 in JSON: over 1.5 MiB
  local function ek(id, expect, call) add({ id = "etcd " .. id, group = "etcd", expect = expect, call = call }) end
  local KCALLS = {     -- each of the five calls on url with opts
    { "create", function(url, o) return pk(A.create(url, "v", o)) end },
    { "replace", function(url, o) return pk(A.replace(url, "v", o)) end },
    { "read", function(url, o) return pk(A.read(url, o)) end },
    { "update", function(url, o) return pk(A.update(url, up, o)) end },
    { "status", function(url, o) return pk(A.status(url):write({ x = 1 }, o)) end },
  }
  for _, kc in ipairs(KCALLS) do
    local fname, call = kc[1], kc[2]
    local st = fname == "status"      -- status(url) refuses a URL without a key itself
    ek(fname .. ": missing key name (etcd://127.0.0.1:1/)",
      st and { err = 1, fn = { "status" }, msg = "key name" } or { fail = "EINVAL", msg = "key name" },
      function() return call("etcd://127.0.0.1:1/") end)
    ek(fname .. ": no /NAME at all (etcd://127.0.0.1:1)",
      st and { err = 1, fn = { "status" }, msg = "no /NAME" } or { fail = "EINVAL", msg = "no /NAME" },
      function() return call("etcd://127.0.0.1:1") end)
    for _, bad in ipairs({ { "port 99999", "127.0.0.1:99999" }, { "port not a number", "127.0.0.1:x" },
        { "empty host", ":2379" } }) do
      local o = fname == "update" and { timeout = 1 } or nil
      ek(fname .. ": malformed URL, " .. bad[1],
        { fail = "EINVAL", msg = 'bad etcd endpoint "' .. bad[2] .. '"', within = 0.5 },
        function() return call("etcd://" .. bad[2] .. "/k", o) end)
    end
    ek(fname .. ": no endpoints and no ATOMRUN_ETCD (etcd:///k)",
      st and { err = 1, fn = { "status" }, msg = "no endpoints" } or { fail = "EINVAL", msg = "no endpoints" },
      function() return call("etcd:///k") end)
  end
  -- values of the wrong type
  for _, v in ipairs({ { "a number", 5 }, { "a table", {} }, { "true", true } }) do
    ek("create: value " .. v[1], { err = 2, fn = { "create" }, msg = "an etcd value" },
      function() return pk(A.create(U .. "v", v[2])) end)
    ek("replace: value " .. v[1], { err = 2, fn = { "replace" }, msg = "an etcd value" },
      function() return pk(A.replace(U .. "v", v[2])) end)
  end
  ek("replace: value nil", { err = 2, fn = { "replace" } }, function() return pk(A.replace(U .. "v", nil)) end)
  ek("update: fn returns a number", { err_match = "must return a string" },
    function() return pk(A.update(U .. "u", function() return 5 end)) end)
  ek("update: fn returns a table", { err_match = "must return a string" },
    function() return pk(A.update(U .. "u", function() return {} end)) end)
  ek("status: write a number", { err = 1, fn = { "write" } },
    function() return pk(A.status(U .. "s"):write(5)) end)
  ek("status: write a function inside", { err = 1, fn = { "write" }, msg = "JSON" },
    function() return pk(A.status(U .. "s"):write({ f = print })) end)
  -- values over the request limit: refused before sending
  local BIGCALLS = {
    { "create", function(v, o) return pk(A.create(U .. "big-c", v, o)) end },
    { "replace", function(v, o) return pk(A.replace(U .. "big-r", v, o)) end },
    { "update", function(v, o) return pk(A.update(U .. "big-u", function() return v end, o)) end },
    { "status", function(v, o) return pk(A.status(U .. "big-s"):write({ blob = v }, o)) end },
  }
  for _, bc in ipairs(BIGCALLS) do
    ek(bc[1] .. ": a value of 1.3 MiB (over the default 1.5 MiB in base64)",
      { fail = "E2BIG", msg = "over the etcd request limit of 1572864 bytes" },
      function() return bc[2](BIGV) end)
    ek(bc[1] .. ": 3000 bytes with max_request_bytes = 2048",
      { fail = "E2BIG", msg = "over the etcd request limit of 2048 bytes" },
      function() return bc[2](string.rep("v", 3000), { max_request_bytes = 2048 }) end)
  end
  -- bad options of the writes
  local WCALLS = {
    { "create", 3, function(o) return pk(A.create(U .. "o", "v", o)) end },
    { "replace", 3, function(o) return pk(A.replace(U .. "o", "v", o)) end },
    { "update", 3, function(o) return pk(A.update(U .. "o", up, o)) end },
    { "write", 2, function(o) return pk(A.status(U .. "o"):write({ x = 1 }, o)) end },
  }
  for _, wc in ipairs(WCALLS) do
    local fname, n, call = wc[1], wc[2], wc[3]
    for _, m in ipairs({ { "0", 0 }, { "a word", "x" }, { "1.5", 1.5 } }) do
      ek(fname .. ": max_request_bytes = " .. m[1],
        { err = n, fn = { fname }, msg = fname == "update" and "must be an integer >= 1024"
          or "max_request_bytes" },
        function() return call({ max_request_bytes = m[2] }) end)
    end
    for _, t in ipairs({ { "0", 0 }, { "-1", -1 }, { "1.5", 1.5 }, { "a word", "x" } }) do
      ek(fname .. ": ttl = " .. t[1], { err = n, fn = { fname }, msg = "ttl" },
        function() return call({ ttl = t[2] }) end)
    end
    ek(fname .. ": fence = a file lock", { err = n, fn = { fname }, msg = "a lock on an etcd name" },
      function()
        local lk <close> = assert(A.lock(fresh("fence")))
        return call({ fence = lk })
      end)
    ek(fname .. ": fence = a string", { err = n, fn = { fname }, msg = "a lock on an etcd name" },
      function() return call({ fence = "x" }) end)
    ek(fname .. ": unknown option", { err = n, fn = { fname }, msg = "bogus" },
      function() return call({ bogus = 1 }) end)
    ek(fname .. ": options a string", { err = n, fn = { fname } }, function() return call("x") end)
  end
  -- update's own arguments
  for _, v in ipairs({ { "nil", nil }, { "a string", "x" }, { "a number", 5 }, { "a table", {} } }) do
    ek("update: fn " .. v[1], { err = 2, fn = { "update" } }, function() return pk(A.update(U .. "u", v[2])) end)
  end
  for _, v in ipairs({ { "a number", 5 }, { "true", true }, { "misspelt option", { timout = 5 } },
      { "positional entry", { 1 } }, { "timeout = -1", { timeout = -1 } }, { "timeout = NaN", { timeout = NAN } },
      { "wait = a string", { wait = "yes" } } }) do
    ek("update: opts " .. v[1], { err = 3, fn = { "update" } }, function() return pk(A.update(U .. "u", up, v[2])) end)
  end
  -- read's options and a missing key
  ek("read: unknown option", { err = 2, fn = { "read" }, msg = "bogus" },
    function() return pk(A.read(U .. "r", { bogus = 1 })) end)
  ek("read: ttl (a write option)", { err = 2, fn = { "read" }, msg = "ttl" },
    function() return pk(A.read(U .. "r", { ttl = 1 })) end)
  ek("read: options a string", { err = 2, fn = { "read" } }, function() return pk(A.read(U .. "r", "x")) end)
  ek("read: a missing key", { fail = "ENOENT", msg = "no such key" },
    function() return pk(A.read(U .. "no/such/key")) end)
  ek("status: read of a missing key", { fail = "ENOENT", msg = "no such key" },
    function() return pk(A.status(U .. "no/such/status"):read()) end)
  ek("status: read of a value that is not JSON", { fail = "EINVAL", msg = "not a JSON status record" },
    function()
      assert(A.replace(U .. "notjson", "x"))
      return pk(A.status(U .. "notjson"):read())
    end)
  ek("status: options a string", { err = 2, fn = { "status" } },
    function() return pk(A.status(U .. "s", "x")) end)
  ek("status: unknown option", { err = 2, fn = { "status" }, msg = "bogus" },
    function() return pk(A.status(U .. "s", { bogus = 1 })) end)
  ek("update: on a missing key, fn gets nil (a legal start)", { ok = true },
    function() return pk(A.update(U .. "fresh", function(old) return old == nil and "1" or "?" end)) end)

  return cases, SETUP
end

-------------------------------------------------------------- the child
local function esc(s)
  s = tostring(s or "")
  if #s > 400 then s = s:sub(1, 200) .. "..." .. s:sub(-150) end
  return (s:gsub("[%c\\]", function(c) return string.format("\\%03d", c:byte()) end))
end

-- The count is taken by ls(1) through io.popen, and popen(3) closes the
-- pipe's write end in this process only after its fork returns: on a
-- loaded machine ls can list that end too, one descriptor too many that
-- was never ours.  The smallest of three counts is the true one.
local function fd_count()
  collectgarbage(); collectgarbage()
  local least
  for _ = 1, 3 do
    local p = io.popen("ls /proc/" .. require("atomrun").pid() .. "/fd")
    local n = 0
    for _ in p:lines() do n = n + 1 end
    p:close()
    least = math.min(least or n, n)
  end
  return least
end

if CHILD then
  local mode, group, dir, only = ...
  if mode ~= "--child" and mode ~= "--setup" then
    io.stderr:write("usage: badinput_spec.lua --child|--setup GROUP DIR [ID]\n")
    os.exit(64)
  end
  local A = require "atomrun"
  local cases, SETUP = build(A, dir)
  if mode == "--setup" then
    SETUP[group]()
    return
  end
  if SETUP[group] and group ~= "nobody" and group ~= "rofs" and group ~= "fullfs" then
    SETUP[group]()
  end
  local before = fd_count()
  for _, c in ipairs(cases) do
    local mine = c.group == group or (group == "env" and c.group == "env-last")
    if group == "block" then mine = c.group == "block" and c.id == only end
    if mine then
      io.write("BEGIN\t", c.id, "\n")
      io.stdout:flush()
      local t0 = A.now()
      local res = table.pack(pcall(c.call))
      local took = A.now() - t0
      local kind, code, msg
      if not res[1] then
        kind, code, msg = "error", "", tostring(res[2])
      else
        local r = res[2]
        if type(r) ~= "table" then r = { n = 0 } end
        if r[1] == nil and type(r[2]) == "string" then
          kind, code, msg = "fail", tostring(r[3]), r[2]
        else
          kind, code, msg = "ok", "", tostring(r[1])
        end
      end
      local results = res[1] and res[2] or nil    -- what a check may look at
      res = nil
      local problem = ""
      if c.check then
        local okc, e = pcall(c.check, results)
        if not okc or e then problem = tostring(e) end
      end
      if c.expect.within and took > c.expect.within and problem == "" then
        problem = string.format("took %.1f s (more than %g)", took, c.expect.within)
      end
      io.write("END\t", c.id, "\t", kind, "\t", esc(code), "\t", esc(msg), "\t", esc(problem), "\n")
      io.stdout:flush()
    end
  end
  io.write("FDS\t", before, "\t", fd_count(), "\n")
  return
end

---------------------------------------------------------------- the spec
local H = require "spec.helper"

local ROOT = H.root
local BUILD = H.build:sub(1, 1) == "/" and H.build or ROOT .. "/" .. H.build
local ATOMRUN = BUILD .. "/atomrun"
local SELF = ROOT .. "/spec/badinput_spec.lua"

-- The child runs in the interpreter of this pass: stock lua5.4 with the
-- module in the lua5.4 pass, the atomrun binary (ASan build in that pass)
-- otherwise.
local function interp()
  if H.pass == "lua5.4" then
    return "env LUA_CPATH=" .. H.q(BUILD .. "/lua/?.so;;") .. " lua5.4"
  end
  return H.q(ATOMRUN)
end

local ar = H.ar
local cases_all = build(ar, "/nonexistent")
local by_id = {}
for _, c in ipairs(cases_all) do by_id[c.id] = c end
local tried = { total = 0 }

local function unesc(s) return (s:gsub("\\(%d%d%d)", function(d) return string.char(tonumber(d)) end)) end

local function parse(out)
  local got, begun = {}, {}
  local fds
  for line in out:gmatch("[^\n]+") do
    local f = {}
    for field in (line .. "\t"):gmatch("([^\t]*)\t") do f[#f + 1] = field end
    if f[1] == "BEGIN" then begun[#begun + 1] = f[2]
    elseif f[1] == "END" then
      got[f[2]] = { kind = f[3], code = unesc(f[4] or ""), msg = unesc(f[5] or ""),
        problem = unesc(f[6] or "") }
    elseif f[1] == "FDS" then fds = { tonumber(f[2]), tonumber(f[3]) } end
  end
  return got, begun, fds
end

local function name_ok(msg, n, names)
  for _, fn in ipairs(names) do
    for _, pre in ipairs({ "", "atomrun." }) do
      if msg:find("bad argument #" .. n .. " to '" .. pre .. fn .. "'", 1, true) then return true end
    end
  end
  return false
end

-- Compare one case's outcome with its expectation; nil when right.
local function judge(c, r)
  local e = c.expect
  if not r then return "no result (the child stopped here)" end
  if r.problem ~= "" then return "check failed: " .. r.problem end
  local seen = r.kind .. (r.kind == "fail" and (" " .. r.code) or "") .. ": " .. r.msg
  if e.err or e.err_match then
    if r.kind ~= "error" then return "expected a Lua error, got " .. seen end
    if e.err_match then
      if not r.msg:find(e.err_match, 1, true) then return "error without '" .. e.err_match .. "': " .. r.msg end
    elseif not name_ok(r.msg, e.err, e.fn) then
      return "error does not name argument #" .. e.err .. " of " .. table.concat(e.fn, "/")
        .. ": " .. r.msg
    end
    if r.msg:find("lua/atomrun/[%w_/]+%.lua:%d+:") then
      return "error raised inside the library, not at the caller: " .. r.msg
    end
    if e.msg and not r.msg:find(e.msg, 1, true) then return "error without '" .. e.msg .. "': " .. r.msg end
    return nil
  end
  if e.fail then
    if r.kind ~= "fail" then return "expected nil, msg, code, got " .. seen end
    if e.fail ~= true and r.code ~= e.fail then return "expected code " .. e.fail .. ", got " .. seen end
    if r.code == "" or r.code == "nil" or r.msg == "" then return "fail without a code or message: " .. seen end
    if r.code == "EUNKNOWN" then return "an unnamed error code: " .. seen end
    if e.msg and not r.msg:find(e.msg, 1, true) then return "message without '" .. e.msg .. "': " .. seen end
    return nil
  end
  if e.ok then
    if r.kind ~= "ok" then return "expected success, got " .. seen end
    return nil
  end
  return "case has no expectation"
end

local function check_group(group, out, status)
  local got, begun, fds = parse(out)
  local problems = {}
  local n = 0
  for _, c in ipairs(cases_all) do
    if c.group == group or (group == "env" and c.group == "env-last") then
      n = n + 1
      local why = judge(c, got[c.id])
      if why then problems[#problems + 1] = c.id .. ": " .. why end
    end
  end
  if status ~= 0 then
    local last = begun[#begun]
    problems[#problems + 1] = string.format("the child exited with status %d%s", status,
      last and not got[last] and (" during case '" .. last .. "' (crash or hang)") or "")
  end
  if fds and fds[2] > fds[1] then
    problems[#problems + 1] = string.format("descriptors leaked: %d open before, %d after",
      fds[1], fds[2])
  elseif not fds then
    problems[#problems + 1] = "the child did not report its descriptors (it did not finish)"
  end
  tried[group] = n
  tried.total = tried.total + n
  if #problems > 0 then
    error(#problems .. " of " .. n .. " '" .. group .. "' cases went wrong:\n  "
      .. table.concat(problems, "\n  "), 0)
  end
end

local LIMIT = H.asan and 300 or 120

local function run_child(group, dir, prefix)
  return H.sh("cd " .. H.q(dir) .. " && " .. (prefix or "") .. "timeout -s KILL " .. LIMIT .. " "
    .. interp() .. " " .. H.q(SELF) .. " --child " .. group .. " " .. H.q(dir))
end

-- Can this machine give us a private mount namespace with a tmpfs?
local function can_mount(dir)
  local st, _, err = H.sh("unshare -m sh -c " .. H.q("mount -t tmpfs -o size=64k tmpfs "
    .. H.q(dir) .. " && mount -o remount,ro " .. H.q(dir)))
  if st ~= 0 then return false, "unshare -m / mount -t tmpfs not permitted here: " .. err:gsub("\n", " ") end
  return true
end

describe("bad input", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)
  teardown(function()
    local parts = {}
    for _, g in ipairs({ "matrix", "env", "nobody", "rofs", "fullfs", "block", "etcd" }) do
      if tried[g] then parts[#parts + 1] = g .. " " .. tried[g] end
    end
    print(string.format("\nbadinput [%s]: %d bad inputs tried (%s)", H.pass, tried.total,
      table.concat(parts, ", ")))
  end)

  it("every public function x nil, wrong types, '', NUL, > PATH_MAX, bad numbers, bad options",
    function()
      local st, out, err = run_child("matrix", dir)
      if st ~= 0 then io.stderr:write(err) end
      check_group("matrix", out, st)
      -- no temp file left, nothing made by a relative path (update("") once
      -- made "./.lock"), nothing made at a NUL-truncated path
      local _, hidden = H.sh("ls -A " .. H.q(dir) .. " | grep '^[.]' || true")
      assert.equal("", hidden)
      assert.is_false(H.exists(dir .. "/nul"))
      -- a path longer than PATH_MAX fails before any of its directories is
      -- made (mkdir once made two thousand nested "d/" before giving up)
      assert.is_false(H.exists(dir .. "/d"))
    end)

  it("paths: a missing directory, a directory, symlinks, a FIFO, /proc, /dev/null", function()
    local st, out, err = run_child("env", dir)
    if st ~= 0 then io.stderr:write(err) end
    check_group("env", out, st)
  end)

  it("paths: files and directories without permission (as uid 65534)", function()
    if ar.uid() ~= 0 then
      print("\nSKIPPED: the uid 65534 cases need root to switch users")
      pending("not root")
      return
    end
    local probe = "setpriv --reuid=65534 --regid=65534 --clear-groups"
    os.execute("chmod 755 " .. H.q(dir))
    local copy = dir .. "/badinput_child.lua"
    H.write(copy, H.slurp(SELF))
    os.execute("chmod 644 " .. H.q(copy))
    local target = H.pass == "lua5.4" and BUILD .. "/lua/atomrun/core.so" or ATOMRUN
    local ok = H.sh(probe .. " test -r " .. H.q(target) .. " -a -r " .. H.q(copy)) == 0
    if not ok then
      print("\nSKIPPED: uid 65534 cannot read " .. target .. " (a private directory above it?)")
      pending("uid 65534 cannot reach the build directory")
      return
    end
    local st, _, e1 = H.sh(interp() .. " " .. H.q(SELF) .. " --setup nobody " .. H.q(dir))
    assert.equal(0, st, e1)
    local st2, out, err = H.sh("cd " .. H.q(dir) .. " && timeout -s KILL " .. LIMIT .. " " .. probe
      .. " " .. interp() .. " " .. H.q(copy) .. " --child nobody " .. H.q(dir))
    if st2 ~= 0 then io.stderr:write(err) end
    check_group("nobody", out, st2)
  end)

  local function in_namespace(group, sub, size, ro)
    local m = dir .. "/" .. sub
    os.execute("mkdir -p " .. H.q(m))
    local ok, why = can_mount(m)
    if not ok then
      print("\nSKIPPED (" .. group .. "): " .. why)
      pending(why)
      return
    end
    local script = "set -e; mount -t tmpfs -o size=" .. size .. " tmpfs " .. H.q(m)
      .. "; " .. interp() .. " " .. H.q(SELF) .. " --setup " .. group .. " " .. H.q(dir)
      .. (ro and ("; mount -o remount,ro " .. H.q(m)) or "")
      .. "; cd " .. H.q(dir) .. "; " .. interp() .. " " .. H.q(SELF) .. " --child " .. group
      .. " " .. H.q(dir)
    local st, out, err = H.sh("timeout -s KILL " .. LIMIT .. " unshare -m sh -c " .. H.q(script))
    if st ~= 0 then io.stderr:write(err) end
    check_group(group, out, st)
  end

  it("paths: a read-only filesystem (tmpfs remounted ro in a private mount namespace)", function()
    in_namespace("rofs", "ro", "1m", true)
  end)

  it("paths: a full filesystem (1 MiB tmpfs): ENOSPC, old contents intact, no temp file", function()
    in_namespace("fullfs", "full", "1m", false)
  end)

  it("values that mean 'forever' block (and are killed), and only those", function()
    local ids = {}
    for _, c in ipairs(cases_all) do
      if c.group == "block" then ids[#ids + 1] = c.id end
    end
    -- all at once, each in its own child, killed after a while
    local cmds = {}
    for i, id in ipairs(ids) do
      cmds[#cmds + 1] = "( timeout -s KILL 3 " .. interp() .. " " .. H.q(SELF) .. " --child block "
        .. H.q(dir) .. " " .. H.q(id) .. " > " .. H.q(dir .. "/block" .. i) .. " 2>&1;"
        .. " echo \"RC $?\" >> " .. H.q(dir .. "/block" .. i) .. " ) &"
    end
    H.sh("cd " .. H.q(dir) .. " && " .. table.concat(cmds, " ") .. " wait")
    local problems = {}
    for i, id in ipairs(ids) do
      local out = H.slurp(dir .. "/block" .. i)
      local got, begun = parse(out)
      local rc = tonumber(out:match("RC (%d+)"))
      if got[id] then
        problems[#problems + 1] = id .. ": returned instead of blocking: " .. got[id].kind .. " "
          .. got[id].msg
      elseif begun[1] ~= id or (by_id[id].expect.armed and not out:find("ARMED\n", 1, true)) then
        problems[#problems + 1] = id .. ": never reached its wait within 3 s (rc " .. tostring(rc)
          .. "): " .. out
      elseif rc ~= 137 then
        problems[#problems + 1] = id .. ": ended with status " .. tostring(rc) .. " instead of blocking"
      end
    end
    tried.block = #ids
    tried.total = tried.total + #ids
    assert.same({}, problems)
  end)

  describe("on etcd names", function()
    -- one member of its own, away from the 3-member cluster's ports
    local C = require("spec.etcd").cluster({ members = 1, port = require("spec.etcd").base + 50 })
    if not C then return end
    it("create/replace/read/update/status: bad URLs, values, limits, ttl, fence, options", function()
      local st, out, err = run_child("etcd", dir, "env -u ATOMRUN_ETCD ATOMRUN_BADINPUT_ETCD="
        .. H.q(C:endpoint(1)) .. " ")
      if st ~= 0 then io.stderr:write(err) end
      check_group("etcd", out, st)
    end)
  end)
end)
