"""First-run setup: init-db prints a one-time link that creates the first admin, once, and then never again."""
import json
import logging
import re

import pytest

from authmd.console.setup import SETUP_KEY
from authmd.extensions import db
from authmd.models import AuditEvent, Setting, User
from tests.conftest import count_rows
from tests.fixtures.console import csrf_token

LINK = re.compile(r"No admin yet: open (http://localhost:8000(/console/setup\?token=(\S+))) to create one")
GOOD = {"email": "First@Example.com", "password": "four random words here", "confirm": "four random words here"}


def init_db(runner) -> str | None:
    """Run `flask init-db` as the operator would; the setup path it printed, if any."""
    r = runner.invoke(args=["init-db"])
    assert r.exit_code == 0, r.output
    found = LINK.search(r.output)
    return found.group(2) if found else None


def submit(client, path, data, csrf=True):
    page = client.get(path)
    assert page.status_code == 200
    form = dict(data)
    if csrf:
        form["csrf_token"] = csrf_token(page.get_data(as_text=True))
    form["token"] = path.split("token=", 1)[1]
    return client.post("/console/setup", data=form)


def admins(app):
    with app.app_context():
        return [u.email for u in db.session.execute(db.select(User).where(User.is_admin.is_(True))).scalars()]


def test_init_db_prints_a_link_that_creates_the_first_admin_once(app, runner, caplog, monkeypatch):
    # alembic's fileConfig disables loggers that existed before it ran; listen to them all again
    for name in ("authmd", "flask.app", "werkzeug", "sqlalchemy"):
        monkeypatch.setattr(logging.getLogger(name), "disabled", False)
    caplog.set_level(logging.DEBUG)
    path = init_db(runner)
    assert path is not None
    token = path.split("token=", 1)[1]
    with app.app_context():
        stored = db.session.get(Setting, SETUP_KEY).value
    assert token not in stored and len(json.loads(stored)["digest"]) == 64

    client = app.test_client()
    page = client.get(path)
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Create the first admin" in html
    assert page.headers["Cache-Control"] == "no-store" and page.headers["Referrer-Policy"] == "no-referrer"
    assert client.get(path).status_code == 200  # looking at the link (a mail scanner, a preview) does not spend it

    r = submit(client, path, GOOD)
    assert r.status_code == 302 and r.headers["Location"].endswith("/console/")
    assert "is the first admin" in client.get("/console/").get_data(as_text=True)  # signed in already
    assert admins(app) == ["first@example.com"]
    with app.app_context():
        user = db.session.execute(db.select(User).where(User.email == "first@example.com")).scalar()
        assert user.password_hash.startswith("scrypt:")
        created = db.session.execute(db.select(AuditEvent).where(AuditEvent.event == "admin.created")).scalars().all()
        assert [(e.actor_kind, e.actor_id, e.user_id) for e in created] == [("system", "setup", user.id)]
        everything = json.dumps([[e.actor_id, e.data, e.user_agent] for e in db.session.execute(
            db.select(AuditEvent)).scalars()])
        assert db.session.get(Setting, SETUP_KEY) is None
    assert token not in everything and "four random words" not in everything
    assert token not in caplog.text

    # spent: 404 for the same link, for a fresh browser, for a bare visit; init-db prints no new link
    assert client.get(path).status_code == 404
    other = app.test_client()
    assert other.get(path).status_code == 404
    fresh_csrf = csrf_token(other.get("/console/login").get_data(as_text=True))
    assert other.post("/console/setup", data={**GOOD, "token": token, "csrf_token": fresh_csrf}).status_code == 404
    assert other.get("/console/setup").status_code == 404
    assert init_db(runner) is None
    assert other.get("/console/setup").status_code == 404

    # and the new admin signs in with the chosen password
    login = other.get("/console/login").get_data(as_text=True)
    r = other.post("/console/login", data={"csrf_token": csrf_token(login), "email": "first@example.com",
                                           "password": GOOD["password"]})
    assert r.status_code == 302 and r.headers["Location"].endswith("/console/")


