"""Benchmark room: profile one endpoint in-process with pyinstrument (what to optimise, before optimising).

Usage: python -m bench.profile [hot|discovery|authmd|anonymous|healthz] [requests]
"""
import os
import sys
import tempfile

from pyinstrument import Profiler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PATHS = {"hot": ("GET", "/api/resource"), "discovery": ("GET", "/.well-known/oauth-authorization-server"),
         "authmd": ("GET", "/auth.md"), "anonymous": ("POST", "/agent/auth"), "healthz": ("GET", "/healthz")}


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else "hot"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    from bench import load
    from bench.bench import prepare_database
    url = os.environ.get("AUTHMD_BENCH_URL") or "sqlite:///" + os.path.join(tempfile.mkdtemp(), "p.sqlite3")
    app, db = prepare_database(url)
    with app.app_context():
        loader = load.Loader(db.engine)
        loader.registrations(10_000)
        loader.credentials(0, 10_000, 10_000)
    client = app.test_client()
    method, path = PATHS[which]
    kw = {}
    if which == "hot":
        kw["headers"] = {"Authorization": "Bearer " + load.token(42)}
    if which == "anonymous":
        kw["json"] = {"type": "anonymous", "requested_credential_type": "api_key"}
    for _ in range(50):
        assert client.open(path, method=method, **kw).status_code == 200
    profiler = Profiler(interval=0.0005)
    profiler.start()
    for _ in range(count):
        client.open(path, method=method, **kw)
    profiler.stop()
    print(profiler.output_text(unicode=False, color=False, show_all=False))


if __name__ == "__main__":
    main()
