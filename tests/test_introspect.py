"""Token introspection (RFC 7662) at POST /oauth2/introspect: the answer for each kind of live credential,
exactly {"active": false} for everything else, and the resource server's own authentication."""
import base64
import calendar
import json
from datetime import datetime, timedelta

import pytest

from authmd import credentials, resource_servers
from authmd.extensions import db
from authmd.models import Credential, Registration, ResourceServer, User
from tests.conftest import count_rows
from tests.fixtures.flows import ANON, Agent, ClientTransport, Person
from tests.fixtures.provider import trust
from tests.fixtures.resource import add_resource_server

ISSUER = "http://localhost:8000"
T0 = datetime(2026, 5, 20, 12, 0, 0)
INACTIVE = b'{"active":false}'


def epoch(dt) -> int:
    return calendar.timegm(dt.timetuple())


def introspect(client, rs, token, **extra):
    return client.post("/oauth2/introspect", data={"token": token, **extra}, headers=rs.basic)


def anonymous(client) -> dict:
    r = client.post("/agent/auth", json=ANON)
    assert r.status_code == 200
    return r.get_json()


def assert_inactive(r):
    assert r.status_code == 200 and r.mimetype == "application/json"
    assert r.get_data() == INACTIVE  # nothing else, not even a hint why
    assert r.headers["Cache-Control"] == "no-store"


# ------------------------------------------------------------------ live credentials

def test_an_unclaimed_key_is_described_field_by_field(client, clock, resource_server):
    clock.frozen = T0
    reg = anonymous(client)
    r = introspect(client, resource_server, reg["credential"])
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    assert r.get_json() == {
        "active": True, "scope": "api.read", "token_type": "Bearer",
        "exp": epoch(T0 + timedelta(hours=24)),  # the key stops at the claim deadline unless claimed
        "iat": epoch(T0), "iss": ISSUER, "aud": ISSUER + "/api/",
        "sub": "registration:" + reg["registration_id"], "client_id": reg["registration_id"],
        "registration_type": "anonymous", "protocol": "v0.1"}


def test_a_claimed_key_names_its_user_and_never_expires(app, clock, smtp, resource_server):
    clock.frozen = T0
    transport = ClientTransport(app)
    agent, person = Agent(transport), Person(transport, smtp)
    reg = agent.register_anonymous()
    assert agent.claim(reg["claim_token"], "ada@example.com").status_code == 200
    code = person.reveal(person.link("ada@example.com"))
    assert agent.complete(reg["claim_token"], code).status_code == 200
    with app.app_context():
        user_id = db.session.execute(db.select(User.id).where(User.email == "ada@example.com")).scalar()
    body = introspect(transport.client, resource_server, reg["credential"]).get_json()
    assert "exp" not in body
    assert body["sub"] == f"user:{user_id}" and body["client_id"] == reg["registration_id"]
    assert body["scope"] == "api.read api.write" and body["registration_type"] == "anonymous"


def test_an_id_jag_access_token_carries_its_expiry_and_the_agent(app, client, clock, provider, register_id_jag,
                                                                 resource_server):
    trust(app, provider)
    r = register_id_jag(client, provider.id_jag(sub="provider-user-7"))
    assert r.status_code == 200, r.get_data(as_text=True)
    reg = r.get_json()
    body = introspect(client, resource_server, reg["credential"]).get_json()
    with app.app_context():
        cred = db.session.execute(db.select(Credential)).scalar()
        user_id = db.session.execute(db.select(User.id)).scalar()
    assert reg["credential"].startswith("at_")
    assert body["exp"] == epoch(cred.expires_at) and body["iat"] == epoch(cred.created_at)
    assert body["sub"] == f"user:{user_id}" and body["registration_type"] == "agent-provider"
    assert body["agent_iss"] == provider.issuer and body["agent_sub"] == "provider-user-7"
    assert body["protocol"] == "v0.1" and body["token_type"] == "Bearer"


# the latest protocol's access tokens: rows of credentials too, answered from the row
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def _latest_token(app, client, reg_type, status, **form) -> tuple[str, dict]:
    from authmd import assertions
    reg_id = "reg_latest" + reg_type.replace("-", "")
    with app.app_context():
        now = credentials.utcnow()  # the app's clock
        db.session.add(Registration(id=reg_id, type=reg_type, status=status, protocol="latest", created_at=now,
                                    claimed_at=now - timedelta(seconds=5) if status == "claimed" else None,
                                    claim_expires_at=now + timedelta(hours=24)))
        db.session.commit()
    with app.test_request_context():
        assertion, _ = assertions.issue(reg_id)
        db.session.commit()
    r = client.post("/oauth2/token", data={"grant_type": JWT_BEARER, "assertion": assertion, **form})
    assert r.status_code == 200, r.text
    return reg_id, r.get_json()


