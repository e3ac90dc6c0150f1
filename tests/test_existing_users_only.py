"""The setting "existing users only" creates no user on any path: the anonymous claim and the email-required
registration are refused (400 user_not_provisioned) before anything is written or mailed, a claim already
under way fails at completion, and the portal sends no sign-in link to an unknown address."""
import re

import pytest

from authmd.extensions import db
from authmd.models import ClaimAttempt, LoginLink, Registration, User
from authmd.util import utcnow
from tests.conftest import count_rows
from tests.fixtures.console import csrf_token, post_form
from tests.fixtures.flows import Agent, Person, email_body, set_settings

PORTAL_LINK = r"https?://\S+/portal/login/link\?token=\S+"


@pytest.fixture
def agent(capp):
    return Agent(capp)


@pytest.fixture
def person(capp, smtp):
    return Person(capp, smtp)


def add_user(app, email, **fields):
    with app.app_context():
        db.session.add(User(email=email, email_verified=True, created_at=utcnow(), source="admin", **fields))
        db.session.commit()


def emails(app):
    with app.app_context():
        return sorted(db.session.execute(db.select(User.email)).scalars())


def without_audit(rows):
    return {k: v for k, v in rows.items() if k != "audit_events"}


def test_an_anonymous_claim_to_an_unknown_address_is_refused_before_any_mail(app, agent, smtp):
    reg = agent.register_anonymous()
    set_settings(app, existing_users_only=True)
    before = count_rows(app)
    r = agent.claim(reg["claim_token"], "stranger@example.com")
    assert r.status_code == 400
    assert r.json()["error"] == "user_not_provisioned"
    assert "Only existing users" in r.json()["message"]
    assert count_rows(app) == before
    assert smtp.to("stranger@example.com") == []
    # the registration is untouched: the same agent may claim for an existing user's address
    add_user(app, "member@example.com")
    r = agent.claim(reg["claim_token"], "member@example.com")
    assert r.status_code == 200 and len(smtp.to("member@example.com")) == 1


def test_an_email_registration_for_an_unknown_address_is_refused_before_anything_is_written(app, agent, smtp):
    set_settings(app, existing_users_only=True)
    before = count_rows(app)
    r = agent.post("/agent/auth", email_body("stranger@example.com"))
    assert r.status_code == 400 and r.json()["error"] == "user_not_provisioned"
    assert count_rows(app) == before
    assert smtp.to("stranger@example.com") == []
    add_user(app, "member@example.com")
    assert agent.post("/agent/auth", email_body("Member@Example.com")).status_code == 200
    assert len(smtp.to("member@example.com")) == 1


def test_an_existing_user_completes_a_claim_and_no_user_is_created(app, agent, person, smtp):
    add_user(app, "member@example.com")
    set_settings(app, existing_users_only=True)
    reg = agent.register_anonymous()
    assert agent.claim(reg["claim_token"], "member@example.com").status_code == 200
    code = person.reveal(person.link("member@example.com"))
    r = agent.complete(reg["claim_token"], code)
    assert r.status_code == 200 and r.json()["status"] == "claimed"
    assert emails(app) == ["member@example.com"]


def test_a_claim_under_way_when_the_setting_is_switched_on_fails_at_completion(app, agent, person, smtp):
    reg = agent.register_email("late@example.com")
    code = person.reveal(person.link("late@example.com"))
    set_settings(app, existing_users_only=True)
    r = agent.complete(reg["claim_token"], code)
    assert r.status_code == 400 and r.json()["error"] == "user_not_provisioned"
    assert emails(app) == []
    with app.app_context():
        assert db.session.get(Registration, reg["registration_id"]).status == "pending"


