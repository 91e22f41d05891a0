-- wrk script: method and headers from the environment, a JSON summary on stdout.
--   WRK_METHOD=HEAD|GET   WRK_ACCEPT="media/type, ..."
--   WRK_PATHS="/a /b"     requests cycle through these paths (each connection in turn) instead of the URL's
-- The summary line starts with "JSON " so the caller can find it among wrk's own output.
local method = os.getenv("WRK_METHOD")
if method and method ~= "" then wrk.method = method end
local accept = os.getenv("WRK_ACCEPT")
if accept and accept ~= "" then wrk.headers["Accept"] = accept end

local paths = os.getenv("WRK_PATHS")
if paths and paths ~= "" then
  -- Formatted once per thread: request() only hands out the next ready-made request.
  local ready, n = {}, 0
  init = function(args)
    for p in paths:gmatch("%S+") do ready[#ready + 1] = wrk.format(nil, p) end
  end
  request = function()
    n = n % #ready + 1
    return ready[n]
  end
end

-- No response() callback: defining one makes wrk parse every header into Lua and
-- would cap the request rate we are trying to measure. Non-2xx/3xx count as errors.status.

done = function(summary, latency, requests)
  local pcts = {1, 5, 10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 95, 97, 98, 99, 99.5, 99.9, 99.99, 100}
  local cdf = {}
  for _, p in ipairs(pcts) do
    cdf[#cdf + 1] = string.format("[%g, %d]", p, latency:percentile(p))
  end
  local e = summary.errors
  io.write(string.format(
    'JSON {"duration_us": %d, "requests": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"lat_us": {"min": %d, "mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d}, "cdf_us": [%s]}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    table.concat(cdf, ", ")))
end
