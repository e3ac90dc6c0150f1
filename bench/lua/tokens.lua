-- shared by idjag.lua, revoke.lua, sparse.lua, refresh.lua and notify.lua: each request takes a never-used
-- token (fresh jti, unspent refresh token, unused key) from $BENCH_TOKENS;
-- thread t of T takes tokens t, t+T, t+2T, ... so no two threads send the same one
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
tokens = {}
for line in io.lines(os.getenv("BENCH_TOKENS")) do tokens[#tokens + 1] = line end
nthreads = tonumber(os.getenv("BENCH_THREADS"))
sent = 0
function next_token()
  local index = tid + sent * nthreads + 1
  sent = sent + 1
  if index > #tokens then
    return nil
  end
  return tokens[index]
end
