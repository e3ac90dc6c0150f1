"""Who an ID-JAG speaks for (§2.3): prior delegation (iss, sub) → verified email → verified phone → JIT,
or user_not_provisioned when only existing users may register agents."""
import pytest

from authmd import settings
from authmd.extensions import db
from authmd.models import User
from authmd.util import utcnow
from tests.conftest import count_rows
from tests.fixtures.provider import trust


@pytest.fixture(autouse=True)
def _silent_link(app):
    """The v0.1 resolution order links by verified email or phone silently; since the takeover guard
    (test_identity.py) that needs the admin's setting link_identities_by_email."""
    with app.app_context():
        settings.update({"link_identities_by_email": True})
        db.session.commit()


def _user(app, **fields):
    with app.app_context():
        u = User(created_at=utcnow(), source="admin", **fields)
        db.session.add(u)
        db.session.commit()
        return u.id


def _whoami(client, register_id_jag, provider, **claims):
    r = register_id_jag(client, provider.id_jag(**claims))
    assert r.status_code == 200, r.json
    me = client.get("/api/resource", headers={"Authorization": "Bearer " + r.json["credential"]}).json
    return me["user"]["id"]


def _existing_only(app):
    with app.app_context():
        settings.update({"existing_users_only": True})
        db.session.commit()


def test_a_prior_delegation_wins_over_the_email(app, client, provider, register_id_jag):
    trust(app, provider)
    first = _whoami(client, register_id_jag, provider, sub="s-1", email="first@example.com")
    other = _user(app, email="changed@example.com", email_verified=True)
    # the provider now asserts another (existing user's) email for the same subject
    assert _whoami(client, register_id_jag, provider, sub="s-1", email="changed@example.com") == first != other
    # ... also through another audience of this service (the delegation is looked up by iss and sub)
    assert _whoami(client, register_id_jag, provider, sub="s-1", email="changed@example.com",
                   aud="http://localhost:8000/api/") == first


def test_an_existing_user_is_matched_by_verified_email_case_insensitively(app, client, provider, register_id_jag):
    trust(app, provider)
    uid = _user(app, email="ada@example.com", email_verified=False)
    assert _whoami(client, register_id_jag, provider, email="Ada@Example.com") == uid
    with app.app_context():
        assert db.session.get(User, uid).email_verified is True


def test_email_beats_phone(app, client, provider, register_id_jag):
    trust(app, provider)
    by_email = _user(app, email="ada@example.com", email_verified=True)
    _user(app, phone="+15550100", phone_verified=True)
    assert _whoami(client, register_id_jag, provider, email="ada@example.com", phone_number="+1 555 0100",
                   phone_number_verified=True) == by_email


def test_an_unverified_email_is_not_used_and_the_verified_phone_matches(app, client, provider, register_id_jag):
    trust(app, provider)
    _user(app, email="ada@example.com", email_verified=True)
    by_phone = _user(app, phone="+15550100", phone_verified=True)
    assert _whoami(client, register_id_jag, provider, email="ada@example.com", email_verified=False,
                   phone_number="+1 (555) 0100", phone_number_verified=True) == by_phone


def test_unknown_users_are_provisioned_just_in_time(app, client, provider, register_id_jag):
    trust(app, provider)
    uid = _whoami(client, register_id_jag, provider, email="new@example.com")
    with app.app_context():
        u = db.session.get(User, uid)
        assert (u.email, u.email_verified, u.source) == ("new@example.com", True, "id_jag")
    pid = _whoami(client, register_id_jag, provider, sub="p-1", email=None, email_verified=False,
                  phone_number="+44 20 7946 0000", phone_number_verified=True)
    with app.app_context():
        u = db.session.get(User, pid)
        assert (u.email, u.phone, u.phone_verified) == (None, "+442079460000", True)


def test_existing_users_only_refuses_strangers_and_changes_nothing(app, client, provider, register_id_jag):
    trust(app, provider)
    _existing_only(app)
    before = count_rows(app)
    r = register_id_jag(client, provider.id_jag(email="stranger@example.com"))
    assert r.status_code == 400 and r.json["error"] == "user_not_provisioned"
    after = count_rows(app)
    assert {k: v for k, v in after.items() if k != "audit_events"} == \
           {k: v for k, v in before.items() if k != "audit_events"}


@pytest.mark.parametrize("how", ["email", "phone", "delegation"])
def test_existing_users_only_still_admits_known_users(app, client, provider, register_id_jag, how):
    trust(app, provider)
    if how == "delegation":
        uid = _whoami(client, register_id_jag, provider, sub="d-1", email="d@example.com")
        _existing_only(app)
        assert _whoami(client, register_id_jag, provider, sub="d-1", email="other@example.com") == uid
        return
    _existing_only(app)
    if how == "email":
        uid = _user(app, email="known@example.com", email_verified=True)
        assert _whoami(client, register_id_jag, provider, email="known@example.com") == uid
    else:
        uid = _user(app, phone="+15550199", phone_verified=True)
        assert _whoami(client, register_id_jag, provider, email_verified=False, phone_number="+15550199",
                       phone_number_verified=True) == uid
