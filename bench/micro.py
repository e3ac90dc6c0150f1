"""Benchmark room: per-request cost of one endpoint inside the WSGI app, without a server or a profiler.

Calls the Flask WSGI callable directly with a prepared environ, so what is timed is authmd + Flask +
Werkzeug (what a gunicorn worker runs after parsing the request). Prints microseconds per request
for the endpoint and for GET /healthz, interleaved in rounds so machine noise hits both alike.

Usage: python -m bench.micro [hot|discovery|authmd|anonymous|idjag|revoke|identity|exchange|refresh|notify]
       [requests] [rounds]
"""
import io
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def environ(method, path, headers=None, body=b"", content_type="application/json"):
    env = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "localhost",
           "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
           "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
           "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
           "HTTP_HOST": "localhost:8000", "HTTP_USER_AGENT": "wrk", "CONTENT_LENGTH": str(len(body))}
    if body:
        env["CONTENT_TYPE"] = content_type
    for k, v in (headers or {}).items():
        env["HTTP_" + k.upper().replace("-", "_")] = v
    return env


def call(app, env, status_out):
    def start_response(status, headers, exc_info=None):
        status_out.append(status)
    env = dict(env)
    env["wsgi.input"] = io.BytesIO(env["wsgi.input"].getvalue())
    it = app(env, start_response)
    b"".join(it)
    if hasattr(it, "close"):
        it.close()


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else "hot"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    from bench import load
    from bench.bench import ID_JAG, Provider
    app, db = load.small_app("micro.sqlite3")
    wsgi = app.wsgi_app
    health = environ("GET", "/healthz")
    envs = None
    if which == "hot":
        env = environ("GET", "/api/resource", {"Authorization": "Bearer " + load.token(42)})
    elif which == "discovery":
        env = environ("GET", "/.well-known/oauth-authorization-server")
    elif which == "authmd":
        env = environ("GET", "/auth.md")
    elif which == "anonymous":
        env = environ("POST", "/agent/auth", body=json.dumps(
            {"type": "anonymous", "requested_credential_type": "api_key"}).encode())
    elif which == "identity":
        env = environ("POST", "/agent/identity", body=b'{"type":"anonymous"}')
    elif which == "exchange":  # one assertion, exchanged again and again (the exchange does not spend it)
        from bench import latest
        (_, assertion), = latest.anonymous_identities(app, 1)
        env = environ("POST", "/oauth2/token", body=(latest.FORM_JWT_BEARER + assertion).encode(),
                      content_type="application/x-www-form-urlencoded")
    elif which == "refresh":  # a fresh refresh token every request (rotation spends it)
        from bench import latest
        ids = [reg for reg, _ in latest.anonymous_identities(app, 10)]
        user_id = latest.claim(app, db, ids)
        with app.app_context():
            minted = latest.refresh_tokens(load.Loader(db.engine), ids, user_id, count * rounds + 50)
        envs = iter([environ("POST", "/agent/identity", body=json.dumps({"type": "refresh", "refresh_token": t})
                             .encode()) for t in minted])
    elif which in ("idjag", "revoke", "notify"):
        from authmd.models import TrustedIssuer
        from authmd.util import utcnow
        provider = Provider()
        with app.app_context():
            db.session.add(TrustedIssuer(issuer=provider.issuer, name="bench", enabled=True, created_at=utcnow()))
            db.session.commit()
        total = count * rounds + 50
        if which == "notify":  # subjects with nothing bound: the SET's checks, its jti, an empty revocation
            envs = iter([environ("POST", "/agent/event/notify", body=provider.security_event(f"bench-user-{n}")
                                 .encode(), content_type="application/secevent+jwt") for n in range(total)])
        else:
            bodies = [{"type": "identity_assertion", "assertion_type": ID_JAG, "assertion": provider.id_jag(n),
                       "requested_credential_type": "access_token"} for n in range(total)]
            envs = iter([environ("POST", "/agent/auth", body=json.dumps(b).encode()) for b in bodies])
        if which == "revoke":
            for _ in range(total):
                call(wsgi, next(envs), [])
            envs = iter([environ("POST", "/agent/auth/revoke", body=provider.logout(f"bench-user-{n}").encode(),
                                 content_type="application/logout+jwt") for n in range(total)])
    else:
        raise SystemExit(__doc__)
    status = []
    for _ in range(50):
        call(wsgi, next(envs) if envs else env, status)
    assert all(s.startswith(("200", "202")) for s in status), status[:2]
    results = {"endpoint": [], "healthz": []}
    for _ in range(rounds):
        for name in ("healthz", "endpoint"):
            status = []
            t0 = time.perf_counter()
            for _ in range(count):
                call(wsgi, (next(envs) if envs else env) if name == "endpoint" else health, status)
            results[name].append((time.perf_counter() - t0) / count * 1e6)
            assert all(s.startswith(("200", "202")) for s in status), status[:3]
    med = {k: min(v) for k, v in results.items()}
    print(f"{which}: {med['endpoint']:.0f} µs/request (best of {rounds}×{count}); "
          f"healthz {med['healthz']:.0f} µs; difference {med['endpoint'] - med['healthz']:.0f} µs")


if __name__ == "__main__":
    main()
