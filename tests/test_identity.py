"""POST /agent/identity and its claim, in-process (the person's Authorize through the domain; the pages and
an agent client over real HTTP are tested in test_latest_e2e.py)."""
import time

import pytest

from authmd.extensions import db
from authmd.models import AuditEvent, Delegation, Registration
from tests.conftest import count_rows
from tests.fixtures.latest import add_person as _user, authorize as _authorize
from tests.fixtures.provider import trust

ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def _exchange(client, assertion):
    return client.post("/oauth2/token", data={"grant_type": JWT_BEARER, "assertion": assertion})


def _api(client, token):
    return client.get("/api/resource", headers={"Authorization": "Bearer " + token})


def test_anonymous_then_claimed_by_a_person(app, client):
    r = client.post("/agent/identity", json={"type": "anonymous"})
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    reg = r.get_json()
    assert set(reg) == {"id", "type", "identity", "scopes", "claim"} and reg["type"] == "anonymous"
    assert reg["scopes"] == {"pre_claim": ["api.read"], "post_claim": ["api.read", "api.write"]}
    assert reg["claim"]["url"] == "http://localhost:8000/agent/identity/claim" and "attempt" not in reg["claim"]
    pre = _exchange(client, reg["identity"]["assertion"]).get_json()
    assert pre["scope"] == "api.read" and _api(client, pre["access_token"]).status_code == 200

    start = client.post("/agent/identity/claim", json={"type": "service_auth", "claim_token": reg["claim"]["token"],
                                                       "login_hint": "Ada@Example.com"})
    assert start.status_code == 200, start.text
    attempt = start.get_json()
    assert attempt["id"] == reg["id"] and attempt["type"] == "service_auth"
    uri = attempt["attempt"]["verification_uri"]
    assert uri.startswith("http://localhost:8000/claim?claim_attempt_token=cvt_")
    done = {"claim_token": reg["claim"]["token"], "user_code": "000000"}
    early = client.post("/agent/identity/claim/complete", json=done)
    assert early.status_code == 409 and early.get_json()["error"] == "claim_not_confirmed"

    code = _authorize(app, uri, _user(app))["user_code"]
    wrong = client.post("/agent/identity/claim/complete", json={**done, "user_code": "%06d" % ((int(code) + 1) % 10**6)})
    assert wrong.status_code == 401 and wrong.get_json()["error"] == "invalid_user_code"
    ok = client.post("/agent/identity/claim/complete", json={**done, "user_code": code})
    assert ok.status_code == 200, ok.text
    claimed = ok.get_json()
    assert claimed["status"] == "claimed" and claimed["identity"]["refresh_token"]["value"].startswith("art_")
    # the pre-claim token is revoked, the pre-claim assertion superseded; the new one buys post-claim scopes
    assert _api(client, pre["access_token"]).status_code == 401
    assert _exchange(client, reg["identity"]["assertion"]).get_json()["error"] == "invalid_grant"
    post = _exchange(client, claimed["identity"]["assertion"]).get_json()
    assert post["scope"] == "api.read api.write" and _api(client, post["access_token"]).status_code == 200
    again = client.post("/agent/identity/claim/complete", json={**done, "user_code": code})
    assert again.status_code == 409 and again.get_json()["error"] == "already_claimed"

    refreshed = client.post("/agent/identity", json={"type": "refresh",
                                                     "refresh_token": claimed["identity"]["refresh_token"]["value"]})
    assert refreshed.status_code == 200, refreshed.text
    body = refreshed.get_json()
    assert body["type"] == "refresh" and body["id"] == reg["id"]
    assert body["identity"]["refresh_token"]["value"] != claimed["identity"]["refresh_token"]["value"]
    with app.app_context():
        events = [e for (e,) in db.session.execute(db.select(AuditEvent.event).where(
            AuditEvent.registration_id == reg["id"]).order_by(AuditEvent.id))]
    assert events[:2] == ["registration.created", "assertion.issued"]
    for e in ("token.issued", "claim.requested", "user_code.revealed", "otp.failed", "claim.confirmed",
              "assertion.refreshed"):
        assert e in events


def test_service_auth_starts_with_an_attempt_and_no_identity(app, client):
    r = client.post("/agent/identity", json={"type": "service_auth", "login_hint": "ada@example.com"})
    assert r.status_code == 200, r.text
    body = r.get_json()
    assert "identity" not in body and body["scopes"] == {"post_claim": ["api.read", "api.write"]}
    assert body["claim"]["attempt"]["verification_uri"].startswith("http://localhost:8000/claim?")
    bad = client.post("/agent/identity", json={"type": "service_auth", "login_hint": "not-an-email"})
    assert bad.status_code == 400 and bad.get_json()["error"] == "invalid_login_hint"


