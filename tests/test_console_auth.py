"""Console sign-in: who may enter /console/, CSRF, idle timeout, create-admin (the throttle:
test_console_throttle.py; sessions: test_console_sessions.py; next=: test_redirects.py)."""
import json

from authmd import settings
from authmd.extensions import db
from authmd.models import AuditEvent, Credential, User
from tests.conftest import count_rows
from tests.fixtures.console import ADMIN_EMAIL, ADMIN_PASSWORD, csrf_token, post_form
from tests.test_console_sessions import opens_console


def events(app, name):
    with app.app_context():
        return [json.loads(e.data or "{}") | {"actor_id": e.actor_id} for e in db.session.execute(
            db.select(AuditEvent).where(AuditEvent.event == name)).scalars()]


def test_anonymous_visitor_is_redirected_to_the_login_page(client):
    for url in ("/console/", "/console/registrations", "/console/settings"):
        r = client.get(url)
        assert r.status_code == 302 and "/console/login" in r.headers["Location"]
    assert client.get("/portal/").headers["Location"].endswith("/portal/login")


def test_a_signed_in_user_who_is_not_admin_gets_403(app, client, smtp):
    assert post_form(client, "/portal/login", {"email": "u@example.com"}).status_code == 200
    path = smtp.last_link("u@example.com", r"https?://\S+/portal/login/link\?token=\S+").replace(
        "http://localhost:8000", "")
    page = client.get(path)
    r = client.post("/portal/login/link", data={"csrf_token": csrf_token(page.get_data(as_text=True)),
                                                "token": path.split("token=", 1)[1]})
    assert r.status_code == 302
    assert client.get("/console/").status_code == 403
    assert client.get("/console/users").status_code == 403
    assert client.get("/portal/").status_code == 200


def test_admin_signs_in_and_out_and_both_are_audited(app, admin_user):
    client = app.test_client()
    r = post_form(client, "/console/login", {"email": ADMIN_EMAIL.upper(), "password": ADMIN_PASSWORD})
    assert r.status_code == 302 and r.headers["Location"].endswith("/console/")
    assert client.get("/console/").status_code == 200
    assert len(events(app, "admin.login")) == 1
    page = client.get("/console/").get_data(as_text=True)
    assert client.post("/logout", data={"csrf_token": csrf_token(page)}).status_code == 302
    assert client.get("/console/").status_code == 302
    assert [e["actor_id"] for e in events(app, "admin.logout")] == [str(admin_user)]


SETTINGS_FORM = {"service_name": "Hacked", "logo_uri": "", "anonymous_enabled": "y", "verified_email_enabled": "y",
                 "id_jag_enabled": "y", "registration_ttl": "3600", "claim_link_ttl": "600", "otp_ttl": "600",
                 "access_token_ttl": "3600", "otp_max_per_attempt": "5", "otp_max_failures_per_attempt": "5",
                 "otp_max_failures_per_registration": "20", "assertion_ttl": "3600", "refresh_token_ttl": "2592000",
                 "user_code_ttl": "600", "id_jag_max_auth_age": "3600"}


def test_a_full_valid_form_without_its_csrf_token_changes_nothing(app, admin_client):
    # every field valid: only the missing token can refuse it (the same form with the token goes through)
    before = count_rows(app)
    r = admin_client.post("/console/settings", data=SETTINGS_FORM)
    assert r.status_code == 400
    assert count_rows(app) == before
    with app.app_context():
        assert settings.get("service_name") == "authmd"
    page = admin_client.get("/console/settings").get_data(as_text=True)
    r = admin_client.post("/console/settings", data={**SETTINGS_FORM, "csrf_token": csrf_token(page)})
    assert r.status_code == 302
    with app.app_context():
        assert settings.get("service_name") == "Hacked"


def test_a_revocation_without_its_csrf_token_revokes_nothing(app, admin_client):
    reg = app.test_client().post("/agent/auth", json={"type": "anonymous"}).get_json()
    form = {"kind": "registration", "target": reg["registration_id"], "back": "/console/registrations"}
    before = count_rows(app)
    assert admin_client.post("/console/revoke", data=form).status_code == 400
    assert count_rows(app) == before
    assert _live_credentials(app) == 1
    page = admin_client.get("/console/revoke", query_string=form).get_data(as_text=True)
    r = admin_client.post("/console/revoke", data={**form, "csrf_token": csrf_token(page)})
    assert r.status_code == 302 and r.headers["Location"] == "/console/registrations"
    assert _live_credentials(app) == 0


def _live_credentials(app) -> int:
    with app.app_context():
        return db.session.execute(db.select(db.func.count(Credential.id))
                                  .where(Credential.revoked_at.is_(None))).scalar()


