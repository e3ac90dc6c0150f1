"""JWT access tokens (RFC 9068, typ at+jwt) from the latest protocol's /oauth2/token, switched on by the
access_token_format setting: their claims and signature (checked against the published JWKS with python-jose,
not with authmd's code), their short lifetime, and authmd's own checks refusing one the moment it is revoked."""
import calendar
import hashlib
import json
import time
from datetime import datetime, timedelta
from html.parser import HTMLParser

import pytest
from jose import jws as jose_jws

from authmd import keys
from authmd.extensions import db
from authmd.models import AuditEvent, Credential, User
from tests.fixtures.flows import set_settings
from tests.fixtures.provider import trust
from tests.fixtures.resource import add_resource_server

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"
ISSUER = "http://localhost:8000"
RESOURCE = ISSUER + "/api/"
T0 = datetime(2026, 5, 20, 12, 0, 0)


def epoch(dt) -> int:
    return calendar.timegm(dt.timetuple())


def anonymous(client) -> dict:
    r = client.post("/agent/identity", json={"type": "anonymous"})
    assert r.status_code == 200, r.text
    return r.get_json()


def exchange(client, assertion, **extra):
    r = client.post("/oauth2/token", data={"grant_type": JWT_BEARER, "assertion": assertion, **extra})
    assert r.status_code == 200, r.text
    return r.get_json()


def verified(client, token) -> tuple[dict, dict]:
    """(header, claims) of a JWT whose signature python-jose checked with the key the JWKS names."""
    header = jose_jws.get_unverified_header(token)
    published = {k["kid"]: k for k in client.get("/.well-known/jwks.json").get_json()["keys"]}
    claims = json.loads(jose_jws.verify(token, published[header["kid"]], algorithms=["ES256"]))
    return header, claims


def api(client, token):
    return client.get("/api/resource", headers={"Authorization": "Bearer " + token})


@pytest.fixture
def jwt_on(app):
    set_settings(app, access_token_format="jwt")


def test_access_tokens_are_opaque_by_default(app, client):
    token = exchange(client, anonymous(client)["identity"]["assertion"])
    assert token["access_token"].startswith("at_") and token["expires_in"] == 3600


def test_a_jwt_access_token_carries_the_rfc9068_claims(app, client, clock, jwt_on):
    clock.frozen = T0
    reg = anonymous(client)
    answer = exchange(client, reg["identity"]["assertion"], resource=ISSUER + "/api")
    token = answer["access_token"]
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 300 and answer["scope"] == "api.read"
    header, claims = verified(client, token)
    with app.app_context():
        active = [k["kid"] for k in keys.list_keys() if k["state"] == "active"]
    assert header == {"typ": "at+jwt", "alg": "ES256", "kid": active[0]}
    jti = claims.pop("jti")
    assert len(jti) == 32 and int(jti, 16) >= 0
    assert claims == {"iss": ISSUER, "sub": "registration:" + reg["id"], "aud": ISSUER + "/api",  # as asked
                      "client_id": reg["id"], "iat": epoch(T0), "exp": epoch(T0) + 300, "scope": "api.read",
                      "registration_type": "anonymous", "protocol": "latest"}
    with app.app_context():  # a credentials row keyed by the token's digest, as every credential
        row = db.session.execute(db.select(Credential)).scalar_one()
        event = db.session.execute(db.select(AuditEvent).where(AuditEvent.event == "token.issued")).scalar_one()
    assert row.digest == hashlib.sha256(token.encode()).hexdigest() and row.prefix == "jwt_" + jti[:6]
    assert (row.protocol, row.resource, row.expires_at) == ("latest", ISSUER + "/api", T0 + timedelta(seconds=300))
    data = json.loads(event.data)
    assert data["format"] == "jwt" and data["credential_prefix"] == row.prefix
    assert token not in event.data and token.split(".")[2] not in event.data


def test_the_lifetime_is_its_own_setting_and_stops_at_the_claim_deadline(app, client, clock, jwt_on):
    clock.frozen = T0
    set_settings(app, jwt_access_token_ttl=900, registration_ttl=1800)  # the deadline before the assertion ends
    reg = anonymous(client)
    assert exchange(client, reg["identity"]["assertion"])["expires_in"] == 900
    deadline = datetime.fromisoformat(reg["claim"]["expires_at"].replace("Z", "")).replace(tzinfo=None)
    clock.frozen = deadline - timedelta(seconds=100)
    late = exchange(client, reg["identity"]["assertion"])
    # an API checking it on its own cannot know the deadline: the token itself ends there
    assert late["expires_in"] == 100 and verified(client, late["access_token"])[1]["exp"] == epoch(deadline)


def test_a_provider_vouched_jwt_names_the_user_and_the_provider(app, client, provider, jwt_on):
    trust(app, provider)
    r = client.post("/agent/identity", json={"type": "identity_assertion", "assertion_type": ID_JAG,
                                             "assertion": provider.id_jag(sub="p-user-9", email="new@example.com",
                                                                          auth_time=int(time.time()) - 60)})
    assert r.status_code == 200, r.text
    token = exchange(client, r.get_json()["identity"]["assertion"])["access_token"]
    _, claims = verified(client, token)
    with app.app_context():
        user_id = db.session.execute(db.select(User.id).where(User.email == "new@example.com")).scalar_one()
    assert claims["sub"] == f"user:{user_id}" and claims["registration_type"] == "identity_assertion"
    assert (claims["agent_iss"], claims["agent_sub"]) == (provider.issuer, "p-user-9")
    assert claims["scope"] == "api.read api.write"
    assert api(client, token).get_json()["user"]["email"] == "new@example.com"


