"""The claim ceremony (spec §3.1-§3.4): every error code and status, idempotent /claim, superseded attempts,
the claim page, "This wasn't me", and the lockouts."""
import re

import pytest

from authmd.extensions import db
from authmd.models import ClaimAttempt, Registration
from tests.conftest import count_rows
from tests.fixtures.flows import audit_rows, link_token


def wrong(code):
    return f"{(int(code) + 1) % 1_000_000:06d}"


@pytest.fixture
def started(agent, person, smtp):
    """An anonymous registration with a claim mailed to sam@example.com: (registration, link path)."""
    reg = agent.register_anonymous()
    r = agent.claim(reg["claim_token"], "sam@example.com")
    assert r.status_code == 200
    reg["attempt"] = r.json()
    return reg, person.link("sam@example.com")


def challenge(agent, token):
    return agent.post("/agent/auth/claim/attempt/challenge", {"claim_attempt_token": token})


# --- POST /agent/auth/claim -------------------------------------------------------------------------


def test_claim_with_an_unknown_token_is_invalid_claim_token(agent, smtp):
    r = agent.claim("clm_nope", "a@example.com")
    assert r.status_code == 401 and r.json()["error"] == "invalid_claim_token"
    assert not smtp.messages


@pytest.mark.parametrize("body", [{"claim_token": "clm_x"}, {"email": "a@example.com"},
                                  {"claim_token": "clm_x", "email": "not-an-email"},
                                  {"claim_token": "clm_x", "email": "a@@example.com"},
                                  {"claim_token": 5, "email": "a@example.com"}])
def test_claim_with_a_bad_body_is_invalid_request(app, agent, body):
    reg = agent.register_anonymous()
    if body.get("claim_token") == "clm_x":
        body = {**body, "claim_token": reg["claim_token"]}
    before = count_rows(app)
    r = agent.post("/agent/auth/claim", body)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    assert count_rows(app) == before


def test_claim_after_the_deadline_is_claim_expired(app, agent, smtp, clock):
    reg = agent.register_anonymous()
    clock.advance(hours=24, seconds=1)
    r = agent.claim(reg["claim_token"], "a@example.com")
    assert r.status_code == 410 and r.json()["error"] == "claim_expired"
    assert not smtp.messages


def test_repeat_claim_with_the_same_email_is_idempotent(app, agent, smtp, started):
    reg, _ = started
    again = agent.claim(reg["claim_token"], "SAM@example.com")
    assert again.status_code == 200 and again.json() == reg["attempt"]
    assert len(smtp.to("sam@example.com")) == 1
    assert len(audit_rows(app, "claim.requested")) == 1


def test_a_new_email_supersedes_the_old_attempt(app, agent, person, smtp, started):
    reg, old_link = started
    new = agent.claim(reg["claim_token"], "other@example.com")
    assert new.status_code == 200
    assert new.json()["claim_attempt_id"] != reg["attempt"]["claim_attempt_id"]
    page = person.open(old_link)
    assert page.status_code == 404 and "replaced" in page.text
    r = challenge(agent, link_token(old_link))
    assert r.status_code == 410 and r.json()["error"] == "claim_superseded"
    code = person.reveal(person.link("other@example.com"))
    assert agent.complete(reg["claim_token"], code).status_code == 200
    assert agent.api(reg["credential"]).json()["user"]["email"] == "other@example.com"


def test_an_expired_link_is_replaced_by_a_new_attempt(app, agent, person, smtp, clock, started):
    reg, old_link = started
    clock.advance(minutes=10, seconds=1)
    assert person.open(old_link).status_code == 410
    new = agent.claim(reg["claim_token"], "sam@example.com")
    assert new.status_code == 200
    assert new.json()["claim_attempt_id"] != reg["attempt"]["claim_attempt_id"]
    assert len(smtp.to("sam@example.com")) == 2
    new_link = person.link("sam@example.com")
    assert new_link != old_link
    assert person.open(old_link).status_code == 404
    assert agent.complete(reg["claim_token"], person.reveal(new_link)).status_code == 200


