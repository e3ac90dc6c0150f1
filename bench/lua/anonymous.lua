-- POST /agent/auth, anonymous: every request creates a registration, a key and two audit rows
wrk.method = "POST"
wrk.body = '{"type":"anonymous","requested_credential_type":"api_key"}'
wrk.headers["Content-Type"] = "application/json"
