-- POST /agent/identity, refresh: a never-sent refresh token each time (rotation spends it)
dofile(os.getenv("BENCH_LUA_DIR") .. "/tokens.lua")
request = function()
  local t = next_token() or "exhausted"
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" },
    '{"type":"refresh","refresh_token":"' .. t .. '"}')
end
