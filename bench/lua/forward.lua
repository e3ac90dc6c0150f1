-- GET /auth/forward as a reverse proxy asks it (nginx auth_request): the agent's key from $BENCH_KEYS (one per
-- line, cycled) and the scope the route needs
local keys = {}
for line in io.lines(os.getenv("BENCH_KEYS")) do keys[#keys + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", nil, { ["Authorization"] = "Bearer " .. keys[(i % #keys) + 1],
                                  ["X-Authmd-Required-Scope"] = "api.read" })
end
