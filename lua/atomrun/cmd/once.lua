-- atomrun once -- run a command unless an instance of NAME already runs
--
--   atomrun once [options] NAME [options] [--] CMD [ARGS...]
--
-- Exits with CMD's status; when NAME already runs, exits 1 (or -E CODE)
-- silently, as `flock -n` does, unless --verbose or stderr is a terminal:
-- then it says who runs it.
local atomrun = require "atomrun"
local cli = require "atomrun.cli"
local backend = require "atomrun.backend"

local prog = cli.program("atomrun", "atomrun", "atomrun once")

local USAGE = [[
usage: atomrun once [options] NAME [options] [--] CMD [ARGS...]
       atomrun once --status [--dir DIR] NAME
  -w, --wait, --timeout SECONDS
                            wait up to SECONDS for the running instance to end
  -E, --conflict-exit-code N  exit code when NAME is already running (default 1)
      --dir DIR             where the lock and record live (default: /run/lock/atomrun
                            for root, $XDG_RUNTIME_DIR/atomrun or /tmp/atomrun-UID)
      --verbose             say who runs NAME when skipping
      --status              say whether NAME runs now and who runs it (exit 0),
                            or that it does not (exit 1); runs nothing
      --ttl SECONDS         etcd names: the lease's seconds (default 10)
      --kill-after SECONDS  etcd names: SIGKILL this long after SIGTERM when the
                            lease could expire (default TTL/4, at most 5)
  -h, --help                this text
  -V, --version             atomrun's version
]]

local SPEC = {
  short = "w:E:hV",
  long = {
    { "wait", "w", arg = true }, { "timeout", "w", arg = true },
    { "conflict-exit-code", "E", arg = true }, { "dir", "dir", arg = true },
    { "verbose", "verbose" }, { "help", "h" }, { "version", "V" }, { "status", "status" },
    { "ttl", "ttl", arg = true }, { "kill-after", "kill-after", arg = true },
  },
}

local o = { conflict = 1 }
local handlers = {
  w = function(v)
    local s = cli.seconds(v)
    if not s or s ~= s or s < 0 or s == math.huge then
      prog:fail(cli.EX_USAGE, "invalid timeout value: '%s'", v)
    end
    o.timeout = s
  end,
  E = function(v) o.conflict = prog:exit_code(v) end,
  dir = function(v) o.dir = v end,
  verbose = function() o.verbose = true end,
  status = function() o.status = true end,
  h = function() io.stdout:write(USAGE) os.exit(0) end,
  V = function() prog:version() end,
  -- the same checks as `atomrun lock`'s (atomrun.cli.lock)
  ttl = function(v) require("atomrun.cli.lock").option.ttl(prog, o, false, v) end,
  ["kill-after"] = function(v)
    require("atomrun.cli.lock").option["kill-after"](prog, o, false, v)
  end,
}
local function on(key, value) handlers[key](value) end

-- Options may come before NAME and again between NAME and CMD (`once NAME
-- -w 5 -- CMD`): getopt stops at NAME, then again at CMD or after `--`.
local args = { ... }
local rest = prog:getopt(args, SPEC, on)
local name = rest[1]
if not name then prog:usage_error("no job NAME given") end
local mistyped = backend.near_miss(name)
if mistyped then prog:usage_error("%s", mistyped) end
if not backend.is_etcd(name) and not name:match("^[%w][%w._-]*$") then
  prog:usage_error("bad job name '%s' (letters, digits, '.', '_' and '-')", name)
end
local argv = prog:getopt(table.move(rest, 2, #rest, 1, {}), SPEC, on)

-- --status: who runs NAME now, asked of its lock without taking it.
local function show_status()
  if #argv > 0 then prog:usage_error("--status runs nothing: no command after %s", name) end
  local rec, serr, scode = atomrun.once_status(name, { dir = o.dir })
  if rec == nil then
    prog:say("%s", serr)
    os.exit(backend.is_etcd(name) and require("atomrun.cli.etcd").exit_status(scode)
      or cli.EX_NOINPUT)
  end
  local shown = backend.shown(name)
  if not rec then
    io.stdout:write(shown, " is not running\n")
    os.exit(1)
  end
  if rec.foreign then       -- etcdctl lock, Go's Mutex: no atomrun record
    io.stdout:write(string.format("%s is running: held by %s\n", shown, cli.safe(rec.foreign)))
    os.exit(0)
  end
  local what = type(rec.argv) == "table" and table.concat(rec.argv, " ") or rec.cmd or "?"
  io.stdout:write(string.format("%s is running: pid %s on %s since %s (%s)\n", shown,
    tostring(rec.pid or "?"), cli.safe(tostring(rec.host or "?")), tostring(rec.since or "?"),
    cli.safe(what)))
  os.exit(0)
end
if o.status then show_status() end
if #argv == 0 then prog:usage_error("no command given for %s", name) end

-- Each option is for one kind of name: a usage error (64) for the other,
-- never a traceback (1 means only "already running").
local remote = backend.is_etcd(name)
if remote and o.dir then
  prog:usage_error("--dir is for a local job name; an etcd name's record lives on its cluster")
elseif not remote and (o.ttl or o.kill_after) then
  prog:usage_error("--%s is for etcd names (etcd://HOST:PORT/NAME); %s is a local job",
    o.ttl and "ttl" or "kill-after", name)
end
if remote then require("atomrun.cli.etcd").check_kill_after(prog, o.ttl, o.kill_after) end

local guard, err, code = atomrun.once(name, { dir = o.dir, timeout = o.timeout, argv = argv,
  ttl = o.ttl })
if not guard then
  if code == "running" then
    if o.verbose or atomrun.isatty(2) then prog:say("%s", err) end
    os.exit(o.conflict)
  end
  prog:say("%s", err)
  os.exit(remote and require("atomrun.cli.etcd").exit_status(code) or cli.EX_UNAVAILABLE)
end

-- The record names the command itself, not this atomrun: that is the
-- process a person looks for (and kills).
if remote then     -- etcd://.../NAME: once across hosts
  os.exit(require("atomrun.cli.etcd").run_held_remote(prog, guard.lock, argv,
    { kill_after = o.kill_after }))
end
cli.run_and_exit(prog, argv, { forward_signals = true, on_start = function(pid) guard:update({ pid = pid }) end },
  function() guard:release() end)
