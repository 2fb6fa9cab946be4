-- atomrun.args -- the command line of a job script, as scripts/ has it:
-- -h and --help print the usage on stdout and exit 0; an option the script
-- does not know, or one missing its value, is a usage error on stderr with
-- exit status 64 (EX_USAGE, as `atomrun` itself).  "--" ends the options;
-- a lone "-" is an unknown option (say so in a script that reads stdin:
-- list it as a flag); a negative number ("-1") is an operand.
--
-- Bundled in the binary like every module here, so a script that uses it
-- still runs alone when copied anywhere.
local M = {}

--- new(name, synopsis, usage) -> cmdline with .error(msg) and
--- .parse(argv, options, in_front).  name: the script's name without
--- ".lua" (messages say "atomrun NAME.lua --help"); synopsis: the
--- "usage: ..." line(s) a usage error repeats; usage: the whole --help
--- text.
function M.new(name, synopsis, usage)
  local cmdline = {}

  --- error(msg): print "NAME: msg", the synopsis and where help is, exit 64.
  function cmdline.error(msg)
    io.stderr:write(name, ": ", msg, "\n", synopsis,
      "Try 'atomrun ", name, ".lua --help' for more information.\n")
    os.exit(64)
  end

  --- parse(argv, options, in_front) -> given, operands.  options maps each
  --- option the script knows to "flag" or "value" (it takes the next
  --- argument); given maps an option seen to true or its value.  With
  --- in_front the options end at the first operand: what follows is a
  --- command, whose own options are not ours.
  function cmdline.parse(argv, options, in_front)
    local given, operands, i = {}, {}, 1
    while argv[i] ~= nil do
      local a = argv[i]
      local is_option = a:sub(1, 1) == "-" and not tonumber(a)
      if a == "--" or (in_front and not is_option) then
        table.move(argv, a == "--" and i + 1 or i, #argv, #operands + 1, operands)
        break
      elseif a == "-h" or a == "--help" then
        io.stdout:write(usage)
        os.exit(0)
      elseif not is_option then
        operands[#operands + 1] = a
      elseif options[a] == "value" then
        i = i + 1
        given[a] = argv[i] or cmdline.error(a .. " needs a value")
      elseif options[a] == "flag" then
        given[a] = true
      else
        cmdline.error("unknown option '" .. a .. "'")
      end
      i = i + 1
    end
    return given, operands
  end

  return cmdline
end

return M
