"""The framework adapters over real HTTP: the example Flask API (authmd_resource.flask), a FastAPI app under
uvicorn (authmd_resource.starlette) and a WSGI app behind the middleware (authmd_resource.wsgi), each
checking credentials with a live authmd under gunicorn, each answering agents as authmd does."""
import pytest
import requests
from fastapi import Depends, FastAPI

from authmd import credentials
from authmd.extensions import db
from authmd.models import Credential
from authmd_resource import Identity
from authmd_resource.starlette import Authmd as StarletteAuthmd
from authmd_resource.wsgi import AuthmdMiddleware
from examples.api.app import create_app as example_api

from .conftest import ISSUER


def revoke(app, registration_id):
    with app.app_context():
        credentials.revoke_where(Credential.registration_id == registration_id)
        db.session.commit()


def assert_answers_like_authmd(live, api_url, read_path, write_path, write_method="POST"):
    """The same statuses, error codes, challenge shapes and JSON keys as authmd's own /api/resource."""
    reg = live.register()
    bearer = {"Authorization": "Bearer " + reg["credential"]}
    prm = f'resource_metadata="{api_url}/.well-known/oauth-protected-resource"'
    cases = [({}, read_path, "GET", 401, "unauthorized", "Bearer " + prm),
             ({"Authorization": "Bearer sk_unknown"}, read_path, "GET", 401, "invalid_token",
              'Bearer error="invalid_token", ' + prm),
             (bearer, write_path, write_method, 403, "insufficient_scope",
              'Bearer error="insufficient_scope", scope="api.write", ' + prm)]
    for headers, path, method, status, error, challenge in cases:
        theirs = requests.request(method, api_url + path, headers=headers, timeout=10)
        ours = requests.request("POST" if status == 403 else "GET", live.url + "/api/resource", headers=headers,
                                timeout=10)
        assert (theirs.status_code, ours.status_code) == (status, status)
        assert theirs.json()["error"] == ours.json()["error"] == error
        assert set(theirs.json()) == set(ours.json()) == {"error", "message"}
        assert theirs.headers["WWW-Authenticate"] == challenge
        assert theirs.headers["Cache-Control"] == "no-store" and theirs.headers["Content-Type"].startswith(
            "application/json")
    meta = requests.get(api_url + "/.well-known/oauth-protected-resource", timeout=10).json()
    assert meta["authorization_servers"] == [ISSUER] and meta["resource"] == api_url + "/"
    return reg


def test_the_example_flask_api(live, serve_wsgi, helper_clock):
    api = serve_wsgi(example_api(**live.settings(clock=helper_clock)))
    reg = assert_answers_like_authmd(live, api, "/v1/notes", "/v1/notes")
    bearer = {"Authorization": "Bearer " + reg["credential"]}
    r = requests.get(api + "/v1/notes", headers=bearer, timeout=10)
    assert r.status_code == 200 and r.json() == {"notes": [], "caller": "registration:" + reg["registration_id"]}
    assert requests.get(api + "/healthz", timeout=10).status_code == 200  # not protected
    revoke(live.app, reg["registration_id"])
    helper_clock.advance(29)
    assert requests.get(api + "/v1/notes", headers=bearer, timeout=10).status_code == 200  # cached
    helper_clock.advance(1)
    r = requests.get(api + "/v1/notes", headers=bearer, timeout=10)
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"


def test_the_example_flask_api_with_a_write_scope(app, live, serve_wsgi, provider, register_id_jag):
    from tests.fixtures.provider import trust
    trust(app, provider)
    token = register_id_jag(app.test_client(), provider.id_jag()).get_json()["credential"]  # api.read api.write
    api = serve_wsgi(example_api(**live.settings()))
    r = requests.post(api + "/v1/notes", json={"text": "hello"}, headers={"Authorization": "Bearer " + token},
                      timeout=10)
    assert r.status_code == 201 and r.json()["text"] == "hello" and r.json()["by"].startswith("user:")