@pytest.mark.parametrize("reg_type, status, wire, scope", [("anonymous", "pending", "anonymous", "api.read"),
                                                            ("service-auth", "claimed", "service_auth",
                                                             "api.read api.write")])
def test_a_latest_access_token_says_latest_in_its_own_words(app, client, clock, resource_server, reg_type, status,
                                                            wire, scope):
    clock.frozen = T0
    reg_id, token = _latest_token(app, client, reg_type, status, resource=ISSUER + "/api")
    body = introspect(client, resource_server, token["access_token"]).get_json()
    assert body["protocol"] == "latest" and body["registration_type"] == wire
    assert body["aud"] == ISSUER + "/api"  # the resource the token was asked for
    assert body["scope"] == scope and body["client_id"] == reg_id and body["iat"] == epoch(T0)
    assert body["exp"] == epoch(T0 + timedelta(hours=1))


def test_a_latest_token_without_a_resource_names_the_configured_one(app, client, resource_server):
    _, token = _latest_token(app, client, "anonymous", "pending")
    assert introspect(client, resource_server, token["access_token"]).get_json()["aud"] == ISSUER + "/api/"


def test_a_latest_provider_token_is_an_identity_assertion_with_the_agent(app, client, provider, resource_server):
    import time
    trust(app, provider)
    r = client.post("/agent/identity", json={"type": "identity_assertion",
                                             "assertion_type": "urn:ietf:params:oauth:token-type:id-jag",
                                             "assertion": provider.id_jag(sub="p-7", auth_time=int(time.time()) - 9)})
    assert r.status_code == 200, r.text
    token = client.post("/oauth2/token", data={"grant_type": JWT_BEARER,
                                               "assertion": r.get_json()["identity"]["assertion"]}).get_json()
    body = introspect(client, resource_server, token["access_token"]).get_json()
    assert (body["protocol"], body["registration_type"]) == ("latest", "identity_assertion")
    assert (body["agent_iss"], body["agent_sub"]) == (provider.issuer, "p-7") and body["sub"].startswith("user:")


def test_a_jwt_access_token_is_answered_as_its_claims_say_until_revoked(app, client, clock, resource_server):
    from tests.fixtures.flows import set_settings
    set_settings(app, access_token_format="jwt")
    clock.frozen = T0
    _, token = _latest_token(app, client, "anonymous", "pending")
    jwt = token["access_token"]
    payload = json.loads(base64.urlsafe_b64decode(jwt.split(".")[1] + "=="))
    body = introspect(client, resource_server, jwt).get_json()
    assert body.pop("active") is True and body.pop("token_type") == "Bearer"
    assert body == {k: payload[k] for k in ("scope", "exp", "iat", "iss", "aud", "sub", "client_id",
                                            "registration_type", "protocol")}
    assert client.post("/oauth2/revoke", data={"token": jwt}).status_code == 200
    assert_inactive(introspect(client, resource_server, jwt))


def test_introspection_records_last_used_like_an_api_call(app, client, clock, resource_server):
    clock.frozen = T0
    reg = anonymous(client)
    clock.advance(seconds=90)
    assert introspect(client, resource_server, reg["credential"]).get_json()["active"] is True
    with app.app_context():
        assert db.session.execute(db.select(Credential.last_used_at)).scalar() == T0 + timedelta(seconds=90)
        assert db.session.execute(db.select(ResourceServer.last_used_at)).scalar() == T0 + timedelta(seconds=90)


def test_a_revocation_is_seen_by_the_next_introspection(app, client, resource_server):
    reg = anonymous(client)
    assert introspect(client, resource_server, reg["credential"]).get_json()["active"] is True
    with app.app_context():
        credentials.revoke_where(Credential.registration_id == reg["registration_id"])
        db.session.commit()
    assert_inactive(introspect(client, resource_server, reg["credential"]))


# ------------------------------------------------------------------ everything else is {"active": false}

def _revoke(app, reg):
    credentials.revoke_where(Credential.registration_id == reg["registration_id"])


def _end(status):
    def end(app, reg):
        db.session.execute(db.update(Registration).values(status=status))
    return end


def _disable_user(app, reg):
    user = User(email="off@example.com", email_verified=True, is_active=False, created_at=T0)
    db.session.add(user)
    db.session.flush()
    db.session.execute(db.update(Credential).values(user_id=user.id))


