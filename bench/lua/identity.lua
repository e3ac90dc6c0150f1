-- POST /agent/identity, anonymous (the latest protocol): every request creates a registration, signs its
-- identity assertion (ES256, the service's key) and writes the audit rows
wrk.method = "POST"
wrk.body = '{"type":"anonymous"}'
wrk.headers["Content-Type"] = "application/json"
