"""Discovery room: RFC 9728 / RFC 8414 metadata and the served /auth.md."""
import json

from flask import Blueprint, Response, request

from .. import authdoc, keys

bp = Blueprint("well_known", __name__)
CACHE = "public, max-age=300"


def _json(body: bytes) -> Response:
    # the body is built once per worker and configuration (authdoc.cached), then served as bytes
    resp = Response(body, mimetype="application/json")
    resp.headers["Cache-Control"] = CACHE
    return resp


@bp.get("/.well-known/oauth-protected-resource")
@bp.get("/.well-known/oauth-protected-resource/api/")
def protected_resource():
    return _json(authdoc.protected_resource_json())


@bp.get("/.well-known/oauth-authorization-server")
def authorization_server():
    return _json(authdoc.authorization_server_json())


@bp.get("/.well-known/jwks.json")
def jwks():
    """The service's signing keys (RFC 7517): every key a valid identity assertion can be signed with."""
    resp = Response(json.dumps(keys.jwks(), separators=(",", ":")), mimetype="application/json")
    resp.headers["Cache-Control"] = CACHE
    return resp


@bp.get("/auth.md")
def auth_md():
    body, tag = authdoc.document()
    # If-None-Match uses the weak comparison (RFC 9110 13.1.2): W/"tag" and * match too;
    # parsed only when sent (most agents send none)
    if "If-None-Match" in request.headers and request.if_none_match.contains_weak(tag):
        resp = Response(status=304)
    else:
        resp = Response(body, content_type="text/markdown; charset=utf-8")
    resp.headers["ETag"] = f'"{tag}"'  # the tag is hex: no quoting needed
    resp.headers["Cache-Control"] = "public, max-age=60"
    return resp
