"""Forward auth at GET /auth/forward: what a reverse proxy (nginx auth_request, Traefik ForwardAuth, Caddy
forward_auth) asks before it lets a request through to the team's API, and the headers it passes upstream."""
from datetime import datetime, timedelta
from urllib.parse import unquote

import pytest
import requests

from authmd import credentials
from authmd.extensions import db
from authmd.models import Credential, User
from authmd.protocol.forward import header_value
from tests.conftest import count_rows
from tests.fixtures.flows import ANON
from tests.fixtures.provider import trust

PRM = 'resource_metadata="http://localhost:8000/.well-known/oauth-protected-resource"'
T0 = datetime(2026, 5, 20, 12, 0, 0)


def anonymous(client) -> dict:
    return client.post("/agent/auth", json=ANON).get_json()


def forward(client, token=None, scope=None, query=""):
    headers = {}
    if token is not None:
        headers["Authorization"] = "Bearer " + token
    if scope is not None:
        headers["X-Authmd-Required-Scope"] = scope
    return client.get("/auth/forward" + query, headers=headers)


def test_a_live_key_passes_with_the_headers_for_upstream(client):
    reg = anonymous(client)
    r = forward(client, reg["credential"], "api.read")
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    assert r.headers["X-Authmd-Subject"] == "registration:" + reg["registration_id"]
    assert r.headers["X-Authmd-Scopes"] == "api.read"
    assert r.headers["X-Authmd-Registration"] == reg["registration_id"]
    # present and empty without a delegation, so no proxy passes a client's own value (or a placeholder) on
    assert r.headers["X-Authmd-Agent-Iss"] == "" and r.headers["X-Authmd-Agent-Sub"] == ""
    assert r.get_json() == {"sub": "registration:" + reg["registration_id"], "scope": "api.read",
                            "client_id": reg["registration_id"], "registration_type": "anonymous",
                            "protocol": "v0.1"}


def test_no_required_scope_means_any_live_credential(client):
    assert forward(client, anonymous(client)["credential"]).status_code == 200


@pytest.mark.parametrize("headers", [{}, {"Authorization": ""}, {"Authorization": "Bearer"},
                                     {"Authorization": "Basic dXNlcjpwdw=="}])
def test_no_credential_is_401_with_the_bare_challenge(app, client, headers):
    before = count_rows(app)
    r = client.get("/auth/forward", headers={**headers, "X-Authmd-Required-Scope": "api.read"})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer " + PRM
    assert r.get_json()["error"] == "unauthorized" and r.get_json()["message"]
    assert not any(h.startswith("X-Authmd-") for h in r.headers.keys())
    assert count_rows(app) == before


@pytest.mark.parametrize("token", ["sk_unknown", "x" * 500, "clm_abc"])
def test_a_bad_credential_is_401_invalid_token(client, token):
    r = forward(client, token, "api.read")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Bearer error="invalid_token", ' + PRM
    assert r.get_json()["error"] == "invalid_token"
    assert not any(h.startswith("X-Authmd-") for h in r.headers.keys())


def test_a_missing_scope_is_403_naming_it(client):
    r = forward(client, anonymous(client)["credential"], "api.write")
    assert r.status_code == 403
    assert r.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope", scope="api.write", ' + PRM
    assert r.get_json()["error"] == "insufficient_scope"
    assert not any(h.startswith("X-Authmd-") for h in r.headers.keys())


def test_the_scope_may_come_from_the_query(client):
    token = anonymous(client)["credential"]
    assert forward(client, token, query="?scope=api.read").status_code == 200
    assert forward(client, token, query="?scope=api.write").status_code == 403


def test_header_and_query_add_up_so_a_client_cannot_lower_the_requirement(client):
    # Traefik and Caddy pass the client's own headers on to the auth request: a client that adds
    # X-Authmd-Required-Scope: api.read to a route configured with ?scope=api.write must still be refused
    token = anonymous(client)["credential"]
    r = forward(client, token, "api.read", query="?scope=api.write")
    assert r.status_code == 403
    assert 'scope="api.read api.write"' in r.headers["WWW-Authenticate"]
    r = client.get("/auth/forward", headers=[("Authorization", "Bearer " + token),
                                             ("X-Authmd-Required-Scope", "api.read"),
                                             ("X-Authmd-Required-Scope", "api.write")])
    assert r.status_code == 403


@pytest.mark.parametrize("scope", ['api.read"', "api read\r\nX-Evil: 1", "a" * 101, "é", " ".join(f"s{i}" for i in range(21))])
def test_a_malformed_required_scope_is_400(app, client, scope):
    token = anonymous(client)["credential"]
    before = count_rows(app)
    r = client.get("/auth/forward", query_string={"scope": scope}, headers={"Authorization": "Bearer " + token})
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_request"
    assert "WWW-Authenticate" not in r.headers and count_rows(app) == before


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405_json(client, method):
    # OPTIONS too: an automatic 200 would read as "access granted" to a proxy that forwarded the method
    r = client.open("/auth/forward", method=method, headers={"Authorization": "Bearer " + anonymous(client)["credential"]})
    assert r.status_code == 405 and r.get_json()["error"] == "method_not_allowed" and "GET" in r.headers["Allow"]


