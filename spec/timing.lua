-- spec/timing.lua -- busted output handler: utfTerminal's output (spec/run.sh
-- reads its closing line), plus how long each spec file and each slow test
-- took, appended to the file $AR_TIMING as "SECONDS<TAB>file<TAB>NAME" and
-- "SECONDS<TAB>test<TAB>FILE: NAME" lines (tests over one second only).
-- Each failure and error also goes there, as "0<TAB>fail<TAB>WHERE NAME: MSG"
-- (the message's first lines).  spec/run.sh prints the slowest files of each
-- pass from it, so where CI's time goes is visible in every log, and it
-- repeats every failure just above the closing summary, where a log cut to
-- its tail still shows it.
--   busted -o spec/timing.lua ...
return function(options)
  local busted = require "busted"
  local handler = require "busted.outputHandlers.utfTerminal"(options)
  local path = os.getenv("AR_TIMING")
  if not path or path == "" then return handler end

  local function put(secs, kind, name)
    local f = io.open(path, "a")
    if not f then return end
    f:write(("%.2f\t%s\t%s\n"):format(secs, kind, name))
    f:close()
  end

  busted.subscribe({ "file", "end" }, function(file)
    put(file.duration or 0, "file", file.name)
    return nil, true
  end)
  busted.subscribe({ "test", "end" }, function(element)
    local d = element.duration or 0
    if d > 1 then
      local trace = element.trace and element.trace.short_src or "?"
      put(d, "test", trace .. ": " .. handler.getFullName(element))
    end
    return nil, true
  end)
  local function failed(element, _, message, debug)
    local where = debug and debug.short_src and
        (debug.short_src .. ":" .. (debug.currentline or "?")) or "?"
    local msg = tostring(message or ""):gsub("\n+$", "")
    local head = {}
    for line in (msg .. "\n"):gmatch("(.-)\n") do
      head[#head + 1] = line
      if #head == 6 then break end
    end
    put(0, "fail", where .. " " .. handler.getFullName(element) .. ": " ..
      table.concat(head, " | "))
    return nil, true
  end
  busted.subscribe({ "failure" }, failed)
  busted.subscribe({ "error" }, failed)
  return handler
end
