"""Benchmark room: the database's own floor for one anonymous registration, without authmd.

Runs the statements POST /agent/auth (anonymous) runs — read settings and scopes, INSERT the
registration, the credential (RETURNING id) and two audit rows, COMMIT — with plain sqlite3 on a
database loaded like the benchmark's (migrations + 100k registrations, 1M audit events, 100k
credentials), WAL with synchronous=NORMAL as authmd configures it. Prints µs per registration and per
COMMIT, best of 5 rounds of 1,000, with SQLite's automatic checkpoint on (as deployed) and, to show
its share, off (not a deployable setting: the WAL would grow without bound).

Whatever authmd does in Python comes on top of this. Usage: python -m bench.floor

bench.py calls floor() on its own database after the wrk rows (the server stopped), so every write row is
printed beside it; on PostgreSQL the same statements run through plain psycopg (an explicit BEGIN … COMMIT
a registration, with the server's own synchronous_commit).
"""
import json
import os
import secrets
import sqlite3
import sys
import tempfile
import time
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


# The statements, written once with sqlite3's "?" placeholders; psycopg gets them with "%s" (pg=True).
SETTINGS = "SELECT key, value FROM settings"
SCOPES = "SELECT name, pre_claim, post_claim FROM scopes WHERE enabled ORDER BY position, name"
REGISTRATION = ("INSERT INTO registrations (id, type, status, requested_credential_type, claim_token_digest, "
                "claim_expires_at, failed_otp_count, created_at, ip, user_agent) VALUES (?,?,?,?,?,?,?,?,?,?)")
CREDENTIAL = ("INSERT INTO credentials (digest, prefix, type, scopes, registration_id, created_at) "
              "VALUES (?,?,?,?,?,?) RETURNING id")
AUDIT = ("INSERT INTO audit_events (created_at, event, actor_kind, ip, user_agent, registration_id, data) "
         "VALUES (?,?,?,?,?,?,?)")


def _sql(statement: str, pg: bool) -> str:
    return statement.replace("?", "%s") if pg else statement


def registration(conn, pg: bool = False) -> float:
    """One registration transaction; returns the seconds its COMMIT took."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    if not pg:
        now = now.isoformat(" ")  # SQLite stores DateTime as text, as SQLAlchemy writes it
    conn.execute(SETTINGS).fetchall()
    conn.execute(SCOPES).fetchall()
    reg_id = "reg_" + secrets.token_hex(12)
    conn.execute("BEGIN")
    conn.execute(_sql(REGISTRATION, pg),
                 (reg_id, "anonymous", "pending", "api_key", secrets.token_hex(32), now, 0, now, "127.0.0.1", "wrk"))
    cred_id = conn.execute(_sql(CREDENTIAL, pg),
                           (secrets.token_hex(32), "sk_abcdef", "api_key", "api.read", reg_id, now)).fetchone()[0]
    conn.cursor().executemany(_sql(AUDIT, pg),
                              [(now, "registration.created", "agent", "127.0.0.1", "wrk", reg_id,
                                json.dumps({"registration_type": "anonymous", "scopes": ["api.read"]})),
                               (now, "credential.issued", "agent", "127.0.0.1", "wrk", reg_id,
                                json.dumps({"credential_id": cred_id, "credential_prefix": "sk_abcdef"}))])
    t = time.perf_counter()
    conn.execute("COMMIT")
    return time.perf_counter() - t


def measure(conn, pg: bool = False, rounds: int = 5, count: int = 1000) -> tuple[float, float]:
    """(seconds a registration, seconds its COMMIT), best of the rounds, after a warm-up."""
    for _ in range(max(50, count // 5)):
        registration(conn, pg)
    best_total = best_commit = float("inf")
    for _ in range(rounds):
        t, commits = time.perf_counter(), 0.0
        for _ in range(count):
            commits += registration(conn, pg)
        best_total = min(best_total, (time.perf_counter() - t) / count)
        best_commit = min(best_commit, commits / count)
    return best_total, best_commit


def sqlite_connection(path: str, autocheckpoint: int = 1000):
    """A plain sqlite3 connection configured as authmd's (WAL, synchronous=NORMAL), in autocommit mode so the
    statements' own BEGIN and COMMIT are what runs."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA wal_autocheckpoint={autocheckpoint}")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return conn


def pg_connection(url: str):
    """psycopg on the database of a SQLAlchemy URL (postgresql+psycopg://...), autocommit so BEGIN/COMMIT are ours."""
    import psycopg
    from sqlalchemy.engine import make_url
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(conninfo, autocommit=True)


def floor(url: str, rounds: int = 5, count: int = 1000) -> dict:
    """The floor on a database authmd's migrations built (a SQLAlchemy URL, sqlite:/// or postgresql):
    µs a registration and µs of its COMMIT, as deployed (SQLite's automatic checkpoint on). It adds
    registrations to that database: bench.py calls it when its wrk rows are done."""
    pg = url.startswith("postgresql")
    conn = pg_connection(url) if pg else sqlite_connection(url.removeprefix("sqlite:///"))
    try:
        total, commit = measure(conn, pg, rounds, count)
    finally:
        conn.close()
    return {"database": "postgresql" if pg else "sqlite", "us": total * 1e6, "commit_us": commit * 1e6,
            "rounds": rounds, "count": count}


def main():
    from bench import load
    from bench.bench import prepare_database
    path = os.path.join(tempfile.mkdtemp(prefix="authmd-floor-"), "floor.sqlite3")
    app, db = prepare_database("sqlite:///" + path)
    with app.app_context():
        loader = load.Loader(db.engine)
        loader.registrations(100_000)
        loader.audit(1_000_000, 100_000)
        loader.credentials(0, 100_000, 100_000)
        db.engine.dispose()
    for autocheckpoint, label in ((1000, "raw sqlite3, automatic checkpoint (deployed)"),
                                  (0, "raw sqlite3, no checkpoint (share of it)")):
        conn = sqlite_connection(path, autocheckpoint)
        total, commit = measure(conn)
        print(f"{label:<44} {total * 1e6:6.0f} µs a registration, of which COMMIT {commit * 1e6:4.0f} µs")
        conn.close()
    os.remove(path)


if __name__ == "__main__":
    main()
