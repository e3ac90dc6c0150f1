"""authmd_resource.Client against a live authmd under gunicorn: the answers, the cache (an injected clock,
never a sleep), and failing closed when authmd cannot be asked."""
import hashlib
import subprocess
import sys
import textwrap

import pytest

from authmd import credentials
from authmd.extensions import db
from authmd.models import Credential, User
from authmd_resource import PRM_PATH, Client, Denied, Unavailable
from tests.fixtures.gunicorn import ROOT, free_port
from tests.fixtures.provider import trust

from .conftest import ISSUER


def revoke(app, registration_id):
    with app.app_context():
        assert credentials.revoke_where(Credential.registration_id == registration_id) == 1
        db.session.commit()


def test_a_live_credential_becomes_an_identity(live):
    reg = live.register()
    client = Client(**live.settings())
    who = client.identify("Bearer " + reg["credential"], ("api.read",), "https://api.example.com/")
    assert who.sub == "registration:" + reg["registration_id"] and who.client_id == reg["registration_id"]
    assert who.scopes == ("api.read",) and who.has("api.read") and not who.has("api.write")
    assert who.registration_type == "anonymous" and who.protocol == "v0.1" and who.agent_iss is None
    assert who.claims["iss"] == ISSUER and who.exp == who.claims["exp"]


def test_refusals_carry_authmds_challenges_and_bodies(live):
    client = Client(**live.settings(resource="https://api.example.com/"))
    prm = 'resource_metadata="https://api.example.com/.well-known/oauth-protected-resource"'
    with pytest.raises(Denied) as missing:
        client.identify(None, (), "https://ignored/")
    assert (missing.value.status, missing.value.error) == (401, "unauthorized")
    assert missing.value.challenge == "Bearer " + prm
    with pytest.raises(Denied) as unknown:
        client.identify("Bearer sk_unknown", (), "")
    assert (unknown.value.status, unknown.value.error) == (401, "invalid_token")
    assert unknown.value.challenge == 'Bearer error="invalid_token", ' + prm
    with pytest.raises(Denied) as scope:
        client.identify("Bearer " + live.register()["credential"], ("api.write",), "")
    assert (scope.value.status, scope.value.error) == (403, "insufficient_scope")
    assert scope.value.challenge == 'Bearer error="insufficient_scope", scope="api.write", ' + prm
    assert ("Cache-Control", "no-store") in scope.value.headers


def test_a_revocation_shows_through_the_cache_within_its_time(live, helper_clock):
    reg = live.register()
    client = Client(**live.settings(clock=helper_clock))
    auth = "Bearer " + reg["credential"]
    assert client.identify(auth).sub
    revoke(live.app, reg["registration_id"])
    helper_clock.advance(29.9)
    assert client.identify(auth).sub  # still the cached answer
    helper_clock.advance(0.1)
    with pytest.raises(Denied) as refused:
        client.identify(auth)
    assert refused.value.error == "invalid_token"


def test_the_cache_time_is_configurable(live, helper_clock):
    reg = live.register()
    client = Client(**live.settings(clock=helper_clock, cache_seconds=2))
    assert client.identify("Bearer " + reg["credential"]).sub
    revoke(live.app, reg["registration_id"])
    helper_clock.advance(2)
    with pytest.raises(Denied):
        client.identify("Bearer " + reg["credential"])


def test_a_dead_answer_is_kept_a_shorter_time(live, helper_clock):
    reg = live.register()
    with live.app.app_context():  # a disabled user: the credential is inactive, and will come back
        user = User(email="paused@example.com", email_verified=True, is_active=False,
                    created_at=credentials.utcnow())
        db.session.add(user)
        db.session.flush()
        db.session.execute(db.update(Credential).values(user_id=user.id))
        db.session.commit()
        user_id = user.id
    client = Client(**live.settings(clock=helper_clock))
    with pytest.raises(Denied):
        client.identify("Bearer " + reg["credential"])
    with live.app.app_context():
        db.session.execute(db.update(User).values(is_active=True))
        db.session.commit()
    helper_clock.advance(4.9)
    with pytest.raises(Denied):
        client.identify("Bearer " + reg["credential"])  # the cached "inactive"
    helper_clock.advance(0.1)
    assert client.identify("Bearer " + reg["credential"]).sub == f"user:{user_id}"


def test_an_answer_is_never_kept_past_the_credentials_exp(app, live, helper_clock, provider, register_id_jag):
    trust(app, provider)
    token = register_id_jag(app.test_client(), provider.id_jag()).get_json()["credential"]
    client = Client(**live.settings(clock=helper_clock, cache_seconds=86400))
    who = client.identify("Bearer " + token)
    assert who.agent_iss == provider.issuer and who.exp
    helper_clock.advance(who.exp - helper_clock() - 0.5)
    assert client.identify("Bearer " + token).sub  # cached until exp
    helper_clock.advance(0.5)
    with pytest.raises(Denied):  # at exp: asked again, and an answer whose exp has passed is not taken
        client.identify("Bearer " + token)