def test_claim_when_mail_is_refused_is_503_leaves_nothing_usable_and_can_be_retried(app, agent, person, smtp):
    reg = agent.register_anonymous()
    smtp.refuse = True
    r = agent.claim(reg["claim_token"], "sam@example.com")
    assert r.status_code == 503 and r.json()["error"] == "email_unavailable"
    assert int(r.headers["Retry-After"]) > 0
    with app.app_context():  # the attempt whose mail never left is marked failed; the registration untouched
        assert db.session.execute(db.select(ClaimAttempt.status)).scalars().all() == ["failed"]
        assert db.session.get(Registration, reg["registration_id"]).status == "pending"
    assert agent.api(reg["credential"]).status_code == 200
    smtp.refuse = False
    ok = agent.claim(reg["claim_token"], "sam@example.com")
    assert ok.status_code == 200
    assert agent.complete(reg["claim_token"], person.reveal(person.link("sam@example.com"))).status_code == 200


# --- GET /agent/auth/claim/view -------------------------------------------------------------------


def test_claim_page_statuses(agent, person, smtp, started):
    reg, link = started
    assert person.open("/agent/auth/claim/view").status_code == 400
    assert person.open("/agent/auth/claim/view?token=").status_code == 400
    unknown = person.open("/agent/auth/claim/view?token=cvt_unknown")
    assert unknown.status_code == 404 and "text/html" in unknown.headers["Content-Type"]
    assert unknown.headers["Cache-Control"] == "no-store" and unknown.headers["Referrer-Policy"] == "no-referrer"
    page = person.open(link)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    assert page.headers["Cache-Control"] == "no-store"
    assert "sam@example.com" in page.text and "TestAgent/1.0" in page.text
    assert "This wasn" in page.text


def test_the_code_is_never_minted_on_get(app, agent, person, started):
    reg, link = started
    for _ in range(5):
        assert person.open(link).status_code == 200
    assert audit_rows(app, "otp.generated") == []
    with app.app_context():
        attempt = db.session.execute(db.select(ClaimAttempt)).scalar_one()
        assert attempt.otp_digest is None and attempt.otp_minted_count == 0
    r = agent.complete(reg["claim_token"], "000000")
    assert r.status_code == 400 and r.json()["error"] == "otp_not_generated"


def test_the_page_button_needs_its_csrf_token(app, person, started):
    _, link = started
    r = person.t.post("/agent/auth/claim/view", data={"token": link_token(link), "action": "reveal"})
    assert r.status_code == 400
    assert audit_rows(app, "otp.generated") == []


# --- POST /agent/auth/claim/attempt/challenge ----------------------------------------------------


def test_challenge_answers_a_fresh_six_digit_code(app, agent, started):
    reg, link = started
    r = challenge(agent, link_token(link))
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    body = r.json()
    assert set(body) == {"type", "challenge", "expires_at"}
    assert body["type"] == "otp" and re.fullmatch(r"\d{6}", body["challenge"])
    assert len(audit_rows(app, "otp.generated")) == 1
    assert agent.complete(reg["claim_token"], body["challenge"]).status_code == 200


@pytest.mark.parametrize("body", [{}, {"claim_attempt_token": "cvt_unknown"}, {"claim_attempt_token": 7},
                                  {"claim_attempt_token": "x" * 500}])
def test_challenge_with_a_bad_token_is_invalid_request(app, agent, body):
    before = count_rows(app)
    r = agent.post("/agent/auth/claim/attempt/challenge", body)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    assert count_rows(app) == before


def test_challenge_after_the_claim_is_claim_completed(agent, started):
    reg, link = started
    code = challenge(agent, link_token(link)).json()["challenge"]
    assert agent.complete(reg["claim_token"], code).status_code == 200
    r = challenge(agent, link_token(link))
    assert r.status_code == 409 and r.json()["error"] == "claim_completed"