def test_the_portal_sends_no_link_to_an_unknown_address_and_creates_nothing(app, smtp):
    add_user(app, "member@example.com")
    set_settings(app, existing_users_only=True)
    before = count_rows(app)
    unknown = post_form(app.test_client(), "/portal/login", {"email": "stranger@example.com"})
    assert unknown.status_code == 200
    assert smtp.to("stranger@example.com") == []
    assert without_audit(count_rows(app)) == without_audit(before)
    known = post_form(app.test_client(), "/portal/login", {"email": "member@example.com"})
    assert len(smtp.to("member@example.com")) == 1
    strip = lambda h: re.sub(r'value="[^"]+"', "", h)  # noqa: E731
    assert strip(unknown.get_data(as_text=True)) == strip(known.get_data(as_text=True))


def test_a_portal_link_mailed_before_the_setting_creates_no_user(app, smtp):
    client = app.test_client()
    assert post_form(client, "/portal/login", {"email": "early@example.com"}).status_code == 200
    path = smtp.last_link("early@example.com", PORTAL_LINK).replace("http://localhost:8000", "")
    set_settings(app, existing_users_only=True)
    page = client.get(path)
    r = client.post("/portal/login/link", data={"csrf_token": csrf_token(page.get_data(as_text=True)),
                                                "token": path.split("token=", 1)[1]})
    assert r.status_code == 410 and "cannot be used" in r.get_data(as_text=True)
    assert emails(app) == []
    assert client.get("/portal/").status_code == 302
    with app.app_context():
        assert db.session.execute(db.select(LoginLink.used_at)).scalar() is None


def test_with_the_setting_off_each_path_still_provisions(app, agent, person, smtp):
    reg = agent.register_anonymous()
    assert agent.claim(reg["claim_token"], "new@example.com").status_code == 200
    code = person.reveal(person.link("new@example.com"))
    assert agent.complete(reg["claim_token"], code).status_code == 200
    client = app.test_client()
    post_form(client, "/portal/login", {"email": "portal@example.com"})
    path = smtp.last_link("portal@example.com", PORTAL_LINK).replace("http://localhost:8000", "")
    page = client.get(path)
    client.post("/portal/login/link", data={"csrf_token": csrf_token(page.get_data(as_text=True)),
                                            "token": path.split("token=", 1)[1]})
    assert emails(app) == ["new@example.com", "portal@example.com"]
    with app.app_context():
        assert db.session.execute(db.select(db.func.count(ClaimAttempt.id))).scalar() == 1


def test_the_settings_page_says_what_the_setting_does(admin_client):
    html = admin_client.get("/console/settings").get_data(as_text=True)
    assert "Existing users only: never create a user" in html
    assert "user_not_provisioned" in html


def test_the_latest_protocol_asks_no_one_who_could_never_sign_in(app, client, smtp):
    """The current protocol's two ways to name a person (a service_auth registration, a claim request for an
    anonymous one) are refused like v0.1's before anything is written; an existing person is asked as usual."""
    reg = client.post("/agent/identity", json={"type": "anonymous"}).get_json()
    set_settings(app, existing_users_only=True)
    before = count_rows(app)
    for path, body in (("/agent/identity", {"type": "service_auth", "login_hint": "stranger@example.com"}),
                       ("/agent/identity/claim", {"type": "service_auth", "claim_token": reg["claim"]["token"],
                                                  "login_hint": "Stranger@Example.com"})):
        r = client.post(path, json=body)
        assert r.status_code == 400 and r.get_json()["error"] == "user_not_provisioned", (path, r.get_data(as_text=True))
        assert count_rows(app) == before
    add_user(app, "member@example.com")
    for path, body in (("/agent/identity", {"type": "service_auth", "login_hint": "member@example.com"}),
                       ("/agent/identity/claim", {"type": "service_auth", "claim_token": reg["claim"]["token"],
                                                  "login_hint": "member@example.com"})):
        r = client.post(path, json=body)
        assert r.status_code == 200 and "verification_uri" in str(r.get_json()), (path, r.get_data(as_text=True))
    assert emails(app) == ["member@example.com"]