def test_the_cache_is_bounded_least_recently_used_first(live, helper_clock):
    first, second, third = live.register(), live.register(), live.register()
    client = Client(**live.settings(clock=helper_clock, cache_size=2))
    for reg in (first, second):
        client.identify("Bearer " + reg["credential"])
    revoke(live.app, first["registration_id"])
    revoke(live.app, second["registration_id"])
    client.identify("Bearer " + second["credential"])  # second: most recently used
    client.identify("Bearer " + third["credential"])  # evicts first
    assert len(client._cache) == 2
    assert client.identify("Bearer " + second["credential"]).sub  # still cached
    with pytest.raises(Denied):
        client.identify("Bearer " + first["credential"])  # asked again: revoked


def test_the_cache_is_keyed_by_a_digest_never_the_token(live):
    reg = live.register()
    client = Client(**live.settings())
    client.identify("Bearer " + reg["credential"])
    keys = list(client._cache._data)
    assert keys == [hashlib.sha256(reg["credential"].encode()).digest()]
    assert reg["credential"] not in repr(client._cache._data)


def test_a_wrong_secret_fails_closed_and_is_not_cached(live, caplog):
    reg = live.register()
    client = Client(**live.settings(client_secret="rsec_wrong"))
    for _ in range(2):
        with pytest.raises(Unavailable):
            client.identify("Bearer " + reg["credential"])
    assert len(client._cache) == 0
    assert "invalid_client" in caplog.text and reg["credential"] not in caplog.text


def test_authmd_unreachable_fails_closed(live):
    client = Client(**live.settings(introspection_endpoint=f"http://127.0.0.1:{free_port()}/oauth2/introspect",
                                    timeout=2))
    with pytest.raises(Unavailable) as down:
        client.identify("Bearer " + live.register()["credential"])
    assert down.value.status == 503 and ("Retry-After", "5") in down.value.headers


def test_an_answer_from_another_issuer_is_not_taken(live):
    client = Client(**live.settings(issuer="https://not-authmd.example"))
    with pytest.raises(Denied) as refused:
        client.identify("Bearer " + live.register()["credential"])
    assert refused.value.error == "invalid_token"


def test_overlong_tokens_are_refused_without_asking(live):
    client = Client(**live.settings(introspection_endpoint="http://127.0.0.1:1/never"))
    with pytest.raises(Denied):
        client.identify("Bearer " + "x" * 5000)


def test_metadata_names_authmd(live):
    client = Client(**live.settings(resource="https://api.example.com/v1/", scopes_supported="api.read api.write",
                                    resource_name="Example API"))
    assert client.metadata_paths() == [PRM_PATH, PRM_PATH + "/v1/"]
    assert client.metadata("http://internal:8080/") == {
        "resource": "https://api.example.com/v1/", "resource_name": "Example API",
        "authorization_servers": [ISSUER], "scopes_supported": ["api.read", "api.write"],
        "bearer_methods_supported": ["header"], "resource_documentation": ISSUER + "/auth.md"}
    assert client.challenge("") == \
        'Bearer resource_metadata="https://api.example.com/.well-known/oauth-protected-resource/v1/"'


def test_a_hostile_host_header_cannot_break_the_challenge(live):
    client = Client(**live.settings())
    challenge = client.challenge('http://evil"x, error="y/')
    assert challenge == 'Bearer resource_metadata="http://evilxerrory/.well-known/oauth-protected-resource"'


@pytest.mark.parametrize("scope", ['api"read', "a b\r\n", ""])
def test_scope_names_are_checked_when_a_route_is_declared(scope):
    from authmd_resource import check_scopes
    with pytest.raises(ValueError):
        check_scopes([scope])


def test_the_helper_imports_without_the_server_or_its_database_layer():
    # authmd_resource and its WSGI middleware need the standard library only; the Flask extension needs
    # Flask, never Flask-SQLAlchemy, SQLAlchemy or authmd itself
    code = textwrap.dedent("""
        import importlib.abc, sys
        BLOCKED = {"authmd", "app", "flask_sqlalchemy", "sqlalchemy", "flask_wtf", "flask_login", "psycopg",
                   "requests", "flask", "werkzeug", "starlette", "fastapi"}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import authmd_resource, authmd_resource.wsgi
        BLOCKED -= {"flask", "werkzeug"}
        import authmd_resource.flask
        BLOCKED -= {"starlette"}
        import authmd_resource.starlette
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
