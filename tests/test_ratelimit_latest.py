"""Rate limits on the latest protocol's endpoints (decision 10): the registration budgets shared with v0.1's,
the claim, token and event limits, and 429 rate_limit_exceeded in each endpoint's own shape."""
import time
import uuid

import pytest

from authmd.extensions import db
from authmd.models import Registration
from tests.conftest import count_rows
from tests.fixtures.provider import REVOKED_EVENT, trust

ANON_V01 = {"type": "anonymous", "requested_credential_type": "api_key"}
ANON = {"type": "anonymous"}
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def email_v01(addr):
    return {"type": "identity_assertion", "assertion_type": "verified_email", "assertion": addr,
            "requested_credential_type": "api_key"}


def service_auth(addr):
    return {"type": "service_auth", "login_hint": addr}


@pytest.fixture
def limited(app, make_app):
    def build(**config):
        return make_app(RATELIMIT_ENABLED=True, **config).test_client()
    return build


def post(client, path, body, ip="10.1.0.1"):
    return client.post(path, json=body, environ_base={"REMOTE_ADDR": ip})


def form(client, path, data, ip="10.1.0.1"):
    return client.post(path, data=data, environ_base={"REMOTE_ADDR": ip})


def assert_v01_refusal(r):
    assert r.status_code == 429 and r.get_json()["error"] == "rate_limited", r.get_data(as_text=True)
    assert 1 <= int(r.headers["Retry-After"]) <= 3600


def assert_latest_refusal(r):
    body = r.get_json()
    assert r.status_code == 429, r.get_data(as_text=True)
    assert set(body) == {"error", "message", "retry_after"}
    assert body["error"] == "rate_limit_exceeded" and body["message"]
    assert isinstance(body["retry_after"], int) and 1 <= body["retry_after"] <= 3600
    assert r.headers["Retry-After"] == str(body["retry_after"])
    assert r.headers["Cache-Control"] == "no-store"


def registrations(client):
    with client.application.app_context():
        return db.session.execute(db.select(db.func.count()).select_from(Registration)).scalar()


# --- /agent/identity: the same budgets as /agent/auth --------------------------------------------------------
def test_anonymous_registrations_share_one_per_ip_budget_across_both_protocols(limited):
    client = limited(RATELIMIT_ANONYMOUS_PER_IP="3/hour")
    assert post(client, "/agent/auth", ANON_V01).status_code == 200
    assert post(client, "/agent/identity", ANON).status_code == 200
    assert post(client, "/agent/auth", ANON_V01).status_code == 200
    before = count_rows(client.application)
    assert_latest_refusal(post(client, "/agent/identity", ANON))  # the 4th of the hour, whichever door
    assert_v01_refusal(post(client, "/agent/auth", ANON_V01))      # v0.1 keeps its own word for it
    assert count_rows(client.application) == before               # a refused request changes nothing
    assert post(client, "/agent/identity", ANON, ip="10.1.0.2").status_code == 200
    # the other budget is untouched: service_auth counts with identity_assertion
    assert post(client, "/agent/identity", service_auth("ada@example.com")).status_code == 200


def test_service_auth_counts_with_identity_assertion_per_ip(limited):
    client = limited(RATELIMIT_ASSERTION_PER_IP="2/hour")
    assert post(client, "/agent/auth", email_v01("ada@example.com")).status_code == 200
    assert post(client, "/agent/identity", service_auth("bob@example.com")).status_code == 200
    assert_latest_refusal(post(client, "/agent/identity", service_auth("carol@example.com")))
    assert_v01_refusal(post(client, "/agent/auth", email_v01("dan@example.com")))
    # an ID-JAG at /agent/identity is on the same budget: refused before anything reads it
    r = post(client, "/agent/identity", {"type": "identity_assertion", "assertion": "x.y.z",
                                         "assertion_type": "urn:ietf:params:oauth:token-type:id-jag"})
    assert_latest_refusal(r)
    assert post(client, "/agent/identity", ANON).status_code == 200


