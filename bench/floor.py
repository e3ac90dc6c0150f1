"""Benchmark room: the database's own floor for one anonymous registration on SQLite, without authmd.

Runs the statements POST /agent/auth (anonymous) runs — read settings and scopes, INSERT the
registration, the credential (RETURNING id) and two audit rows, COMMIT — with plain sqlite3 on a
database loaded like the benchmark's (migrations + 100k registrations, 1M audit events, 100k
credentials), WAL with synchronous=NORMAL as authmd configures it. Prints µs per registration and per
COMMIT, best of 5 rounds of 1,000, with SQLite's automatic checkpoint on (as deployed) and, to show
its share, off (not a deployable setting: the WAL would grow without bound).

Whatever authmd does in Python comes on top of this. Usage: python -m bench.floor
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


def registration(conn) -> float:
    """One registration transaction; returns the seconds its COMMIT took."""
    now = datetime.now(timezone.utc).replace(tzinfo=None).isoformat(" ")
    conn.execute("SELECT key, value FROM settings").fetchall()
    conn.execute("SELECT name, pre_claim, post_claim FROM scopes WHERE enabled = 1 ORDER BY position, name").fetchall()
    reg_id = "reg_" + secrets.token_hex(12)
    conn.execute("BEGIN")
    conn.execute("INSERT INTO registrations (id, type, status, requested_credential_type, claim_token_digest, "
                 "claim_expires_at, failed_otp_count, created_at, ip, user_agent) VALUES (?,?,?,?,?,?,?,?,?,?)",
                 (reg_id, "anonymous", "pending", "api_key", secrets.token_hex(32), now, 0, now, "127.0.0.1", "wrk"))
    cred_id = conn.execute("INSERT INTO credentials (digest, prefix, type, scopes, registration_id, created_at) "
                           "VALUES (?,?,?,?,?,?) RETURNING id",
                           (secrets.token_hex(32), "sk_abcdef", "api_key", "api.read", reg_id, now)).fetchone()[0]
    conn.executemany("INSERT INTO audit_events (created_at, event, actor_kind, ip, user_agent, registration_id, data) "
                     "VALUES (?,?,?,?,?,?,?)",
                     [(now, "registration.created", "agent", "127.0.0.1", "wrk", reg_id,
                       json.dumps({"registration_type": "anonymous", "scopes": ["api.read"]})),
                      (now, "credential.issued", "agent", "127.0.0.1", "wrk", reg_id,
                       json.dumps({"credential_id": cred_id, "credential_prefix": "sk_abcdef"}))])
    t = time.perf_counter()
    conn.execute("COMMIT")
    return time.perf_counter() - t


def measure(conn, label: str) -> None:
    for _ in range(200):
        registration(conn)
    best_total = best_commit = float("inf")
    for _ in range(5):
        t, commits = time.perf_counter(), 0.0
        for _ in range(1000):
            commits += registration(conn)
        best_total = min(best_total, (time.perf_counter() - t) / 1000)
        best_commit = min(best_commit, commits / 1000)
    print(f"{label:<44} {best_total * 1e6:6.0f} µs a registration, of which COMMIT {best_commit * 1e6:4.0f} µs")


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
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA wal_autocheckpoint={autocheckpoint}")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        measure(conn, label)
        conn.close()
    os.remove(path)


if __name__ == "__main__":
    main()
