"""Anonymous start (spec §2.1, §3): a key now at pre-claim scopes, claimed by a person over real HTTP and
real SMTP, upgraded in place to the post-claim scopes."""
import re
from datetime import datetime, timedelta

from authmd.extensions import db
from authmd.models import Credential, Registration, User
from tests.fixtures.flows import ANON, audit_rows


def parse_iso(value):
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", value), value
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")


def test_anonymous_registration_answers_exactly_the_spec_shape(agent, clock):
    clock.frozen = datetime(2026, 5, 20, 17, 26, 32, 915000)
    r = agent.post("/agent/auth", ANON)
    assert r.status_code == 200
    assert r.headers["Cache-Control"] == "no-store"
    body = r.json()
    assert set(body) == {"registration_id", "registration_type", "credential_type", "credential",
                         "credential_expires", "scopes", "claim_url", "claim_token", "claim_token_expires",
                         "post_claim_scopes"}
    assert body["registration_id"].startswith("reg_")
    assert body["registration_type"] == "anonymous"
    assert body["credential_type"] == "api_key"
    assert body["credential"].startswith("sk_") and len(body["credential"]) >= 3 + 27  # >= 160 bits
    assert body["credential_expires"] is None
    assert body["scopes"] == ["api.read"]
    assert body["claim_url"] == "http://localhost:8000/agent/auth/claim"
    assert body["claim_token"].startswith("clm_")
    assert body["claim_token_expires"] == "2026-05-21T17:26:32.915Z"  # REGISTRATION_TTL 24 h
    assert body["post_claim_scopes"] == ["api.read", "api.write"]


def test_the_key_works_at_pre_claim_scopes_only(agent):
    reg = agent.register_anonymous()
    r = agent.api(reg["credential"])
    assert r.status_code == 200
    body = r.json()
    assert body["user"] is None
    assert body["credential"] == {"type": "api_key", "scope": ["api.read"], "source": "anonymous",
                                  "iss": None, "sub": None, "aud": None,
                                  "registration_id": reg["registration_id"]}
    w = agent.api(reg["credential"], "POST")
    assert w.status_code == 403 and w.json()["error"] == "insufficient_scope"


def test_secrets_are_stored_only_as_digests(app, agent):
    reg = agent.register_anonymous()
    with app.app_context():
        cred = db.session.execute(db.select(Credential)).scalar_one()
        row = db.session.execute(db.select(Registration)).scalar_one()
        assert cred.digest != reg["credential"] and len(cred.digest) == 64
        assert reg["credential"] not in cred.prefix and len(cred.prefix) <= 10
        assert row.claim_token_digest != reg["claim_token"]


def test_claim_upgrades_the_same_key_in_place_and_provisions_the_user(app, agent, person, smtp):
    reg = agent.register_anonymous()
    key = reg["credential"]
    r = agent.claim(reg["claim_token"], "Ada@Example.com")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"registration_id", "claim_attempt_id", "status", "expires_at"}
    assert body["registration_id"] == reg["registration_id"]
    assert body["claim_attempt_id"].startswith("cla_") and body["status"] == "initiated"
    # the person: link in the mail, a page with a button, a code only after pressing it
    link = person.link("ada@example.com")
    page = person.open(link)
    assert page.status_code == 200 and "ada@example.com" in page.text and "Show code" in page.text
    assert not re.search(r'id="otp"', page.text)
    code = person.reveal(link)

    done = agent.complete(reg["claim_token"], code)
    assert done.status_code == 200
    assert done.json() == {"registration_id": reg["registration_id"], "status": "claimed"}
    # the SAME key now carries the post-claim scopes
    me = agent.api(key)
    assert me.status_code == 200
    assert me.json()["credential"]["scope"] == ["api.read", "api.write"]
    assert me.json()["user"]["email"] == "ada@example.com"
    assert agent.api(key, "POST").status_code == 200
    with app.app_context():
        creds = db.session.execute(db.select(Credential)).scalars().all()
        assert len(creds) == 1 and creds[0].revoked_at is None  # no rotation
        user = db.session.execute(db.select(User)).scalar_one()
        assert user.email == "ada@example.com" and user.email_verified and user.source == "claim"
        row = db.session.get(Registration, reg["registration_id"])
        assert row.status == "claimed" and row.user_id == user.id
    confirmed = audit_rows(app, "claim.confirmed")
    assert len(confirmed) == 1 and confirmed[0]["data"]["claimed_by_user_id"] == user.id
    # after the claim the page says so, and further codes are refused
    after = person.open(link)
    assert after.status_code == 200 and "Already claimed" in after.text
    again = agent.complete(reg["claim_token"], code)
    assert again.status_code == 409 and again.json()["error"] == "previously_claimed"
    assert agent.claim(reg["claim_token"], "ada@example.com").json()["error"] == "claimed_or_in_flight"