def test_the_service_wide_registration_budgets_are_shared_too(limited):
    client = limited(RATELIMIT_ASSERTION_GLOBAL="2/hour", RATELIMIT_ANONYMOUS_GLOBAL="1/hour")
    assert post(client, "/agent/identity", service_auth("a@example.com"), ip="10.1.1.1").status_code == 200
    assert post(client, "/agent/auth", email_v01("b@example.com"), ip="10.1.1.2").status_code == 200
    assert_latest_refusal(post(client, "/agent/identity", service_auth("c@example.com"), ip="10.1.1.3"))
    assert post(client, "/agent/auth", ANON_V01, ip="10.1.1.4").status_code == 200
    assert_latest_refusal(post(client, "/agent/identity", ANON, ip="10.1.1.5"))


def test_refresh_has_its_own_per_ip_limit(limited):
    client = limited(RATELIMIT_REFRESH_PER_IP="2/hour", RATELIMIT_ANONYMOUS_PER_IP="1/hour")
    for _ in range(2):
        r = post(client, "/agent/identity", {"type": "refresh", "refresh_token": "art_unknown"})
        assert r.status_code == 400 and r.get_json()["error"] == "invalid_refresh_token"
    assert_latest_refusal(post(client, "/agent/identity", {"type": "refresh", "refresh_token": "art_unknown"}))
    assert post(client, "/agent/identity", ANON).status_code == 200  # refreshes took nothing from it
    assert post(client, "/agent/identity", {"type": "refresh", "refresh_token": "art_x"},
                ip="10.1.2.2").status_code == 400


def test_a_body_no_budget_counts_is_refused_by_the_view_not_the_limiter(limited):
    client = limited(RATELIMIT_ANONYMOUS_PER_IP="1/hour", RATELIMIT_ASSERTION_PER_IP="1/hour",
                     RATELIMIT_REFRESH_PER_IP="1/hour")
    for body in ({"type": "nope"}, {"type": ["anonymous"]}, {"type": {"a": 1}}, {}):
        for _ in range(2):
            r = post(client, "/agent/identity", body)
            assert r.status_code == 400 and r.get_json()["error"] == "invalid_request", body
    assert registrations(client) == 0


# --- the claim ------------------------------------------------------------------------------------------------
def test_claim_is_limited_per_registration_and_per_ip(limited):
    client = limited(RATELIMIT_IDENTITY_CLAIM_PER_REGISTRATION="2/hour", RATELIMIT_IDENTITY_CLAIM_PER_IP="3/hour")
    t1 = post(client, "/agent/identity", ANON, ip="10.1.3.1").get_json()["claim"]["token"]
    t2 = post(client, "/agent/identity", ANON, ip="10.1.3.2").get_json()["claim"]["token"]

    def claim(token, ip):
        return post(client, "/agent/identity/claim", {"type": "service_auth", "claim_token": token,
                                                      "login_hint": "ada@example.com"}, ip=ip)
    assert claim(t1, "10.1.4.1").status_code == 200
    assert claim(t1, "10.1.4.2").status_code == 200
    assert_latest_refusal(claim(t1, "10.1.4.3"))  # a third attempt for one registration, from a third IP
    assert claim(t2, "10.1.4.3").status_code == 200
    # per IP: unknown claim tokens count too
    assert claim("clm_unknown", "10.1.5.1").status_code == 401
    assert claim("clm_unknown2", "10.1.5.1").status_code == 401
    assert claim("clm_unknown3", "10.1.5.1").status_code == 401
    assert_latest_refusal(claim(t2, "10.1.5.1"))
    # v0.1's claim counters are apart
    v01 = post(client, "/agent/auth", ANON_V01, ip="10.1.5.9").get_json()["claim_token"]
    assert post(client, "/agent/auth/claim", {"claim_token": v01, "email": "ada@example.com"},
                ip="10.1.5.1").status_code == 200


def test_complete_is_limited_per_registration_and_per_ip(limited):
    client = limited(RATELIMIT_IDENTITY_COMPLETE_PER_REGISTRATION="2/hour", RATELIMIT_IDENTITY_COMPLETE_PER_IP="3/hour")
    token = post(client, "/agent/identity", ANON).get_json()["claim"]["token"]
    done = {"claim_token": token, "user_code": "123456"}
    for ip in ("10.1.6.1", "10.1.6.2"):
        r = post(client, "/agent/identity/claim/complete", done, ip=ip)
        assert r.status_code == 410 and r.get_json()["error"] == "claim_expired"  # no attempt yet
    assert_latest_refusal(post(client, "/agent/identity/claim/complete", done, ip="10.1.6.3"))
    for i in range(3):  # per IP: three unknown tokens (each its own per-registration count)
        other = {"claim_token": f"clm_unknown{i}", "user_code": "123456"}
        assert post(client, "/agent/identity/claim/complete", other, ip="10.1.7.1").status_code == 400
    assert_latest_refusal(post(client, "/agent/identity/claim/complete", {**done, "claim_token": "clm_x"},
                               ip="10.1.7.1"))


