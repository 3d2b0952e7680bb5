-- Like post_json.lua, with a new Idempotency-Key on every request (no replays: each request is
-- processed and its answer stored), unique across wrk's threads and across runs.
local f = assert(io.open(assert(os.getenv("BENCH_BODY_FILE"), "BENCH_BODY_FILE unset"), "rb"))
local body = f:read("*a")
f:close()
local threads = 0
local run = tostring(os.time())

function setup(thread)
  threads = threads + 1
  thread:set("prefix", "bench-" .. run .. "-" .. threads .. "-")
end

local counter = 0
function request()
  counter = counter + 1
  -- wrk.format uses only the headers it is given: copy wrk -H's (Authorization) in.
  local headers = {}
  for name, value in pairs(wrk.headers) do
    headers[name] = value
  end
  headers["Content-Type"] = "application/json"
  headers["Idempotency-Key"] = prefix .. counter
  return wrk.format("POST", nil, headers, body)
end

dofile(assert(os.getenv("BENCH_WRK_REPORT"), "BENCH_WRK_REPORT unset"))
