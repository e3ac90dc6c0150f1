"""Benchmark room: bulk-load a realistic database fast (raw executemany on SQLite, COPY on PostgreSQL)."""
import hashlib
import json
import random
from datetime import datetime, timedelta

EVENTS = ["registration.created", "credential.issued", "claim.requested", "otp.generated", "claim.confirmed",
          "registration.expired", "registration.revoked", "credential.revoked"]
REG_COLS = ["id", "type", "status", "email", "requested_credential_type", "claim_token_digest", "claim_expires_at",
            "failed_otp_count", "created_at", "claimed_at", "ip", "user_agent"]
CRED_COLS = ["id", "digest", "prefix", "type", "scopes", "registration_id", "created_at", "last_used_at"]
AUDIT_COLS = ["id", "created_at", "event", "actor_kind", "ip", "user_agent", "registration_id", "data"]


def token(n: int) -> str:
    return f"sk_bench{n:012d}Q7xv4tZ2"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def reg_id(n: int) -> str:
    return f"reg_bench{n:08d}"


def small_app(name: str = "small.sqlite3"):
    """An app on a fresh database (AUTHMD_BENCH_URL, else a temporary SQLite file) with 10,000
    registrations and credentials: what the in-process tools (profile, micro) run against."""
    import os
    import tempfile
    from bench.bench import prepare_database
    url = os.environ.get("AUTHMD_BENCH_URL") or "sqlite:///" + os.path.join(tempfile.mkdtemp(), name)
    app, db = prepare_database(url)
    with app.app_context():
        loader = Loader(db.engine)
        loader.registrations(10_000)
        loader.credentials(0, 10_000, 10_000)
    return app, db


class Loader:
    def __init__(self, engine):
        self.engine = engine
        self.pg = engine.dialect.name == "postgresql"
        self.now = datetime.utcnow().replace(microsecond=0)

    def _ts(self, dt):
        if dt is None or self.pg:
            return dt
        return dt.strftime("%Y-%m-%d %H:%M:%S.%f")

    def _bulk(self, table: str, cols: list, rows):
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            if self.pg:
                with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                cur.execute("PRAGMA synchronous=OFF")
                sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
                batch = []
                for row in rows:
                    batch.append(row)
                    if len(batch) >= 50000:
                        cur.executemany(sql, batch)
                        batch = []
                if batch:
                    cur.executemany(sql, batch)
            raw.commit()
        finally:
            raw.close()

    def registrations(self, count: int):
        rnd = random.Random(1)
        ts = self._ts

        def rows():
            for n in range(count):
                created = self.now - timedelta(minutes=rnd.randint(60, 60 * 24 * 30))
                # bench keys belong to claimed registrations: the hot path must not hit the expiry branch
                yield (reg_id(n), "anonymous", "claimed", f"user{n}@example.com", "api_key",
                       sha(f"clm_bench{n}"), ts(created + timedelta(hours=24)), 0, ts(created),
                       ts(created + timedelta(minutes=5)), "10.%d.%d.%d" % (n >> 16 & 255, n >> 8 & 255, n & 255),
                       "BenchAgent/1.0")
        self._bulk("registrations", REG_COLS, rows())

    def credentials(self, start: int, stop: int, registrations: int, used: bool = True):
        """Credentials for token(start) .. token(stop - 1); used: last_used_at set to the load time, so the
        hot path's once-a-minute last_used_at write does not enter what is measured (else never used)."""
        ts = self._ts
        created = ts(self.now - timedelta(days=1))
        used = ts(self.now) if used else None

        def rows():
            for n in range(start, stop):
                yield (n + 1, sha(token(n)), token(n)[:10], "api_key", "api.read api.write",
                       reg_id(n % registrations), created, used)
        self._bulk("credentials", CRED_COLS, rows())
        if self.pg:
            self._sql("SELECT setval('credentials_id_seq', (SELECT max(id) FROM credentials))")

    def audit(self, count: int, registrations: int):
        rnd = random.Random(2)
        ts = self._ts

        def rows():
            for n in range(count):
                yield (n + 1, ts(self.now - timedelta(seconds=rnd.randint(0, 86400 * 30))), EVENTS[n % len(EVENTS)],
                       "agent", "10.0.%d.%d" % (n >> 8 & 255, n & 255), "BenchAgent/1.0",
                       reg_id(rnd.randrange(registrations)), json.dumps({"scopes": ["api.read"]}))
        self._bulk("audit_events", AUDIT_COLS, rows())
        if self.pg:
            self._sql("SELECT setval('audit_events_id_seq', (SELECT max(id) FROM audit_events))")

    def _sql(self, statement: str):
        from sqlalchemy import text
        with self.engine.begin() as conn:
            conn.execute(text(statement))

    def analyze(self):
        self._sql("ANALYZE")
