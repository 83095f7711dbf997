-- wrk script: POST /addons/usage-records, SIZE one-credit deductions per request,
-- each record with its own idempotency key, spread over ACCOUNTS buyers.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
  table.insert(threads, thread)
end

function init(args)
  key = args[1]; product = args[2]; accounts = tonumber(args[3]); run = args[4]; size = tonumber(args[5])
  ok, other = 0, 0
end

function request()
  counter = counter + 1
  local records = {}
  for i = 1, size do
    local n = counter * size + i
    local buyer = accounts == 1 and 0 or (n * 7919 + tid * 104729) % accounts
    records[i] = string.format(
      '{"product_id":"%s","buyer_email":"b%d@bench.example","value":-1,"idempotency_key":"%s-%d-%d-%d"}',
      product, buyer, run, tid, counter, i)
  end
  return wrk.format("POST", nil, {["Content-Type"] = "application/json",
                                  ["Authorization"] = "Bearer " .. key},
                    '{"records":[' .. table.concat(records, ",") .. ']}')
end

function response(status, headers, body)
  -- a 200 whose records are not all 200 counts as bad: every record here can succeed
  if status == 200 and not string.find(body, '"status":4', 1, true) then ok = ok + 1 else other = other + 1 end
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