def test_challenge_on_an_expired_link_is_claim_expired(agent, clock, started):
    _, link = started
    clock.advance(minutes=11)
    r = challenge(agent, link_token(link))
    assert r.status_code == 410 and r.json()["error"] == "claim_expired"


def test_a_sixth_code_per_attempt_is_rate_limited(app, agent, person, started):
    reg, link = started
    codes = [challenge(agent, link_token(link)) for _ in range(5)]
    assert all(c.status_code == 200 for c in codes)
    sixth = challenge(agent, link_token(link))
    assert sixth.status_code == 429 and sixth.json()["error"] == "rate_limited"
    assert int(sixth.headers["Retry-After"]) > 0
    page_try = person.press(link)
    assert page_try.status_code == 429 and not re.search(r'id="otp"', page_try.text)
    assert len(audit_rows(app, "otp.generated")) == 5
    # the last code still works; a new /claim attempt would start over
    assert agent.complete(reg["claim_token"], codes[-1].json()["challenge"]).status_code == 200


# --- POST /agent/auth/claim/complete ------------------------------------------------------------------


def test_complete_errors_in_the_spec_order(app, agent, person, smtp, clock):
    # 401 invalid_claim_token beats everything
    r = agent.complete("clm_unknown", "123456")
    assert (r.status_code, r.json()["error"]) == (401, "invalid_claim_token")
    reg = agent.register_anonymous()
    # 400 otp_not_generated: no attempt yet
    r = agent.complete(reg["claim_token"], "123456")
    assert (r.status_code, r.json()["error"]) == (400, "otp_not_generated")
    agent.claim(reg["claim_token"], "ord@example.com")
    link = person.link("ord@example.com")
    r = agent.complete(reg["claim_token"], "123456")
    assert (r.status_code, r.json()["error"]) == (400, "otp_not_generated")
    code = person.reveal(link)
    # 401 otp_invalid for a wrong code; 410 otp_expired beats otp_invalid once the code is old
    r = agent.complete(reg["claim_token"], wrong(code))
    assert (r.status_code, r.json()["error"]) == (401, "otp_invalid")
    clock.advance(minutes=10, seconds=1)
    r = agent.complete(reg["claim_token"], wrong(code))
    assert (r.status_code, r.json()["error"]) == (410, "otp_expired")
    # 410 claim_expired beats otp_expired once the registration is past its deadline
    clock.advance(hours=24)
    r = agent.complete(reg["claim_token"], code)
    assert (r.status_code, r.json()["error"]) == (410, "claim_expired")


def test_previously_claimed_beats_claim_expired(agent, person, smtp, clock, started):
    reg, link = started
    code = person.reveal(link)
    assert agent.complete(reg["claim_token"], code).status_code == 200
    clock.advance(hours=48)
    r = agent.complete(reg["claim_token"], "000000")
    assert (r.status_code, r.json()["error"]) == (409, "previously_claimed")
    assert agent.api(reg["credential"]).status_code == 200  # claimed keys do not expire with the deadline


@pytest.mark.parametrize("body", [{}, {"claim_token": "clm_x"}, {"otp": "123456"}, {"claim_token": 1, "otp": "1"},
                                  {"claim_token": "clm_x", "otp": 123456}, {"claim_token": "clm_x", "otp": "9" * 33}])
def test_complete_with_a_bad_body_is_invalid_request(app, agent, body):
    before = count_rows(app)
    r = agent.post("/agent/auth/claim/complete", body)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    assert count_rows(app) == before


# --- "This wasn't me" ----------------------------------------------------------------------------------


