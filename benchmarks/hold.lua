-- wrk script: spend holds over HTTP. Each thread places a hold (POST
-- usage/hold, 10 credits, on one of ACCOUNTS buyers) and, when a hold's answer
-- has come back, captures 7 of it (POST /addons/holds/<id>/capture) with its
-- next request: one hold + capture pair per two requests. "ok" counts captures.
local counter = 0
local thread_id = 0
local threads = {}
local pending = {}

function setup(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
  table.insert(threads, thread)
end

function init(args)
  key = args[1]; product = args[2]; accounts = tonumber(args[3]); run = args[4]; prefix = args[5]
  ok, refused, other = 0, 0, 0
  headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. key}
end

function request()
  counter = counter + 1
  local hold_id = table.remove(pending)
  if hold_id then
    return wrk.format("POST", prefix .. "/addons/holds/" .. hold_id .. "/capture", headers,
      string.format('{"value":7,"idempotency_key":"%s-c-%d-%d"}', run, tid, counter))
  end
  local buyer = accounts == 1 and 0 or (counter * 7919 + tid * 104729) % accounts
  local body = string.format(
    '{"product_id":"%s","buyer_email":"b%d@bench.example","value":10,"description":"%s",' ..
    '"idempotency_key":"%s-h-%d-%d"}', product, buyer, run, run, tid, counter)
  return wrk.format("POST", prefix .. "/buyer-addon/usage/hold", headers, body)
end

function response(status, headers, body)
  if status == 201 then
    local id = string.match(body, '"id":"(hold_[^"]+)"')
    if id then table.insert(pending, id) end
  elseif status == 200 then ok = ok + 1
  elseif status == 402 then refused = refused + 1
  else other = other + 1 end
end

function done(summary, latency, requests)
  local ok_total, other_total = 0, 0
  for _, t in ipairs(threads) do
    ok_total = ok_total + t:get("ok"); other_total = other_total + t:get("other")
  end
  io.write(string.format("RESULT requests=%d errors=%d ok=%d bad_status=%d p50_us=%d p99_us=%d duration_us=%d\n",
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    ok_total, other_total, latency:percentile(50), latency:percentile(99), summary.duration))
end
