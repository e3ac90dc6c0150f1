"""authmd_resource as a plain WSGI middleware: every request needs a live credential, except on public paths.

    app = AuthmdMiddleware(app, issuer="https://auth.example.com", client_id="rs_…", client_secret=SECRET,
                           scope="api.read", public=("/healthz",))

scope: the scope(s) every request needs (a name, names separated by spaces, or a function of the WSGI
environ returning them, e.g. to ask more of writes); None: any live credential. The caller's Identity is
put in environ["authmd.identity"]. The middleware also serves /.well-known/oauth-protected-resource.
"""
from wsgiref.util import application_uri

from . import Client, Denied, Unavailable, check_scopes

ENVIRON_KEY = "authmd.identity"


class AuthmdMiddleware:
    def __init__(self, app, *, client: Client | None = None, scope=None, public=(), **settings):
        self.app = app
        self.client = client or Client(**settings)
        self.scope = scope if callable(scope) else check_scopes(scope or ())
        self.public = tuple(public)
        self.metadata_paths = set(self.client.metadata_paths())

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO") or "/"
        base = application_uri(environ)
        if path in self.metadata_paths and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            body = self.client.metadata_body(base)
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                                      ("Cache-Control", "public, max-age=300")])
            return [body]
        if any(path == p or (p.endswith("/") and path.startswith(p)) for p in self.public):
            return self.app(environ, start_response)
        needed = check_scopes(self.scope(environ) or ()) if callable(self.scope) else self.scope
        try:
            environ[ENVIRON_KEY] = self.client.identify(environ.get("HTTP_AUTHORIZATION"), needed, base)
        except (Denied, Unavailable) as exc:
            body = exc.body
            status = {401: "401 Unauthorized", 403: "403 Forbidden", 503: "503 Service Unavailable"}[exc.status]
            start_response(status, [*exc.headers, ("Content-Length", str(len(body)))])
            return [body]
        return self.app(environ, start_response)
