"""Console benchmark room: bulk-load 100k registrations and 1M audit events into SQLite, time every page.

Usage:  python bench/console_pages.py [--registrations 100000] [--audit 1000000] [--db /tmp/authmd-bench.sqlite3]
        [--reuse]   (keep and reuse an already loaded file)
Prints the median server time per page (Flask test client, in-process, so no network in the figure).
"""
import argparse
import os
import random
import sqlite3
import statistics
import sys
import time
from datetime import datetime, timedelta

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from app import create_app  # noqa: E402
from authmd.extensions import db  # noqa: E402

FLOWS = ("anonymous", "email-verification", "agent-provider")
STATUSES = ("pending", "claimed", "active", "expired", "revoked")
EVENTS = ("registration.created", "credential.issued", "claim.requested", "otp.generated", "claim.confirmed",
          "registration.expired", "registration.revoked", "credential.revoked", "assertion.rejected", "otp.failed")


def load(path: str, n_reg: int, n_audit: int, now: datetime) -> None:
    rnd = random.Random(42)
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    span = timedelta(days=90).total_seconds()
    t0 = time.perf_counter()
    n_users = max(1, n_reg // 5)
    con.executemany("INSERT INTO users (id, email, email_verified, phone_verified, is_active, is_admin, created_at, source) "
                    "VALUES (?, ?, 1, 0, 1, 0, ?, 'claim')",
                    ((i, f"user{i}@example.com", (now - timedelta(seconds=span * (1 - i / n_users))).isoformat(" "))
                     for i in range(1, n_users + 1)))
    issuers = [f"https://idp{i}.example" for i in range(5)]
    regs, creds, dels = [], [], []
    for i in range(n_reg):
        created = now - timedelta(seconds=span * (1 - i / n_reg))
        flow = FLOWS[i % 3]
        status = ("active" if flow == "agent-provider" else rnd.choice(("pending", "claimed", "expired", "revoked")))
        user_id = rnd.randint(1, n_users) if status != "pending" or flow == "agent-provider" else None
        iss = issuers[i % 5] if flow == "agent-provider" else None
        deleg = None
        if flow == "agent-provider":
            deleg = len(dels) + 1
            dels.append((deleg, iss, f"sub-{i}", "http://localhost:8000", user_id, f"reg_{i:024x}", "ChatGPT",
                         created.isoformat(" "), created.isoformat(" ")))
        regs.append((f"reg_{i:024x}", flow, status, f"user{user_id}@example.com" if user_id else None, "api_key",
                     f"{i:064x}", (created + timedelta(days=1)).isoformat(" "), 0, user_id, deleg,
                     created.isoformat(" "), "127.0.0.1", "agent/1.0", iss))
        creds.append((i + 1, f"{i:064x}"[::-1], "sk_abcdef", "api_key", "api.read api.write", f"reg_{i:024x}",
                      user_id, deleg, created.isoformat(" "),
                      created.isoformat(" ") if status in ("revoked", "expired") else None))
    con.executemany("INSERT INTO delegations (id, iss, sub, aud, user_id, registration_id, agent_platform, "
                    "first_seen, last_seen) VALUES (?,?,?,?,?,?,?,?,?)", dels)
    con.executemany("INSERT INTO registrations (id, type, status, email, requested_credential_type, "
                    "claim_token_digest, claim_expires_at, failed_otp_count, user_id, delegation_id, created_at, ip, "
                    "user_agent, iss) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", regs)
    con.executemany("INSERT INTO credentials (id, digest, prefix, type, scopes, registration_id, user_id, "
                    "delegation_id, created_at, revoked_at) VALUES (?,?,?,?,?,?,?,?,?,?)", creds)
    con.commit()
    t1 = time.perf_counter()

    def audit_rows():
        for j in range(n_audit):
            created = now - timedelta(seconds=span * (1 - j / n_audit))
            i = j * n_reg // n_audit
            ev = EVENTS[j % len(EVENTS)]
            yield (j + 1, created.isoformat(" "), ev, "agent" if j % 4 else "admin", None, "127.0.0.1", "agent/1.0",
                   f"reg_{i:024x}", None, issuers[i % 5] if i % 3 == 2 else None, None, None, None,
                   '{"registration_type": "anonymous"}')
    con.executemany("INSERT INTO audit_events (id, created_at, event, actor_kind, actor_id, ip, user_agent, "
                    "registration_id, user_id, iss, sub, agent_platform, agent_context_id, data) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", audit_rows())
    con.executemany("INSERT INTO outbox (created_at, to_addr, subject, body_text) VALUES (?,?,?,?)",
                    ((now.isoformat(" "), f"user{k}@example.com", "claim", "link") for k in range(1000)))
    con.commit()
    con.execute("ANALYZE")
    con.close()
    print(f"loaded {n_reg} registrations/credentials in {t1 - t0:.1f}s, {n_audit} audit events in "
          f"{time.perf_counter() - t1:.1f}s", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--registrations", type=int, default=100_000)
    ap.add_argument("--audit", type=int, default=1_000_000)
    ap.add_argument("--db", default="/tmp/authmd-bench.sqlite3")
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--runs", type=int, default=7)
    opts = ap.parse_args()
    now = datetime(2026, 6, 1, 12, 0, 0)
    url = "sqlite:///" + opts.db
    app = create_app({"TESTING": True, "ENV_NAME": "test", "DATABASE_URL": url, "SECRET_KEY": "bench-secret",
                      "RATELIMIT_ENABLED": False, "CLOCK": lambda: now})
    if not (opts.reuse and os.path.exists(opts.db)):
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(opts.db + suffix):
                os.remove(opts.db + suffix)
        with app.app_context():
            from authmd.cli import init_db
            init_db()
            db.engine.dispose()
        load(opts.db, opts.registrations, opts.audit, now)
    with app.app_context():
        from authmd.console.cli import create_admin
        from authmd.models import User
        admin = db.session.execute(db.select(User).where(User.email == "bench-admin@example.com")).scalar()
        if admin is None:
            admin = create_admin("bench-admin@example.com", "bench password 123")
            db.session.commit()
        admin_id = admin.id
        some_reg = f"reg_{opts.registrations // 2:024x}"
    client = app.test_client()
    with client.session_transaction() as s:
        s["_user_id"] = str(admin_id)
        s["_fresh"] = True
        s["last_active"] = now.isoformat()
    pages = [
        "/console/", "/console/authmd", "/console/authmd/history", "/console/issuers", "/console/scopes",
        "/console/registrations", "/console/registrations?flow=email-verification",
        "/console/registrations?status=revoked", "/console/registrations?status=pending&flow=anonymous",
        "/console/registrations?email=user7@example.com", "/console/registrations?issuer=https://idp2.example",
        "/console/registrations?from=2026-04-01&to=2026-04-02",
        f"/console/registrations?after=2026-04-15T00:00:00~reg_ffff",
        f"/console/registrations/{some_reg}", "/console/delegations", "/console/delegations?issuer=https://idp1.example",
        "/console/users", "/console/users?q=user12", "/console/users/7", "/console/audit",
        "/console/audit?event=claim.confirmed", "/console/audit?event=claim.*", "/console/audit?actor=admin",
        f"/console/audit?registration={some_reg}", "/console/audit?issuer=https://idp3.example",
        "/console/audit?from=2026-04-01&to=2026-04-01", "/console/audit?before=500000",
        "/console/audit?event=assertion.rejected&from=2026-05-20", "/console/settings", "/console/outbox",
        f"/console/revoke?kind=issuer&target=https://idp1.example", "/console/revoke?kind=user&target=7",
    ]
    worst = 0.0
    print(f"{'page':72} {'median ms':>9} {'max ms':>7}")
    for page in pages:
        r = client.get(page)
        assert r.status_code == 200, (page, r.status_code)
        times = []
        for _ in range(opts.runs):
            t = time.perf_counter()
            r = client.get(page)
            r.get_data()
            times.append((time.perf_counter() - t) * 1000)
        med = statistics.median(times)
        worst = max(worst, med)
        print(f"{page[:72]:72} {med:9.1f} {max(times):7.1f}", flush=True)
    # the export streams: time to the first 1000 rows, and memory stays flat by construction (keyset batches)
    t = time.perf_counter()
    resp = client.get("/console/audit/export.jsonl", buffered=False)
    it = iter(resp.response)
    got = 0
    while got < 1000:
        got += next(it).count(b"\n")
    print(f"{'/console/audit/export.jsonl (first 1000 rows)':72} {(time.perf_counter() - t) * 1000:9.1f}")
    resp.close()
    print(f"slowest page median: {worst:.1f} ms")


if __name__ == "__main__":
    main()
