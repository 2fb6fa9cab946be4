-- atomrun once -- run a command unless an instance of NAME already runs
-- If one runs, say who runs it and exit 1 (or -E CODE); otherwise exit
-- with the command's status.
--
--   atomrun once [-w SECONDS] [-E CODE] [--dir DIR] NAME [options] [--] CMD [ARGS...]
local atomrun = require "atomrun"

local cli = require "atomrun.cli"
local EX_UNAVAILABLE = cli.EX_UNAVAILABLE

local USAGE = [[
usage: atomrun once [options] NAME [options] [--] CMD [ARGS...]
  -w, --wait SECONDS        wait up to SECONDS for the running instance to end
  -E, --conflict-exit-code N  exit code when NAME is already running (default 1)
      --dir DIR             where the lock and record live (default: /run/lock/atomrun
                            for root, $XDG_RUNTIME_DIR/atomrun or /tmp/atomrun-UID)
  -h, --help                this text
]]

local say = cli.say
local function usage_error(...) cli.usage_error(USAGE, ...) end

-- Options may come before NAME or between NAME and CMD (`atomrun once
-- NAME -w 5 -- CMD`); the first word after NAME that is not an option, or
-- whatever follows `--`, is the command.
local args = { ... }
local o = { conflict = 1 }
local name
local i = 1
while i <= #args do
  local a = args[i]
  local flag, inline = a:match("^(%-%-[^=]+)=(.*)$")
  if flag then a = flag end
  local function value()
    if inline then return inline end
    i = i + 1
    if args[i] == nil then usage_error("option %s needs a value", a) end
    return args[i]
  end
  if a == "-w" or a == "--wait" or a == "--timeout" then
    o.timeout = cli.seconds(USAGE, value())
  elseif a == "-E" or a == "--conflict-exit-code" then
    o.conflict = cli.exit_code(USAGE, value())
  elseif a == "--dir" then
    o.dir = value()
  elseif a == "-h" or a == "--help" then
    io.stdout:write(USAGE)
    os.exit(0)
  elseif a == "--" then
    i = i + 1
    if not name and args[i] then         -- `once -- NAME [--] CMD`
      name = args[i]
      i = i + 1
      if args[i] == "--" then i = i + 1 end
    end
    break
  elseif a:sub(1, 1) == "-" and #a > 1 then
    usage_error("unknown option '%s'", a)
  elseif not name then
    name = a
  else
    break                                  -- the command starts here
  end
  i = i + 1
end
if not name then usage_error("no job NAME given") end
local remote = require "atomrun.remote"     -- etcd://.../NAME: once across hosts
if not remote.is_url(name) and not name:match("^[%w][%w._-]*$") then
  usage_error("bad job name '%s' (letters, digits, '.', '_' and '-')", name)
end
local argv = table.move(args, i, #args, 1, {})
if #argv == 0 then usage_error("no command given for %s", name) end

local guard, err, code = atomrun.once(name, { dir = o.dir, timeout = o.timeout, argv = argv })
if not guard then
  say("%s", err)
  os.exit(code == "running" and o.conflict or EX_UNAVAILABLE)
end
if remote.is_url(name) then os.exit(remote.held_run(guard.lock, argv)) end
cli.run_and_exit(argv, { forward_signals = true }, function() guard:release() end)
