"""Benchmark room: authmd under the production gunicorn config, driven by wrk over loopback.

Prints req/s, p50 and p99 per endpoint and the ratio to GET /healthz measured in the same run,
then checks the issue's targets. The write rows have no targets (on two CPUs the database's own work leaves
no room for the old 0.5x and 0.35x): each is printed beside the database's floor for a registration
(bench/floor.py).
Usage: bench/run [--pg] [--duration S] [--connections N] [--quick]
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
BENCH = os.path.join(ROOT, "bench")
ISSUER = "http://localhost:8000"
from authmd.wire import ID_JAG, REVOKED_EVENT  # noqa: E402  (the protocol's names, from their one home)

TARGETS = {"GET /api/resource": 0.85, "GET /.well-known/oauth-authorization-server": 0.9, "GET /auth.md": 0.9,
           "POST /oauth2/introspect": 0.85, "GET /auth/forward": 0.85}
# printed against their ratio but never failing the run (the issue's wish for the latest protocol's exchange)
SOFT_TARGETS = {"POST /oauth2/token (exchange)": 0.4}
# the rows that write a transaction per request, printed beside the database floor. The anonymous and ID-JAG
# registrations had targets (0.5x, 0.35x) until measurements showed them out of reach on two CPUs, the
# database alone taking most of what they allowed: they are measured still, and compared with that floor.
WRITE_ROWS = ["POST /agent/auth anonymous", "POST /agent/auth ID-JAG", "POST /agent/auth/revoke",
              "POST /agent/identity anonymous", "POST /oauth2/token (exchange)", "POST /agent/identity refresh",
              "POST /agent/event/notify"]
TOKENS_PER_SLICE = 8000  # single-use tokens minted for each wrk slice: more than a slice can send


def say(*args):
    print(*args, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- database

def prepare_database(url: str):
    from sqlalchemy import create_engine, text
    if url.startswith("postgresql"):
        from sqlalchemy.engine import make_url
        u = make_url(url)
        admin = create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": u.database}).first():
                conn.execute(text(f'CREATE DATABASE "{u.database}"'))
        admin.dispose()
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    from app import create_app
    from authmd.cli import init_db
    from authmd.extensions import db
    app = create_app({"DATABASE_URL": url, "SECRET_KEY": "bench-secret", "ISSUER": ISSUER, "RATELIMIT_ENABLED": False})
    with app.app_context():
        init_db()
    return app, db


# ---------------------------------------------------------------- a provider for ID-JAG and logout tokens

class Provider:
    def __init__(self):
        from cryptography.hazmat.primitives.asymmetric import ec
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.kid = "bench-ec"
        nums = self.key.public_key().public_numbers()
        b = lambda i: _b64(i.to_bytes(32, "big"))  # noqa: E731
        self.jwks = {"keys": [{"kty": "EC", "crv": "P-256", "x": b(nums.x), "y": b(nums.y), "kid": self.kid,
                               "alg": "ES256", "use": "sig"}]}
        body = json.dumps(self.jwks).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "max-age=86400")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.issuer = f"http://127.0.0.1:{self.server.server_port}/bench"

    def sign(self, payload: dict, typ: str) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
        header = {"alg": "ES256", "typ": typ, "kid": self.kid}
        signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(payload).encode())
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return signing_input + "." + _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def id_jag(self, n: int) -> str:
        now = int(time.time())
        return self.sign({"iss": self.issuer, "sub": f"bench-user-{n}", "aud": ISSUER, "iat": now, "exp": now + 3000,
                          "jti": uuid.uuid4().hex, "email": f"bench{n}@example.com", "email_verified": True,
                          "client_id": "bench", "agent_platform": "BenchAgent/1.0"}, "oauth-id-jag+jwt")

    def logout(self, sub: str) -> str:
        now = int(time.time())
        return self.sign({"iss": self.issuer, "sub": sub, "aud": ISSUER, "iat": now, "exp": now + 3000,
                          "jti": uuid.uuid4().hex,
                          "events": {REVOKED_EVENT: {}}},
                         "logout+jwt")

    def security_event(self, sub: str) -> str:
        """A Security Event Token (RFC 8417) revoking what sub's assertions gave, as POST /agent/event/notify
        takes it (no exp: provider revocations may leave it out)."""
        return self.sign({"iss": self.issuer, "sub": sub, "aud": ISSUER, "iat": int(time.time()),
                          "jti": uuid.uuid4().hex, "events": {REVOKED_EVENT: {}}}, "secevent+jwt")


def _b64(data: bytes) -> str:
    import base64
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# ---------------------------------------------------------------- server

class Server:
    def __init__(self, url: str, workers: int, log_dir: str):
        self.workers = workers
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHMD_")}
        env.update({"AUTHMD_BIND": f"127.0.0.1:{self.port}", "AUTHMD_WORKERS": str(workers),
                    "AUTHMD_DATABASE_URL": url, "AUTHMD_SECRET_KEY": "bench-secret", "AUTHMD_ISSUER": ISSUER,
                    "AUTHMD_RATELIMIT_ENABLED": "0",  # the bench measures the endpoints, not the limiter's 429s
                    "AUTHMD_ACCESS_LOG": "none", "AUTHMD_MAX_REQUESTS": "0"})
        self.log = open(os.path.join(log_dir, f"gunicorn-{workers}-workers.log"), "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
                                     cwd=ROOT, env=env, stdout=self.log, stderr=self.log, start_new_session=True)
        import urllib.request
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.base + "/healthz", timeout=1).read()
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise SystemExit("gunicorn did not start; see " + self.log.name)

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True)
        return [int(x) for x in out.stdout.split()]

    def worker_rss_mb(self) -> dict:
        rss = {}
        for pid in self.worker_pids():
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        rss[pid] = int(line.split()[1]) / 1024
        return rss

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


# ---------------------------------------------------------------- wrk

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(m.group(1)) * UNITS[m.group(2)]


def wrk(base: str, path: str, script: str | None, args, env=None) -> dict:
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s", "--latency", "--timeout", "10s"]
    if script:
        cmd += ["-s", os.path.join(BENCH, "lua", script)]
    env = {**os.environ, "BENCH_LUA_DIR": os.path.join(BENCH, "lua"), **(env or {})}
    out = subprocess.run(cmd + [base + path], capture_output=True, text=True, env=env,
                         timeout=args.duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": rps, "p50": _ms(lat["50"]), "p99": _ms(lat["99"]), "requests": total,
            "non2xx": int(bad.group(1)) if bad else 0,
            "timeouts": int(sock.group(4)) if sock else 0, "raw": out}


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pg", action="store_true", help="run on PostgreSQL (see --pg-url) instead of SQLite")
    ap.add_argument("--pg-url", default=os.environ.get("AUTHMD_BENCH_PG_URL",
                                                      "postgresql+psycopg://postgres@127.0.0.1:5432/authmd_bench"),
                    help="PostgreSQL database for --pg; its public schema is DROPPED and rebuilt")
    ap.add_argument("--duration", type=int, default=10,
                    help="seconds per endpoint, and as much again for healthz beside it (default 10)")
    ap.add_argument("--rounds", type=int, default=5,
                    help="healthz/endpoint alternations per endpoint (default 5; each slice duration/rounds s)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    ap.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                    help="gunicorn workers (default: one per CPU; the load generator shares the machine)")
    ap.add_argument("--quick", action="store_true", help="small data (10k registrations, 100k events, 10k keys)")
    ap.add_argument("--only", default="",
                    help="comma-separated subset of hot,introspect,forward,discovery,authmd,anonymous,idjag,revoke,"
                         "identity,exchange,refresh,notify (default: all); "
                         "targets not measured are reported as skipped")
    ap.add_argument("--pg-workers-production", action=argparse.BooleanOptionalAction, default=None,
                    help="measure the write rows a second time under the production worker count, 2×CPU+1 "
                         "(default: on with --pg, where writes wait on commits rather than CPU; off on SQLite, "
                         "whose one writer at a time more workers cannot widen)")
    args = ap.parse_args()
    production = args.pg if args.pg_workers_production is None else args.pg_workers_production
    production_workers = 2 * (os.cpu_count() or 1) + 1
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    wanted = lambda key: not only or key in only  # noqa: E731

    regs, events, big = (10_000, 100_000, 10_000) if args.quick else (100_000, 1_000_000, 1_000_000)
    small = 1_000
    results_dir = os.path.join(BENCH, "results")
    os.makedirs(results_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="authmd-bench-")
    url = args.pg_url if args.pg else "sqlite:///" + os.path.join(work, "bench.sqlite3")
    say(f"authmd benchmark: {'PostgreSQL' if args.pg else 'SQLite'}, {os.cpu_count()} CPUs, "
        f"gunicorn {args.workers} sync workers, wrk -t{args.threads} -c{args.connections} -d{args.duration}s"
        + (f"; write rows again with {production_workers} workers" if production else ""))

    import bench.latest as latest
    import bench.load as load
    app, db = prepare_database(url)
    with app.app_context():
        loader = load.Loader(db.engine)
        t = time.monotonic()
        loader.registrations(regs)
        loader.audit(events, regs)
        loader.credentials(0, small, regs)
        if loader.pg:
            loader.analyze()
        say(f"loaded {regs:,} registrations, {events:,} audit events, {small:,} credentials "
            f"in {time.monotonic() - t:.1f} s")

    provider = Provider()  # the ID-JAG issuer the bench trusts, its JWKS served over loopback HTTP
    from authmd.models import TrustedIssuer
    from authmd.util import utcnow
    with app.app_context():
        db.session.add(TrustedIssuer(issuer=provider.issuer, name="bench", enabled=True, created_at=utcnow()))
        db.session.commit()

    # a resource server for the introspection rows (its secret, as the console or CLI shows it once)
    import base64
    from authmd import resource_servers
    with app.app_context():
        rs_row, rs_secret = resource_servers.add("Bench API", actor_id="bench")
        db.session.commit()
        basic = "Basic " + base64.b64encode(f"{rs_row.client_id}:{rs_secret}".encode()).decode()

    keys_small = os.path.join(work, "keys-small.txt")
    with open(keys_small, "w") as fh:
        fh.writelines(load.token(n) + "\n" for n in range(small))

    server = Server(url, args.workers, work)
    rows, notes, rss_production = {}, [], {}
    try:
        keys = {"GET /api/resource (1k credentials)": "hot", "GET /api/resource": "hot",
                "GET /api/resource (first call in a minute: writes last_used_at)": "hot",
                "POST /oauth2/introspect": "introspect", "GET /auth/forward": "forward",
                "GET /.well-known/oauth-authorization-server": "discovery", "GET /auth.md": "authmd",
                "POST /agent/auth anonymous": "anonymous", "POST /agent/auth ID-JAG": "idjag",
                "POST /agent/auth/revoke": "revoke", "POST /agent/identity anonymous": "identity",
                "POST /oauth2/token (exchange)": "exchange", "POST /agent/identity refresh": "refresh",
                "POST /agent/event/notify": "notify"}

        def run(name, path, script=None, env=None, round_env=None, prepare=None, suffix=""):
            """Measure one row (named name + suffix). prepare, if given, is called only when the row is
            measured and returns more keyword arguments (env, round_env): tokens are minted only then."""
            if not wanted(keys[name]):
                if not suffix:
                    notes.append(f"{name}: not measured (--only)")
                return None
            if prepare:
                more = prepare()
                env, round_env = more.get("env", env), more.get("round_env", round_env)
            # GET /healthz and the endpoint alternate in short slices and each slice's ratio is taken
            # against its neighbour: drift in the machine's load (other processes) cancels out
            slice_args = argparse.Namespace(**{**vars(args), "duration": max(1, args.duration // args.rounds)})
            hs, es = [], []
            for n in range(args.rounds):
                hs.append(wrk(server.base, "/healthz", None, slice_args))
                es.append(wrk(server.base, path, script, slice_args, {**(env or {}), **(round_env(n) if round_env else {})}))
            med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
            r = {"rps": sum(e["requests"] for e in es) / (slice_args.duration * args.rounds),
                 "p50": med([e["p50"] for e in es]), "p99": med([e["p99"] for e in es]),
                 "non2xx": sum(e["non2xx"] for e in es), "timeouts": sum(e["timeouts"] for e in es),
                 "healthz": sum(h["requests"] for h in hs) / (slice_args.duration * args.rounds),
                 "ratio": med([e["rps"] / h["rps"] for e, h in zip(es, hs)]),
                 "row": name, "workers": server.workers}
            name += suffix
            rows[name] = r
            flag = "" if not (r["non2xx"] or r["timeouts"]) else f"  !! {r['non2xx']} non-2xx, {r['timeouts']} timeouts"
            say(f"  {name:<46} {r['rps']:>9.1f} req/s  p50 {r['p50']:7.2f} ms  p99 {r['p99']:7.2f} ms"
                f"  healthz {r['healthz']:7.1f} req/s  ratio {r['ratio']:.2f}{flag}")
            return r

        say("\nwarm-up ...")
        wrk(server.base, "/healthz", None, argparse.Namespace(**{**vars(args), "duration": 2}))
        wrk(server.base, "/api/resource", "hot.lua", argparse.Namespace(**{**vars(args), "duration": 2}),
            {"BENCH_KEYS": keys_small})
        say("\nmeasuring (each endpoint %d s):" % args.duration)
        run("GET /api/resource (1k credentials)", "/api/resource", "hot.lua", {"BENCH_KEYS": keys_small})

        with app.app_context():
            t = time.monotonic()
            loader.credentials(small, big, regs)
            if loader.pg:
                loader.analyze()
            say(f"  (loaded {big - small:,} more credentials: {big:,} in all, in {time.monotonic() - t:.1f} s)")
        keys_big = os.path.join(work, "keys-big.txt")
        import random
        picks = random.Random(3).sample(range(big), 1000)
        with open(keys_big, "w") as fh:
            fh.writelines(load.token(n) + "\n" for n in picks)
        wrk(server.base, "/api/resource", "hot.lua", argparse.Namespace(**{**vars(args), "duration": 2}),
            {"BENCH_KEYS": keys_big})
        run("GET /api/resource", "/api/resource", "hot.lua", {"BENCH_KEYS": keys_big})
        # the resource-server doors, with the same keys (1M credentials in the table): each is the hot path's
        # lookup plus its own answer (introspection also checks the resource server's secret)
        run("POST /oauth2/introspect", "/oauth2/introspect", "introspect.lua", {"BENCH_KEYS": keys_big,
                                                                                "BENCH_BASIC": basic})
        run("GET /auth/forward", "/auth/forward", "forward.lua", {"BENCH_KEYS": keys_big})
        if wanted("hot"):
            # agents that call less than once a minute: every call also writes last_used_at (no target;
            # the rows above preload a fresh last_used_at, so they measure the read-only check)
            # keys of their own, never used: more per slice than a slice can send (else they show as non-2xx)
            per_round = max(8000, 5000 * args.duration // args.rounds)
            first = big
            with app.app_context():
                loader.credentials(first, first + per_round * args.rounds, regs, used=False)
                if loader.pg:
                    loader.analyze()
            sparse = []
            for n in range(args.rounds):
                path = os.path.join(work, f"keys-sparse-{n}.txt")
                with open(path, "w") as fh:
                    fh.writelines(load.token(k) + "\n" for k in range(first + n * per_round, first + (n + 1) * per_round))
                sparse.append(path)
        run("GET /api/resource (first call in a minute: writes last_used_at)", "/api/resource", "sparse.lua",
            round_env=lambda n: {"BENCH_TOKENS": sparse[n], "BENCH_THREADS": str(args.threads)})
        run("GET /.well-known/oauth-authorization-server", "/.well-known/oauth-authorization-server")
        run("GET /auth.md", "/auth.md")

        def token_files(prefix, mint):
            # every wrk slice is a new process whose Lua counter restarts: each slice gets its own file,
            # so no token (jti, refresh token) is ever sent twice
            paths = []
            for n in range(args.rounds):
                path = os.path.join(work, f"{prefix}-{n}.txt")
                with open(path, "w") as fh:
                    fh.writelines(mint(n * TOKENS_PER_SLICE + i) + "\n" for i in range(TOKENS_PER_SLICE))
                paths.append(path)
            return lambda n: {"BENCH_TOKENS": paths[n], "BENCH_THREADS": str(args.threads)}

        def exchange_assertions():
            """The exchange's assertions: a pool of pending anonymous registrations (made once, cycled)."""
            path = os.path.join(work, "assertions.txt")
            if not os.path.exists(path):
                t = time.monotonic()
                with open(path, "w") as fh:
                    fh.writelines(a + "\n" for _, a in latest.anonymous_identities(app, small))
                say(f"  (made {small:,} anonymous registrations for their assertions in {time.monotonic() - t:.1f} s)")
            return {"env": {"BENCH_KEYS": path}}

        claimed = []  # (registration ids, user id): made once, fresh tokens for every pass

        def refresh_tokens():
            """Refresh tokens never sent, a file per slice, for 100 claimed registrations (made once)."""
            if not claimed:
                ids = [reg for reg, _ in latest.anonymous_identities(app, 100)]
                claimed.append((ids, latest.claim(app, db, ids)))
            ids, user_id = claimed[0]
            minted = latest.refresh_tokens(loader, ids, user_id, TOKENS_PER_SLICE * args.rounds)
            if loader.pg:
                # as after every bulk load: else the planner still takes refresh_tokens for the empty table it
                # was until autovacuum's ANALYZE comes round (a production database has those stats), and every
                # provider revocation paid for it (the notify row measured ~70 req/s instead of ~700)
                loader.analyze()
            return {"round_env": token_files("refresh", minted.__getitem__)}

        def write_rows(suffix=""):
            """Every row that writes a transaction per request: once with the default workers and, with
            --pg-workers-production, again with 2×CPU+1 (suffix names the count)."""
            run("POST /agent/auth anonymous", "/agent/auth", "anonymous.lua", suffix=suffix)
            run("POST /agent/auth ID-JAG", "/agent/auth", "idjag.lua", suffix=suffix,
                prepare=lambda: {"round_env": token_files("idjag", provider.id_jag)})
            # the subjects the ID-JAG rows registered (and many more that never did: the revocation finds
            # nothing for them, but verifies the token and spends its jti all the same)
            run("POST /agent/auth/revoke", "/agent/auth/revoke", "revoke.lua", suffix=suffix,
                prepare=lambda: {"round_env": token_files("logout", lambda n: provider.logout(f"bench-user-{n}"))})
            run("POST /agent/identity anonymous", "/agent/identity", "identity.lua", suffix=suffix)
            run("POST /oauth2/token (exchange)", "/oauth2/token", "exchange.lua", suffix=suffix,
                prepare=exchange_assertions)
            run("POST /agent/identity refresh", "/agent/identity", "refresh.lua", suffix=suffix,
                prepare=refresh_tokens)
            run("POST /agent/event/notify", "/agent/event/notify", "notify.lua", suffix=suffix,
                prepare=lambda: {"round_env": token_files("set", lambda n: provider.security_event(f"bench-user-{n}"))})

        write_rows()
        rss = server.worker_rss_mb()
        if production and any(wanted(keys[name]) for name in WRITE_ROWS):
            # writes on PostgreSQL wait on their commits (the WAL flush), not on the CPU: production's
            # 2×CPU+1 workers (gunicorn.conf.py) keep the CPUs busy meanwhile; the RSS target stays the
            # default server's
            server.stop()
            server = Server(url, production_workers, work)
            say(f"\nthe write rows again, gunicorn {production_workers} sync workers (2×CPU+1, production):")
            wrk(server.base, "/healthz", None, argparse.Namespace(**{**vars(args), "duration": 2}))
            write_rows(f" ({production_workers} workers)")
            rss_production = server.worker_rss_mb()
    finally:
        server.stop()

    revoke_s = time_subject_revocation(app, db, loader)
    floor = database_floor(url, args) if any(r["row"] in WRITE_ROWS for r in rows.values()) else None
    say("\n| endpoint | req/s | p50 ms | p99 ms | healthz req/s (alternating) | × healthz | of DB floor | target |")
    say("|---|---:|---:|---:|---:|---:|---:|---|")
    verdicts = []
    for name, r in rows.items():
        ratio = r["ratio"]
        target, soft = TARGETS.get(name), SOFT_TARGETS.get(r["row"])
        ok = None if target is None else ratio >= target and not r["non2xx"]
        if ok is not None:
            verdicts.append(ok)
        tgt = "" if target is None else f"≥ {target:.2f} {'PASS' if ok else 'FAIL'}"
        if soft is not None:
            tgt = f"soft ≥ {soft:.2f}: {'met' if ratio >= soft else 'not met'} (never fails the run)"
        if r["non2xx"]:
            tgt += f" ({r['non2xx']} non-2xx)"
        of_floor = f"{r['rps'] * floor['us'] / 1e6:.0%}" if floor and r["row"] in WRITE_ROWS else ""
        say(f"| {name} | {r['rps']:.1f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['healthz']:.1f} | {ratio:.2f} "
            f"| {of_floor} | {tgt} |")
    if floor:
        per_writer = 1e6 / floor["us"]
        say(f"\ndatabase floor ({floor['database']}, bench/floor.py: an anonymous registration's transaction "
            f"without authmd — settings and scopes read, 4 INSERTs, COMMIT — the least any write row's "
            f"transaction costs): {floor['us']:.0f} µs/registration, of which COMMIT {floor['commit_us']:.0f} µs"
            + (" (SQLite: one writer at a time, so this bounds the whole server)" if floor["database"] == "sqlite"
               else " (PostgreSQL: per connection; writers commit side by side)"))
        for name, r in rows.items():
            if r["row"] in WRITE_ROWS:
                say(f"  {name}: floor {floor['us']:.0f} µs/registration → at most {per_writer:,.0f} req/s per "
                    f"writer; measured {r['rps']:,.1f} req/s = {r['rps'] / per_writer:.0%} of floor")
    elif any(r["row"] in WRITE_ROWS for r in rows.values()):
        say("\ndatabase floor: not measured (see above)")
    # both hot-path figures are taken relative to healthz measured beside them, so the comparison is not
    # skewed by whatever else the machine did in between
    checks, scale = [], None
    if "GET /api/resource" in rows:
        scale = rows["GET /api/resource"]["ratio"] / rows["GET /api/resource (1k credentials)"]["ratio"]
        checks.append((f"hot path with {big:,} credentials vs 1,000: {scale:.2f}×", scale >= 0.85))
    checks += [(f"revoking a subject's 10,000 live credentials: {revoke_s * 1000:.0f} ms", revoke_s < 0.5),
              (f"worker RSS after the run ({args.workers} workers): " + ", ".join(f"{v:.0f} MB" for v in rss.values()),
               bool(rss) and max(rss.values()) < 150)]
    # the write rows have no targets, but a row that answered errors measured something else (a token
    # sent twice, a pool exhausted): the run is not to be trusted
    broken = [name for name, r in rows.items() if r["non2xx"] and TARGETS.get(name) is None]
    if broken:
        checks.append(("rows without a target answered non-2xx: " + ", ".join(broken), False))
    say("")
    for text, ok in checks:
        verdicts.append(ok)
        say(f"{'PASS' if ok else 'FAIL'}  {text}")
    if rss_production:
        say("info  worker RSS with the production worker count: "
            + ", ".join(f"{v:.0f} MB" for v in rss_production.values()))
    for note in notes:
        name, _, why = note.rpartition(": ")  # (a row's name may hold a colon itself)
        say(f"skipped: {name} ({why})")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    with open(os.path.join(results_dir, f"bench-{stamp}.json"), "w") as fh:
        json.dump({"args": vars(args), "rows": {k: {x: y for x, y in v.items() if x != "raw"}
                                                                  for k, v in rows.items()},
                   "scale": scale, "revoke_seconds": revoke_s, "rss_mb": rss, "notes": notes,
                   "floor": floor, "production_workers": production_workers if production else None,
                   "rss_mb_production": rss_production, "soft_targets": SOFT_TARGETS}, fh, indent=2)
    shutil.rmtree(work, ignore_errors=True)
    say(f"\n{'all targets met' if all(verdicts) else 'SOME TARGETS MISSED'}")
    return 0 if all(verdicts) else 1


