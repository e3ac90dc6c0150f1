"""One form of an email address everywhere (users.normalize_email): every spelling of an address (case,
full-width letters, an IDN domain in punycode) finds the same user, claim attempts, mail and counters."""
import pytest

from authmd.extensions import db
from authmd.models import Registration, User
from authmd.users import email_lookup, normalize_email
from authmd.util import utcnow
from tests.fixtures.console import ADMIN_EMAIL, ADMIN_PASSWORD, csrf_token, post_form

FULL_WIDTH = "bob@\uff45xample.com"  # ｅxample.com: IDNA maps it to example.com, where the mail goes


@pytest.mark.parametrize("typed,stored", [
    ("Bob@Example.COM", "bob@example.com"),
    (FULL_WIDTH, "bob@example.com"),
    ("bob@xn--exmple-cua.com", "bob@ex\u00e4mple.com"),
    ("  bob@example.com ", "bob@example.com"),
    ("bob@exam", "bob@exam"),  # a partial address (a search prefix) stays as typed, lower-cased
    ("BOB", "bob"),
    (None, ""),
])
def test_email_lookup_is_the_stored_form_or_the_typed_prefix(typed, stored):
    assert email_lookup(typed) == stored


def test_the_console_filters_find_an_address_by_any_spelling(app, admin_client):
    agent = app.test_client()
    r = agent.post("/agent/auth", json={"type": "identity_assertion", "assertion_type": "verified_email",
                                        "assertion": FULL_WIDTH, "requested_credential_type": "api_key"})
    assert r.status_code == 200, r.get_json()
    reg_id = r.get_json()["registration_id"]
    with app.app_context():
        assert db.session.get(Registration, reg_id).email == "bob@example.com"
        db.session.add(User(email="bob@example.com", email_verified=True, created_at=utcnow()))
        db.session.commit()
    for spelling in (FULL_WIDTH, "BOB@EXAMPLE.COM"):
        outbox = admin_client.get("/console/outbox", query_string={"to": spelling}).get_data(as_text=True)
        assert 'title="bob@example.com">bob@example.com</span></td>' in outbox and "No held message." not in outbox
        regs = admin_client.get("/console/registrations", query_string={"email": spelling}).get_data(as_text=True)
        assert reg_id in regs
        users = admin_client.get("/console/users", query_string={"q": spelling}).get_data(as_text=True)
        assert 'title="bob@example.com">bob@example.com</a>' in users
    other = admin_client.get("/console/outbox", query_string={"to": "alice@example.com"}).get_data(as_text=True)
    assert "No held message." in other


def test_sign_in_by_another_spelling_reaches_the_same_account(app, admin_user):
    client = app.test_client()
    spelling = ADMIN_EMAIL.upper().replace("EXAMPLE", "\uff25XAMPLE")
    assert normalize_email(spelling) == ADMIN_EMAIL
    r = post_form(client, "/console/login", {"email": spelling, "password": ADMIN_PASSWORD})
    assert r.status_code == 302


def test_portal_sign_in_links_are_throttled_per_address_whatever_the_spelling(app):
    from authmd.models import LoginLink
    client = app.test_client()
    for spelling in ["carol@example.com", "CAROL@EXAMPLE.COM", "carol@\uff45xample.com", "Carol@Example.com",
                     "carol@exampl\uff45.com", "carol@EXAMPLE.com", "carol@example.COM"]:
        page = client.get("/portal/login").get_data(as_text=True)
        r = client.post("/portal/login", data={"csrf_token": csrf_token(page), "email": spelling})
        assert r.status_code == 200
    with app.app_context():
        emails = list(db.session.execute(db.select(LoginLink.email)).scalars())
    assert emails and set(emails) == {"carol@example.com"} and len(emails) == 5  # LINKS_PER_WINDOW