def test_a_fastapi_app_under_uvicorn(live, serve_asgi, helper_clock):
    app = FastAPI()
    authmd = StarletteAuthmd(app, **live.settings(clock=helper_clock))

    @app.get("/v1/things")
    async def things(caller: Identity = Depends(authmd.require("api.read"))):
        return {"caller": caller.sub, "scopes": list(caller.scopes)}

    @app.delete("/v1/things")
    async def delete_things(caller: Identity = Depends(authmd.require("api.write"))):
        return {"deleted": True}

    api = serve_asgi(app)
    reg = assert_answers_like_authmd(live, api, "/v1/things", "/v1/things", "DELETE")
    bearer = {"Authorization": "Bearer " + reg["credential"]}
    r = requests.get(api + "/v1/things", headers=bearer, timeout=10)
    assert r.status_code == 200 and r.json() == {"caller": "registration:" + reg["registration_id"],
                                                 "scopes": ["api.read"]}
    revoke(live.app, reg["registration_id"])
    assert requests.get(api + "/v1/things", headers=bearer, timeout=10).status_code == 200  # cached
    helper_clock.advance(30)
    assert requests.get(api + "/v1/things", headers=bearer, timeout=10).status_code == 401


def test_a_plain_starlette_app(live, serve_asgi):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def endpoint(request):
        caller = await authmd.require("api.read")(request)
        return JSONResponse({"caller": caller.sub})

    app = Starlette(routes=[Route("/v1/things", endpoint)])
    authmd = StarletteAuthmd(app, **live.settings())
    api = serve_asgi(app)
    reg = live.register()
    r = requests.get(api + "/v1/things", headers={"Authorization": "Bearer " + reg["credential"]}, timeout=10)
    assert r.status_code == 200 and r.json()["caller"] == "registration:" + reg["registration_id"]
    r = requests.get(api + "/v1/things", timeout=10)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"


def test_the_wsgi_middleware(live, serve_wsgi, helper_clock):
    def upstream(environ, start_response):
        body = environ["authmd.identity"].sub.encode() if "authmd.identity" in environ else b"public"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    def scope(environ):
        return "api.write" if environ["REQUEST_METHOD"] == "POST" else "api.read"

    api = serve_wsgi(AuthmdMiddleware(upstream, scope=scope, public=("/healthz", "/docs/"),
                                      **live.settings(clock=helper_clock)))
    reg = assert_answers_like_authmd(live, api, "/v1/things", "/v1/things")
    bearer = {"Authorization": "Bearer " + reg["credential"]}
    assert requests.get(api + "/v1/things", headers=bearer, timeout=10).text == "registration:" + reg["registration_id"]
    assert requests.get(api + "/healthz", timeout=10).text == "public"
    assert requests.get(api + "/docs/intro", timeout=10).text == "public"
    assert requests.get(api + "/healthzx", timeout=10).status_code == 401  # exact paths, or prefixes ending in /
    revoke(live.app, reg["registration_id"])
    helper_clock.advance(30)
    assert requests.get(api + "/v1/things", headers=bearer, timeout=10).status_code == 401


def test_authmd_down_is_a_503_for_the_agent(live, serve_wsgi):
    from tests.fixtures.gunicorn import free_port
    api = serve_wsgi(example_api(**live.settings(
        introspection_endpoint=f"http://127.0.0.1:{free_port()}/oauth2/introspect", timeout=2)))
    r = requests.get(api + "/v1/notes", headers={"Authorization": "Bearer sk_anything"}, timeout=10)
    assert r.status_code == 503 and r.json()["error"] == "service_unavailable" and r.headers["Retry-After"]


@pytest.mark.parametrize("bad", ['api"read', "a b\r\nX: y"])
def test_an_adapter_refuses_bad_scope_names_at_declaration(live, bad):
    from authmd_resource.flask import Authmd as FlaskAuthmd
    with pytest.raises(ValueError):
        FlaskAuthmd(None, **live.settings()).require(bad)
    with pytest.raises(ValueError):
        StarletteAuthmd(None, **live.settings()).require(bad)