def test_claim_matches_an_existing_user_by_email(app, agent, person, smtp):
    with app.app_context():
        db.session.add(User(email="grace@example.com", email_verified=False, created_at=datetime(2026, 1, 1),
                            source="admin"))
        db.session.commit()
        uid = db.session.execute(db.select(User.id)).scalar_one()
    reg = agent.register_anonymous()
    agent.claim(reg["claim_token"], "GRACE@example.com")
    code = person.reveal(person.link("grace@example.com"))
    assert agent.complete(reg["claim_token"], code).status_code == 200
    with app.app_context():
        users = db.session.execute(db.select(User)).scalars().all()
        assert [u.id for u in users] == [uid] and users[0].email_verified  # verified by this ceremony
        assert db.session.get(Registration, reg["registration_id"]).user_id == uid
    assert agent.api(reg["credential"]).json()["user"]["id"] == uid


def test_pre_and_post_claim_scopes_come_from_the_scope_table(app, agent, person, smtp, runner):
    assert runner.invoke(args=["scopes", "add", "files.read", "--pre-claim", "--post-claim"]).exit_code == 0
    assert runner.invoke(args=["scopes", "add", "files.write"]).exit_code == 0
    reg = agent.register_anonymous()
    assert reg["scopes"] == ["api.read", "files.read"]
    assert reg["post_claim_scopes"] == ["api.read", "api.write", "files.read", "files.write"]
    agent.claim(reg["claim_token"], "lin@example.com")
    code = person.reveal(person.link("lin@example.com"))
    agent.complete(reg["claim_token"], code)
    assert agent.api(reg["credential"]).json()["credential"]["scope"] == reg["post_claim_scopes"]


def test_a_later_code_replaces_the_earlier_one(agent, person, smtp):
    reg = agent.register_anonymous()
    agent.claim(reg["claim_token"], "bo@example.com")
    link = person.link("bo@example.com")
    first = person.reveal(link)
    second = person.reveal(link)
    while second == first:  # one chance in a million: draw again
        second = person.reveal(link)
    # the page shows a code only in the answer to the button, never when opened again
    assert 'id="otp"' not in person.open(link).text
    r = agent.complete(reg["claim_token"], first)
    assert r.status_code == 401 and r.json()["error"] == "otp_invalid"
    assert agent.complete(reg["claim_token"], second).status_code == 200


def test_the_claim_link_and_the_code_expire_on_time(agent, person, smtp, clock):
    clock.frozen = datetime(2026, 5, 20, 9, 0, 0, 250000)
    reg = agent.register_anonymous()
    r = agent.claim(reg["claim_token"], "cy@example.com").json()
    link = person.link("cy@example.com")
    assert parse_iso(r["expires_at"]) == clock.frozen + timedelta(minutes=10)  # CLAIM_LINK_TTL 10 min
    code = person.reveal(link)
    clock.advance(minutes=9, seconds=59)
    assert person.open(link).status_code == 200  # not a moment early
    clock.advance(seconds=2)  # OTP_TTL 10 min from the reveal, the link's 10 min from the claim
    late = agent.complete(reg["claim_token"], code)
    assert late.status_code == 410 and late.json()["error"] == "otp_expired"
    page = person.open(link)
    assert page.status_code == 410 and "expired" in page.text.lower()


def test_anonymous_registrations_are_rate_limited_per_ip(make_app):
    """Spec §6: 5/h anonymous registrations per IP by default; 429 rate_limited JSON with Retry-After."""
    import json as _json
    from tests.conftest import _wipe
    from tests.fixtures.flows import email_body
    limited = make_app(RATELIMIT_ENABLED=True)
    _wipe(limited)
    c = limited.test_client()
    for _ in range(5):
        assert c.post("/agent/auth", json=ANON).status_code == 200
    r = c.post("/agent/auth", json=ANON)
    assert r.status_code == 429 and r.mimetype == "application/json"
    assert r.get_json()["error"] == "rate_limited" and r.get_json()["message"]
    assert int(r.headers["Retry-After"]) > 0
    # identity assertions have their own budget
    assert c.post("/agent/auth", json=email_body("rl@example.com")).status_code == 200
    # another IP is not affected
    assert c.post("/agent/auth", json=ANON, environ_base={"REMOTE_ADDR": "10.0.0.9"}).status_code == 200
    # with the limiter on, malformed and oversized bodies still answer their own JSON 4xx
    big = _json.dumps({"type": "anonymous", "pad": "x" * (64 * 1024)})
    r = c.post("/agent/auth", data=big, content_type="application/json", environ_base={"REMOTE_ADDR": "10.0.0.8"})
    assert r.status_code == 413 and r.get_json()["error"] == "request_too_large"
    r = c.post("/agent/auth", data=b"\xff{", content_type="application/json",
               environ_base={"REMOTE_ADDR": "10.0.0.8"})
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_request"
