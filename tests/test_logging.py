"""Logs: JSON lines with AUTHMD_LOG_FORMAT=json (app and gunicorn), and no secret in any line."""
import json
import socket

import pytest
import requests

SECRET_LINK_TOKEN = "cvt_DoNotLogThisLinkToken0123456789"
SECRET_KEY = "sk_DoNotLogThisCredential0123456789"


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def drive(server):
    requests.get(server.url + "/healthz")
    requests.get(server.url + "/agent/auth/claim/view", params={"token": SECRET_LINK_TOKEN})
    requests.get(server.url + "/api/resource", headers={"Authorization": "Bearer " + SECRET_KEY})
    # the store is down: the app logs that it fails open
    r = requests.post(server.url + "/agent/auth", json={"type": "anonymous"})
    assert r.status_code == 200


@pytest.mark.slow
def test_json_logs_from_app_and_gunicorn_carry_no_secret(gunicorn_server, schema):
    server = gunicorn_server(schema, workers=1, AUTHMD_LOG_FORMAT="json", AUTHMD_RATELIMIT_ENABLED="1",
                             AUTHMD_RATELIMIT_STORAGE_URI=f"redis://127.0.0.1:{closed_port()}/4")
    drive(server)
    server.stop()
    text = server.output()
    assert SECRET_LINK_TOKEN not in text and SECRET_KEY not in text
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is JSON
    loggers = {line["logger"] for line in lines}
    assert {"gunicorn.error", "gunicorn.access", "authmd.ratelimit"} <= loggers
    access = [line for line in lines if line["logger"] == "gunicorn.access"]
    view = next(line for line in access if line["path"] == "/agent/auth/claim/view")
    assert view["method"] == "GET" and view["status"] == 404 and "?" not in json.dumps(view)
    assert any(line["path"] == "/api/resource" and line["status"] == 401 for line in access)
    assert any("failing open" in line["message"] for line in lines if line["logger"] == "authmd.ratelimit")
    assert all({"time", "level", "message"} <= set(line) for line in lines)


@pytest.mark.slow
def test_text_access_log_has_no_query_string_or_authorization(gunicorn_server, schema):
    server = gunicorn_server(schema, workers=1)
    drive(server)
    server.stop()
    text = server.output()
    assert "/agent/auth/claim/view" in text
    assert SECRET_LINK_TOKEN not in text and SECRET_KEY not in text and "token=" not in text


def test_app_logger_switches_to_json(make_app, capsys):
    import logging
    make_app(LOG_FORMAT="json")
    logging.getLogger("authmd.test").warning("hello %s", "json")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert json.loads(line)["message"] == "hello json" and json.loads(line)["level"] == "warning"
    make_app(LOG_FORMAT="text")
    logging.getLogger("authmd.test").warning("hello text")
    assert capsys.readouterr().err.strip().endswith("authmd.test: hello text")
