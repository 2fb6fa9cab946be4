-- atomrun.retry -- call fn until it returns something, with exponential
-- backoff and jitter, never sleeping past the deadline.
local atomrun = require "atomrun.core"
local check = require "atomrun.check"

local M = {}

local names = { attempts = "limit", timeout = "seconds", base = "seconds", factor = "factor",
  max = "seconds", jitter = { "full", "equal", "none" }, retry_on = "function" }

--- retry(fn, opts) -> fn's first non-nil results | nil, last_msg, "timeout"
-- fn returns a value to stop, or nil, msg, code to be retried.
--   attempts  at most this many calls (default: unlimited while a timeout is set, else 5)
--   timeout   seconds from now; no call starts and no sleep runs past it
--   base 0.05, factor 2, max 5: delay n = min(max, base * factor^(n-1))
--   jitter    "full" (random 0..delay, the default: spreads a herd of
--             retriers), "equal" (delay/2 + random 0..delay/2), "none"
--   retry_on(msg, code) -> boolean: which failures to retry (default all)
function M.retry(fn, opts)
  check.arg("retry", 1, fn, "function")
  opts = check.opts("retry", 2, opts, names)
  local timeout = opts.timeout
  local attempts = opts.attempts or (timeout and math.huge or 5)
  local base = opts.base or 0.05
  local factor = opts.factor or 2
  local max = opts.max or 5
  local jitter = opts.jitter or "full"
  local retry_on = opts.retry_on
  local deadline = timeout and atomrun.now() + timeout
  local last_msg, last_code = "no attempt made", nil
  local n = 0
  while n < attempts do
    n = n + 1
    local results = table.pack(fn(n))
    if results[1] ~= nil then return table.unpack(results, 1, results.n) end
    last_msg, last_code = results[2], results[3]
    if last_msg == nil then last_msg = "the function returned nil" end
    if retry_on and not retry_on(last_msg, last_code) then
      return nil, last_msg, last_code
    end
    if n >= attempts then break end
    local delay = math.min(max, base * factor ^ (n - 1))
    if jitter == "full" then
      delay = math.random() * delay
    elseif jitter == "equal" then
      delay = delay / 2 + math.random() * delay / 2
    end
    if deadline then
      local left = deadline - atomrun.now()
      if left <= 0 then break end
      -- never sleep past the deadline; the last attempt starts at it
      delay = math.min(delay, left)
    end
    atomrun.sleep(delay)
  end
  return nil, string.format("gave up after %d attempt%s: %s", n, n == 1 and "" or "s",
    tostring(last_msg)), "timeout", last_code
end

return M
