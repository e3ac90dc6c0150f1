"""Benchmark room: profile one endpoint in-process with pyinstrument (what to optimise, before optimising).

Usage: python -m bench.profile [hot|discovery|authmd|anonymous|idjag|healthz] [requests]
"""
import os
import sys

from pyinstrument import Profiler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PATHS = {"hot": ("GET", "/api/resource"), "discovery": ("GET", "/.well-known/oauth-authorization-server"),
         "authmd": ("GET", "/auth.md"), "anonymous": ("POST", "/agent/auth"), "idjag": ("POST", "/agent/auth"), "healthz": ("GET", "/healthz")}


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else "hot"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    from bench import load
    app, db = load.small_app("profile.sqlite3")
    client = app.test_client()
    method, path = PATHS[which]
    kw = {}
    if which == "hot":
        kw["headers"] = {"Authorization": "Bearer " + load.token(42)}
    if which == "anonymous":
        kw["json"] = {"type": "anonymous", "requested_credential_type": "api_key"}
    bodies = None
    if which == "idjag":  # every request needs a fresh jti: tokens are minted before the profile starts
        from bench.bench import ID_JAG, Provider
        from authmd.models import TrustedIssuer
        from authmd.util import utcnow
        provider = Provider()
        with app.app_context():
            db.session.add(TrustedIssuer(issuer=provider.issuer, name="bench", enabled=True, created_at=utcnow()))
            db.session.commit()
        bodies = iter([{"type": "identity_assertion", "assertion_type": ID_JAG,
                        "assertion": provider.id_jag(n), "requested_credential_type": "access_token"}
                       for n in range(count + 50)])
    for _ in range(50):
        if bodies is not None:
            kw["json"] = next(bodies)
        r = client.open(path, method=method, **kw)
        assert r.status_code == 200, r.get_data(as_text=True)
    profiler = Profiler(interval=0.0005)
    profiler.start()
    for _ in range(count):
        if bodies is not None:
            kw["json"] = next(bodies)
        client.open(path, method=method, **kw)
    profiler.stop()
    print(profiler.output_text(unicode=False, color=False, show_all=False))


if __name__ == "__main__":
    main()