@pytest.mark.parametrize("change", [_revoke, _end("expired"), _end("revoked"), _disable_user],
                         ids=["revoked", "registration expired", "registration revoked", "user disabled"])
def test_a_dead_credential_is_inactive(app, client, resource_server, change):
    reg = anonymous(client)
    with app.app_context():
        change(app, reg)
        db.session.commit()
    assert_inactive(introspect(client, resource_server, reg["credential"]))


def test_an_expired_access_token_is_inactive(app, client, clock, provider, register_id_jag, resource_server):
    trust(app, provider)
    token = register_id_jag(client, provider.id_jag()).get_json()["credential"]
    clock.advance(hours=1, seconds=1)
    assert_inactive(introspect(client, resource_server, token))


def test_a_key_past_its_claim_deadline_is_inactive_and_the_registration_expires(app, client, clock, resource_server):
    clock.frozen = T0
    reg = anonymous(client)
    clock.advance(hours=24, seconds=1)
    assert_inactive(introspect(client, resource_server, reg["credential"]))
    with app.app_context():  # what the refusal leaves behind, as on the API itself
        assert db.session.get(Registration, reg["registration_id"]).status == "expired"


@pytest.mark.parametrize("token", ["sk_unknown", "at_" + "x" * 43, "sk_" + "x" * 300, "x" * 500, "Bearer sk_x",
                                   "eyJhbGciOiJub25lIn0.e30.", "\x00", "é"])
def test_unknown_malformed_or_overlong_tokens_are_inactive(client, resource_server, token):
    assert_inactive(introspect(client, resource_server, token))


def test_other_kinds_of_token_are_inactive(client, resource_server):
    reg = anonymous(client)
    assert_inactive(introspect(client, resource_server, reg["claim_token"]))
    assert_inactive(introspect(client, resource_server, resource_server.secret))
    assert_inactive(introspect(client, resource_server, reg["credential"] + "x"))


def test_the_hint_is_only_a_hint(client, resource_server):
    reg = anonymous(client)
    for hint in ("access_token", "refresh_token", "nonsense"):
        assert introspect(client, resource_server, reg["credential"], token_type_hint=hint).get_json()["active"]


# ------------------------------------------------------------------ the resource server's authentication

def basic(client_id, secret):
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def assert_invalid_client(app, before, r):
    assert r.status_code == 401, r.get_data(as_text=True)
    assert r.headers["WWW-Authenticate"] == 'Basic realm="authmd"'
    assert r.headers["Cache-Control"] == "no-store"
    body = r.get_json()
    assert set(body) == {"error", "error_description"} and body["error"] == "invalid_client"
    assert count_rows(app) == before


@pytest.fixture
def before(app, resource_server):
    return count_rows(app)


def test_no_client_authentication_is_401(app, client, before):
    assert_invalid_client(app, before, client.post("/oauth2/introspect", data={"token": "sk_x"}))


@pytest.mark.parametrize("header", ["Bearer sk_x", "Basic", "Basic !!!notbase64", "Basic " + base64.b64encode(
    b"no-colon").decode(), "Basic " + base64.b64encode(b"\xff\xfe:x").decode(), "Digest x=y"])
def test_malformed_client_authentication_is_401(app, client, before, header):
    r = client.post("/oauth2/introspect", data={"token": "sk_x"}, headers={"Authorization": header})
    assert_invalid_client(app, before, r)


def test_a_wrong_secret_or_unknown_client_is_401(app, client, resource_server, before):
    for headers in (basic(resource_server.client_id, "rsec_wrong"), basic("rs_unknown", resource_server.secret),
                    basic(resource_server.client_id, ""), basic(resource_server.client_id, "x" * 500)):
        assert_invalid_client(app, before, client.post("/oauth2/introspect", data={"token": "sk_x"}, headers=headers))


def test_the_secret_of_another_resource_server_is_401(app, client, resource_server):
    other = add_resource_server(app, "Other API")
    before = count_rows(app)
    r = client.post("/oauth2/introspect", data={"token": "sk_x"}, headers=basic(resource_server.client_id, other.secret))
    assert_invalid_client(app, before, r)


def test_a_disabled_resource_server_is_401_until_enabled(app, client, resource_server):
    reg = anonymous(client)
    with app.app_context():
        resource_servers.set_enabled(resource_servers.by_name("Test API"), False, actor_id="test")
        db.session.commit()
    r = introspect(client, resource_server, reg["credential"])
    assert_invalid_client(app, count_rows(app), r)
    with app.app_context():
        resource_servers.set_enabled(resource_servers.by_name("Test API"), True, actor_id="test")
        db.session.commit()
    assert introspect(client, resource_server, reg["credential"]).get_json()["active"] is True


