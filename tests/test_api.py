"""Using a credential (spec §1.1, §5): the RFC 6750 / RFC 9728 challenges and the demo resource."""
from datetime import datetime

import pytest

from authmd import credentials
from authmd.extensions import db
from authmd.models import Credential, Registration, User
from tests.fixtures.flows import ANON

PRM = 'resource_metadata="http://localhost:8000/.well-known/oauth-protected-resource"'


def register(client):
    return client.post("/agent/auth", json=ANON).get_json()


@pytest.mark.parametrize("headers", [{}, {"Authorization": ""}, {"Authorization": "Bearer"},
                                     {"Authorization": "Bearer   "}, {"Authorization": "Basic dXNlcjpwdw=="}])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_missing_credential_is_401_with_the_bare_challenge(client, headers, method):
    r = client.open("/api/resource", method=method, headers=headers)
    assert r.status_code == 401 and r.mimetype == "application/json"
    assert r.headers["WWW-Authenticate"] == "Bearer " + PRM
    assert "error=" not in r.headers["WWW-Authenticate"]
    assert r.get_json()["error"] == "unauthorized" and r.get_json()["message"]


@pytest.mark.parametrize("token", ["sk_unknown", "at_" + "x" * 43, "x" * 500, "clm_abc"])
def test_bad_credential_is_401_invalid_token(client, token):
    r = client.get("/api/resource", headers={"Authorization": "Bearer " + token})
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Bearer error="invalid_token", ' + PRM
    assert r.get_json()["error"] == "invalid_token"


def test_the_claim_token_is_not_a_credential(client):
    reg = register(client)
    r = client.get("/api/resource", headers={"Authorization": "Bearer " + reg["claim_token"]})
    assert r.status_code == 401 and r.get_json()["error"] == "invalid_token"


def test_credentials_go_in_the_header_only(client):
    reg = register(client)
    r = client.get("/api/resource?access_token=" + reg["credential"])
    assert r.status_code == 401
    r = client.post("/api/resource", data={"access_token": reg["credential"]})
    assert r.status_code == 401


def test_lower_case_bearer_scheme_is_accepted(client):
    reg = register(client)
    assert client.get("/api/resource", headers={"Authorization": "bearer " + reg["credential"]}).status_code == 200


def test_missing_scope_is_403_insufficient_scope(client):
    reg = register(client)
    r = client.post("/api/resource", headers={"Authorization": "Bearer " + reg["credential"]})
    assert r.status_code == 403
    assert r.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope", scope="api.write", ' + PRM
    assert r.get_json()["error"] == "insufficient_scope"


def test_get_answers_the_identity_in_the_spec_shape(app, client):
    reg = register(client)
    r = client.get("/api/resource", headers={"Authorization": "Bearer " + reg["credential"]})
    assert r.status_code == 200 and r.mimetype == "application/json"
    # an unclaimed anonymous key: no user, no delegation, only the pre-claim scope, its own registration
    assert r.get_json() == {
        "message": "Hello from the protected resource.",
        "user": None,
        "credential": {"type": "api_key", "scope": ["api.read"], "source": "anonymous",
                       "iss": None, "sub": None, "aud": None, "registration_id": reg["registration_id"]}}


def test_a_revoked_credential_stops_at_once(app, client):
    reg = register(client)
    auth = {"Authorization": "Bearer " + reg["credential"]}
    assert client.get("/api/resource", headers=auth).status_code == 200
    with app.app_context():
        assert credentials.revoke_where(Credential.registration_id == reg["registration_id"]) == 1
        db.session.commit()
    r = client.get("/api/resource", headers=auth)
    assert r.status_code == 401 and r.get_json()["error"] == "invalid_token"


def test_a_disabled_user_stops_their_credentials(app, client):
    reg = register(client)
    with app.app_context():
        user = User(email="off@example.com", email_verified=True, created_at=datetime(2026, 1, 1))
        db.session.add(user)
        db.session.flush()
        db.session.execute(db.update(Credential).values(user_id=user.id))
        db.session.commit()
    auth = {"Authorization": "Bearer " + reg["credential"]}
    assert client.get("/api/resource", headers=auth).status_code == 200
    with app.app_context():
        db.session.execute(db.update(User).values(is_active=False))
        db.session.commit()
    assert client.get("/api/resource", headers=auth).status_code == 401


def test_a_revoked_registration_stops_its_credentials(app, client):
    reg = register(client)
    with app.app_context():
        db.session.execute(db.update(Registration).values(status="revoked"))
        db.session.commit()
    assert client.get("/api/resource", headers={"Authorization": "Bearer " + reg["credential"]}).status_code == 401


