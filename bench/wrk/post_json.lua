-- POSTs the JSON file named by BENCH_BODY_FILE on every request, then reports like report.lua
-- (whose absolute path is BENCH_WRK_REPORT). The Authorization header comes from wrk -H.
local f = assert(io.open(assert(os.getenv("BENCH_BODY_FILE"), "BENCH_BODY_FILE unset"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
dofile(assert(os.getenv("BENCH_WRK_REPORT"), "BENCH_WRK_REPORT unset"))