def test_client_credentials_in_the_body_are_refused(app, client, resource_server, before):
    data = {"token": "sk_x", "client_id": resource_server.client_id, "client_secret": resource_server.secret}
    assert_invalid_client(app, before, client.post("/oauth2/introspect", data=data))  # client_secret_post
    r = client.post("/oauth2/introspect", data=data, headers=resource_server.basic)  # two methods at once
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_request"


def test_form_encoded_credentials_are_decoded(app, client):
    # RFC 6749 §2.3.1: id and secret are form-urlencoded before Base64; ours need no escaping, but %-escapes
    # of their plain characters must still work
    rs = add_resource_server(app, "Escaped API")
    escaped = rs.secret.replace("_", "%5F")
    r = client.post("/oauth2/introspect", data={"token": "sk_x"}, headers=basic(rs.client_id, escaped))
    assert_inactive(r)


# ------------------------------------------------------------------ bad input changes nothing

def assert_invalid_request(app, before, r, status=400):
    assert r.status_code == status, r.get_data(as_text=True)
    body = r.get_json()
    assert set(body) == {"error", "error_description"} and body["error"] == "invalid_request"
    assert body["error_description"] and r.headers["Cache-Control"] == "no-store"
    assert count_rows(app) == before


@pytest.mark.parametrize("body", ["", "token=", "token_type_hint=access_token", "token=a&token=b",
                                  "token=sk_x&token_type_hint=a&token_type_hint=b",
                                  "&".join(f"f{i}=x" for i in range(25)) + "&token=sk_x"])
def test_missing_empty_or_repeated_parameters_are_400(app, client, resource_server, before, body):
    r = client.post("/oauth2/introspect", data=body, content_type="application/x-www-form-urlencoded",
                    headers=resource_server.basic)
    assert_invalid_request(app, before, r)


@pytest.mark.parametrize("ctype,data", [("application/json", json.dumps({"token": "sk_x"})),
                                        ("text/plain", "token=sk_x"), ("multipart/form-data; boundary=x", "")])
def test_other_content_types_are_400(app, client, resource_server, before, ctype, data):
    r = client.post("/oauth2/introspect", data=data, content_type=ctype, headers=resource_server.basic)
    assert_invalid_request(app, before, r)


def test_a_multipart_form_is_400_even_with_a_token(app, client, resource_server):
    token = anonymous(client)["credential"]
    before = count_rows(app)
    r = client.post("/oauth2/introspect", data={"token": token}, content_type="multipart/form-data",
                    headers=resource_server.basic)
    assert_invalid_request(app, before, r)


def test_a_token_in_the_query_string_is_not_read(app, client, resource_server, before):
    reg = anonymous(client)
    before = count_rows(app)
    r = client.post("/oauth2/introspect?token=" + reg["credential"], data={}, headers=resource_server.basic)
    assert_invalid_request(app, before, r)


def test_bodies_over_64_kib_are_413(app, client, resource_server, before):
    r = client.post("/oauth2/introspect", data="token=" + "x" * (64 * 1024),
                    content_type="application/x-www-form-urlencoded", headers=resource_server.basic)
    assert_invalid_request(app, before, r, 413)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_405_json(app, client, before, method):
    r = client.open("/oauth2/introspect", method=method)
    assert r.status_code == 405 and "POST" in r.headers["Allow"]
    assert r.get_json()["error"] == "invalid_request" and count_rows(app) == before


def test_the_endpoint_is_in_the_authorization_server_metadata(client):
    meta = client.get("/.well-known/oauth-authorization-server").get_json()
    assert meta["introspection_endpoint"] == ISSUER + "/oauth2/introspect"


def test_a_fault_is_a_json_500_without_internals(make_app, resource_server, monkeypatch):
    app = make_app(PROPAGATE_EXCEPTIONS=False)

    def boom(token):
        raise RuntimeError("secret internals")
    monkeypatch.setitem(__import__("authmd.protocol.introspect", fromlist=["FAMILIES"]).FAMILIES, "sk_", boom)
    r = app.test_client().post("/oauth2/introspect", data={"token": "sk_x"}, headers=resource_server.basic)
    assert r.status_code == 500 and r.get_json()["error"] == "server_error"
    assert "secret internals" not in r.get_data(as_text=True)
