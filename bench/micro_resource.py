"""Benchmark room: per-request cost of the resource-server doors in-process, as bench.micro measures the others.

POST /oauth2/introspect with the resource-server check answered from the worker's copy of the table
(RESOURCE_SERVER_CACHE_SECONDS=1, the default) and from the database on every call (0), GET /auth/forward,
and the hot path GET /api/resource, each against GET /healthz, interleaved in rounds, best of the rounds.

Usage: python -m bench.micro_resource [requests] [rounds]    (AUTHMD_BENCH_URL for PostgreSQL, as bench.micro)
"""
import base64
import sys
import time
from urllib.parse import urlencode

from bench.micro import call, environ


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    from bench import load
    from authmd import resource_servers
    app, db = load.small_app("micro-resource.sqlite3")
    with app.app_context():
        row, secret = resource_servers.add("Bench API", actor_id="bench")
        db.session.commit()
        basic = "Basic " + base64.b64encode(f"{row.client_id}:{secret}".encode()).decode()
    wsgi = app.wsgi_app
    token = load.token(42)
    body = urlencode({"token": token}).encode()
    introspect = environ("POST", "/oauth2/introspect", {"Authorization": basic}, body=body,
                         content_type="application/x-www-form-urlencoded")
    cases = {
        "healthz": (environ("GET", "/healthz"), 1),
        "hot": (environ("GET", "/api/resource", {"Authorization": "Bearer " + token}), 1),
        "forward": (environ("GET", "/auth/forward", {"Authorization": "Bearer " + token,
                                                     "X-Authmd-Required-Scope": "api.read"}), 1),
        "introspect (cached table)": (introspect, 1),
        "introspect (no cache)": (introspect, 0),
    }
    results = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (env, ttl) in cases.items():
            app.config["RESOURCE_SERVER_CACHE_SECONDS"] = ttl
            status = []
            for _ in range(50):
                call(wsgi, env, status)
            status = []
            t0 = time.perf_counter()
            for _ in range(count):
                call(wsgi, env, status)
            results[name].append((time.perf_counter() - t0) / count * 1e6)
            assert all(s.startswith("200") for s in status), (name, status[:3])
    floor = min(results["healthz"])
    for name, values in results.items():
        best = min(values)
        print(f"{name:28s} {best:6.0f} µs/request (best of {rounds}×{count}); over healthz {best - floor:5.0f} µs")


if __name__ == "__main__":
    main()
