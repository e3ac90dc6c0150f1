-- POST /oauth2/introspect as a resource server (HTTP Basic from $BENCH_BASIC), cycling through the keys in
-- $BENCH_KEYS (one per line; bench keys need no form escaping)
local keys = {}
for line in io.lines(os.getenv("BENCH_KEYS")) do keys[#keys + 1] = line end
local headers = { ["Authorization"] = os.getenv("BENCH_BASIC"),
                  ["Content-Type"] = "application/x-www-form-urlencoded" }
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", nil, headers, "token=" .. keys[(i % #keys) + 1])
end
