"""The per-worker cache of discovery and /auth.md: a change made in this process shows at once; a change made
elsewhere (another worker or node, raw SQL) within DISCOVERY_CACHE_SECONDS; credentials are never cached."""
from datetime import datetime

from sqlalchemy import create_engine, text

from authmd import settings
from authmd.extensions import db
from authmd.models import AuthDocVersion, Scope

AS = "/.well-known/oauth-authorization-server"


def types(client):
    return client.get(AS).get_json()["agent_auth"]["identity_types_supported"]


def test_a_flow_switched_off_disappears_at_once(make_app, app):
    slow = make_app(DISCOVERY_CACHE_SECONDS=3600)  # only the commit hook can refresh it
    client = slow.test_client()
    assert "anonymous" in types(client)
    with slow.app_context():
        settings.update({"anonymous_enabled": False})
        db.session.commit()
    assert "anonymous" not in types(client)
    assert client.post("/agent/auth", json={"type": "anonymous"}).get_json()["error"] == "anonymous_not_enabled"


def test_scopes_and_the_published_document_show_at_once(make_app, app, runner):
    slow = make_app(DISCOVERY_CACHE_SECONDS=3600)
    client = slow.test_client()
    first = client.get("/auth.md")
    assert "api.admin" not in client.get("/.well-known/oauth-protected-resource").get_json()["scopes_supported"]
    assert slow.test_cli_runner().invoke(args=["scopes", "add", "api.admin"]).exit_code == 0
    assert "api.admin" in client.get("/.well-known/oauth-protected-resource").get_json()["scopes_supported"]
    with slow.app_context():
        db.session.add(AuthDocVersion(body="# auth.md for {{ service_name }}\n", note="t", created_at=datetime.utcnow()))
        db.session.commit()
    second = client.get("/auth.md")
    assert second.data.decode() == "# auth.md for authmd\n" and second.headers["ETag"] != first.headers["ETag"]
    assert client.get("/auth.md", headers={"If-None-Match": second.headers["ETag"]}).status_code == 304


def test_a_change_from_another_process_shows_within_the_ttl(make_app, app, clock):
    cached = make_app(DISCOVERY_CACHE_SECONDS=1)
    client = cached.test_client()
    assert "api.write" in client.get(AS).get_json()["scopes_supported"]
    # another node's change: a separate connection, no session of this process involved
    other = create_engine(cached.config["DATABASE_URL"])
    with other.begin() as conn:
        conn.execute(text("UPDATE scopes SET enabled = :f WHERE name = 'api.write'"), {"f": False})
    other.dispose()
    assert "api.write" in client.get(AS).get_json()["scopes_supported"]  # still the cached document
    clock.advance(seconds=1)
    assert "api.write" not in client.get(AS).get_json()["scopes_supported"]


def test_revoked_credentials_are_never_served_from_a_cache(client, app):
    key = client.post("/agent/auth", json={"type": "anonymous"}).get_json()["credential"]
    auth = {"Authorization": "Bearer " + key}
    assert client.get("/api/resource", headers=auth).status_code == 200
    other = create_engine(app.config["DATABASE_URL"])
    with other.begin() as conn:
        conn.execute(text("UPDATE credentials SET revoked_at = CURRENT_TIMESTAMP"))
    other.dispose()
    r = client.get("/api/resource", headers=auth)
    assert r.status_code == 401 and r.get_json()["error"] == "invalid_token"


def test_hot_path_answer_is_unchanged(client, app):
    reg = client.post("/agent/auth", json={"type": "anonymous"}).get_json()
    body = client.get("/api/resource", headers={"Authorization": "Bearer " + reg["credential"]}).get_json()
    assert body["user"] is None
    assert body["credential"] == {"type": "api_key", "scope": ["api.read"], "source": "anonymous", "iss": None,
                                  "sub": None, "aud": None, "registration_id": reg["registration_id"]}
    with app.app_context():
        assert db.session.execute(db.select(Scope.name)).scalars().all()


def test_hot_path_refuses_disabled_users_and_expired_registrations(client, app, clock):
    from authmd.models import Credential, Registration, User
    first = client.post("/agent/auth", json={"type": "anonymous"}).get_json()
    second = client.post("/agent/auth", json={"type": "anonymous"}).get_json()
    with app.app_context():
        user = User(email="off@example.com", is_active=False, created_at=clock())
        db.session.add(user)
        db.session.flush()
        db.session.execute(db.update(Credential).where(Credential.registration_id == first["registration_id"])
                           .values(user_id=user.id))
        db.session.commit()
    r = client.get("/api/resource", headers={"Authorization": "Bearer " + first["credential"]})
    assert r.status_code == 401 and "disabled" in r.get_json()["message"]
    clock.advance(hours=25)
    r = client.get("/api/resource", headers={"Authorization": "Bearer " + second["credential"]})
    assert r.status_code == 401 and "expired" in r.get_json()["message"]
    with app.app_context():
        assert db.session.get(Registration, second["registration_id"]).status == "expired"