def database_floor(url: str, args) -> dict | None:
    """bench/floor.py's measure on this run's own database, now that the server is stopped (it adds its
    registrations to the tables): µs a registration for the database alone. None, said, if it fails."""
    from bench import floor
    say("\nmeasuring the database floor (plain driver, no authmd) ...")
    try:
        return floor.floor(url, rounds=3 if args.quick else 5, count=500 if args.quick else 1000)
    except Exception as exc:  # the floor is context for the write rows, never a reason to lose the run
        say(f"  the floor could not be measured: {exc!r}")
        return None


def time_subject_revocation(app, db, loader) -> float:
    """A subject with 10,000 live credentials: time the domain call that revokes them (one UPDATE) + commit."""
    from sqlalchemy import select
    from authmd import credentials
    from authmd.models import Credential, Delegation
    from authmd.util import utcnow
    with app.app_context():
        now = utcnow()
        dele = Delegation(iss="https://bench.example", sub="heavy", aud=ISSUER, first_seen=now, last_seen=now)
        db.session.add(dele)
        db.session.commit()
        start = 5_000_000
        import bench.load as load
        rows = ((start + n + 1, load.sha(f"heavy{n}"), "sk_heavy", "access_token", "api.read",
                 load.reg_id(0), loader._ts(now), None, dele.id) for n in range(10_000))
        loader._bulk("credentials", load.CRED_COLS + ["delegation_id"], rows)
        if loader.pg:
            loader.analyze()
        t = time.perf_counter()
        ids = select(Delegation.id).where(Delegation.iss == "https://bench.example", Delegation.sub == "heavy")
        n = credentials.revoke_where(Credential.delegation_id.in_(ids))
        db.session.commit()
        elapsed = time.perf_counter() - t
        assert n == 10_000, n
        return elapsed


if __name__ == "__main__":
    sys.exit(main())
