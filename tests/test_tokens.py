"""The latest protocol's tokens: access tokens at the one credential door, rotating refresh tokens whose
reuse revokes the family (authmd/tokens.py)."""
import pytest

from authmd import tokens, tx
from authmd.extensions import db
from authmd.models import AuditEvent, Credential, RefreshToken, Registration
from authmd.util import ProtocolError, utcnow


def _registration(app, reg_id="reg_latest1", status="claimed"):
    with app.app_context():
        db.session.add(Registration(id=reg_id, type="anonymous", status=status, protocol="latest",
                                    created_at=utcnow()))
        db.session.commit()
    return reg_id


def _access(app, reg_id, scopes=("api.read",)):
    with app.test_request_context():
        reg = db.session.get(Registration, reg_id)
        answer = tokens.issue_access(reg, list(scopes), resource="http://localhost:8000/api/")
        db.session.commit()
        return answer


def _refresh(app, reg_id):
    with app.test_request_context():
        token, _ = tokens.issue_refresh(reg_id)
        db.session.commit()
        return token


def _rotate(app, token):
    """One refresh request: commit on success, the error path (tx.rollback) on failure."""
    with app.test_request_context():
        try:
            _reg, new, _exp = tokens.rotate_refresh(token)
        except ProtocolError as exc:
            tx.rollback()
            return exc
        tx.commit()
        return new


def test_an_access_token_is_a_credential_of_the_latest_protocol(app, client):
    reg_id = _registration(app)
    answer = _access(app, reg_id, ("api.read", "api.write"))
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 3600
    assert answer["scope"] == "api.read api.write" and answer["access_token"].startswith("at_")
    r = client.get("/api/resource", headers={"Authorization": "Bearer " + answer["access_token"]})
    assert r.status_code == 200 and r.get_json()["credential"]["registration_id"] == reg_id
    with app.app_context():
        row = db.session.execute(db.select(Credential)).scalar_one()
        assert (row.protocol, row.resource, row.type) == ("latest", "http://localhost:8000/api/", "access_token")
        event = db.session.execute(db.select(AuditEvent).where(AuditEvent.event == "token.issued")).scalar_one()
        assert event.protocol == "latest" and answer["access_token"] not in (event.data or "")


def test_a_refresh_token_rotates_and_each_one_works_once(app):
    reg_id = _registration(app)
    first = _refresh(app, reg_id)
    second = _rotate(app, first)
    assert isinstance(second, str) and second.startswith("art_") and second != first
    third = _rotate(app, second)
    assert isinstance(third, str)
    with app.app_context():
        rows = list(db.session.execute(db.select(RefreshToken).order_by(RefreshToken.id)).scalars())
        assert len({r.family_id for r in rows}) == 1
        assert [r.spent_at is not None for r in rows] == [True, True, False]
        assert all(r.revoked_at is None for r in rows)


def test_reusing_a_spent_refresh_token_revokes_the_family_and_the_access_tokens(app, client):
    reg_id = _registration(app)
    access = _access(app, reg_id)["access_token"]
    first = _refresh(app, reg_id)
    second = _rotate(app, first)
    again = _rotate(app, first)  # the thief (or the victim) replays the spent token
    assert isinstance(again, ProtocolError) and again.code == "invalid_refresh_token" and again.status == 400
    # the family is dead, including the token the legitimate rotation handed out
    dead = _rotate(app, second)
    assert isinstance(dead, ProtocolError) and dead.code == "invalid_refresh_token"
    r = client.get("/api/resource", headers={"Authorization": "Bearer " + access})
    assert r.status_code == 401
    with app.app_context():
        assert all(r.revoked_at is not None for r in db.session.execute(db.select(RefreshToken)).scalars())
        reused = db.session.execute(db.select(AuditEvent).where(AuditEvent.event == "refresh_token.reused")).scalar_one()
        assert reused.registration_id == reg_id and reused.protocol == "latest"


@pytest.mark.parametrize("status", ["revoked", "expired"])
def test_a_refresh_on_an_ended_registration_is_refused(app, status):
    reg_id = _registration(app, status=status)
    token = _refresh(app, reg_id)
    assert _rotate(app, token).code == "invalid_refresh_token"
    with app.app_context():  # refused before it was spent
        assert db.session.execute(db.select(RefreshToken.spent_at)).scalar() is None


def test_an_expired_or_unknown_refresh_token_is_refused(app, clock):
    reg_id = _registration(app)
    token = _refresh(app, reg_id)
    for bogus in ("art_nope", "sk_abc", "", "x" * 500, None):
        assert _rotate(app, bogus).code == "invalid_refresh_token"
    clock.advance(days=30, seconds=1)
    assert _rotate(app, token).code == "invalid_refresh_token"


def test_the_holder_revokes_an_access_token_or_a_refresh_family(app, client):
    reg_id = _registration(app)
    access = _access(app, reg_id)["access_token"]
    refresh = _refresh(app, reg_id)
    with app.test_request_context():
        assert tokens.revoke_token(access) is True
        assert tokens.revoke_token(refresh) is True
        assert tokens.revoke_token("at_unknown") is False
        db.session.commit()
    assert client.get("/api/resource", headers={"Authorization": "Bearer " + access}).status_code == 401
    assert _rotate(app, refresh).code == "invalid_refresh_token"
    with app.app_context():
        assert db.session.execute(db.select(db.func.count()).select_from(AuditEvent)
                                  .where(AuditEvent.event == "token.revoked")).scalar() == 2


def test_a_disabled_person_gets_no_new_tokens(app, client):
    from authmd import assertions
    from authmd.models import User
    with app.app_context():
        user = User(email="ada@example.com", email_verified=True, created_at=utcnow(), is_active=False)
        db.session.add(user)
        db.session.commit()
        db.session.add(Registration(id="reg_disabled", type="service-auth", status="claimed", protocol="latest",
                                    created_at=utcnow(), user_id=user.id))
        db.session.commit()
    refresh = _refresh(app, "reg_disabled")
    assert _rotate(app, refresh).code == "invalid_refresh_token"
    with app.test_request_context():
        assertion, _ = assertions.issue("reg_disabled")
        db.session.commit()
    r = client.post("/oauth2/token", data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                           "assertion": assertion})
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_grant" and "disabled" in r.get_json()["error_description"]
