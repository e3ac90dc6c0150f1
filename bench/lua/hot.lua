-- GET /api/resource with a valid API key, cycling through the keys in $BENCH_KEYS (one per line)
local keys = {}
for line in io.lines(os.getenv("BENCH_KEYS")) do keys[#keys + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", nil, { ["Authorization"] = "Bearer " .. keys[(i % #keys) + 1] })
end
