-- The etcd stress runs of issue 23, kept as specs (heavy: the atomrun pass
-- only), on the spec's 3-member cluster (spec/etcd.lua):
--   - 20 processes x 50 increments of a counter file, non-atomic (read,
--     sleep, write) under one etcd lock, while the leader is SIGKILLed three
--     times: exactly 1000, and the fencing tokens rise with the counter;
--   - 8 contenders x 70 holds of `atomrun lock etcd://... -- CMD`, each CMD
--     appending its token to one log, while a chaos loop SIGSTOPs guards
--     (atomrun itself) and commands for random times, some past the TTL:
--     never two holders (no older token in the log after a newer one), exit
--     statuses 0 or 75 only; and 8 x 25 holds with commands stopped only.
-- They are slow (on a loaded 2-core machine about 20 s, 90 s and 30 s, and
-- 5 s to start the cluster): the atomrun pass runs them, the others show
-- them pending and start no cluster.
-- Random only in timing: the seed is printed, ATOMRUN_STRESS_SEED replays
-- it; what they assert is fixed.
local H = require "spec.helper"
local E = require "spec.etcd"
local ar = H.ar

local SEED = math.tointeger(tonumber(os.getenv("ATOMRUN_STRESS_SEED") or ""))
  or (os.time() * 1000 + ar.pid() % 1000)

-- spec/etcd.lua's cluster elects in 500 ms (--election-timeout): a lease
-- of 5 s outlives an election several times over, with keepalives every
-- TTL/3 to ride it out.
local COUNTER_TTL = 5

-- The holds under SIGSTOP: a stop longer than HOLD_TTL lets the lease
-- expire.  --kill-after is given because the default (5 s) does not fit in
-- so short a lease.
local HOLD_TTL, KILL_AFTER = 3, 1
local CONTENDERS, HOLDS = 8, 70

-- Each counter process: take the lock, read the counter, sleep a little
-- (the window a second holder would hit), write it back plus one, and log
-- "VALUE TOKEN PID" with O_APPEND.  A lock that fails or is lost while
-- held ends the process (exit 1, the reason on stderr); an unlock that
-- fails is said on stderr, and the process goes on.
local COUNTER_WORKER = [[
local url, counter, log, n, ttl = ...
for _ = 1, tonumber(n) do
  local lk, err = atomrun.lock(url, { ttl = tonumber(ttl), timeout = 60 })
  if not lk then io.stderr:write("lock: ", err, "\n") os.exit(1) end
  local f = io.open(counter, "rb")
  local v = f and tonumber(f:read("a")) or 0
  if f then f:close() end
  atomrun.sleep(0.002)
  f = assert(io.open(counter, "wb"))
  f:write(tostring(v + 1))
  f:close()
  local why = lk:lost()
  if why then io.stderr:write("lost while holding: ", why, "\n") os.exit(1) end
  local out = assert(io.open(log, "ab"))
  out:write(("%d %d %d\n"):format(v + 1, lk.token, atomrun.pid()))
  out:close()
  local ok, uerr = lk:unlock()
  if not ok then
    -- said, not fatal: the counter and the tokens are checked first
    io.stderr:write(("unlock after value %d (token %d): %s\n"):format(v + 1, lk.token, tostring(uerr)))
  end
end
]]

-- One contender: HOLDS times `atomrun lock` with a command that appends
-- its token to DIR/log three times, 10 ms apart, and goes on while
-- DIR/linger.N exists (the chaos loop makes it while it stops this
-- contender's guard, so that a stop past the TTL finds a command still
-- writing: the case the guard must end).  The command writes its pid to
-- DIR/cmd.N, the contender the guard's to DIR/guard.N and each exit status
-- to DIR/status.N; --verbose puts each hold's token on stdout.
local CONTENDER = [=[
ar=$1 url=$2 ttl=$3 ka=$4 d=$5 n=$6 holds=$7
cmd='echo $$ >"$1/cmd.$2"; k=0
while [ $k -lt 3 ] || { [ -e "$1/linger.$2" ] && [ $k -lt 3000 ]; }; do
  echo "$ATOMRUN_LOCK_TOKEN" >>"$1/log"; sleep 0.01; k=$((k + 1))
done'
i=0
while [ $i -lt "$holds" ]; do
  "$ar" lock --verbose --ttl "$ttl" --kill-after "$ka" "$url" -- sh -c "$cmd" cmd "$d" "$n" &
  echo $! >"$d/guard.$n"
  wait $!
  echo $? >>"$d/status.$n"
  i=$((i + 1))
done
]=]