def test_a_sign_in_without_its_csrf_token_is_refused(app, admin_user):
    client = app.test_client()
    assert client.post("/console/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}).status_code == 400
    assert not opens_console(client) and events(app, "admin.login") == []
    assert post_form(client, "/console/login", {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}).status_code == 302


def test_wrong_password_is_refused_with_the_error_beside_the_field(app, admin_user):
    client = app.test_client()
    r = post_form(client, "/console/login", {"email": ADMIN_EMAIL, "password": "nope nope nope"})
    html = r.get_data(as_text=True)
    assert r.status_code == 401
    assert 'id="password-error"' in html and 'aria-describedby="password-error"' in html
    assert "nope nope nope" not in html
    failed = events(app, "admin.login_failed")
    assert len(failed) == 1 and "nope" not in json.dumps(failed)


def test_unknown_email_fails_like_a_wrong_password(app, admin_user):
    r = post_form(app.test_client(), "/console/login", {"email": "ghost@example.com", "password": "whatever1234"})
    assert r.status_code == 401 and "The email or password is not correct." in r.get_data(as_text=True)


def test_idle_session_ends(app, admin_client, clock):
    assert admin_client.get("/console/").status_code == 200
    clock.advance(minutes=29)
    assert admin_client.get("/console/").status_code == 200
    clock.advance(minutes=31)
    r = admin_client.get("/console/")
    assert r.status_code == 302 and "/console/login" in r.headers["Location"]
    assert admin_client.get("/console/").status_code == 302


def test_a_new_secret_key_ends_existing_sessions_and_a_fallback_keeps_them(app, admin_client):
    # the session serializer is made once per key set (authmd/cookie_session.py): a key rotated in the
    # config must still be honoured on the very next request, both ways
    old = app.secret_key
    assert admin_client.get("/console/").status_code == 200
    app.config["SECRET_KEY"] = "a-new-key-" + "x" * 32
    app.config["SECRET_KEY_FALLBACKS"] = [old]
    assert admin_client.get("/console/").status_code == 200  # signed with the old key: accepted as a fallback
    app.config["SECRET_KEY"] = "a-third-key-" + "y" * 32  # (that answer re-signed the cookie with the new key)
    app.config["SECRET_KEY_FALLBACKS"] = []
    r = admin_client.get("/console/")
    assert r.status_code == 302 and "/console/login" in r.headers["Location"]


def test_session_cookie_is_httponly_and_lax(app, admin_user):
    client = app.test_client()
    page = client.get("/console/login")
    r = client.post("/console/login", data={"csrf_token": csrf_token(page.get_data(as_text=True)),
                                            "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_create_admin_command_reads_the_password_from_stdin(app, runner):
    r = runner.invoke(args=["create-admin", "Boss@Example.com", "--password-stdin"], input="a long password 42\n")
    assert r.exit_code == 0, r.output
    with app.app_context():
        u = db.session.execute(db.select(User).where(User.email == "boss@example.com")).scalar()
        assert u.is_admin and u.password_hash.startswith("scrypt:") and "a long password" not in u.password_hash
    short = runner.invoke(args=["create-admin", "x@example.com", "--password-stdin"], input="short\n")
    assert short.exit_code != 0 and "at least" in short.output
    prompted = runner.invoke(args=["create-admin", "y@example.com"], input="another password!\nanother password!\n")
    assert prompted.exit_code == 0, prompted.output
    r = post_form(app.test_client(), "/console/login", {"email": "boss@example.com", "password": "a long password 42"})
    assert r.status_code == 302


def test_security_headers_on_console_pages(admin_client):
    r = admin_client.get("/console/")
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in r.headers["Content-Security-Policy"]
    assert r.headers["X-Frame-Options"] == "DENY" and r.headers["Referrer-Policy"]
    assert "<script>" not in r.get_data(as_text=True)


def test_home_redirects_by_role(app, admin_client, client):
    assert admin_client.get("/").headers["Location"].endswith("/console/")
    landing = client.get("/")
    assert landing.status_code == 200 and "/portal/login" in landing.get_data(as_text=True)


def test_login_posts_are_rate_limited_per_ip(make_app):
    app = make_app(RATELIMIT_ENABLED=True, RATELIMIT_CONSOLE_LOGIN_PER_IP="3/hour")
    client = app.test_client()
    codes = [post_form(client, "/console/login", {"email": f"a{i}@example.com", "password": "x"}).status_code
             for i in range(4)]
    assert codes == [401, 401, 401, 429]
    assert client.get("/console/login").status_code == 200
