-- POST /agent/auth/revoke with a fresh logout token each time
dofile(os.getenv("BENCH_LUA_DIR") .. "/tokens.lua")
request = function()
  local t = next_token() or "exhausted"
  return wrk.format("POST", nil, { ["Content-Type"] = "application/logout+jwt" }, t)
end
