"""POST /oauth2/token (RFC 7523 jwt-bearer) and POST /oauth2/revoke (RFC 7009): form bodies, RFC 6749
errors, no-store answers, and nothing written by a refusal."""
from datetime import timedelta

import pytest

from authmd import assertions
from authmd.extensions import db
from authmd.models import Registration
from authmd.util import utcnow
from tests.conftest import count_rows

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def _registration(app, reg_type="anonymous", status="pending", claimed_at=None, reg_id="reg_oauth1", **extra):
    now = utcnow()
    with app.app_context():
        db.session.add(Registration(id=reg_id, type=reg_type, status=status, protocol=extra.pop("protocol", "latest"),
                                    created_at=now, claimed_at=claimed_at,
                                    claim_expires_at=now + timedelta(hours=24), **extra))
        db.session.commit()
    return reg_id


def _assertion(app, reg_id):
    with app.test_request_context():
        token, _ = assertions.issue(reg_id)
        db.session.commit()
        return token


def _exchange(client, assertion, **extra):
    return client.post("/oauth2/token", data={"grant_type": JWT_BEARER, "assertion": assertion, **extra})


def _no_store(r):
    assert r.headers["Cache-Control"] == "no-store" and r.headers["Pragma"] == "no-cache"


def test_an_unclaimed_anonymous_assertion_buys_a_pre_claim_token(app, client):
    token = _assertion(app, _registration(app))
    r = _exchange(client, token, resource="http://localhost:8000/api/")
    assert r.status_code == 200, r.text
    _no_store(r)
    body = r.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600 and body["scope"] == "api.read"
    api = client.get("/api/resource", headers={"Authorization": "Bearer " + body["access_token"]})
    assert api.status_code == 200 and api.get_json()["credential"]["scope"] == ["api.read"]
    # the same assertion may be exchanged again until it expires
    assert _exchange(client, token).status_code == 200


def test_a_claimed_registration_gets_the_post_claim_scopes(app, client):
    reg = _registration(app, reg_type="service-auth", status="claimed", claimed_at=utcnow() - timedelta(seconds=5))
    r = _exchange(client, _assertion(app, reg))
    assert r.status_code == 200 and r.get_json()["scope"] == "api.read api.write"


def _refused(app, client, data, status, error, content_type=None):
    before = count_rows(app)
    if content_type:
        r = client.post("/oauth2/token", data=data, content_type=content_type)
    else:
        r = client.post("/oauth2/token", data=data)
    assert r.status_code == status, r.text
    _no_store(r)
    body = r.get_json()
    assert body["error"] == error and body["error_description"], body
    assert count_rows(app) == before
    return body


def test_bad_token_requests_answer_rfc6749_errors_and_write_nothing(app, client):
    good = _assertion(app, _registration(app))
    _refused(app, client, {"assertion": good}, 400, "unsupported_grant_type")
    _refused(app, client, {"grant_type": "authorization_code", "assertion": good}, 400, "unsupported_grant_type")
    _refused(app, client, {"grant_type": JWT_BEARER}, 400, "invalid_request")
    _refused(app, client, {"grant_type": JWT_BEARER, "assertion": "not.a.jwt"}, 400, "invalid_grant")
    _refused(app, client, {"grant_type": JWT_BEARER, "assertion": good, "resource": "https://evil.example/"},
             400, "invalid_target")
    _refused(app, client, f'{{"grant_type": "{JWT_BEARER}", "assertion": "{good}"}}', 400, "invalid_request",
             content_type="application/json")
    _refused(app, client, f"grant_type={JWT_BEARER}&assertion={good}&assertion={good}", 400, "invalid_request",
             content_type="application/x-www-form-urlencoded")
    _refused(app, client, {"grant_type": JWT_BEARER, "assertion": "x" * 70_000}, 413, "invalid_request")


@pytest.mark.parametrize("reg_type, status, protocol, message", [
    ("anonymous", "revoked", "latest", "ended"),
    ("anonymous", "expired", "latest", "ended"),
    ("service-auth", "pending", "latest", "waiting for its claim"),
    ("agent-provider", "pending", "latest", "waiting for its claim"),
    ("anonymous", "pending", "v0.1", "names no registration"),
])
def test_an_assertion_for_a_registration_that_may_not_have_tokens_is_invalid_grant(app, client, reg_type, status,
                                                                                    protocol, message):
    token = _assertion(app, _registration(app, reg_type=reg_type, status=status, protocol=protocol))
    assert message in _refused(app, client, {"grant_type": JWT_BEARER, "assertion": token}, 400,
                               "invalid_grant")["error_description"]


def test_an_assertion_issued_before_the_claim_is_superseded(app, client, clock):
    reg_id = _registration(app)
    pre_claim = _assertion(app, reg_id)
    clock.advance(seconds=2)
    with app.app_context():
        reg = db.session.get(Registration, reg_id)
        reg.status, reg.claimed_at = "claimed", utcnow()
        db.session.commit()
    assert "before the claim" in _refused(app, client, {"grant_type": JWT_BEARER, "assertion": pre_claim}, 400,
                                          "invalid_grant")["error_description"]
    assert _exchange(client, _assertion(app, reg_id)).get_json()["scope"] == "api.read api.write"


def test_an_expired_unclaimed_registration_is_expired_by_the_refusal(app, client, clock):
    reg_id = _registration(app)
    clock.advance(hours=24, seconds=1)  # past the claim deadline; the assertion below is fresh
    r = _exchange(client, _assertion(app, reg_id))
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_grant"
    with app.app_context():
        assert db.session.get(Registration, reg_id).status == "expired"


def test_revocation_by_the_holder(app, client):
    token = _exchange(client, _assertion(app, _registration(app))).get_json()["access_token"]
    for bogus in ("at_unknown", "garbage"):
        r = client.post("/oauth2/revoke", data={"token": bogus})
        assert r.status_code == 200 and r.get_data() == b""
        _no_store(r)
    r = client.post("/oauth2/revoke", data={"token": token, "token_type_hint": "access_token"})
    assert r.status_code == 200 and r.get_data() == b""
    assert client.get("/api/resource", headers={"Authorization": "Bearer " + token}).status_code == 401
    for data, error in [({}, "invalid_request"), ({"token": token, "token_type_hint": "id_token"},
                                                   "unsupported_token_type")]:
        r = client.post("/oauth2/revoke", data=data)
        assert r.status_code == 400 and r.get_json()["error"] == error
    r = client.post("/oauth2/revoke", json={"token": token})
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_request"


def test_unknown_methods_and_paths_under_oauth2_answer_json(client):
    r = client.get("/oauth2/token")
    assert r.status_code == 405 and r.get_json()["error"] == "method_not_allowed"
    r = client.post("/oauth2/nope")
    assert r.status_code == 404 and r.get_json()["error"] == "not_found"
