"""Forward auth for real: nginx (Debian's binary) running the shipped examples/proxies/nginx/authmd-api.conf
(only its three addresses substituted, so the file that ships is the file tested) in front of a small upstream
API that echoes what reached it, with authmd under gunicorn behind auth_request. Every outcome: no token, a
bogus one, a live one, the wrong scope, one revoked a moment ago, and a JWT access token revoked at authmd."""
import json
import os
import threading

import pytest
import requests

from authmd import credentials
from authmd.extensions import db
from authmd.models import Credential
from tests.fixtures.flows import ANON, set_settings
from tests.fixtures.gunicorn import ROOT, free_port
from tests.fixtures.provider import trust

SHIPPED = os.path.join(ROOT, "examples", "proxies", "nginx", "authmd-api.conf")
PRM = 'resource_metadata="http://localhost:8000/.well-known/oauth-protected-resource"'
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"


def shipped_site(authmd_port: int, api_port: int, listen_port: int) -> str:
    with open(SHIPPED) as f:
        text = f.read()
    for old, new in [("server 127.0.0.1:8000;", f"server 127.0.0.1:{authmd_port};"),
                     ("server 127.0.0.1:5001;", f"server 127.0.0.1:{api_port};"),
                     ("listen 8080;", f"listen 127.0.0.1:{listen_port};")]:
        # each exactly once: if the shipped file changes shape, this says so instead of testing something else
        assert text.count(old) == 1, f"{SHIPPED}: expected {old!r} exactly once"
        text = text.replace(old, new)
    return text


class Upstream:
    """The team's API as far as this test cares: answers 200 with what reached it (method, path, headers)."""

    def __init__(self):
        from werkzeug.serving import make_server
        self.seen = []

        def app(environ, start_response):
            headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
            self.seen.append({"method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"], "headers": headers})
            body = json.dumps({"upstream": True, "headers": headers}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.thread.join(timeout=5)


@pytest.fixture
def proxied(app, schema, gunicorn_server, nginx_server):
    """(nginx URL, authmd URL, upstream): the shipped nginx site between an agent and the upstream API."""
    upstream = Upstream()
    authmd = gunicorn_server(schema, workers=2)
    port = free_port()
    proxy = nginx_server(shipped_site(int(authmd.url.rsplit(":", 1)[1]), upstream.port, port), port)
    yield proxy.url, authmd.url, upstream
    upstream.stop()


def call(url, method="GET", token=None, **headers):
    if token is not None:
        headers["Authorization"] = "Bearer " + token
    return requests.request(method, url + "/v1/notes", headers=headers, timeout=10,
                            json={"text": "hi"} if method == "POST" else None)


def assert_refused(r, status, error, challenge):
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert body["error"] == error and body["message"], body
    assert r.headers["WWW-Authenticate"] == challenge
    assert r.headers["Cache-Control"] == "no-store"


@pytest.mark.slow
def test_every_outcome_through_the_shipped_nginx_config(app, proxied, provider):
    proxy, authmd, upstream = proxied
    # no token, a bogus one: 401 with authmd's challenge and a JSON body, the API never reached
    assert_refused(call(proxy), 401, "unauthorized", "Bearer " + PRM)
    assert_refused(call(proxy, token="sk_bogus"), 401, "invalid_token", 'Bearer error="invalid_token", ' + PRM)
    assert upstream.seen == []

    # a live key (api.read): passed on with who is calling, the credential and forged headers gone
    reg = requests.post(authmd + "/agent/auth", json=ANON, timeout=10).json()
    r = call(proxy, token=reg["credential"], **{"X-Authmd-Subject": "user:1", "X-Authmd-Scopes": "admin",
                                                "X-Authmd-Required-Scope": "nothing"})
    assert r.status_code == 200 and r.json()["upstream"] is True, r.text
    seen = upstream.seen[-1]["headers"]
    assert seen["X-Authmd-Subject"] == "registration:" + reg["registration_id"]
    assert seen["X-Authmd-Scopes"] == "api.read" and seen["X-Authmd-Registration"] == reg["registration_id"]
    assert "Authorization" not in seen and "X-Authmd-Required-Scope" not in seen
    assert "X-Authmd-Agent-Iss" not in seen and "X-Authmd-Agent-Sub" not in seen  # no delegation: none sent

    # the wrong scope: a write needs api.write
    before = len(upstream.seen)
    assert_refused(call(proxy, "POST", token=reg["credential"]), 403, "insufficient_scope",
                   'Bearer error="insufficient_scope", scope="api.write", ' + PRM)
    assert len(upstream.seen) == before

    # a key that holds api.write, vouched for by a provider: the write passes, with the agent headers
    trust(app, provider)
    vouched = requests.post(authmd + "/agent/auth", timeout=10, json={
        "type": "identity_assertion", "assertion_type": ID_JAG, "assertion": provider.id_jag(sub="p-42"),
        "requested_credential_type": "api_key"})
    assert vouched.status_code == 200, vouched.text
    r = call(proxy, "POST", token=vouched.json()["credential"])
    assert r.status_code == 200 and upstream.seen[-1]["method"] == "POST"
    seen = upstream.seen[-1]["headers"]
    assert seen["X-Authmd-Agent-Iss"] == provider.issuer and seen["X-Authmd-Agent-Sub"] == "p-42"
    assert seen["X-Authmd-Scopes"] == "api.read api.write"

    # revoked a moment ago: refused on the very next call
    with app.app_context():
        assert credentials.revoke_where(Credential.registration_id == reg["registration_id"]) == 1
        db.session.commit()
    before = len(upstream.seen)
    assert_refused(call(proxy, token=reg["credential"]), 401, "invalid_token", 'Bearer error="invalid_token", ' + PRM)
    assert len(upstream.seen) == before

    # agents find authmd through the API's metadata, served through nginx
    prm = requests.get(proxy + "/.well-known/oauth-protected-resource", timeout=10)
    assert prm.status_code == 200 and prm.json()["authorization_servers"] == ["http://localhost:8000"]


@pytest.mark.slow
def test_a_jwt_access_token_passes_and_is_refused_the_moment_it_is_revoked(app, proxied):
    proxy, authmd, upstream = proxied
    set_settings(app, access_token_format="jwt")
    reg = requests.post(authmd + "/agent/identity", json={"type": "anonymous"}, timeout=10).json()
    token = requests.post(authmd + "/oauth2/token", timeout=10, data={
        "grant_type": JWT_BEARER, "assertion": reg["identity"]["assertion"]}).json()["access_token"]
    assert token.startswith("eyJ") and len(token) > 200
    r = call(proxy, token=token)
    assert r.status_code == 200, r.text
    assert upstream.seen[-1]["headers"]["X-Authmd-Subject"] == "registration:" + reg["id"]
    assert requests.post(authmd + "/oauth2/revoke", data={"token": token}, timeout=10).status_code == 200
    assert_refused(call(proxy, token=token), 401, "invalid_token", 'Bearer error="invalid_token", ' + PRM)
    assert len(upstream.seen) == 1
