"""Benchmark room: the authmd_resource helper's own checks, in-process, as checks per second on one core.

- cached check: an opaque credential whose introspection answer the helper already holds (the first call asked a
  live authmd over loopback HTTP; every call after it is the digest, the LRU and the Identity);
- JWT check: a JWT access token verified locally on every call (header, ES256 signature, claims, Identity); the
  keys were fetched once from authmd's jwks_uri.

authmd runs in a thread (Werkzeug, on a fresh SQLite file built by the migrations), with the access_token_format
setting on "jwt". The figure is checks per CPU-second of this thread (time.thread_time), best of the rounds, so
other processes on a shared machine slow the wall clock but not the figure much; the load average is printed
beside it. Targets (issue 13): cached >= 100,000/s, JWT >= 5,000/s.

Usage: python -m bench.resource_checks [checks per round] [rounds]
"""
import os
import sys
import tempfile
import threading
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TARGETS = {"cached check (opaque credential, answer held)": 100_000, "JWT check (verified locally, ES256)": 5_000}


def serve(app) -> tuple[str, object]:
    from werkzeug.serving import make_server
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


def credentials_for_the_bench():
    """(authmd URL, server, resource server id and secret, an sk_ key, a JWT access token)."""
    from bench.bench import ISSUER, prepare_database
    from authmd import resource_servers, settings
    app, db = prepare_database("sqlite:///" + os.path.join(tempfile.mkdtemp(), "resource-checks.sqlite3"))
    with app.app_context():
        row, secret = resource_servers.add("Bench API", actor_id="bench")
        settings.update({"access_token_format": "jwt"})
        db.session.commit()
        client_id = row.client_id
    url, server = serve(app)
    key = requests.post(url + "/agent/auth", json={"type": "anonymous", "requested_credential_type": "api_key"},
                        timeout=10).json()["credential"]
    reg = requests.post(url + "/agent/identity", json={"type": "anonymous"}, timeout=10).json()
    jwt = requests.post(url + "/oauth2/token", timeout=10, data={
        "grant_type": JWT_BEARER, "assertion": reg["identity"]["assertion"]}).json()["access_token"]
    assert key.startswith("sk_") and jwt.startswith("eyJ"), (key, jwt)
    return ISSUER, url, server, client_id, secret, key, jwt


def main() -> int:
    import logging
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the set-up's few requests, not the figures
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    from authmd_resource import Client
    issuer, url, server, client_id, secret, key, jwt = credentials_for_the_bench()
    client = Client(issuer, client_id, secret, resource=issuer + "/api/", introspection_endpoint=url + "/oauth2/introspect",
                    jwks_uri=url + "/.well-known/jwks.json", cache_seconds=3600)
    cases = {"cached check (opaque credential, answer held)": "Bearer " + key,
             "JWT check (verified locally, ES256)": "Bearer " + jwt}
    base = "https://api.example.com/"
    for authorization in cases.values():  # the one introspection, the one key fetch
        assert client.identify(authorization, ("api.read",), base).sub
    results = {name: [] for name in cases}
    walls = {name: [] for name in cases}
    for _ in range(rounds):
        for name, authorization in cases.items():
            n = count if "cached" in name else max(1, count // 10)
            identify = client.identify
            cpu, wall = time.thread_time(), time.perf_counter()
            for _ in range(n):
                identify(authorization, ("api.read",), base)
            cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
            results[name].append(n / cpu)
            walls[name].append(n / wall)
    server.shutdown()
    load = os.getloadavg()
    print(f"authmd_resource checks in-process, one thread; {os.cpu_count()} CPUs, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1, 5, 15 min); best of {rounds} rounds")
    ok = True
    for name in cases:
        best, wall = max(results[name]), max(walls[name])
        target = TARGETS[name]
        passed = best >= target
        ok &= passed
        print(f"  {name:<48} {best:>10,.0f} checks/s per CPU-second ({1e6 / best:6.1f} µs)  "
              f"wall {wall:>10,.0f}/s   target >= {target:,}: {'PASS' if passed else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