def test_a_claim_token_works_only_in_its_own_family(app, client):
    v01 = client.post("/agent/auth", json={"type": "anonymous", "requested_credential_type": "api_key"}).get_json()
    latest = client.post("/agent/identity", json={"type": "anonymous"}).get_json()
    r = client.post("/agent/identity/claim", json={"type": "service_auth", "claim_token": v01["claim_token"],
                                                   "login_hint": "ada@example.com"})
    assert r.status_code == 401 and r.get_json()["error"] == "invalid_claim_token"
    r = client.post("/agent/identity/claim/complete", json={"claim_token": v01["claim_token"], "user_code": "123456"})
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_claim"
    r = client.post("/agent/auth/claim", json={"claim_token": latest["claim"]["token"], "email": "ada@example.com"})
    assert r.status_code == 401 and r.get_json()["error"] == "invalid_claim_token"
    r = client.post("/agent/auth/claim/complete", json={"claim_token": latest["claim"]["token"], "otp": "123456"})
    assert r.status_code == 401 and r.get_json()["error"] == "invalid_claim_token"


@pytest.mark.parametrize("body, error", [
    ({"type": "nope"}, "invalid_request"),
    ({"type": "identity_assertion", "assertion_type": "verified_email", "assertion": "a@b.c"}, "invalid_request"),
    ({"type": "refresh"}, "invalid_request"),
    ({"type": "refresh", "refresh_token": "art_unknown"}, "invalid_refresh_token"),
    ({}, "invalid_request"),
])
def test_bad_bodies_answer_json_errors_and_write_nothing(app, client, body, error):
    before = count_rows(app)
    r = client.post("/agent/identity", json=body)
    assert r.status_code == 400 and r.get_json()["error"] == error and r.get_json()["message"]
    assert count_rows(app) == before


def test_a_switched_off_flow_has_its_latest_error_name(app, client):
    from tests.fixtures.flows import set_settings
    set_settings(app, anonymous_enabled=False, verified_email_enabled=False)
    r = client.post("/agent/identity", json={"type": "anonymous"})
    assert r.status_code == 400 and r.get_json()["error"] == "anonymous_registration_disabled"
    r = client.post("/agent/identity", json={"type": "service_auth", "login_hint": "ada@example.com"})
    assert r.status_code == 400 and r.get_json()["error"] == "service_auth_registration_disabled"


def _id_jag(provider, **claims):
    claims.setdefault("auth_time", int(time.time()) - 60)
    return provider.id_jag(**claims)


def test_an_id_jag_clean_match_gets_an_assertion_and_no_refresh_token(app, client, provider):
    trust(app, provider)
    r = client.post("/agent/identity", json={"type": "identity_assertion", "assertion_type": ID_JAG,
                                             "assertion": _id_jag(provider, email="new@example.com")})
    assert r.status_code == 200, r.text
    body = r.get_json()
    assert body["type"] == "identity_assertion" and body["scopes"] == ["api.read", "api.write"]
    assert "refresh_token" not in body["identity"]
    token = _exchange(client, body["identity"]["assertion"]).get_json()
    assert token["scope"] == "api.read api.write"
    who = _api(client, token["access_token"]).get_json()
    assert who["user"]["email"] == "new@example.com" and who["credential"]["iss"] == provider.issuer
    # the same delegation again: the same registration
    again = client.post("/agent/identity", json={"type": "identity_assertion", "assertion_type": ID_JAG,
                                                 "assertion": _id_jag(provider, email="new@example.com")})
    assert again.get_json()["id"] == body["id"]


@pytest.mark.parametrize("auth_time", [None, "old", "future", "text"])
def test_an_id_jag_without_a_recent_sign_in_is_login_required(app, client, provider, auth_time):
    trust(app, provider)
    now = int(time.time())
    value = {None: None, "old": now - 3600 - 120, "future": now + 300, "text": "yesterday"}[auth_time]
    token = provider.id_jag(auth_time=value)
    before = count_rows(app)
    r = client.post("/agent/identity", json={"type": "identity_assertion", "assertion_type": ID_JAG, "assertion": token})
    assert r.status_code == 401
    body = r.get_json()
    assert body["error"] == "login_required" and body["max_age"] == 3600 and body["error_description"]
    assert r.headers["WWW-Authenticate"].startswith('AgentAuth error="login_required", max_age="3600"')
    after = count_rows(app)
    assert after.pop("audit_events") == before.pop("audit_events") + 1 and after == before  # jti unspent


