-- spec/etcd.lua -- a real etcd cluster on loopback for the remote specs.
--
--   local E = require "spec.etcd"
--   describe("...", function()
--     local C = E.cluster()          -- 3 members, started in setup, stopped
--     if not C then return end       -- in teardown; nil (and a pending spec)
--     it("...", function()           -- when etcd is not installed
--       local url = C:url("locks/x") -- "etcd://127.0.0.1:23791,.../locks/x"
--       C:kill(C:leader())           -- fault injection, one member by index
--     end)
--   end)
--
-- Members listen on 127.0.0.1 only, on ports that are not etcd's defaults
-- (client BASE..BASE+n-1, peer BASE+10..), BASE from ATOMRUN_TEST_ETCD_PORT
-- (default 23791) or from E.cluster{port = ...}, so several clusters (the TLS
-- and auth specs start their own) and a developer's own etcd on 2379 never
-- collide.  The data lives in a fresh temp directory.  Every member is started
-- and stopped BY ITS PID; a watchdog shell kills them too if the spec process
-- dies without its teardown (busted killed, a crash under ASan), so no etcd
-- outlives a run.
local H = require "spec.helper"
local ar = H.ar

local E = {}

E.bin = os.getenv("ATOMRUN_TEST_ETCD_BIN") or "/usr/bin/etcd"
E.ctl = os.getenv("ATOMRUN_TEST_ETCDCTL_BIN") or "/usr/bin/etcdctl"
E.base = math.tointeger(tonumber(os.getenv("ATOMRUN_TEST_ETCD_PORT") or "")) or 23791

function E.available()
  return ar.stat(E.bin) ~= nil
end

local Cluster = {}
Cluster.__index = Cluster

local function curl_args(c)
  if not c.tls then return "" end
  local a = " --cacert " .. H.q(c.tls.ca)
  if c.tls.cert then a = a .. " --cert " .. H.q(c.tls.cert) .. " --key " .. H.q(c.tls.key) end
  return a
end

--- Client endpoint of member i ("127.0.0.1:23791").
function Cluster:endpoint(i)
  return "127.0.0.1:" .. (self.port + i - 1)
end

