"""Console and portal sessions: only a password session opens the console; a copied cookie dies with sign-out,
a new password, demotion, disabling, and 12 h after sign-in however busy."""
import re

import pytest

from authmd.extensions import db
from authmd.models import AuditEvent, OutboxMail, User
from tests.fixtures.console import ADMIN_EMAIL, ADMIN_PASSWORD, csrf_token, post_form

LINK = re.compile(r"https?://[^/\s]+(/portal/login/link\?token=\S+)")


def copy_of(app, client):
    """A second browser holding a copy of client's session cookie (what a thief would replay)."""
    name = app.config["SESSION_COOKIE_NAME"]
    cookie = client.get_cookie(name)
    assert cookie is not None, "the client holds no session cookie"
    thief = app.test_client()
    thief.set_cookie(name, cookie.value, domain=cookie.domain, path=cookie.path)
    return thief


def opens_console(client) -> bool:
    r = client.get("/console/")
    assert r.status_code in (200, 302), r.status_code
    if r.status_code == 302:
        assert "/console/login" in r.headers["Location"]
    return r.status_code == 200


def link_from_outbox(app, email) -> str:
    """The newest portal sign-in link held in the outbox table: what anyone who can read the database holds."""
    with app.app_context():
        body = db.session.execute(db.select(OutboxMail.body_text).where(OutboxMail.to_addr == email)
                                  .order_by(OutboxMail.id.desc())).scalars().first()
    assert body, f"no mail to {email} in the outbox"
    return LINK.search(body).group(1)


def sign_in_by_link(app, client, email):
    assert post_form(client, "/portal/login", {"email": email}).status_code == 200
    path = link_from_outbox(app, email)
    page = client.get(path)
    assert page.status_code == 200
    r = client.post("/portal/login/link", data={"csrf_token": csrf_token(page.get_data(as_text=True)),
                                                "token": path.split("token=", 1)[1]})
    assert r.status_code == 302 and r.headers["Location"].endswith("/portal/")
    return r


def sign_out(client, page="/portal/"):
    html = client.get(page).get_data(as_text=True)
    return client.post("/logout", data={"csrf_token": csrf_token(html)})


