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


def test_a_read_only_database_answers_json_errors_and_heals_without_a_restart(app, gunicorn_server, schema):
    if not schema.startswith("sqlite"):
        pytest.skip("the fault is made on the SQLite file")
    path = _sqlite_path(schema)
    server = gunicorn_server(schema, workers=2)
    post = lambda body: requests.post(server.url + "/agent/auth", json=body, timeout=20)  # noqa: E731
    keys = [post(ANON).json()["credential"] for _ in range(6)]  # both workers have pooled connections
    ready = requests.get(server.url + "/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "database": "ok"}

    with read_only(path):
        for _ in range(8):
            _json_failure(post(ANON))
        _json_failure(post(email_body("fault@example.com")))
        for _ in range(2):
            r = requests.get(server.url + "/readyz", timeout=10)
            assert r.status_code == 503 and r.json() == {"status": "unavailable", "database": "not_writable"}
            assert r.headers["Retry-After"] == "5"
        # reads still work: a key in hand keeps working, its last_used_at write is what fails
        for key in keys:
            api = requests.get(server.url + "/api/resource", headers={"Authorization": "Bearer " + key}, timeout=10)
            assert api.status_code == 200, api.text

    assert requests.get(server.url + "/readyz", timeout=10).status_code == 200
    answers = [post(ANON) for _ in range(20)]
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