local function lines_of(path)
  local t = {}
  for l in H.slurp(path):gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

local function count_lines(path)
  return select(2, H.slurp(path):gsub("\n", ""))
end

local function pid_in(path)
  return math.tointeger(tonumber(H.slurp(path)))
end

describe("etcd under stress #heavy", function()
  local C = E.cluster()
  if not C then return end
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function()
    -- every process of the sessions first (a stopped guard's orphans too),
    -- then the harness's own cleanup, whatever the first did
    local ok, err = pcall(H.end_sessions)
    E.teardown(C)()
    assert(ok, err)
    assert(err, "processes of the test survived SIGKILL")
  end)

  it("20 processes x 50 locked increments, the leader SIGKILLed three times: exactly 1000", function()
    local t0 = ar.now()
    local url = C:url("stress/counter")
    local counter, log = dir .. "/counter", dir .. "/log"
    local worker = H.script(dir, "worker.lua", COUNTER_WORKER)
    for i = 1, 20 do
      H.bg_session(dir, "w" .. i, H.cmd(worker, url, counter, log, 50, COUNTER_TTL))
    end
    -- three leader kills, spread over the run; each member back before the next
    local killed_at = {}
    for _, at in ipairs({ 200, 450, 700 }) do
      assert.is_true(H.wait_until(function() return count_lines(log) >= at end, 90),
        "the counter stalled below " .. at .. ": " .. count_lines(log))
      local leader = C:leader()
      assert.is_truthy(leader, "no leader to kill")
      C:kill(leader)
      killed_at[#killed_at + 1] = count_lines(log)
      assert.is_true(H.wait_until(function()
        local l = C:leader()
        return l ~= nil and l ~= leader
      end, 20), "no new leader after killing member " .. leader)
      ar.sleep(1)                          -- clients meet the dead member meanwhile
      assert.is_true(C:restart(leader), "member " .. leader .. " did not come back")
    end
    local errs = {}
    for i = 1, 20 do
      local st, _, err = H.result(dir, "w" .. i, 120)
      assert.equal(0, st, "worker " .. i .. ": " .. err)
      if err ~= "" then errs[#errs + 1] = "worker " .. i .. ": " .. err end
    end
    print(("  [etcd_stress] counter: 20 x 50 increments, leader killed at values %s, %.1f s")
      :format(table.concat(killed_at, "/"), ar.now() - t0))
    -- every kill came while the workers still ran
    for k, n in ipairs(killed_at) do assert.is_true(n < 1000, "kill " .. k .. " after the end") end
    assert.equal("1000", H.slurp(counter))
    -- each value once, tokens strictly increasing as the counter advanced
    local by_value, per_pid, n = {}, {}, 0
    for _, l in ipairs(lines_of(log)) do
      local v, tok, pid = l:match("^(%d+) (%d+) (%d+)$")
      assert.is_truthy(v, "log line: " .. l)
      v, tok = tonumber(v), tonumber(tok)
      assert.is_nil(by_value[v], "value " .. v .. " written twice")
      by_value[v] = tok
      per_pid[pid] = (per_pid[pid] or 0) + 1
      n = n + 1
    end
    assert.equal(1000, n)
    for v = 2, 1000 do
      assert.is_true(by_value[v] > by_value[v - 1],
        ("token %d for value %d after token %d for value %d"):format(by_value[v], v, by_value[v - 1], v - 1))
    end
    local pids = 0
    for pid, c in pairs(per_pid) do
      pids = pids + 1
      assert.equal(50, c, "holds of pid " .. pid)
    end
    assert.equal(20, pids)
    -- and every unlock said it released the lock
    assert.same({}, errs, "unlocks that failed (leader killed at values " .. table.concat(killed_at, "/")
      .. "):\n" .. table.concat(errs))
  end)

  -- -------------------------------------------------------------- SIGSTOPs

  -- The live guard (atomrun lock) and command of contender n, or nil.
  local function guard_of(n)
    local pid = pid_in(dir .. "/guard." .. n)
    return pid and H.alive(pid) and pid or nil
  end
  local function command_of(n)
    local pid = pid_in(dir .. "/cmd." .. n)
    return pid and H.alive(pid) and pid or nil
  end

  local function all_done()
    for n = 1, CONTENDERS do
      if not H.slurp(dir .. "/c" .. n .. ".st"):match("\n") then return false end
    end
    return true
  end

  -- A target of one kind, picked at random among the live ones: "holder",
  -- the guard (atomrun lock) whose command runs; "waiter", a guard whose
  -- command does not run (it waits, or is starting or ending); "command", a
  -- running command.  {n = contender, pid = pid} or nil.
  local function pick(kind)
    local live = {}
    for n = 1, CONTENDERS do
      local g, c = guard_of(n), command_of(n)
      local pid = (kind == "holder" and c and g) or (kind == "waiter" and not c and g)
        or (kind == "command" and c)
      if pid then live[#live + 1] = { n = n, pid = pid } end
    end
    return live[1] and live[math.random(#live)]
  end

  -- The stops as a deck: deck[kind] = {long = a, short = b} stops of that
  -- kind, long ones past the lease (HOLD_TTL + 0.3..1 s), short ones
  -- 0.05..0.5 s, dealt in random order with 0.2..0.8 s between them, until
  -- the deck or the contenders are done.  A guard is stopped alone (the
  -- atomrun process, not its command), with linger.N present meanwhile so
  -- that a holding guard's command goes on writing; a command is stopped
  -- with its process group.  Returns what it did, for the report.
  local function chaos(deck, deadline)
    local cards = {}
    for kind, n in pairs(deck) do
      for _ = 1, n.long do cards[#cards + 1] = { kind, true } end
      for _ = 1, n.short do cards[#cards + 1] = { kind, false } end
    end
    table.sort(cards, function(a, b) return a[1] .. tostring(a[2]) < b[1] .. tostring(b[2]) end)
    for i = #cards, 2, -1 do                      -- Fisher-Yates, on the seed
      local j = math.random(i)
      cards[i], cards[j] = cards[j], cards[i]
    end
    local did = { holder = 0, waiter = 0, command = 0, long = 0, missed = 0 }
    for _, card in ipairs(cards) do
      if all_done() or ar.now() > deadline then break end
      local kind, long = card[1], card[2]
      local t
      H.wait_until(function() t = pick(kind) return t end, 2)
      if not t then
        did.missed = did.missed + 1
      else
        local secs = long and HOLD_TTL + 0.3 + 0.7 * math.random() or 0.05 + 0.45 * math.random()
        local target, linger = tostring(t.pid), dir .. "/linger." .. t.n
        if kind ~= "command" then
          H.write(linger, "")
        elseif (H.proc_stat(t.pid) or {}).pgrp == t.pid then
          target = "-" .. t.pid                 -- the command's own group
        end
        H.kill(target, "STOP")
        ar.sleep(secs)
        os.remove(linger)
        H.kill(target, "CONT")
        did[kind] = did[kind] + 1
        if long then did.long = did.long + 1 end
      end
      ar.sleep(0.2 + 0.6 * math.random())
    end
    return did
  end

  -- The holds whose lines interleave with a newer hold's in the log: for
  -- each older token that wrote after a newer token's first line, one line
  -- saying how much and beside which holds; whose(token) names the hold.
  local function overlaps(tokens, whose)
    local first, last = {}, {}
    for i, t in ipairs(tokens) do
      first[t] = first[t] or i
      last[t] = i
    end
    local found = {}
    for t, f in pairs(first) do
      local beside, from = {}, nil
      for u, g in pairs(first) do
        if u > t and g < last[t] then
          beside[#beside + 1] = u
          from = math.min(from or g, g)
        end
      end
      if from then
        local after = 0
        for i = from + 1, last[t] do if tokens[i] == t then after = after + 1 end end
        table.sort(beside)
        found[#found + 1] = { t, ("token %d (%s) wrote %d line(s) after token %d's first, beside"
          .. " %d newer hold(s) (tokens %d..%d; log lines %d..%d, its own from %d)")
          :format(t, whose(t), after, beside[1], #beside, beside[1], beside[#beside], from, last[t], f) }
      end
    end
    table.sort(found, function(a, b) return a[1] < b[1] end)
    for i, v in ipairs(found) do found[i] = v[2] end
    return found
  end

  local function storm(name, deck, holds)
    math.randomseed(SEED)
    local t0 = ar.now()
    local url = C:url("stress/" .. name)
    local contender = H.script(dir, "contender.sh", CONTENDER)
    for n = 1, CONTENDERS do
      H.bg_session(dir, "c" .. n, "sh " .. H.q(contender) .. " " .. H.q(H.atomrun) .. " " .. H.q(url)
        .. " " .. HOLD_TTL .. " " .. KILL_AFTER .. " " .. H.q(dir) .. " " .. n .. " " .. holds)
    end
    local did = chaos(deck, t0 + 150)
    -- a generous window: on a loaded machine (the other lane's ASan pass)
    -- 560 command lines take minutes, and finishing is not the question
    assert.is_true(H.wait_until(all_done, 300), "the contenders did not finish")

    -- every contender finished all its holds, each ending 0 or 75
    local statuses, hold_tokens, by_token, hold_of = {}, {}, {}, {}
    for n = 1, CONTENDERS do
      assert.equal(0, (H.result(dir, "c" .. n, 5)), "contender " .. n)
      local st = lines_of(dir .. "/status." .. n)
      assert.equal(holds, #st, "holds of contender " .. n)
      local toks = {}
      for tok in H.slurp(dir .. "/c" .. n .. ".out"):gmatch("%(token (%d+)%)") do toks[#toks + 1] = tonumber(tok) end
      assert.equal(holds, #toks, "tokens of contender " .. n .. ":\n" .. H.slurp(dir .. "/c" .. n .. ".err"))
      for i, s in ipairs(st) do
        statuses[s] = (statuses[s] or 0) + 1
        assert.is_true(s == "0" or s == "75", ("contender %d, hold %d (token %d) exited %s:\n%s")
          :format(n, i, toks[i], s, H.slurp(dir .. "/c" .. n .. ".err")))
        -- one contender's holds come one after the other: rising tokens
        assert.is_true(i == 1 or toks[i] > toks[i - 1], "contender " .. n .. " token order")
        assert.is_nil(by_token[toks[i]], "token " .. toks[i] .. " given twice")
        by_token[toks[i]] = s
        hold_of[toks[i]] = ("contender %d, hold %d, exit %s"):format(n, i, s)
        hold_tokens[#hold_tokens + 1] = toks[i]
      end
    end
    assert.equal(CONTENDERS * holds, #hold_tokens)

    -- the log: only the holds' tokens, never an older one after a newer one
    local tokens, lines_per = {}, {}
    for _, l in ipairs(lines_of(dir .. "/log")) do
      local t = math.tointeger(tonumber(l))
      assert.is_truthy(t and by_token[t], "log line " .. (#tokens + 1) .. ": " .. l)
      tokens[#tokens + 1] = t
      lines_per[t] = (lines_per[t] or 0) + 1
    end
    local bad = overlaps(tokens, function(t) return hold_of[t] end)
    print(("  [etcd_stress] %s: seed %d, %d holds (exit 0: %d, 75: %d), %d log lines;"
      .. " stopped %d holding guards, %d waiting guards, %d commands (%d past the TTL, %d found"
      .. " no target); %.1f s")
      :format(name, SEED, #hold_tokens, statuses["0"] or 0, statuses["75"] or 0, #tokens,
              did.holder, did.waiter, did.command, did.long, did.missed, ar.now() - t0))
    assert.same({}, bad, "two holders at once (seed " .. SEED .. "):\n" .. table.concat(bad, "\n"))
    for i = 2, #tokens do
      assert.is_true(tokens[i] >= tokens[i - 1], "log line " .. i .. ": token " .. tokens[i]
        .. " after " .. tokens[i - 1])
    end
    -- a hold that ended 0 ran its command to the end: three lines at least
    for tok, s in pairs(by_token) do
      if s == "0" then
        assert.is_true((lines_per[tok] or 0) >= 3, "token " .. tok .. " exited 0 with "
          .. (lines_per[tok] or 0) .. " line(s)")
      end
    end
  end

  it("560 holds of atomrun lock, guards and commands SIGSTOPped at random: never two holders", function()
    storm("stops", { holder = { long = 5, short = 5 }, waiter = { long = 3, short = 3 },
                     command = { long = 2, short = 6 } }, HOLDS)
  end)

  -- the variant that held before the guard was a process: a shorter run
  it("200 holds of atomrun lock, commands only SIGSTOPped at random: never two holders", function()
    storm("cmdstops", { command = { long = 2, short = 8 } }, 25)
  end)
end)
