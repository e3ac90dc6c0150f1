"""The per-worker cache of discovery and /auth.md: a change made through a domain function shows on this worker's
next request; a change made elsewhere (another worker or node, raw SQL) within DISCOVERY_CACHE_SECONDS;
credentials are never cached."""
from datetime import datetime

import pytest
from sqlalchemy import create_engine, text

from authmd import authdoc, scopes, settings
from authmd.trust import issuers
from authmd.extensions import db
from authmd.models import AuthDocVersion, Scope

AS = "/.well-known/oauth-authorization-server"
PRM = "/.well-known/oauth-protected-resource"


def types(client):
    return client.get(AS).get_json()["agent_auth"]["identity_types_supported"]


def scope_named(name):
    return db.session.execute(db.select(Scope).where(Scope.name == name)).scalar_one()


def publish_one(text_):
    authdoc.publish(text_, "t", actor_id="test")


def rollback_to_first(text_):
    first = authdoc.publish(text_, "first", actor_id="test")
    authdoc.publish("# something else\n", "second", actor_id="test")
    authdoc.rollback(first.id, actor_id="test")


# (what changes, how to see it in the served documents): every domain function that changes what they are
# built from tells the cache itself, so nothing else (no ORM event, no commit hook) has to
CHANGES = {
    "settings.update": (lambda: settings.update({"anonymous_enabled": False}),
                        lambda c: "anonymous" not in types(c)),
    "scopes.add": (lambda: scopes.add("files.read", "Read files"),
                   lambda c: "files.read" in c.get(PRM).get_json()["scopes_supported"]),
    "scopes.update": (lambda: scopes.update(scope_named("api.write"), description="", position=1, pre_claim=False,
                                            post_claim=True, enabled=False),
                      lambda c: "api.write" not in c.get(AS).get_json()["scopes_supported"]),
    "scopes.remove": (lambda: scopes.remove(scope_named("api.write")),
                      lambda c: "api.write" not in c.get(PRM).get_json()["scopes_supported"]),
    "authdoc.publish": (lambda: publish_one("# for {{ service_name }}\n"),
                        lambda c: c.get("/auth.md").get_data(as_text=True) == "# for authmd\n"),
    "authdoc.rollback": (lambda: rollback_to_first("# back for {{ service_name }}\n"),
                         lambda c: c.get("/auth.md").get_data(as_text=True) == "# back for authmd\n"),
    "trust.issuers.add": (lambda: issuers.add("https://idp.example", actor="test"),
                         lambda c: c.get(AS).get_json()["agent_auth"]["trusted_issuers"] == ["https://idp.example"]),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_through_a_domain_function_shows_on_the_next_request(make_app, app, change):
    slow = make_app(DISCOVERY_CACHE_SECONDS=3600)  # only the domain function can refresh it
    client = slow.test_client()
    do, seen = CHANGES[change]
    before = (client.get(AS).data, client.get(PRM).data, client.get("/auth.md").data)  # all three cached
    assert not seen(client)
    with slow.test_request_context():
        do()
        db.session.commit()
    assert seen(client), f"{change} did not reach this worker's next request"
    assert (client.get(AS).data, client.get(PRM).data, client.get("/auth.md").data) != before


def test_the_console_and_the_cli_reach_the_same_domain_functions(make_app, app, admin_client):
    from tests.fixtures.console import post_form
    slow = make_app(DISCOVERY_CACHE_SECONDS=3600)
    client = slow.test_client()
    assert "api.admin" not in client.get(PRM).get_json()["scopes_supported"]
    assert slow.test_cli_runner().invoke(args=["scopes", "add", "api.admin"]).exit_code == 0
    assert "api.admin" in client.get(PRM).get_json()["scopes_supported"]
    first = client.get("/auth.md")
    page = post_form(admin_client, "/console/authmd", {"action": "publish", "note": "t",
                                                       "body": "# auth.md for {{ service_name }}\n"})
    assert page.status_code == 302
    second = client.get("/auth.md")
    assert second.data.decode() == "# auth.md for authmd\n" and second.headers["ETag"] != first.headers["ETag"]
    assert client.get("/auth.md", headers={"If-None-Match": second.headers["ETag"]}).status_code == 304
    assert client.post("/agent/auth", json={"type": "anonymous"}).status_code == 200
    with slow.test_request_context():
        settings.update({"anonymous_enabled": False})
        db.session.commit()
    assert "anonymous" not in types(client)
    assert client.post("/agent/auth", json={"type": "anonymous"}).get_json()["error"] == "anonymous_not_enabled"


def test_a_write_past_the_domain_waits_for_the_ttl(make_app, app, clock):
    """No ORM event watches the tables any more: a row written around the domain functions (here in this very
    process) is served like another worker's change, after DISCOVERY_CACHE_SECONDS."""
    cached = make_app(DISCOVERY_CACHE_SECONDS=5)
    client = cached.test_client()
    assert client.get("/auth.md").get_data(as_text=True) != "# written directly\n"
    with cached.app_context():
        db.session.add(AuthDocVersion(body="# written directly\n", note="t", created_at=datetime.utcnow()))
        db.session.commit()
    assert client.get("/auth.md").get_data(as_text=True) != "# written directly\n"
    clock.advance(seconds=5)
    assert client.get("/auth.md").get_data(as_text=True) == "# written directly\n"


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