def test_authmds_own_checks_refuse_a_jwt_the_moment_it_is_revoked(app, client, jwt_on):
    token = exchange(client, anonymous(client)["identity"]["assertion"])["access_token"]
    rs = add_resource_server(app)
    forward = {"Authorization": "Bearer " + token, "X-Authmd-Required-Scope": "api.read"}
    assert api(client, token).status_code == 200
    assert client.get("/auth/forward", headers=forward).status_code == 200
    assert client.post("/oauth2/introspect", data={"token": token}, headers=rs.basic).get_json()["active"] is True
    assert client.post("/oauth2/revoke", data={"token": token}).status_code == 200
    r = api(client, token)
    assert r.status_code == 401 and r.get_json()["error"] == "invalid_token"
    assert client.get("/auth/forward", headers=forward).status_code == 401
    assert client.post("/oauth2/introspect", data={"token": token}, headers=rs.basic).get_data() == b'{"active":false}'


def test_a_jwt_is_refused_at_authmd_after_its_exp(app, client, clock, jwt_on):
    clock.frozen = T0
    token = exchange(client, anonymous(client)["identity"]["assertion"])["access_token"]
    clock.advance(seconds=299)
    assert api(client, token).status_code == 200
    clock.advance(seconds=1)
    assert api(client, token).status_code == 401


def test_a_jwt_authmd_did_not_issue_is_refused_although_its_signature_is_ours(app, client, jwt_on):
    token = exchange(client, anonymous(client)["identity"]["assertion"])["access_token"]
    _, claims = verified(client, token)
    with app.test_request_context():  # the same claims, signed by the same key: but no row says it was issued
        forged = keys.sign({**claims, "jti": "f" * 32, "scope": "api.read api.write"}, "at+jwt")
    assert verified(client, forged)[1]["scope"] == "api.read api.write"
    r = api(client, forged)
    assert r.status_code == 401 and r.get_json()["error"] == "invalid_token"


@pytest.mark.parametrize("token", ["eyJ" + "a" * 5000, "eyJhbGciOiJub25lIn0.e30.", "eyJ.x.y"])
def test_overlong_or_malformed_jwt_lookalikes_are_401(client, token):
    r = api(client, token)
    assert r.status_code == 401 and r.get_json()["error"] == "invalid_token"


def test_switching_back_to_opaque_leaves_issued_jwts_working_until_exp(app, client, jwt_on):
    reg = anonymous(client)
    jwt = exchange(client, reg["identity"]["assertion"])["access_token"]
    set_settings(app, access_token_format="opaque")
    assert exchange(client, reg["identity"]["assertion"])["access_token"].startswith("at_")
    assert api(client, jwt).status_code == 200


def test_a_retired_key_stays_published_while_a_jwt_it_signed_may_be_valid(app, client, clock):
    clock.frozen = T0
    set_settings(app, assertion_ttl=300, jwt_access_token_ttl=3600)  # here the access token outlives assertions
    with app.app_context():
        keys.ensure()
        _, retired = keys.rotate(actor_id="test")
        db.session.commit()
        until = {k["kid"]: k["publish_until"] for k in keys.list_keys()}
    assert until[retired[0]] == T0 + timedelta(seconds=3600 + 60)


# ------------------------------------------------------------------ the console's settings page

class _Fields(HTMLParser):
    """Every field of the settings form as a browser would submit it."""

    def __init__(self):
        super().__init__()
        self.data, self._select = {}, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "input" and a.get("name") and (a.get("type") != "checkbox" or "checked" in a):
            self.data[a["name"]] = a.get("value") or ("y" if a.get("type") == "checkbox" else "")
        elif tag == "select":
            self._select = a["name"]
        elif tag == "option" and self._select and "selected" in a:
            self.data[self._select] = a["value"]

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None


def settings_form(admin_client) -> dict:
    parser = _Fields()
    parser.feed(admin_client.get("/console/settings").get_data(as_text=True))
    return parser.data


def test_the_settings_page_switches_jwts_on_and_says_what_they_cost(app, admin_client):
    page = admin_client.get("/console/settings").get_data(as_text=True)
    assert "A JWT access token cannot be recalled before it expires" in page
    assert 'name="jwt_access_token_ttl"' in page and 'value="300"' in page
    form = settings_form(admin_client)
    assert form["access_token_format"] == "opaque"
    r = admin_client.post("/console/settings", data={**form, "access_token_format": "jwt",
                                                     "jwt_access_token_ttl": "120"})
    assert r.status_code == 302, r.get_data(as_text=True)
    with app.app_context():
        from authmd import settings
        assert (settings.get("access_token_format"), settings.get("jwt_access_token_ttl")) == ("jwt", 120)
        row = db.session.execute(db.select(AuditEvent).where(AuditEvent.event == "settings.changed")).scalar_one()
    assert json.loads(row.data)["after"] == {"access_token_format": "jwt", "jwt_access_token_ttl": 120}
    assert settings_form(admin_client)["access_token_format"] == "jwt"


@pytest.mark.parametrize("field, value", [("jwt_access_token_ttl", "30"), ("jwt_access_token_ttl", "86400"),
                                          ("jwt_access_token_ttl", ""), ("access_token_format", "paseto")])
def test_bad_token_settings_are_refused_beside_the_field(app, admin_client, field, value):
    r = admin_client.post("/console/settings", data={**settings_form(admin_client), field: value})
    assert r.status_code == 400 and f'id="{field}-error"' in r.get_data(as_text=True)
    with app.app_context():
        assert db.session.execute(db.select(AuditEvent).where(AuditEvent.event == "settings.changed")).first() is None

