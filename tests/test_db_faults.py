"""Database faults: while the database refuses writes, agents get JSON errors and /readyz says 503; when it
takes writes again, service resumes by itself, without a restart (authmd/dbfaults.py).

The fault is real: the SQLite file and its write-ahead log are made immutable (`chattr +i`) under a running
gunicorn. The tests run as root, and root ignores file modes (a chmod 0444 would change nothing), but not
the immutable flag: open(O_RDWR) fails with EPERM, so a connection opened during the fault is opened
read-only ("attempt to write a readonly database" on its first write, and on every write after, forever),
and a connection opened before it fails to append to the log ("disk I/O error"). The -shm file is left
alone: it is memory-mapped, and a store into an immutable mapping kills the process with SIGBUS, which is
another fault (a crash, which gunicorn already survives).
"""
import contextlib
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.fixtures.flows import ANON, email_body


def _sqlite_path(url: str) -> str:
    return url[len("sqlite:///"):]


@contextlib.contextmanager
def read_only(path: str):
    files = [f for f in (path, path + "-wal") if os.path.exists(f)]
    try:
        subprocess.run(["chattr", "+i", *files], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot make the database file immutable here (chattr +i needs root on ext4/xfs/tmpfs): {exc}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *files], check=True)


def _json_failure(r):
    """A JSON error with Retry-After (r: a requests or a Flask test response)."""
    body = r.get_json() if hasattr(r, "get_json") else r.json()
    assert r.status_code in (500, 503), body
    assert r.headers["Content-Type"].startswith("application/json") and set(body) == {"error", "message"}
    assert int(r.headers["Retry-After"]) > 0


def test_a_read_only_database_answers_json_errors_and_heals_without_a_restart(app, client, gunicorn_server, schema):
    """The workers meet the fault with their first connections (as a worker started or restarted during a
    fault does) and under concurrent load (the pool opens more): every one of those connections is one
    SQLite opened read-only. After the fault, service resumes without a restart."""
    if not schema.startswith("sqlite"):
        pytest.skip("the fault is made on the SQLite file")
    path = _sqlite_path(schema)
    keys = [client.post("/agent/auth", json=ANON).get_json()["credential"] for _ in range(3)]
    server = gunicorn_server(schema, workers=2)
    post = lambda body: requests.post(server.url + "/agent/auth", json=body, timeout=20)  # noqa: E731

    def burst(n):
        with ThreadPoolExecutor(max_workers=n) as pool:
            return list(pool.map(lambda _: post(ANON), range(n)))

    with read_only(path):
        # reads still work: a key in hand keeps working, its last_used_at write is what fails
        for key in keys:
            api = requests.get(server.url + "/api/resource", headers={"Authorization": "Bearer " + key}, timeout=10)
            assert api.status_code == 200, api.text
        for r in burst(8) + [post(ANON) for _ in range(4)] + [post(email_body("fault@example.com"))]:
            _json_failure(r)
        for _ in range(2):
            r = requests.get(server.url + "/readyz", timeout=10)
            assert r.status_code == 503 and r.json() == {"status": "unavailable", "database": "not_writable"}
            assert r.headers["Retry-After"] == "5"

    assert requests.get(server.url + "/readyz", timeout=10).status_code == 200
    answers = [post(ANON) for _ in range(12)] + burst(8)
    assert [r.status_code for r in answers] == [200] * 20, [r.text for r in answers if r.status_code != 200][:2]
    assert post(email_body("healed@example.com")).status_code == 200
    for key in keys + [answers[-1].json()["credential"]]:
        api = requests.get(server.url + "/api/resource", headers={"Authorization": "Bearer " + key}, timeout=10)
        assert api.status_code == 200, api.text


def test_readyz_fails_on_a_read_only_database_file(app, client):
    if not app.config["DATABASE_URL"].startswith("sqlite"):
        pytest.skip("the fault is made on the SQLite file")
    assert client.get("/readyz").status_code == 200
    with read_only(_sqlite_path(app.config["DATABASE_URL"])):
        r = client.get("/readyz")
        assert r.status_code == 503 and r.get_json()["database"] == "not_writable"
    assert client.get("/readyz").status_code == 200