def test_wrong_or_expired_or_replaced_token_is_404(app, runner, clock):
    client = app.test_client()
    assert client.get("/console/setup").status_code == 404  # no token issued yet
    first = init_db(runner)
    token = first.split("token=", 1)[1]
    assert client.get("/console/setup?token=setup_wrong").status_code == 404
    assert client.get("/console/setup?token=" + token[:-1]).status_code == 404
    assert client.get("/console/setup?token=" + "x" * 500).status_code == 404
    assert client.get(first).status_code == 200

    # running init-db again while no admin exists replaces the link
    second = init_db(runner)
    assert second != first
    assert client.get(first).status_code == 404
    assert client.get(second).status_code == 200

    page = client.get(second).get_data(as_text=True)
    clock.advance(hours=24, seconds=1)
    assert client.get(second).status_code == 404
    r = client.post("/console/setup", data={**GOOD, "csrf_token": csrf_token(page), "token": second.split("=", 1)[1]})
    assert r.status_code == 404 and admins(app) == []
    third = init_db(runner)  # the operator's remedy, as the login page says
    assert client.get(third).status_code == 200


@pytest.mark.parametrize("data, field, message", [
    ({"password": "short one", "confirm": "short one"}, "password", "Use between 10 and 1000 characters."),
    ({"confirm": "four random words HERE"}, "confirm", "The two passwords differ."),
    ({"email": "not an email"}, "email", "Enter a valid email address"),
    ({"password": "first@example.com", "confirm": "first@example.com"}, "password", "cannot be your email"),
    ({"password": ""}, "password", "Choose a password."),
])
def test_form_errors_appear_beside_the_field_and_keep_the_link_alive(app, runner, data, field, message):
    path = init_db(runner)
    before = count_rows(app)
    client = app.test_client()
    r = submit(client, path, {**GOOD, **data})
    html = r.get_data(as_text=True)
    assert r.status_code == 400
    found = re.search(rf'<p class="field-error" id="{field}-error" role="alert">([^<]*)</p>', html)
    assert found and message in found.group(1), html
    assert f'aria-describedby="{field}-error' in html or f'aria-describedby="{field}-hint {field}-error' in html
    assert "four random words" not in html and "short one" not in html  # passwords are never echoed
    assert count_rows(app) == before and admins(app) == []
    assert submit(client, path, GOOD).status_code == 302  # the same link still works after a mistake


def test_a_post_without_csrf_token_is_refused(app, runner):
    path = init_db(runner)
    client = app.test_client()
    r = submit(client, path, GOOD, csrf=False)
    assert r.status_code == 400 and admins(app) == []
    assert client.get(path).status_code == 200  # not spent


def test_login_page_tells_how_to_create_the_first_admin_until_one_exists(app, runner):
    client = app.test_client()
    html = client.get("/console/login").get_data(as_text=True)
    assert "No admin yet" in html and "/console/setup?token=" in html and "init-db" in html
    path = init_db(runner)
    assert path.split("token=", 1)[1] not in client.get("/console/login").get_data(as_text=True)
    submit(app.test_client(), path, GOOD)
    html = client.get("/console/login").get_data(as_text=True)
    assert "No admin yet" not in html and "setup" not in html


def test_create_admin_from_the_shell_kills_a_pending_setup_link(app, runner):
    path = init_db(runner)
    r = runner.invoke(args=["create-admin", "ops@example.com", "--password-stdin"], input="a long password 42\n")
    assert r.exit_code == 0, r.output
    assert app.test_client().get(path).status_code == 404
    with app.app_context():
        assert db.session.get(Setting, SETUP_KEY) is None
        # even if every admin later lost the role, that old link stays dead
        db.session.execute(db.update(User).values(is_admin=False))
        db.session.commit()
    assert app.test_client().get(path).status_code == 404


def test_two_racing_posts_create_one_admin(app, runner):
    path = init_db(runner)
    a, b = app.test_client(), app.test_client()
    page_a, page_b = a.get(path).get_data(as_text=True), b.get(path).get_data(as_text=True)
    token = path.split("token=", 1)[1]
    ra = a.post("/console/setup", data={**GOOD, "csrf_token": csrf_token(page_a), "token": token})
    rb = b.post("/console/setup", data={**GOOD, "email": "second@example.com", "csrf_token": csrf_token(page_b),
                                        "token": token})
    assert (ra.status_code, rb.status_code) == (302, 404)
    assert admins(app) == ["first@example.com"]
