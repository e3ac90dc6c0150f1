"""Discovery room: RFC 9728 / RFC 8414 metadata and the served /auth.md."""
from flask import Blueprint, Response, jsonify, request

from .. import authdoc

bp = Blueprint("well_known", __name__)
CACHE = "public, max-age=300"


@bp.get("/.well-known/oauth-protected-resource")
@bp.get("/.well-known/oauth-protected-resource/api/")
def protected_resource():
    resp = jsonify(authdoc.protected_resource_metadata())
    resp.headers["Cache-Control"] = CACHE
    return resp


@bp.get("/.well-known/oauth-authorization-server")
def authorization_server():
    resp = jsonify(authdoc.authorization_server_metadata())
    resp.headers["Cache-Control"] = CACHE
    return resp


@bp.get("/auth.md")
def auth_md():
    text = authdoc.render()
    tag = authdoc.etag(text)
    # If-None-Match uses the weak comparison (RFC 9110 13.1.2): W/"tag" and * match too
    if request.if_none_match.contains_weak(tag):
        resp = Response(status=304)
    else:
        resp = Response(text, mimetype="text/markdown")
        resp.headers["Content-Type"] = "text/markdown; charset=utf-8"
    resp.set_etag(tag)
    resp.headers["Cache-Control"] = "public, max-age=60"
    return resp
