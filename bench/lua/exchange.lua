-- POST /oauth2/token, jwt-bearer: an identity assertion from $BENCH_KEYS (one per line, cycled; an exchange
-- does not spend it) for an access token, form-encoded (assertions need no form escaping)
local assertions = {}
for line in io.lines(os.getenv("BENCH_KEYS")) do assertions[#assertions + 1] = line end
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
local prefix = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion="
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", nil, headers, prefix .. assertions[(i % #assertions) + 1])
end
