"""Health: /healthz is constant and needs no database; /readyz says whether the database answers."""
import socket


def test_healthz_is_constant_json(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.get_json() == {"status": "ok"} and r.mimetype == "application/json"
    assert client.get("/healthz").data == r.data


def test_readyz_checks_the_database(client):
    r = client.get("/readyz")
    assert r.status_code == 200 and r.get_json() == {"status": "ready", "database": "ok"}


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_without_a_database_healthz_stays_up_and_readyz_answers_503(make_app, tmp_path):
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/nothing?connect_timeout=2"
    down = make_app(DATABASE_URL=url).test_client()
    assert down.get("/healthz").status_code == 200
    r = down.get("/readyz")
    assert r.status_code == 503 and r.get_json() == {"status": "unavailable", "database": "unreachable"}
    assert r.headers["Retry-After"] == "5"


def test_health_under_gunicorn(gunicorn_server, schema):
    import requests
    server = gunicorn_server(schema, workers=1)
    assert requests.get(server.url + "/healthz").json() == {"status": "ok"}
    assert requests.get(server.url + "/readyz").json()["database"] == "ok"


def test_gunicorn_conf_defaults(monkeypatch):
    import multiprocessing
    import os
    import runpy
    for key in list(os.environ):
        if key.startswith("AUTHMD_"):
            monkeypatch.delenv(key)
    conf = runpy.run_path(os.path.join(os.path.dirname(os.path.dirname(__file__)), "gunicorn.conf.py"))
    assert conf["workers"] == min(multiprocessing.cpu_count() * 2 + 1, 12)
    assert conf["timeout"] == 30 and conf["graceful_timeout"] == 20 and conf["worker_class"] == "sync"
    assert conf["logger_class"] == "authmd.logs.GunicornLogger"
    fmt = conf["access_log_format"]
    assert "%(U)s" in fmt  # the path without its query string
    assert not any(atom in fmt for atom in ("%(r)s", "%(q)s", "%(u)s", "%(f)s")) and "authorization" not in fmt.lower()
    monkeypatch.setenv("AUTHMD_WORKERS", "3")
    monkeypatch.setenv("AUTHMD_ACCESS_LOG", "none")
    conf = runpy.run_path(os.path.join(os.path.dirname(os.path.dirname(__file__)), "gunicorn.conf.py"))
    assert conf["workers"] == 3 and conf["accesslog"] is None
