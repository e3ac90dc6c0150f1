"""POST /agent/event/notify: a provider's Security Event Token (RFC 8417, pushed per RFC 8935) revokes
everything bound to its subject on both protocols, exactly like a v0.1 logout token."""
import time
import uuid

import pytest

from authmd import tokens
from authmd.extensions import db
from authmd.models import Delegation, Registration
from tests.conftest import count_rows
from tests.fixtures.provider import REVOKED_EVENT, trust

ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
AUD = "http://localhost:8000"


def _set(provider, sub="user-123", events=None, **claims):
    now = int(time.time())
    payload = {"iss": provider.issuer, "sub": sub, "aud": AUD, "iat": now, "jti": uuid.uuid4().hex,
               "events": {REVOKED_EVENT: {}} if events is None else events}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return provider.sign(payload, typ=claims.pop("typ", "secevent+jwt"))


def _notify(client, token, content_type="application/secevent+jwt"):
    return client.post("/agent/event/notify", data=token, content_type=content_type)


def _both_protocols(app, client, provider):
    """A v0.1 credential and a latest registration (with an access and a refresh token) for user-123."""
    v01 = client.post("/agent/auth", json={"type": "identity_assertion", "assertion_type": ID_JAG,
                                           "assertion": provider.id_jag(), "requested_credential_type": "api_key"})
    assert v01.status_code == 200, v01.text
    latest = client.post("/agent/identity", json={"type": "identity_assertion", "assertion_type": ID_JAG,
                                                  "assertion": provider.id_jag(auth_time=int(time.time()))})
    assert latest.status_code == 200, latest.text
    body = latest.get_json()
    access = client.post("/oauth2/token", data={"grant_type": JWT_BEARER,
                                                "assertion": body["identity"]["assertion"]}).get_json()
    with app.test_request_context():
        refresh, _ = tokens.issue_refresh(body["id"])
        db.session.commit()
    return v01.get_json()["credential"], body, access["access_token"], refresh


def _ok(client, credential):
    return client.get("/api/resource", headers={"Authorization": "Bearer " + credential}).status_code


def test_a_revocation_event_tears_down_both_protocols(app, client, provider):
    trust(app, provider)
    v01, latest, access, refresh = _both_protocols(app, client, provider)
    assert _ok(client, v01) == _ok(client, access) == 200
    r = _notify(client, _set(provider))
    assert r.status_code == 202 and r.get_data() == b""
    assert _ok(client, v01) == _ok(client, access) == 401
    r = client.post("/agent/identity", json={"type": "refresh", "refresh_token": refresh})
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_refresh_token"
    r = client.post("/oauth2/token", data={"grant_type": JWT_BEARER, "assertion": latest["identity"]["assertion"]})
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_grant"
    with app.app_context():
        assert db.session.get(Registration, latest["id"]).status == "revoked"
        assert all(d.revoked_at is not None for d in db.session.execute(db.select(Delegation)).scalars())
    # a fresh ID-JAG brings the latest registration back to life (a new sign-in at the provider)
    again = client.post("/agent/identity", json={"type": "identity_assertion", "assertion_type": ID_JAG,
                                                 "assertion": provider.id_jag(auth_time=int(time.time()))})
    assert again.status_code == 200 and again.get_json()["id"] == latest["id"]


def test_unknown_events_are_acknowledged_and_change_nothing(app, client, provider):
    trust(app, provider)
    v01, _, access, _ = _both_protocols(app, client, provider)
    token = _set(provider, events={"https://schemas.example/other-event": {"x": 1}})
    assert _notify(client, token).status_code == 202
    assert _ok(client, v01) == _ok(client, access) == 200
    replay = _notify(client, token)
    assert replay.status_code == 400 and replay.get_json()["err"] == "invalid_request"


@pytest.mark.parametrize("case, err", [
    ("untrusted", "invalid_issuer"), ("audience", "invalid_audience"), ("signature", "authentication_failed"),
    ("expired", "authentication_failed"), ("no_events", "invalid_request"), ("logout_typ", "invalid_request"),
    ("no_jti", "invalid_request"),
])
def test_a_refused_set_answers_rfc8935_errors_and_changes_nothing(app, client, provider, make_provider, case, err):
    trust(app, provider)
    v01, _, access, _ = _both_protocols(app, client, provider)
    stranger = make_provider("stranger")
    token = {
        "untrusted": lambda: _set(stranger),
        "audience": lambda: _set(provider, aud="https://elsewhere.example"),
        "signature": lambda: _set(provider)[:-4] + "AAAA",
        "expired": lambda: _set(provider, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
        "no_events": lambda: _set(provider, events={}),
        "logout_typ": lambda: provider.logout_token(),
        "no_jti": lambda: _set(provider, jti=None),
    }[case]()
    before = count_rows(app)
    r = _notify(client, token)
    assert r.status_code == 400, r.text
    body = r.get_json()
    assert set(body) == {"err", "description"} and body["err"] == err and body["description"]
    after = count_rows(app)
    assert after.pop("audit_events") - before.pop("audit_events") in (0, 1)  # at most the rejection's row
    assert after == before
    assert _ok(client, v01) == _ok(client, access) == 200


@pytest.mark.parametrize("body, content_type", [("", "application/secevent+jwt"),
                                                ("x.y.z", "application/jwt"),
                                                ("x.y.z", "application/json")])
def test_bad_bodies_are_invalid_request(client, body, content_type):
    r = _notify(client, body, content_type)
    assert r.status_code == 400 and r.get_json()["err"] == "invalid_request"


def test_one_jti_is_accepted_once_across_the_provider_token_entry_points(app, client, provider):
    trust(app, provider)
    jti = uuid.uuid4().hex
    assert _notify(client, _set(provider, jti=jti)).status_code == 202
    r = client.post("/agent/auth/revoke", data=provider.logout_token(jti=jti),
                    content_type="application/logout+jwt")
    assert r.status_code == 400 and r.get_json()["error"] == "replay_detected"
    r = client.post("/agent/identity", json={"type": "identity_assertion", "assertion_type": ID_JAG,
                                             "assertion": provider.id_jag(jti=jti, auth_time=int(time.time()))})
    assert r.status_code == 400 and r.get_json()["error"] == "replay_detected"
    r = client.post("/agent/auth", json={"type": "identity_assertion", "assertion_type": ID_JAG,
                                         "assertion": provider.id_jag(jti=jti), "requested_credential_type": "api_key"})
    assert r.status_code == 400 and r.get_json()["error"] == "replay_detected"
