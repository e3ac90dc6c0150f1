"""The sign-in throttle counts failures per (client IP, account): a stranger's failures slow the stranger down
with growing waits, never the owner who signs in from elsewhere; the answer is the same for an unknown
account; the per-IP ceiling across accounts stays."""
import re
from datetime import datetime

import pytest

from authmd.console.auth import THROTTLE_CAP, THROTTLE_FREE
from authmd.extensions import db
from authmd.models import LoginFailure
from tests.fixtures.console import ADMIN_EMAIL, ADMIN_PASSWORD, post_form

STRANGER, OWNER = "203.0.113.7", "198.51.100.20"


@pytest.fixture(autouse=True)
def frozen(clock):
    # the waits are whole seconds counted from the last failure: a stopped clock keeps them exact
    clock.frozen = datetime(2026, 6, 1, 9, 0, 0)


def browser(app, ip):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = ip
    return client


def sign_in(client, email, password):
    return post_form(client, "/console/login", {"email": email, "password": password})


def fail_until(client, clock, email, failures):
    """Wrong passwords from client until `failures` are recorded, waiting out the throttle (injected time)
    whenever it answers; returns the waits it asked for, in order."""
    waits, done = [], 0
    while done < failures:
        r = sign_in(client, email, "not the password")
        if r.status_code == 429:
            wait = int(r.headers["Retry-After"])
            waits.append(wait)
            clock.advance(seconds=wait)
            continue
        assert r.status_code == 401
        done += 1
    return waits


def test_a_strangers_failures_never_lock_the_owner_out(app, admin_user, clock):
    stranger = browser(app, STRANGER)
    waits = fail_until(stranger, clock, ADMIN_EMAIL, 20)
    assert waits, "the stranger was never slowed down"
    assert sign_in(stranger, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 429  # even with the right password
    owner = browser(app, OWNER)
    r = sign_in(owner, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert r.status_code == 302 and r.headers["Location"].endswith("/console/")
    assert owner.get("/console/").status_code == 200
    # the owner's success does not lift the stranger's throttle
    assert sign_in(stranger, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 429


def test_from_the_failing_ip_the_wait_grows_is_capped_and_relaxes_with_time(app, admin_user, clock):
    client = browser(app, STRANGER)
    for _ in range(THROTTLE_FREE):
        assert sign_in(client, ADMIN_EMAIL, "not the password").status_code == 401
    r = sign_in(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    assert "Wait 2 seconds" in r.get_data(as_text=True)
    assert client.get("/console/").status_code == 302
    # each further failure doubles the wait, up to the cap
    waits = fail_until(client, clock, ADMIN_EMAIL, 12)
    assert waits == [2, 4, 8, 16, 32, 64, 128, 256, 512, THROTTLE_CAP, THROTTLE_CAP, THROTTLE_CAP]
    clock.advance(seconds=THROTTLE_CAP - 1)
    assert sign_in(client, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 429
    clock.advance(seconds=1)
    r = sign_in(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert r.status_code == 302
    # a success clears this IP's failures for the account: the next mistake costs nothing again
    client.get("/console/")  # (signed in; sign-in attempts go on from a fresh browser on the same IP)
    again = browser(app, STRANGER)
    assert sign_in(again, ADMIN_EMAIL, "not the password").status_code == 401
    assert sign_in(again, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 302


def test_failures_older_than_the_window_are_forgotten(app, admin_user, clock):
    client = browser(app, STRANGER)
    fail_until(client, clock, ADMIN_EMAIL, THROTTLE_FREE + 3)
    assert sign_in(client, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 429
    clock.advance(hours=24, seconds=1)
    sign_in(browser(app, OWNER), "ghost@example.com", "x" * 12)  # any failure purges rows past the window
    with app.app_context():
        assert db.session.execute(db.select(db.func.count(LoginFailure.id))
                                  .where(LoginFailure.ip == STRANGER)).scalar() == 0
    assert sign_in(client, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 302


def test_the_throttled_answer_does_not_reveal_whether_the_account_exists(app, admin_user, clock):
    def run(email, ip):
        client = browser(app, ip)
        answers = []
        for _ in range(THROTTLE_FREE + 2):
            r = sign_in(client, email, "not the password")
            body = re.sub(r'value="[^"]*"', "", r.get_data(as_text=True))
            answers.append((r.status_code, r.headers.get("Retry-After"), body.replace(email, "EMAIL")))
        return answers

    known, unknown = run(ADMIN_EMAIL, "192.0.2.1"), run("ghost@example.com", "192.0.2.2")
    assert [a[:2] for a in known] == [(401, None)] * THROTTLE_FREE + [(429, "2"), (429, "2")]
    assert known == unknown


def test_the_throttle_keys_on_the_ip_the_proxy_reports_only_when_trusted(make_app, clock):
    # behind one trusted proxy the client's address comes from X-Forwarded-For; without that setting a
    # client cannot pick an address to walk around the throttle
    from authmd.console.cli import create_admin
    from tests.conftest import _wipe
    app = make_app(TRUSTED_PROXIES=1)
    _wipe(app)
    with app.app_context():
        create_admin(ADMIN_EMAIL, ADMIN_PASSWORD)
        db.session.commit()
    proxy = browser(app, "10.0.0.1")
    for _ in range(THROTTLE_FREE):
        assert post_form(proxy, "/console/login", {"email": ADMIN_EMAIL, "password": "wrong password"},
                         headers={"X-Forwarded-For": STRANGER}).status_code == 401
    assert post_form(proxy, "/console/login", {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
                     headers={"X-Forwarded-For": STRANGER}).status_code == 429
    assert post_form(proxy, "/console/login", {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
                     headers={"X-Forwarded-For": OWNER}).status_code == 302
