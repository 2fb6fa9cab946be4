-- The script runner, shaped like lua(1): arguments, exit codes, errors.
local H = require "spec.helper"

describe("atomrun SCRIPT #child", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  local function script(body)
    local p = dir .. "/job.lua"
    H.write(p, body)
    return p
  end

  it("sets arg as lua(1) does and passes the same values as ...", function()
    local p = script([[
      local a, b = ...
      print(arg[0], arg[1], arg[2], #arg, a, b, select("#", ...))
    ]])
    local st, out = H.run(p, "one", "two words")
    assert.equal(0, st)
    assert.equal(p .. "\tone\ttwo words\t2\tone\ttwo words\t2\n", out)
  end)

  it("exits 0 when the script returns normally, n on os.exit(n)", function()
    assert.equal(0, (H.run(script("return 5"))))
    assert.equal(7, (H.run(script("os.exit(7)"))))
    assert.equal(0, (H.run(script("os.exit(true)"))))
    assert.equal(1, (H.run(script("os.exit(false)"))))
  end)

  it("runs a script with a #! line", function()
    local st, out = H.run(script("#!/usr/bin/env atomrun\nprint('shebang ok')"))
    assert.equal(0, st)
    assert.equal("shebang ok\n", out)
  end)

  it("reports a runtime error with message and traceback, exit 1", function()
    local st, out, err = H.run(script("local function f() error('boom') end\nf()"))
    assert.equal(1, st)
    assert.equal("", out)
    assert.matches("^atomrun: .*job%.lua:1: boom\nstack traceback:", err)
  end)

  it("reports a non-string error object", function()
    local st, _, err = H.run(script("error({})"))
    assert.equal(1, st)
    assert.matches("error object is a table value", err)
  end)

  it("reports a syntax error naming the file and line, exit 1", function()
    local st, _, err = H.run(script("x = = 1"))
    assert.equal(1, st)
    assert.matches("^atomrun: .*job%.lua:1:", err)
  end)

  it("reports a missing script with its path and the reason", function()
    local st, _, err = H.run(dir .. "/nope.lua")
    assert.not_equal(0, st)
    assert.matches("cannot open " .. dir:gsub("%p", "%%%0") .. "/nope%.lua", err)
    assert.matches("No such file or directory", err)
  end)

  it("reports an unreadable script (a directory)", function()
    local st, _, err = H.run(dir)
    assert.not_equal(0, st)
    assert.matches("cannot read", err)
  end)

  it("runs -e CODE with arguments", function()
    local st, out = H.run("-e", "local a, b = ... print(a, b, #arg)", "x", "y")
    assert.equal(0, st)
    assert.equal("x\ty\t2\n", out)
  end)

  it("runs a script from standard input with -", function()
    local st, out = H.sh(H.q(H.atomrun) .. " - a b", "print('stdin', ...)")
    assert.equal(0, st)
    assert.equal("stdin\ta\tb\n", out)
  end)

  it("runs a script named like a subcommand after --", function()
    local p = dir .. "/lock"
    H.write(p, "print('my lock script')")
    local st, out = H.sh("cd " .. H.q(dir) .. " && " .. H.q(H.atomrun) .. " -- lock")
    assert.equal(0, st)
    assert.equal("my lock script\n", out)
  end)

  it("has require 'atomrun' and the global atomrun, with json, now, sleep", function()
    local st, out = H.run("-e", [[
      local a = require "atomrun"
      assert(a == atomrun)
      assert(a.json.encode({1,2}) == "[1,2]")
      local t0 = a.now(); a.sleep(0.05); local dt = a.now() - t0
      assert(dt >= 0.05 and dt < 2, dt)
      print(a.version)
    ]])
    assert.equal(0, st)
    assert.matches("^%d+%.%d+%.%d+\n$", out)
  end)
end)

describe("atomrun options #child", function()
  it("--help and -h print the usage with every subcommand, exit 0", function()
    for _, flag in ipairs({ "--help", "-h" }) do
      local st, out = H.run(flag)
      assert.equal(0, st)
      for _, word in ipairs({ "SCRIPT", "-e CODE", "lock", "once", "doctor", "--version" }) do
        assert.truthy(out:find(word, 1, true), word)
      end
    end
  end)

  it("--version and -v print 'atomrun X.Y.Z (Lua 5.4.N)'", function()
    for _, flag in ipairs({ "--version", "-v" }) do
      local st, out = H.run(flag)
      assert.equal(0, st)
      assert.matches("^atomrun %d+%.%d+%.%d+ %(Lua 5%.4%.%d+%)\n$", out)
    end
  end)

  it("every subcommand answers --version and -V with atomrun's version, exit 0", function()
    for _, sub in ipairs({ "lock", "once", "who", "doctor" }) do
      for _, flag in ipairs({ "--version", "-V" }) do
        local st, out, err = H.run(sub, flag)
        assert.equal(0, st, sub .. " " .. flag .. ": " .. err)
        assert.matches("^atomrun %d+%.%d+%.%d+\n$", out)
      end
    end
  end)

  it("a mistyped subcommand (not a file either) is 64 with 'did you mean'", function()
    local dir = H.tmpdir()
    for word, meant in pairs({ lokc = "lock", lcok = "lock", onec = "once", wo = "who",
        doctr = "doctor", dcotor = "doctor" }) do
      local st, out, err = H.sh("cd " .. H.q(dir) .. " && " .. H.q(H.atomrun) .. " " .. word .. " x")
      assert.equal(64, st, word)
      assert.equal("", out)
      assert.matches("^atomrun: '" .. word .. "' is neither a command nor a script: did you mean "
        .. "'atomrun " .. meant .. "'%?\nusage: atomrun", err)
    end
    -- a file of that name is a script, as lua(1) runs it; a far word is lua(1)'s error
    H.write(dir .. "/lokc", "print('ran lokc')")
    local st, out = H.sh("cd " .. H.q(dir) .. " && " .. H.q(H.atomrun) .. " lokc")
    assert.equal(0, st)
    assert.equal("ran lokc\n", out)
    local st2, _, err2 = H.sh("cd " .. H.q(dir) .. " && " .. H.q(H.atomrun) .. " backup")
    assert.equal(1, st2)
    assert.matches("cannot open backup", err2)
    H.cleanup()
  end)

  it("bash completion (src/atomrun.bash-completion): subcommands, their options, files", function()
    local function complete(...)
      local words = {}
      for i, w in ipairs({ "atomrun", ... }) do words[i] = H.q(w) end
      local st, out, err = H.sh("bash -c " .. H.q(". " .. H.q(H.root .. "/src/atomrun.bash-completion")
        .. "; COMP_WORDS=(" .. table.concat(words, " ") .. "); COMP_CWORD=" .. (#words - 1)
        .. "; _atomrun; [ ${#COMPREPLY[@]} -eq 0 ] || printf '%s\\n' \"${COMPREPLY[@]}\""))
      assert.equal(0, st, err)
      return out
    end
    assert.matches("^lock\n", complete("lo"))
    assert.equal("--timeout\n", complete("lock", "--ti"))
    assert.equal("--status\n", complete("once", "--st"))
    assert.equal("--json\n", complete("who", "--j"))
    assert.equal("--version\n", complete("doctor", "--v"))
    assert.equal("", complete("lock", "-w", ""))                  -- a value: nothing to offer
    assert.matches("^/tmp\n", complete("once", "--dir", "/tm"))
    assert.matches("^true\n", complete("lock", "/tmp/x", "tru"))    -- the command
    assert.equal("", complete("lock", "/tmp/x", "--ti"))           -- the command's own option
  end)

  it("exits 64 with the usage line on a usage error", function()
    for _, args in ipairs({ {}, { "--bogus" }, { "-e" }, { "-x" }, { "--" } }) do
      local st, out, err = H.run(table.unpack(args))
      assert.equal(64, st, table.concat(args, " "))
      assert.equal("", out)
      assert.matches("usage: atomrun", err)
    end
  end)
end)

describe("atomrun.now / atomrun.sleep #child", function()
  local ar = H.ar
  it("now is monotonic seconds as a float", function()
    local a = ar.now()
    local b = ar.now()
    assert.is_true(math.type(a) == "float" and b >= a)
  end)
  it("sleep sleeps the full time even when a signal interrupts it", function()
    local st = H.sh(H.q(H.atomrun) .. [[ -e '
      local t = atomrun.now(); atomrun.sleep(0.6); local dt = atomrun.now() - t
      os.exit(dt >= 0.6 and 0 or 3)' & pid=$!; sleep 0.2; kill -CHLD $pid; kill -WINCH $pid; wait $pid]])
    assert.equal(0, st)
  end)
  it("rejects bad arguments naming them", function()
    assert.has_error(function() ar.sleep("x") end)
    assert.has_error(function() ar.sleep(-1) end, "bad argument #1 to 'sleep' (seconds must be a number >= 0)")
    assert.has_error(function() ar.sleep(0/0) end)
  end)
end)