def test_last_used_is_written_at_most_once_a_minute(app, client, clock):
    reg = register(client)
    auth = {"Authorization": "Bearer " + reg["credential"]}
    clock.frozen = datetime(2026, 5, 20, 12, 0, 0)
    client.get("/api/resource", headers=auth)
    clock.advance(seconds=30)
    client.get("/api/resource", headers=auth)
    with app.app_context():
        assert db.session.execute(db.select(Credential.last_used_at)).scalar() == datetime(2026, 5, 20, 12)
    clock.advance(seconds=31)
    client.get("/api/resource", headers=auth)
    with app.app_context():
        assert db.session.execute(db.select(Credential.last_used_at)).scalar() == datetime(2026, 5, 20, 12, 1, 1)


def test_last_used_is_written_from_another_thread_too(app, client, clock):
    # the main thread writes through the worker's held connection, any other thread through the pool
    import threading
    reg = register(client)
    clock.frozen = datetime(2026, 5, 20, 12, 0, 0)
    answers = []
    worker = threading.Thread(target=lambda: answers.append(app.test_client().get(
        "/api/resource", headers={"Authorization": "Bearer " + reg["credential"]})))
    worker.start()
    worker.join()
    assert answers[0].status_code == 200
    with app.app_context():
        assert db.session.execute(db.select(Credential.last_used_at)).scalar() == datetime(2026, 5, 20, 12)


def test_last_used_only_moves_forward(app, client, clock):
    # two workers (or nodes) that both saw a stale last_used_at race to write it: the later time stays
    from authmd import credentials
    reg = register(client)
    clock.frozen = datetime(2026, 5, 20, 12, 0, 0)
    client.get("/api/resource", headers={"Authorization": "Bearer " + reg["credential"]})
    with app.app_context():
        cid = db.session.execute(db.select(Credential.id)).scalar()
        late = {"credential_id": cid, "last_used_at": datetime(2026, 5, 20, 11, 59, 59),
                "stale_before": datetime(2026, 5, 20, 11, 58, 59)}
        credentials._touch(late)  # the hot path's own write (on the worker's held connection)
        assert db.session.execute(db.select(Credential.last_used_at)).scalar() == datetime(2026, 5, 20, 12)
        later = dict(late, last_used_at=datetime(2026, 5, 20, 12, 1, 30), stale_before=datetime(2026, 5, 20, 12, 0, 30))
        credentials._touch(later)
        assert db.session.execute(db.select(Credential.last_used_at)).scalar() == datetime(2026, 5, 20, 12, 1, 30)


def test_the_credential_check_is_one_query(app, client):
    """The hot path: one indexed lookup by digest (plus at most one last_used write a minute).

    The lookup runs on a raw DBAPI connection (no SQLAlchemy events), so the statements are traced
    by the driver itself: sqlite3's trace callback sees every statement the database runs.
    """
    from tests.fixtures.tracing import sqlite_statements
    reg = register(client)
    auth = {"Authorization": "Bearer " + reg["credential"]}
    client.get("/api/resource", headers=auth)  # the last_used write happens here
    with sqlite_statements(app) as statements:
        assert client.get("/api/resource", headers=auth).status_code == 200
    work = [s for s in statements if not s.lstrip().upper().startswith("PRAGMA")]
    selects = [s for s in work if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1 and "credentials.digest" in selects[0], work
    assert not [s for s in work if s.lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE"))], work


def test_a_protected_view_reads_typed_columns_and_no_secret(app, client):
    """require_credential hands the view snapshots of the row: model attribute names, the models' types
    (DateTime and Boolean parsed on SQLite too), and nothing secret or merely administrative."""
    reg = register(client)
    with app.app_context():
        user = User(email="owner@example.com", email_verified=True, name="Owner", is_active=True,
                    password_hash="scrypt:not-for-views", created_at=datetime(2026, 1, 2, 3, 4, 5))
        db.session.add(user)
        db.session.flush()
        db.session.execute(db.update(Credential).values(user_id=user.id, expires_at=datetime(2099, 1, 1, 0, 0, 1)))
        db.session.commit()
    with app.test_request_context("/api/resource", headers={"Authorization": "Bearer " + reg["credential"]}):
        cred, registration, owner, delegation = credentials.authenticate(reg["credential"])
    assert delegation is None
    assert cred.expires_at == datetime(2099, 1, 1, 0, 0, 1) and isinstance(cred.created_at, datetime)
    assert cred.revoked_at is None and cred.scope_list == cred.scopes.split()
    assert registration.id == reg["registration_id"] == cred.registration_id and registration.status == "pending"
    assert owner.email_verified is True and owner.is_active is True and owner.id == cred.user_id
    assert owner.public() == {"id": owner.id, "email": "owner@example.com", "email_verified": True, "name": "Owner"}
    for snapshot, hidden in ((cred, "digest"), (registration, "claim_token_digest"), (registration, "ip"),
                             (owner, "password_hash")):
        assert not hasattr(snapshot, hidden), hidden
    with pytest.raises(AttributeError):
        cred.revoked_at = datetime(2026, 1, 1)  # read-only
