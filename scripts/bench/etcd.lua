-- scripts/bench/etcd.lua -- the etcd rows of `make bench`, run by the atomrun
-- binary from the top of the tree:
--
--   atomrun scripts/bench/etcd.lua --build DIR [--out FILE] [--quick]
--
-- Starts the spec's 3-member loopback cluster (spec/etcd.lua), then, on the
-- same cluster in the same run:
--   - uncontended lock+unlock: the C core (one process, one session), Lua
--     (atomrun.lock on an etcd:// name), the command line (`atomrun lock
--     URL -- true`, a process per cycle), and `etcdctl lock NAME true`;
--   - hand-off latency: a holder writes the monotonic time just before it
--     unlocks, the next waiter the time it is granted (both processes on
--     this host: CLOCK_MONOTONIC is one clock);
--   - consensus writes and gRPC round trips per cycle, from the cluster's
--     revision and its grpc_server_handled_total counters (the floor is two
--     writes: the put and the delete).
-- Contenders that this build lacks (no etcd binding yet, no CLI support)
-- are reported as skipped, never guessed.
package.path = "./?.lua;" .. package.path

local build, out_path, quick = "build", "build/bench/etcd.json", false
do
  local i = 1
  while arg[i] do
    local a = arg[i]
    if a == "--build" then build = arg[i + 1]; i = i + 1
    elseif a == "--out" then out_path = arg[i + 1]; i = i + 1
    elseif a == "--quick" then quick = true
    else io.stderr:write("etcd.lua: unknown argument ", a, "\n"); os.exit(64) end
    i = i + 1
  end
end
-- spec/helper.lua finds the build through AR_BUILD; the bench has its own
-- ports so that it never meets a spec run's cluster.
if not os.getenv("AR_BUILD") then
  io.stderr:write("etcd.lua: run through scripts/bench/run.sh (AR_BUILD unset)\n")
end
local H = require "spec.helper"
local E = require "spec.etcd"
local ar = H.ar

local N = quick and { cycles = 20, cli = 3, ctl = 3, handoff = 3 }
  or { cycles = 300, cli = 30, ctl = 30, handoff = 15 }

if not E.available() then
  print("etcd bench: skipped (etcd-server is not installed)")
  os.exit(0)
end

local C = assert(E.start({ port = E.base + 50 }))
local eps = C:endpoints()
local rows = {}
local function row(t) rows[#rows + 1] = t; print(string.format("  %-44s %s", t.bench, t.text)) end

local function revision()
  local s = assert(C:post(1, "/v3/maintenance/status", "{}"))
  return tonumber(s.header.revision)
end
local function rpcs()
  local total = 0
  for i = 1, 3 do
    local st, out = H.sh("curl -s http://" .. C:endpoint(i) .. "/metrics")
    assert(st == 0)
    for method, n in out:gmatch('grpc_server_handled_total{grpc_code="OK",grpc_method="(%w+)"[^}]*} (%d+)') do
      if method ~= "Status" and method ~= "MemberList" then total = total + tonumber(n) end
    end
  end
  return total
end
local function ms(s) return string.format("%.2f ms", s * 1000) end

local function median(t)
  table.sort(t)
  local n = #t
  if n == 0 then return nil end
  return n % 2 == 1 and t[(n + 1) // 2] or (t[n // 2] + t[n // 2 + 1]) / 2
end

print("etcd bench: 3 members on " .. eps)

-- ------------------------------------------------- C core, one process
local driver = build .. "/spec_etcd_core"
do
  -- built by the Makefile (make bench depends on it), with its flags
  assert(H.exists(driver), driver .. " is missing: run make bench (it builds the driver)")
  local r0, c0 = revision(), rpcs()
  local _, out = H.sh(H.q(driver) .. " " .. H.q(eps) .. " cycle bench/c " .. N.cycles)
  local r1, c1 = revision(), rpcs()
  local per = tonumber(out)
  -- one more cycle than timed (the first grants the lease), then a revoke
  local writes = (r1 - r0 - 1) / (N.cycles + 1)
  local trips = (c1 - c0) / (N.cycles + 1)
  row { bench = "etcd lock+unlock, C core", seconds = per,
        text = ms(per) .. string.format("  (%.2f writes, %.2f round trips per cycle)", writes, trips) }
end

-- ------------------------------------------------- Lua
do
  if not rawget(ar, "_etcd_queue") then
    row { bench = "etcd lock+unlock, Lua", text = "skipped (this build has no etcd binding)" }
  else
    local code = [[
      local url, n = ...
      n = tonumber(n)
      local lk = assert(atomrun.lock(url)); lk:unlock()   -- grants the session
      local t0 = atomrun.now()
      for i = 1, n do assert(atomrun.lock(url)):unlock() end
      print((atomrun.now() - t0) / n)
    ]]
    local r0, c0 = revision(), rpcs()
    local _, out = H.sh(H.q(H.atomrun) .. " -e " .. H.q(code) .. " " .. H.q(C:url("bench/lua"))
      .. " " .. N.cycles)
    local r1, c1 = revision(), rpcs()
    local per = tonumber(out)
    row { bench = "etcd lock+unlock, Lua", seconds = per,
          text = per and (ms(per) .. string.format("  (%.2f writes, %.2f round trips per cycle)",
            (r1 - r0 - 1) / (N.cycles + 1), (c1 - c0) / (N.cycles + 1))) or ("failed: " .. out) }
  end
end

-- ------------------------------------------------- processes: CLI vs etcdctl
local function per_process(cmd, n)
  local t = {}
  for _ = 1, n do
    local t0 = ar.now()
    local st = H.sh(cmd)
    if st ~= 0 then return nil, st end
    t[#t + 1] = ar.now() - t0
  end
  return median(t)
end

do
  local url = C:url("bench/cli")
  -- Only a build whose `atomrun lock` knows etcd names: an older one would
  -- lock a local file under a directory called "etcd:".
  local cli, st = nil, "no etcd binding"
  if rawget(ar, "_etcd_queue") then cli, st = per_process(H.q(H.atomrun) .. " lock " .. H.q(url) .. " -- true", N.cli) end
  local ctl = per_process("ETCDCTL_API=3 " .. H.q(E.ctl) .. " --endpoints=" .. H.q(eps)
    .. " lock bench/ctl true", N.ctl)
  row { bench = "etcd lock -- true, atomrun CLI (process)", seconds = cli,
        text = cli and ms(cli) or ("skipped (atomrun lock does not take etcd names yet: exit " .. tostring(st) .. ")") }
  row { bench = "etcd lock -- true, etcdctl lock (process)", seconds = ctl,
        text = ctl and ms(ctl) or "failed" }
  if cli and ctl then
    row { bench = "  etcdctl / atomrun", text = string.format("%.2fx", ctl / cli) }
  end
end

-- ------------------------------------------------- hand-off latency (C core)
do
  local lat = {}
  local dir = H.tmpdir()
  local env = "ETCD_CORE_TIME=1 exec " .. H.q(driver) .. " " .. H.q(eps)
  for i = 1, N.handoff do
    local stop, hf, wf = dir .. "/stop" .. i, dir .. "/h" .. i, dir .. "/w" .. i
    local hold = H.spawn(env .. " hold bench/h " .. H.q(stop) .. " > " .. H.q(hf))
    H.wait_until(function() return H.slurp(hf):find("^ok") end, 10)
    local w = H.spawn(env .. " try bench/h 30 > " .. H.q(wf))
    ar.sleep(0.3)                          -- queued behind the holder, watching it
    H.write(stop, "")
    H.wait_exit(w, 30)
    H.wait_exit(hold, 10)
    local rel = tonumber(H.slurp(hf):match("releasing ([%d.]+)"))
    local got = tonumber(H.slurp(wf):match("granted ([%d.]+)"))
    if rel and got then lat[#lat + 1] = got - rel end
  end
  local p50 = median(lat)
  row { bench = "etcd hand-off, release to next grant (C)", seconds = p50,
        text = p50 and (ms(p50) .. " p50 of " .. #lat) or "failed" }
end

-- ------------------------------------------- update throughput (issue 16)
-- P processes each doing K increments of one counter: atomrun.update on an
-- etcd key (optimistic: a txn on the mod revision, retried on conflict)
-- beside atomrun.update on a file (a flock around read + atomic replace).
-- The count is checked: a row is only printed for an exact total.
if rawget(ar, "_etcd_watch") then
  local UPD = [[
    local name, k, go = ...
    while not atomrun.stat(go) do atomrun.sleep(0.002) end
    for _ = 1, tonumber(k) do
      assert(atomrun.update(name, function(old) return tostring((tonumber(old) or 0) + 1) end,
        { timeout = 120 }))
    end]]
  local dir = H.tmpdir()
  local function run(name, p, k, tag)
    local go, pids = dir .. "/go." .. tag, {}
    for i = 1, p do pids[i] = H.bg_lua(UPD, name, k, go) end
    ar.sleep(0.3)
    local t0 = ar.now()
    H.write(go, "")
    for _, pid in ipairs(pids) do H.wait_exit(pid, 300) end
    return ar.now() - t0, (ar.read(name))
  end
  for _, p in ipairs({ 1, 4, 16 }) do
    local k = math.max(2, (quick and 40 or 400) // p)
    local et, ev = run(C:url("bench/upd" .. p), p, k, "e" .. p)
    local ft, fv = run(dir .. "/upd" .. p, p, k, "f" .. p)
    local total = p * k
    row { bench = string.format("etcd update, %2d process%s", p, p > 1 and "es" or ""),
          seconds = et / total,
          text = ev == tostring(total) and string.format("%.0f updates/s (%d, exact)", total / et, total)
            or ("WRONG COUNT " .. tostring(ev) .. " of " .. total) }
    row { bench = string.format("file update, %2d process%s", p, p > 1 and "es" or ""),
          seconds = ft / total,
          text = fv == tostring(total) and string.format("%.0f updates/s (%d, exact)", total / ft, total)
            or ("WRONG COUNT " .. tostring(fv) .. " of " .. total) }
  end
  H.cleanup_procs()
end

C:stop()
H.cleanup()
local f = io.open(out_path, "w")
if f then
  local out = {}
  for _, r in ipairs(rows) do out[#out + 1] = { bench = r.bench, seconds = r.seconds, text = r.text } end
  f:write(ar.json.encode({ rows = out, counts = N }), "\n")
  f:close()
end
