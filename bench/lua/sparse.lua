-- GET /api/resource, every call with a key not used before in this run (its last_used_at is empty, so the
-- check also writes it): what agents that call less than once a minute cost
dofile(os.getenv("BENCH_LUA_DIR") .. "/tokens.lua")
request = function()
  return wrk.format("GET", nil, { ["Authorization"] = "Bearer " .. (next_token() or "exhausted") })
end
