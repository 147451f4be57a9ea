-- wrk script: POST the JSON body in the file $BODY_FILE, then print the run's figures as one JSON
-- line for bench/run.py. Latencies are in microseconds; errors.status counts answers >= 400.
local file = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"
-- bench/guard.py: the bearer token of a service that requires one
if os.getenv("AUTHORIZATION") then
  wrk.headers["Authorization"] = os.getenv("AUTHORIZATION")
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "errors": '
      .. '{"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