--- Every endpoint, comma-separated, in member order (or those given).
function Cluster:endpoints(list)
  local e = {}
  for _, i in ipairs(list or self.all) do e[#e + 1] = self:endpoint(i) end
  return table.concat(e, ",")
end

--- A lock URL on this cluster: etcd[+https]://[userinfo@]ENDPOINTS/name
function Cluster:url(name, opts)
  opts = opts or {}
  local scheme = self.tls and "etcd+https" or "etcd"
  local ui = opts.userinfo and (opts.userinfo .. "@") or ""
  return scheme .. "://" .. ui .. self:endpoints(opts.members) .. "/" .. name
end

function Cluster:http(i)
  return (self.tls and "https://" or "http://") .. self:endpoint(i)
end

--- POST a JSON body to member i's gateway; decoded answer or nil, raw text.
function Cluster:post(i, path, body, token)
  local hdr = token and (" -H " .. H.q("Authorization: " .. token)) or ""
  local st, out = H.sh("curl -s -m 5" .. curl_args(self) .. hdr .. " -d " .. H.q(body or "{}")
                       .. " " .. H.q(self:http(i) .. path))
  if st ~= 0 then return nil, out end
  local ok, v = pcall(ar.json.decode, out)
  if ok then return v, out end
  return nil, out
end

--- etcdctl against this cluster (all members, or the list given); status, out, err.
function Cluster:etcdctl(args, members)
  local tls = ""
  if self.tls then
    tls = " --cacert=" .. H.q(self.tls.ca)
    if self.tls.cert then
      tls = tls .. " --cert=" .. H.q(self.tls.cert) .. " --key=" .. H.q(self.tls.key)
    end
  end
  local eps = {}
  for _, i in ipairs(members or self.all) do eps[#eps + 1] = self:http(i) end
  return H.sh("ETCDCTL_API=3 " .. H.q(E.ctl) .. " --dial-timeout=3s --command-timeout=5s"
              .. " --endpoints=" .. H.q(table.concat(eps, ",")) .. tls .. " " .. args)
end

function Cluster:healthy(i)
  local st, out = H.sh("curl -s -m 2" .. curl_args(self) .. " " .. H.q(self:http(i) .. "/health"))
  return st == 0 and out:find('"health":"true"', 1, true) ~= nil
end

--- Index of the current leader among the running members, or nil.
function Cluster:leader()
  for _, i in ipairs(self.all) do
    if self.pids[i] and not self.stopped[i] then
      local s = self:post(i, "/v3/maintenance/status", "{}")
      if s and s.leader and s.header and s.leader ~= "0" then
        for _, j in ipairs(self.all) do
          if self.ids[j] == s.leader then return j end
        end
        -- ids not learned yet: this member is the leader if it says so
        if s.header.member_id == s.leader then
          self.ids[i] = s.leader
          return i
        end
      end
    end
  end
  return nil
end

--- Wait until every running member is healthy and a leader is elected.
function Cluster:wait_healthy(timeout)
  return H.wait_until(function()
    for _, i in ipairs(self.all) do
      if self.pids[i] and not self.stopped[i] and not self:healthy(i) then return false end
    end
    return self:leader() ~= nil
  end, timeout or 30)
end

function Cluster:_spawn(i)
  local d = self.dir
  local peers = {}
  for _, j in ipairs(self.all) do
    peers[#peers + 1] = ("m%d=http://127.0.0.1:%d"):format(j, self.port + 10 + j - 1)
  end
  local scheme = self.tls and "https" or "http"
  local client = ("%s://127.0.0.1:%d"):format(scheme, self.port + i - 1)
  local tls = ""
  if self.tls then
    tls = (" --cert-file=%s --key-file=%s"):format(H.q(self.tls.server_cert), H.q(self.tls.server_key))
    if self.tls.client_auth then
      tls = tls .. " --client-cert-auth --trusted-ca-file=" .. H.q(self.tls.ca)
    end
  end
  local cmd = table.concat({
    "exec", H.q(E.bin),
    "--name", "m" .. i,
    "--data-dir", H.q(d .. "/m" .. i),
    "--listen-client-urls", client,
    "--advertise-client-urls", client,
    "--listen-peer-urls", ("http://127.0.0.1:%d"):format(self.port + 10 + i - 1),
    "--initial-advertise-peer-urls", ("http://127.0.0.1:%d"):format(self.port + 10 + i - 1),
    "--initial-cluster", table.concat(peers, ","),
    "--initial-cluster-token", "atomrun-spec-" .. ar.pid() .. "-" .. self.port,
    "--initial-cluster-state", self.started_once[i] and "existing" or "new",
    "--heartbeat-interval", tostring(self.heartbeat), "--election-timeout", tostring(self.election),
    "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
    tls,
  }, " ")
  local p = io.popen("(" .. cmd .. ") >>" .. H.q(d .. "/m" .. i .. ".log") .. " 2>&1 </dev/null & echo $!")
  local pid = math.tointeger(tonumber(p:read("l")))
  p:close()
  self.pids[i] = pid
  self.stopped[i] = nil
  self.started_once[i] = true
  -- The watchdog: kills this member when the spec process is gone.
  H.spawn(("while kill -0 %d 2>/dev/null && kill -0 %d 2>/dev/null; do sleep 1; done; kill -9 %d 2>/dev/null")
          :format(ar.pid(), pid, pid))
  return pid
end

local function port_free(port)
  local _, out = H.sh("ss -Htln 'sport = :" .. port .. "'")
  return out:match("%S") == nil
end

--- Start a cluster: opts.members (3), opts.port (E.base), opts.tls =
--- {ca=, server_cert=, server_key=, cert=, key=, client_auth=},
--- opts.heartbeat/opts.election in ms (50/500: etcd's minimum lease TTL is
--- then 1 s; etcd's defaults 100/1000 make it 2 s).  Returns the cluster, or
--- nil and why.
function E.start(opts)
  opts = opts or {}
  if not E.available() then return nil, E.bin .. " is not installed" end
  local c = setmetatable({
    n = opts.members or 3, port = opts.port or E.base, tls = opts.tls,
    heartbeat = opts.heartbeat or 50, election = opts.election or 500,
    pids = {}, stopped = {}, ids = {}, started_once = {}, all = {},
  }, Cluster)
  for i = 1, c.n do
    c.all[i] = i
    for _, p in ipairs({ c.port + i - 1, c.port + 10 + i - 1 }) do
      if not port_free(p) then
        return nil, ("port %d is in use (set ATOMRUN_TEST_ETCD_PORT)"):format(p)
      end
    end
  end
  local p = io.popen("mktemp -d /tmp/atomrun-etcd.XXXXXX")
  c.dir = p:read("l")
  p:close()
  for i = 1, c.n do c:_spawn(i) end
  if not c:wait_healthy(30) then
    local log = H.slurp(c.dir .. "/m1.log")
    c:stop()
    return nil, "cluster did not become healthy:\n" .. log:sub(-2000)
  end
  -- learn member ids (hex strings as the gateway prints them)
  for i = 1, c.n do
    local s = c:post(i, "/v3/maintenance/status", "{}")
    if s and s.header then c.ids[i] = s.header.member_id end
  end
  return c
end

--- SIGKILL member i (by pid).
function Cluster:kill(i)
  if self.pids[i] then
    H.kill(self.pids[i], "KILL")
    H.wait_exit(self.pids[i], 10)
    self.pids[i] = nil
    self.stopped[i] = nil
  end
end

--- SIGSTOP / SIGCONT member i.
function Cluster:pause(i)
  H.kill(self.pids[i], "STOP")
  self.stopped[i] = true
end
function Cluster:cont(i)
  H.kill(self.pids[i], "CONT")
  self.stopped[i] = nil
end

--- Kill member i if it runs, start it again on its data, wait for health.
function Cluster:restart(i)
  self:kill(i)
  self:_spawn(i)
  return self:wait_healthy(30)
end

--- Every member running and healthy again (after a fault test, even a
--- failed one): paused ones continued, killed ones restarted.
function Cluster:heal()
  for _, i in ipairs(self.all) do
    if self.stopped[i] then self:cont(i) end
    if not self.pids[i] then self:_spawn(i) end
  end
  return self:wait_healthy(30)
end

--- Stop every member by pid (TERM, then KILL) and remove the data directory.
function Cluster:stop()
  for _, i in ipairs(self.all) do
    local pid = self.pids[i]
    if pid then
      H.kill(pid, "CONT")
      H.kill(pid, "TERM")
    end
  end
  for _, i in ipairs(self.all) do
    local pid = self.pids[i]
    if pid then
      if not H.wait_exit(pid, 5) then H.kill(pid, "KILL"); H.wait_exit(pid, 5) end
      self.pids[i] = nil
    end
  end
  if self.dir and not os.getenv("ATOMRUN_TEST_ETCD_KEEP") then
    os.execute("rm -rf " .. H.q(self.dir))
  end
end

--- A CA, a server certificate for 127.0.0.1 and a client certificate,
--- made with openssl in dir: {ca=, server_cert=, server_key=, cert=, key=}.
function E.make_certs(dir)
  local q = H.q
  local function run(cmd)
    local st, _, err = H.sh("cd " .. q(dir) .. " && " .. cmd)
    assert(st == 0, "openssl: " .. err)
  end
  local key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  run("openssl req -x509 " .. key .. " -keyout ca.key -out ca.pem -days 2 -subj /CN=atomrun-spec-ca")
  H.write(dir .. "/server.ext", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
          .. "extendedKeyUsage=serverAuth,clientAuth\n")
  H.write(dir .. "/client.ext", "extendedKeyUsage=clientAuth\n")
  for _, who in ipairs({ "server", "client" }) do
    run("openssl req " .. key .. " -keyout " .. who .. ".key -out " .. who .. ".csr -subj /CN=" .. who)
    run("openssl x509 -req -in " .. who .. ".csr -CA ca.pem -CAkey ca.key -CAcreateserial -out "
        .. who .. ".pem -days 2 -extfile " .. who .. ".ext")
  end
  return { ca = dir .. "/ca.pem", server_cert = dir .. "/server.pem", server_key = dir .. "/server.key",
           cert = dir .. "/client.pem", key = dir .. "/client.key" }
end

--- A fault-injecting proxy (spec/faultproxy.py) in front of member
--- `member` (1), its port file and log in dir: {pid=, port=, endpoint=,
--- log=, url(key), events(pattern) -> how many log lines match}.  flags
--- are the proxy's own ("--drop 1 --then-blackhole").  The pid is tracked:
--- H.cleanup_procs (E.teardown) kills it; it also exits with this process.
local proxies = 0
function Cluster:faultproxy(dir, flags, member)
  proxies = proxies + 1
  local pf = ("%s/proxy%d.port"):format(dir, proxies)
  local log = ("%s/proxy%d.log"):format(dir, proxies)
  local pid = H.track(H.spawn("exec " .. H.q(H.python) .. " " .. H.q(H.root .. "/spec/faultproxy.py")
    .. " --upstream " .. self:endpoint(member or 1) .. " --port-file " .. H.q(pf)
    .. " --log " .. H.q(log) .. " --parent " .. ar.pid() .. " " .. (flags or "")))
  local p = { pid = pid, log = log }
  assert(H.wait_file(pf, 15), "the proxy did not start")
  p.port = math.tointeger(tonumber(H.slurp(pf):match("%d+")))
  p.endpoint = "127.0.0.1:" .. p.port
  function p.url(key) return "etcd://" .. p.endpoint .. "/" .. key end
  function p.events(pat)
    local n = 0
    for line in H.slurp(log):gmatch("[^\n]+") do
      if line:find(pat) then n = n + 1 end
    end
    return n
  end
  return p
end

--- after_each(E.teardown(C)): after each test, every process it started is
--- killed and every member it stopped or paused is brought back.  (A
--- function to hand to after_each: busted's hooks live in the spec file's
--- environment, not this module's.)
function E.teardown(C)
  return function()
    H.cleanup_procs()
    C:heal()
  end
end

--- Inside a describe block: a cluster started in setup and stopped in
--- teardown.  Returns a proxy whose fields are the cluster's once it runs;
--- when etcd is missing, registers a pending spec and returns nil.
function E.cluster(opts)
  -- busted's setup/teardown/pending live in the spec file's environment,
  -- not in this module's: take them from the calling describe block.
  local env
  local f = debug.getinfo(2, "f").func
  for i = 1, math.huge do
    local name, v = debug.getupvalue(f, i)
    if not name then break end
    if name == "_ENV" then env = v break end
  end
  assert(env and env.setup, "E.cluster() must be called inside a describe block")
  if not E.available() then
    env.pending("etcd is not installed (" .. E.bin .. "): apt-get install etcd-server")
    return nil
  end
  local proxy = {}
  env.setup(function()
    local c = assert(E.start(opts))
    setmetatable(proxy, { __index = function(_, k)
      local v = c[k]
      if type(v) == "function" then return function(self, ...)
        if self == proxy then return v(c, ...) end
        return v(self, ...)
      end end
      return v
    end })
  end)
  env.teardown(function()
    if getmetatable(proxy) then proxy:stop() end
  end)
  return proxy
end

return E