def test_the_takeover_guard_asks_the_matched_account_first(app, client, provider):
    trust(app, provider)
    owner = _user(app, "user@example.com")
    token = _id_jag(provider)  # email user@example.com, verified, no delegation from this (iss, sub)
    r = client.post("/agent/identity", json={"type": "identity_assertion", "assertion_type": ID_JAG, "assertion": token})
    assert r.status_code == 401, r.text
    body = r.get_json()
    assert body["error"] == "interaction_required" and body["type"] == "identity_assertion"
    assert r.headers["WWW-Authenticate"].startswith('AgentAuth error="interaction_required"')
    attempt = body["claim"]["attempt"]
    assert attempt["verification_uri"].startswith("http://localhost:8000/claim?claim_attempt_token=cvt_")
    replay = client.post("/agent/identity", json={"type": "identity_assertion", "assertion_type": ID_JAG,
                                                  "assertion": token})
    assert replay.status_code == 400 and replay.get_json()["error"] == "replay_detected"
    with app.app_context():
        dele = db.session.execute(db.select(Delegation)).scalar_one()
        assert dele.user_id is None  # not linked until the owner confirms
    code = _authorize(app, attempt["verification_uri"], owner)["user_code"]
    done = client.post("/agent/identity/claim/complete", json={"claim_token": body["claim"]["token"], "user_code": code})
    assert done.status_code == 200, done.text
    with app.app_context():
        assert db.session.execute(db.select(Delegation)).scalar_one().user_id == owner
        assert db.session.get(Registration, body["id"]).status == "active"
    token = _exchange(client, done.get_json()["identity"]["assertion"]).get_json()
    assert _api(client, token["access_token"]).get_json()["user"]["email"] == "user@example.com"
    # from now on the provider identity is a clean match
    clean = client.post("/agent/identity", json={"type": "identity_assertion", "assertion_type": ID_JAG,
                                                 "assertion": _id_jag(provider)})
    assert clean.status_code == 200 and clean.get_json()["id"] == body["id"]


def test_the_takeover_guard_at_v01_links_when_the_owner_presses_authorize(app, client, provider):
    trust(app, provider)
    owner = _user(app, "user@example.com")
    r = client.post("/agent/auth", json={"type": "identity_assertion", "assertion_type": ID_JAG,
                                         "assertion": provider.id_jag(), "requested_credential_type": "api_key"})
    assert r.status_code == 401, r.text
    body = r.get_json()
    assert body["error"] == "interaction_required" and body["verification_uri"] in body["message"]
    assert set(body) == {"error", "message", "verification_uri"}  # no claim token for a v0.1 agent
    assert _authorize(app, body["verification_uri"], owner) == {"linked": True}
    with app.app_context():  # linked: the expiry job (after the claim window) must leave it alone
        from authmd import lifecycle
        from authmd.util import utcnow as now
        from datetime import timedelta
        assert lifecycle.expire_due(now=now() + timedelta(days=2)) == 0
        db.session.commit()
    r = client.post("/agent/auth", json={"type": "identity_assertion", "assertion_type": ID_JAG,
                                         "assertion": provider.id_jag(), "requested_credential_type": "api_key"})
    assert r.status_code == 200, r.text
    assert _api(client, r.get_json()["credential"]).get_json()["user"]["id"] == owner


def test_the_silent_link_can_be_restored_by_the_admin(app, client, provider):
    from tests.fixtures.flows import set_settings
    trust(app, provider)
    owner = _user(app, "user@example.com")
    set_settings(app, link_identities_by_email=True)
    r = client.post("/agent/auth", json={"type": "identity_assertion", "assertion_type": ID_JAG,
                                         "assertion": provider.id_jag(), "requested_credential_type": "api_key"})
    assert r.status_code == 200 and _api(client, r.get_json()["credential"]).get_json()["user"]["id"] == owner


def test_a_code_past_its_lifetime_is_user_code_expired_and_a_new_claim_request_gives_one_that_works(app, client,
                                                                                                    clock):
    """user_code_ttl (600 s) runs from Authorize: the code read back later is refused (410, nothing bound, no
    wrong-code count); as the protocol says, the agent starts a new claim request and the person confirms again."""
    reg = client.post("/agent/identity", json={"type": "anonymous"}).get_json()
    claim = {"type": "service_auth", "claim_token": reg["claim"]["token"], "login_hint": "ada@example.com"}
    start = client.post("/agent/identity/claim", json=claim).get_json()
    user_id = _user(app)
    code = _authorize(app, start["attempt"]["verification_uri"], user_id)["user_code"]
    clock.advance(seconds=601)
    late = client.post("/agent/identity/claim/complete", json={"claim_token": reg["claim"]["token"], "user_code": code})
    assert late.status_code == 410 and late.get_json()["error"] == "user_code_expired", late.text
    assert "new claim request" in late.get_json()["message"]
    with app.app_context():
        row = db.session.get(Registration, reg["id"])
        assert (row.status, row.user_id, row.failed_otp_count) == ("pending", None, 0)
    again = client.post("/agent/identity/claim", json=claim)
    assert again.status_code == 200, again.text
    fresh = _authorize(app, again.get_json()["attempt"]["verification_uri"], user_id)["user_code"]
    stale = client.post("/agent/identity/claim/complete", json={"claim_token": reg["claim"]["token"], "user_code": code})
    assert stale.status_code == 401 and stale.get_json()["error"] == "invalid_user_code"
    ok = client.post("/agent/identity/claim/complete", json={"claim_token": reg["claim"]["token"], "user_code": fresh})
    assert ok.status_code == 200 and ok.get_json()["status"] == "claimed", ok.text
