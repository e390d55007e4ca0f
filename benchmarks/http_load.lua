-- wrk script of bench_http.py: one request per random user, bounded request count, JSON summary.
-- Arguments (after `--`): mode ("usp" or "feast"), users, max requests per thread, limit.
--   usp:   GET  /v1/users/<id>/signals/bench?limit=<limit>
--   feast: POST /get-online-features  {"features": ["bench:f0", ...], "entities": {"user_id": [<id>]}}

local counter = 0
local threads = {}

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

function init(args)
  mode = args[1] or "usp"
  users = tonumber(args[2] or "10000")
  max_requests = tonumber(args[3] or "0")
  limit = args[4] or "50"
  seen = 0
  bad = 0
  math.randomseed(id * 7919)
  local features = {}
  for i = 0, 9 do
    features[#features + 1] = '"bench:f' .. i .. '"'
  end
  feature_list = table.concat(features, ",")
  headers = {["Content-Type"] = "application/json"}
end

function request()
  local user = math.random(1, users)
  if mode == "feast" then
    local body = '{"features":[' .. feature_list .. '],"entities":{"user_id":[' .. user .. ']}}'
    return wrk.format("POST", "/get-online-features", headers, body)
  end
  return wrk.format("GET", "/v1/users/" .. user .. "/signals/bench?limit=" .. limit)
end

function response(status, headers, body)
  seen = seen + 1
  if status ~= 200 then
    bad = bad + 1
  end
  if max_requests > 0 and seen >= max_requests then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local non200 = 0
  for _, thread in ipairs(threads) do
    non200 = non200 + (thread:get("bad") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, "non_200": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, summary.bytes, non200,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
