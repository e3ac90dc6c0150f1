"""Email required (spec §2.2, §3.4): no credential until the person reveals the code; then a fresh credential
of the requested type."""
from datetime import datetime, timedelta

import pytest

from authmd.extensions import db
from authmd.models import ClaimAttempt, Credential, Registration
from tests.conftest import count_rows
from tests.fixtures.flows import audit_rows, email_body


def test_email_registration_answers_the_spec_shape_and_mails_at_once(app, agent, smtp, clock):
    clock.frozen = datetime(2026, 5, 20, 12, 0, 0)
    r = agent.post("/agent/auth", email_body("Eve@Example.com"))
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"registration_id", "registration_type", "claim_url", "claim_token",
                         "claim_token_expires", "post_claim_scopes"}
    assert body["registration_type"] == "email-verification"
    assert body["claim_url"] == "http://localhost:8000/agent/auth/claim"
    assert body["claim_token"].startswith("clm_")
    assert body["claim_token_expires"] == "2026-05-21T12:00:00.000Z"
    assert body["post_claim_scopes"] == ["api.read", "api.write"]
    assert len(smtp.to("eve@example.com")) == 1
    with app.app_context():
        assert db.session.execute(db.select(db.func.count()).select_from(Credential)).scalar() == 0
    assert [e["event"] for e in audit_rows(app)] == ["registration.created", "claim.requested"]


def test_claim_on_an_email_registration_is_refused(agent, smtp):
    reg = agent.register_email("eve@example.com")
    r = agent.claim(reg["claim_token"], "eve@example.com")
    assert r.status_code == 409 and r.json()["error"] == "claimed_or_in_flight"
    assert len(smtp.to("eve@example.com")) == 1


@pytest.mark.parametrize("cred_type", ["api_key", "access_token"])
def test_complete_returns_a_fresh_working_credential_of_the_requested_type(app, agent, person, smtp, clock,
                                                                            cred_type):
    clock.frozen = datetime(2026, 5, 20, 12, 0, 0)
    reg = agent.register_email("kim@example.com", cred_type)
    code = person.reveal(person.link("kim@example.com"))
    clock.advance(minutes=2)
    r = agent.complete(reg["claim_token"], code)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    body = r.json()
    assert set(body) == {"registration_id", "status", "credential_type", "credential", "credential_expires",
                         "scopes"}
    assert body["registration_id"] == reg["registration_id"] and body["status"] == "claimed"
    assert body["credential_type"] == cred_type
    assert body["scopes"] == ["api.read", "api.write"]
    if cred_type == "api_key":
        assert body["credential"].startswith("sk_") and body["credential_expires"] is None
    else:
        assert body["credential"].startswith("at_")
        assert body["credential_expires"] == "2026-05-20T13:02:00.000Z"  # now + ACCESS_TOKEN_TTL (1 h)
    me = agent.api(body["credential"])
    assert me.status_code == 200
    assert me.json()["user"]["email"] == "kim@example.com"
    assert me.json()["credential"]["source"] == "verified_email"
    assert me.json()["credential"]["type"] == cred_type
    assert agent.api(body["credential"], "POST").status_code == 200
    events = [e["event"] for e in audit_rows(app)]
    assert events == ["registration.created", "claim.requested", "otp.generated", "credential.issued",
                      "claim.confirmed"]
    if cred_type == "access_token":
        clock.advance(hours=1)
        late = agent.api(body["credential"])
        assert late.status_code == 401 and late.json()["error"] == "invalid_token"


def test_complete_before_the_code_is_revealed_is_otp_not_generated(agent, smtp):
    reg = agent.register_email("kim@example.com")
    r = agent.complete(reg["claim_token"], "123456")
    assert r.status_code == 400 and r.json()["error"] == "otp_not_generated"


def test_email_unavailable_leaves_nothing_usable_and_the_same_request_later_succeeds(app, agent, smtp):
    smtp.refuse = True
    r = agent.post("/agent/auth", email_body("pat@example.com"))
    assert r.status_code == 503
    assert r.json()["error"] == "email_unavailable" and r.json()["message"]
    assert int(r.headers["Retry-After"]) > 0
    with app.app_context():  # the agent never got its claim token; the registration is ended all the same
        [reg] = db.session.execute(db.select(Registration)).scalars().all()
        assert reg.status == "expired" and reg.ended_at is not None
        assert db.session.execute(db.select(ClaimAttempt.status)).scalars().all() == ["failed"]
        assert db.session.execute(db.select(Credential)).first() is None
    smtp.refuse = False
    again = agent.post("/agent/auth", email_body("pat@example.com"))
    assert again.status_code == 200
    assert len(smtp.to("pat@example.com")) == 1


def test_the_email_registration_expires_unclaimed(app, agent, person, smtp, clock):
    reg = agent.register_email("joy@example.com")
    link = person.link("joy@example.com")
    clock.advance(hours=24, seconds=1)
    r = agent.complete(reg["claim_token"], "123456")
    assert r.status_code == 410 and r.json()["error"] == "claim_expired"
    assert person.open(link).status_code == 410
    with app.app_context():
        assert db.session.get(Registration, reg["registration_id"]).status == "expired"
    assert len(audit_rows(app, "registration.expired")) == 1


def test_unsupported_credential_type_for_email(app, agent, smtp):
    before = count_rows(app)
    r = agent.post("/agent/auth", email_body("x@example.com", "refresh_token"))
    assert r.status_code == 400 and r.json()["error"] == "unsupported_credential_type"
    assert count_rows(app) == before and not smtp.messages


def test_the_code_is_for_this_registration_only(agent, person, smtp):
    a = agent.register_email("one@example.com")
    b = agent.register_email("two@example.com")
    code_a = person.reveal(person.link("one@example.com"))
    code_b = person.reveal(person.link("two@example.com"))
    while code_b == code_a:  # one chance in a million: draw again
        code_b = person.reveal(person.link("two@example.com"))
    r = agent.complete(b["claim_token"], code_a)
    assert r.status_code == 401 and r.json()["error"] == "otp_invalid"
    assert agent.complete(a["claim_token"], code_a).status_code == 200
    assert agent.complete(b["claim_token"], code_b).status_code == 200


def test_the_claim_deadline_is_registration_ttl(app, agent, smtp, clock):
    from tests.fixtures.flows import set_settings
    set_settings(app, registration_ttl=3600)
    clock.frozen = datetime(2026, 5, 20, 12, 0, 0)
    reg = agent.register_email("ttl@example.com")
    assert reg["claim_token_expires"] == (datetime(2026, 5, 20, 12) + timedelta(hours=1)).strftime(
        "%Y-%m-%dT%H:%M:%S.000Z")
