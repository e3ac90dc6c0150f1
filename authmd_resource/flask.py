"""authmd_resource for Flask: an extension with a ``require(scope)`` decorator.

    authmd = Authmd(app, issuer="https://auth.example.com", client_id="rs_…", client_secret=SECRET)

    @app.get("/v1/things")
    @authmd.require("api.read")
    def things():
        return {"caller": current_identity().sub}

Settings may also come from app.config: AUTHMD_ISSUER, AUTHMD_CLIENT_ID, AUTHMD_CLIENT_SECRET and,
optionally, AUTHMD_RESOURCE, AUTHMD_INTROSPECTION_ENDPOINT, AUTHMD_SCOPES_SUPPORTED, AUTHMD_RESOURCE_NAME,
AUTHMD_JWKS_URI.
The extension also serves the API's /.well-known/oauth-protected-resource, naming authmd.
"""
import functools

from flask import Response, current_app, g, request

from . import Client, Denied, Identity, Unavailable, check_scopes

CONFIG = {"issuer": "AUTHMD_ISSUER", "client_id": "AUTHMD_CLIENT_ID", "client_secret": "AUTHMD_CLIENT_SECRET",
          "resource": "AUTHMD_RESOURCE", "introspection_endpoint": "AUTHMD_INTROSPECTION_ENDPOINT",
          "scopes_supported": "AUTHMD_SCOPES_SUPPORTED", "resource_name": "AUTHMD_RESOURCE_NAME",
          "jwks_uri": "AUTHMD_JWKS_URI"}


def current_identity() -> Identity | None:
    """The caller of the current request, once a require() decorator let it in."""
    return g.get("authmd_identity")


def _answer(exc) -> Response:
    return Response(exc.body, status=exc.status, headers=exc.headers)


class Authmd:
    def __init__(self, app=None, *, client: Client | None = None, **settings):
        self.client = client
        self._settings = settings
        if app is not None:
            self.init_app(app)

    def init_app(self, app) -> None:
        if self.client is None:
            settings = {key: app.config[name] for key, name in CONFIG.items() if app.config.get(name) is not None}
            settings.update(self._settings)
            self.client = Client(**settings)
        for path in self.client.metadata_paths():
            app.add_url_rule(path, endpoint=f"authmd_resource_metadata{path}", view_func=self._metadata,
                             methods=["GET"])
        app.extensions["authmd_resource"] = self

    def _metadata(self):
        resp = Response(self.client.metadata_body(request.host_url), mimetype="application/json")
        resp.headers["Cache-Control"] = "public, max-age=300"
        return resp

    def require(self, *scopes: str):
        """Let a view run only for a live credential holding every scope named (none: any live credential)."""
        needed = check_scopes(scopes)

        def decorate(view):
            @functools.wraps(view)
            def wrapper(*args, **kwargs):
                try:
                    g.authmd_identity = self.client.identify(request.headers.get("Authorization"), needed,
                                                             request.host_url)
                except (Denied, Unavailable) as exc:
                    return _answer(exc)
                return view(*args, **kwargs)
            return wrapper
        return decorate

    @staticmethod
    def of(app=None) -> "Authmd":
        return (app or current_app).extensions["authmd_resource"]