def test_head_answers_like_get(client):
    token = anonymous(client)["credential"]
    assert client.head("/auth/forward", headers={"Authorization": "Bearer " + token}).status_code == 200
    assert client.head("/auth/forward").status_code == 401


def test_a_revocation_is_seen_by_the_next_call(app, client):
    reg = anonymous(client)
    assert forward(client, reg["credential"]).status_code == 200
    with app.app_context():
        credentials.revoke_where(Credential.registration_id == reg["registration_id"])
        db.session.commit()
    assert forward(client, reg["credential"]).status_code == 401


def test_a_disabled_user_is_refused(app, client):
    reg = anonymous(client)
    with app.app_context():
        user = User(email="off@example.com", email_verified=True, is_active=False, created_at=T0)
        db.session.add(user)
        db.session.flush()
        db.session.execute(db.update(Credential).values(user_id=user.id))
        db.session.commit()
    assert forward(client, reg["credential"]).status_code == 401


def test_a_call_records_last_used(app, client, clock):
    clock.frozen = T0
    reg = anonymous(client)
    clock.advance(minutes=5)
    forward(client, reg["credential"])
    with app.app_context():
        assert db.session.execute(db.select(Credential.last_used_at)).scalar() == T0 + timedelta(minutes=5)


def test_a_delegation_names_the_agent_in_safe_headers(app, client, provider, register_id_jag):
    # the provider's sub is any text it signs: Unicode, a line separator, a percent sign, quotes
    sub = 'ü "user" 100%\u2028next'
    trust(app, provider)
    r = register_id_jag(client, provider.id_jag(sub=sub))
    assert r.status_code == 200, r.get_data(as_text=True)
    r = forward(client, r.get_json()["credential"], "api.write")
    assert r.status_code == 200
    assert r.headers["X-Authmd-Agent-Iss"] == provider.issuer
    encoded = r.headers["X-Authmd-Agent-Sub"]
    assert all(0x20 <= ord(c) < 0x7f for c in encoded)
    assert unquote(encoded) == sub and r.get_json()["agent_sub"] == sub
    assert r.headers["X-Authmd-Subject"].startswith("user:")


@pytest.mark.parametrize("text,expected", [("user:42", "user:42"), ("a%b", "a%25b"), ("a\r\nb", "a%0D%0Ab"),
                                           ("\x00", "%00"), ("é", "%C3%A9"), ("x" * 600, "x" * 512),
                                           ("é" * 100, "%C3%A9" * 85)])
def test_header_values_are_printable_ascii_and_decode_back(text, expected):
    value = header_value(text)
    assert value == expected and len(value) <= 512
    if len(text) < 85:
        assert unquote(value) == text


def test_over_real_http_through_gunicorn(app, gunicorn_server, schema):
    server = gunicorn_server(schema, workers=2)
    reg = requests.post(server.url + "/agent/auth", json=ANON, timeout=10).json()
    auth = {"Authorization": "Bearer " + reg["credential"]}
    for _ in range(4):  # both workers answer alike
        r = requests.get(server.url + "/auth/forward", headers={**auth, "X-Authmd-Required-Scope": "api.read"},
                         timeout=10)
        assert r.status_code == 200 and r.headers["X-Authmd-Registration"] == reg["registration_id"]
        r = requests.get(server.url + "/auth/forward?scope=api.write", headers=auth, timeout=10)
        assert r.status_code == 403 and 'scope="api.write"' in r.headers["WWW-Authenticate"]
    with app.app_context():
        credentials.revoke_where(Credential.registration_id == reg["registration_id"])
        db.session.commit()
    for _ in range(4):
        r = requests.get(server.url + "/auth/forward", headers=auth, timeout=10)
        assert r.status_code == 401 and r.json()["error"] == "invalid_token"


def test_a_jwt_access_token_passes_in_the_latest_words_until_revoked(app, client):
    from tests.fixtures.flows import set_settings
    set_settings(app, access_token_format="jwt")
    reg = client.post("/agent/identity", json={"type": "anonymous"}).get_json()
    token = client.post("/oauth2/token", data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                               "assertion": reg["identity"]["assertion"]}).get_json()["access_token"]
    r = forward(client, token, "api.read")
    assert r.status_code == 200 and r.headers["X-Authmd-Subject"] == "registration:" + reg["id"]
    assert r.get_json() == {"sub": "registration:" + reg["id"], "scope": "api.read", "client_id": reg["id"],
                            "registration_type": "anonymous", "protocol": "latest"}
    assert client.post("/oauth2/revoke", data={"token": token}).status_code == 200
    r = forward(client, token, "api.read")
    assert r.status_code == 401 and r.get_json()["error"] == "invalid_token"
