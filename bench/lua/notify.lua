-- POST /agent/event/notify with a fresh Security Event Token each time (RFC 8935: the SET is the body)
dofile(os.getenv("BENCH_LUA_DIR") .. "/tokens.lua")
request = function()
  local t = next_token() or "exhausted"
  return wrk.format("POST", nil, { ["Content-Type"] = "application/secevent+jwt" }, t)
end
