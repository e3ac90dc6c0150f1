-- POST /agent/auth with a fresh ID-JAG each time (pre-minted: the signature check is the server's cost)
dofile(os.getenv("BENCH_LUA_DIR") .. "/tokens.lua")
request = function()
  local t = next_token() or "exhausted"
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" },
    '{"type":"identity_assertion","assertion_type":"urn:ietf:params:oauth:token-type:id-jag",' ..
    '"requested_credential_type":"access_token","assertion":"' .. t .. '"}')
end