def test_readyz_fails_when_postgresql_refuses_writes(app, client):
    """A primary that became a standby (failover) refuses writes; default_transaction_read_only gives the
    same answer without one. The next connection after the fault ends takes writes again."""
    from sqlalchemy import text

    from authmd.extensions import db
    url = app.config["DATABASE_URL"]
    if not url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    dbname = url.rsplit("/", 1)[1].split("?")[0]
    with app.app_context():
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as admin:
            admin.execute(text(f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = on'))
            try:
                db.engine.dispose()  # new sessions read the setting
                r = client.get("/readyz")
                assert r.status_code == 503 and r.get_json()["database"] == "not_writable"
                bad = client.post("/agent/auth", json=ANON)
                _json_failure(bad)
            finally:
                admin.execute(text(f'ALTER DATABASE "{dbname}" RESET default_transaction_read_only'))
        # no dispose here: the connections that saw the fault were thrown away by themselves
    assert client.get("/readyz").status_code == 200
    assert client.post("/agent/auth", json=ANON).status_code == 200


def _api_from_another_thread(app, credential):
    """GET /api/resource served on a thread that is not the main one (as under threaded servers): the
    credential check then uses the pool instead of the worker's held connection."""
    import threading
    answers = []
    worker = threading.Thread(target=lambda: answers.append(app.test_client().get(
        "/api/resource", headers={"Authorization": "Bearer " + credential})))
    worker.start()
    worker.join()
    return answers[0]


def test_the_last_used_write_from_a_pooled_connection_is_one_autocommit_statement(app, client, clock):
    """No commit in the credential room: the UPDATE runs in autocommit mode (sqlite3 traces no BEGIN and no
    COMMIT around it), and the pooled connection goes back as it came (in no transaction, its isolation
    level restored)."""
    from datetime import datetime

    from sqlalchemy import event

    from authmd.extensions import db
    if not app.config["DATABASE_URL"].startswith("sqlite"):
        pytest.skip("statement tracing uses sqlite3's trace callback")
    key = client.post("/agent/auth", json=ANON).get_json()["credential"]
    clock.frozen = datetime(2026, 5, 20, 12, 0, 0)
    statements, checked_in = [], []
    with app.app_context():
        engine = db.engine
        trace = lambda dbapi_conn, _record: dbapi_conn.set_trace_callback(statements.append)  # noqa: E731
        seen = lambda dbapi_conn, _record: checked_in.append((dbapi_conn.in_transaction,  # noqa: E731
                                                              dbapi_conn.isolation_level))
        event.listen(engine, "connect", trace)
        event.listen(engine, "checkin", seen)
        engine.dispose()
        try:
            assert _api_from_another_thread(app, key).status_code == 200
        finally:
            event.remove(engine, "connect", trace)
            event.remove(engine, "checkin", seen)
            engine.dispose()
    work = [s.split()[0].upper() for s in statements if not s.lstrip().upper().startswith("PRAGMA")]
    assert "UPDATE" in work and "BEGIN" not in work and "COMMIT" not in work, work
    assert checked_in and all(state == (False, "") for state in checked_in), checked_in


def test_a_failed_last_used_write_does_not_fail_the_call_nor_stay_in_the_pool(app, client, clock):
    from datetime import datetime

    from authmd.extensions import db
    from authmd.models import Credential
    if not app.config["DATABASE_URL"].startswith("sqlite"):
        pytest.skip("the fault is made on the SQLite file")
    key = client.post("/agent/auth", json=ANON).get_json()["credential"]
    clock.frozen = datetime(2026, 5, 20, 12, 0, 0)
    with app.app_context():
        db.engine.dispose()  # the pool meets the fault with connections it opens during it
    with read_only(_sqlite_path(app.config["DATABASE_URL"])):
        assert _api_from_another_thread(app, key).status_code == 200
        assert client.get("/api/resource", headers={"Authorization": "Bearer " + key}).status_code == 200
    clock.advance(minutes=2)
    assert _api_from_another_thread(app, key).status_code == 200
    with app.app_context():
        assert db.session.execute(db.select(Credential.last_used_at)).scalar() == datetime(2026, 5, 20, 12, 2)


def test_checking_whether_the_file_is_writable_never_opens_it(make_app, tmp_path, monkeypatch):
    """Closing any descriptor of a SQLite database drops every POSIX lock the process holds on it, those of
    its other connections too, so their readers saw stale rows (found by the helper's tests: a gunicorn
    worker kept answering from a deleted row). The read-only check asks access(2) instead."""
    import os as os_module

    from authmd.extensions import db
    path = str(tmp_path / "locks.sqlite3")
    fresh = make_app(DATABASE_URL="sqlite:///" + path)
    assert fresh.test_cli_runner().invoke(args=["init-db"]).exit_code == 0
    opened = []
    real_open = os_module.open
    monkeypatch.setattr(os_module, "open", lambda p, *a, **k: (opened.append(str(p)), real_open(p, *a, **k))[1])
    with fresh.app_context():
        db.engine.dispose()
        with db.engine.connect() as conn:  # a new DBAPI connection: the connect listeners run
            conn.exec_driver_sql("SELECT 1")
    assert path not in opened