# --- /oauth2/* ---------------------------------------------------------------------------------------------------
def assert_oauth_refusal(r):
    body = r.get_json()
    assert r.status_code == 429, r.get_data(as_text=True)
    assert set(body) == {"error", "message", "error_description", "retry_after"}
    assert body["error"] == "rate_limit_exceeded" and body["error_description"] == body["message"]
    assert r.headers["Retry-After"] == str(body["retry_after"]) and 1 <= body["retry_after"] <= 3600
    assert r.headers["Cache-Control"] == "no-store" and r.headers["Pragma"] == "no-cache"


def test_the_token_endpoint_is_limited_per_ip(limited):
    client = limited(RATELIMIT_OAUTH_TOKEN_PER_IP="2/hour")
    reg = post(client, "/agent/identity", ANON).get_json()
    exchange = {"grant_type": JWT_BEARER, "assertion": reg["identity"]["assertion"]}
    assert form(client, "/oauth2/token", exchange).status_code == 200
    r = form(client, "/oauth2/token", {"grant_type": "password"})
    assert r.status_code == 400 and r.get_json()["error"] == "unsupported_grant_type"
    before = count_rows(client.application)
    assert_oauth_refusal(form(client, "/oauth2/token", exchange))
    assert count_rows(client.application) == before
    assert form(client, "/oauth2/token", exchange, ip="10.1.8.2").status_code == 200


def test_the_revocation_endpoint_is_limited_per_ip(limited):
    client = limited(RATELIMIT_OAUTH_REVOKE_PER_IP="2/hour", RATELIMIT_OAUTH_TOKEN_PER_IP="1/hour")
    for _ in range(2):
        assert form(client, "/oauth2/revoke", {"token": "at_unknown"}).status_code == 200
    assert_oauth_refusal(form(client, "/oauth2/revoke", {"token": "at_unknown"}))
    assert form(client, "/oauth2/revoke", {"token": "at_unknown"}, ip="10.1.9.2").status_code == 200


def test_the_default_token_limits_are_generous(limited):
    client = limited()
    for _ in range(30):
        assert form(client, "/oauth2/revoke", {"token": "at_unknown"}).status_code == 200


# --- /agent/event/notify: refused SETs only ----------------------------------------------------------------------
def signed_set(provider, **claims):
    now = int(time.time())
    payload = {"iss": provider.issuer, "sub": "user-1", "aud": "http://localhost:8000", "iat": now,
               "jti": uuid.uuid4().hex, "events": {REVOKED_EVENT: {}}, **claims}
    return provider.sign(payload, typ="secevent+jwt")


def notify(client, token, ip="10.1.10.1"):
    return client.post("/agent/event/notify", data=token, content_type="application/secevent+jwt",
                       environ_base={"REMOTE_ADDR": ip})


def test_refused_security_events_are_limited_per_ip_and_accepted_ones_never(app, limited, provider):
    trust(app, provider)
    client = limited(RATELIMIT_EVENTS_PER_IP="2/hour")
    for _ in range(4):  # accepted: never counted, a provider may revoke many subjects at once
        assert notify(client, signed_set(provider)).status_code == 202
    for _ in range(2):
        r = notify(client, "not.a.set")
        assert r.status_code == 400 and r.get_json()["err"] == "invalid_request"
    r = notify(client, signed_set(provider))  # over the limit now: even a good one waits
    assert r.status_code == 429
    assert r.get_json() == {"err": "rate_limit_exceeded", "description": r.get_json()["description"]}
    assert r.get_json()["description"] and 1 <= int(r.headers["Retry-After"]) <= 3600
    assert notify(client, signed_set(provider), ip="10.1.10.2").status_code == 202