# --- item: a sign-in link never opens the console ------------------------------------------------------
def test_an_emailed_link_signs_an_admin_into_the_portal_only(app, admin_user):
    # the mail is held in the outbox table (no mail server): reading the database is enough to hold the link
    client = app.test_client()
    sign_in_by_link(app, client, ADMIN_EMAIL)
    assert client.get("/portal/").status_code == 200
    r = client.get("/console/settings")
    assert r.status_code == 302 and r.headers["Location"].startswith("/console/login?next=/console/settings")
    for url in ("/console/", "/console/users", "/console/outbox"):
        assert not opens_console(client), url
    assert client.get("/").headers["Location"].endswith("/portal/")
    # the sign-in page does not bounce it back to the console: it asks for the password
    page = client.get("/console/login")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "enter your password to open the console" in html
    assert f'value="{ADMIN_EMAIL}"' in html
    r = post_form(client, "/console/login?next=/console/settings", {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert r.status_code == 302 and r.headers["Location"] == "/console/settings"
    assert opens_console(client) and client.get("/portal/").status_code == 200


def test_a_link_session_cannot_post_to_the_console(app, admin_user):
    client = app.test_client()
    sign_in_by_link(app, client, ADMIN_EMAIL)
    token = csrf_token(client.get("/portal/").get_data(as_text=True))
    r = client.post("/console/settings", data={"csrf_token": token, "service_name": "Taken over",
                                               "registration_ttl": 3600, "claim_link_ttl": 600, "otp_ttl": 600,
                                               "access_token_ttl": 3600, "otp_max_per_attempt": 5,
                                               "otp_max_failures_per_attempt": 5,
                                               "otp_max_failures_per_registration": 20})
    assert r.status_code == 302 and "/console/login" in r.headers["Location"]
    with app.app_context():
        assert not db.session.execute(db.select(AuditEvent).where(AuditEvent.event == "settings.changed")).first()


def test_a_password_session_of_an_admin_also_opens_the_portal(admin_client):
    assert admin_client.get("/portal/").status_code == 200
    assert opens_console(admin_client)


# --- item: a copied cookie dies ------------------------------------------------------------------------
def test_sign_out_ends_a_copied_session(app, admin_client):
    thief = copy_of(app, admin_client)
    assert opens_console(thief)  # the copy works while the session lives
    assert sign_out(admin_client, "/console/").headers["Location"].endswith("/console/login")
    assert not opens_console(admin_client)
    assert not opens_console(thief)
    assert thief.get("/portal/").status_code == 302
    with app.app_context():
        assert db.session.execute(db.select(AuditEvent.event).where(AuditEvent.event == "admin.logout")).first()


def test_signing_out_of_the_portal_ends_a_copied_portal_session(app, smtp):
    client = app.test_client()
    assert post_form(client, "/portal/login", {"email": "ada@example.com"}).status_code == 200
    path = smtp.last_link("ada@example.com", r"https?://\S+/portal/login/link\?token=\S+").replace(
        "http://localhost:8000", "")
    page = client.get(path)
    client.post("/portal/login/link", data={"csrf_token": csrf_token(page.get_data(as_text=True)),
                                            "token": path.split("token=", 1)[1]})
    thief = copy_of(app, client)
    assert thief.get("/portal/").status_code == 200
    assert sign_out(client).headers["Location"].endswith("/portal/login")
    assert thief.get("/portal/").status_code == 302


def test_a_password_reset_by_create_admin_ends_a_copied_session(app, admin_client, runner):
    thief = copy_of(app, admin_client)
    assert opens_console(thief)
    r = runner.invoke(args=["create-admin", ADMIN_EMAIL, "--password-stdin"], input="a brand new password\n")
    assert r.exit_code == 0, r.output
    assert not opens_console(thief)
    assert not opens_console(admin_client)
    fresh = app.test_client()
    assert post_form(fresh, "/console/login", {"email": ADMIN_EMAIL, "password": "a brand new password"}).status_code == 302
    assert opens_console(fresh)


@pytest.mark.parametrize("action", ["demote", "disable"])
def test_demotion_and_disabling_end_a_copied_session(app, admin_client, runner, action):
    runner.invoke(args=["create-admin", "second@example.com", "--password-stdin"], input="second admin password\n")
    victim = app.test_client()
    assert post_form(victim, "/console/login", {"email": "second@example.com",
                                                "password": "second admin password"}).status_code == 302
    thief = copy_of(app, victim)
    assert opens_console(thief)
    with app.app_context():
        uid = db.session.execute(db.select(User.id).where(User.email == "second@example.com")).scalar()
    r = post_form(admin_client, f"/console/users/{uid}/{action}", {})
    assert r.status_code == 302
    assert not opens_console(thief) and not opens_console(victim)
    # promoting (or enabling) the account again does not bring the old sessions back
    undo = "promote" if action == "demote" else "enable"
    assert post_form(admin_client, f"/console/users/{uid}/{undo}", {}).status_code == 302
    assert not opens_console(thief)
    assert thief.get("/portal/").status_code == 302


def test_a_session_ends_twelve_hours_after_sign_in_however_busy(app, admin_client, clock):
    thief = copy_of(app, admin_client)
    for _ in range(35):  # 11 h 40 min of activity, never idle for 30 minutes
        clock.advance(minutes=20)
        assert opens_console(admin_client) and opens_console(thief)
    clock.advance(minutes=19)
    assert opens_console(admin_client)  # 11 h 59 min
    clock.advance(minutes=2)
    assert not opens_console(admin_client)
    assert not opens_console(thief)
    assert admin_client.get("/portal/").status_code == 302


def test_the_absolute_lifetime_is_configurable(make_app, clock):
    from tests.conftest import _wipe
    app = make_app(SESSION_MAX_HOURS=1)
    _wipe(app)
    from authmd.console.cli import create_admin
    with app.app_context():
        create_admin(ADMIN_EMAIL, ADMIN_PASSWORD)
        db.session.commit()
    client = app.test_client()
    assert post_form(client, "/console/login", {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}).status_code == 302
    clock.advance(minutes=25)
    assert opens_console(client)
    clock.advance(minutes=25)
    assert opens_console(client)
    clock.advance(minutes=11)
    assert not opens_console(client)


def test_a_session_without_the_stamps_of_a_sign_in_opens_nothing(app, admin_user):
    # a cookie forged or carried over from before sessions were stamped: a user id alone is not a session
    client = app.test_client()
    with client.session_transaction() as s:
        s["_user_id"] = str(admin_user)
        s["_fresh"] = True
        s["auth_method"] = "password"
    assert not opens_console(client)
    assert client.get("/portal/").status_code == 302