def test_this_wasnt_me_denies_the_attempt_for_that_email(app, agent, person, smtp, started):
    reg, link = started
    r = person.deny(link)
    assert r.status_code == 200 and "refused" in r.text.lower()
    denied = audit_rows(app, "claim.denied")
    assert len(denied) == 1 and denied[0]["registration_id"] == reg["registration_id"]
    assert denied[0]["actor_kind"] == "user"
    assert person.open(link).status_code == 200  # the page now says it was refused
    assert challenge(agent, link_token(link)).json()["error"] == "claim_expired"
    # that address cannot be asked again; the pre-claim key keeps working at its pre-claim scopes
    again = agent.claim(reg["claim_token"], "sam@example.com")
    assert again.status_code == 403 and again.json()["error"] == "claim_denied"
    assert len(smtp.to("sam@example.com")) == 1
    me = agent.api(reg["credential"])
    assert me.status_code == 200 and me.json()["credential"]["scope"] == ["api.read"]
    r = agent.complete(reg["claim_token"], "123456")
    assert r.json()["error"] == "otp_not_generated"
    # another address still can
    agent.claim(reg["claim_token"], "real@example.com")
    code = person.reveal(person.link("real@example.com"))
    assert agent.complete(reg["claim_token"], code).status_code == 200


# --- lockouts --------------------------------------------------------------------------------------------


def test_five_wrong_codes_kill_the_code_until_a_fresh_one_is_revealed(app, agent, person, started):
    reg, link = started
    code = person.reveal(link)
    for _ in range(5):
        r = agent.complete(reg["claim_token"], wrong(code))
        assert (r.status_code, r.json()["error"]) == (401, "otp_invalid")
    r = agent.complete(reg["claim_token"], code)  # the right code, too late
    assert (r.status_code, r.json()["error"]) == (401, "otp_invalid")
    assert len(audit_rows(app, "otp.failed")) == 5
    fresh = person.reveal(link)
    assert agent.complete(reg["claim_token"], fresh).status_code == 200


def test_twenty_wrong_codes_lock_the_registration(app, agent, person, started):
    reg, link = started
    for _ in range(4):
        code = challenge(agent, link_token(link)).json()["challenge"]
        for _ in range(5):
            assert agent.complete(reg["claim_token"], wrong(code)).json()["error"] == "otp_invalid"
    locked = audit_rows(app, "claim.locked")
    assert len(locked) == 1 and locked[0]["registration_id"] == reg["registration_id"]
    assert locked[0]["data"]["failures"] == 20
    code = challenge(agent, link_token(link))
    assert (code.status_code, code.json()["error"]) == (410, "claim_expired")
    r = agent.complete(reg["claim_token"], "000000")
    assert (r.status_code, r.json()["error"]) == (410, "claim_expired")
    r = agent.claim(reg["claim_token"], "sam@example.com")
    assert (r.status_code, r.json()["error"]) == (410, "claim_expired")
    assert person.open(link).status_code == 410
    assert len(audit_rows(app, "claim.locked")) == 1
    with app.app_context():
        assert db.session.get(Registration, reg["registration_id"]).failed_otp_count == 20


def test_buttons_on_a_finished_claim_answer_like_the_page(agent, person, started):
    reg, link = started
    page = person.open(link)
    form = person.form(page.text)
    assert agent.complete(reg["claim_token"], person.reveal(link)).status_code == 200
    for action in ("reveal", "deny"):
        r = person.t.post("/agent/auth/claim/view", data={**form, "action": action})
        assert r.status_code == 200 and "Already claimed" in r.text and 'id="otp"' not in r.text


def test_claim_emails_are_limited_per_registration(app, agent, smtp, clock):
    reg = agent.register_anonymous()
    for i in range(10):
        assert agent.claim(reg["claim_token"], f"n{i}@example.com").status_code == 200
    before = count_rows(app)
    r = agent.claim(reg["claim_token"], "n10@example.com")
    assert r.status_code == 429 and r.json()["error"] == "rate_limited" and int(r.headers["Retry-After"]) > 0
    assert count_rows(app) == before and len(smtp.messages) == 10
    # the idempotent repeat of the newest one is not a new email and still answers
    assert agent.claim(reg["claim_token"], "n9@example.com").status_code == 200
    clock.advance(hours=1, seconds=1)
    assert agent.claim(reg["claim_token"], "n10@example.com").status_code == 200
