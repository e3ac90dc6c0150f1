"""Protocol errors room: every failure an agent sees is JSON {"error", "message"}."""
import logging

from flask import jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from .. import tx
from ..util import ProtocolError
from .body import json_object

log = logging.getLogger("authmd")

JSON_PREFIXES = ("/agent/", "/api/", "/.well-known/", "/auth.md", "/healthz", "/readyz", "/dev-provider/",
                 "/oauth2/")
HTML_PREFIXES = ("/agent/auth/claim/view",)
# people's pages whose every answer is HTML, whatever the client asks for (the latest claim page)
HTML_ONLY = ("/claim", "/claim/confirm")

HTTP_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 410: "gone", 413: "request_too_large",
              415: "unsupported_media_type", 429: "rate_limited", 500: "server_error",
              503: "service_unavailable"}


def wants_json() -> bool:
    """JSON for an agent-facing path (the claim page is for people), for a client that prefers JSON to
    HTML in its Accept header, or one that sent a JSON body; HTML otherwise. Unmatched URLs included
    (/auth.md promises agents JSON for any path)."""
    path = request.path
    if path in HTML_ONLY:
        return False
    if not path.startswith(HTML_PREFIXES) and (path.startswith(JSON_PREFIXES) or path == "/agent/auth"):
        return True
    if request.mimetype == "application/json" or request.mimetype.endswith("+json"):
        return True
    accept = request.accept_mimetypes
    return accept["application/json"] > accept["text/html"]


TOKEN_MAX = 200  # every token authmd hands out is far shorter: a longer field is refused unread


def no_store(payload: dict):
    """A JSON answer that carries a secret (a credential, an assertion, a code): never cached."""
    resp = jsonify(payload)
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Pragma"] = "no-cache"
    return resp


def oauth_error(status: int, code: str, description: str, headers: dict | None = None):
    """RFC 6749 §5.2 {"error", "error_description"}, never cached (the OAuth endpoints' one error shape)."""
    resp = jsonify({"error": code, "error_description": description})
    resp.status_code = status
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Pragma"] = "no-cache"
    return resp


def json_error(status: int, code: str, message: str, headers: dict | None = None, extra: dict | None = None):
    resp = jsonify({"error": code, "message": message, **(extra or {})})
    resp.status_code = status
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    if (status >= 500 or status == 429) and "Retry-After" not in resp.headers:
        resp.headers["Retry-After"] = "60"
    resp.headers["Cache-Control"] = "no-store"
    return resp


def html_error(status: int, title: str, message: str):
    return render_template("error.html", status=status, title=title, message=message), status


def register(app):
    # one JSON style for every answer: compact (jsonify's production form, in debug mode too), keys in the
    # order the code writes them (error before message, issuer first in the metadata, as the RFCs show them)
    app.json.compact = True
    app.json.sort_keys = False

    @app.errorhandler(ProtocolError)
    def protocol_error(exc: ProtocolError):
        tx.rollback()
        if wants_json():
            return json_error(exc.status, exc.code, exc.message, exc.headers, exc.extra)
        return html_error(exc.status, exc.code.replace("_", " "), exc.message)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        tx.rollback()
        code = HTTP_CODES.get(exc.code, "invalid_request" if exc.code < 500 else "server_error")
        message = {413: "The request body is larger than 64 KiB.",
                   404: "There is nothing at this path.",
                   405: f"{request.method} is not allowed here."}.get(exc.code, exc.description)
        headers = {}
        if exc.code == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
            headers["Allow"] = ", ".join(exc.valid_methods)
        if exc.code == 429:
            headers["Retry-After"] = str(getattr(exc, "retry_after", None) or 60)
            message = "Too many requests; slow down and retry later."
        if wants_json():
            return json_error(exc.code, code, message, headers)
        resp = html_error(exc.code, exc.name, message)
        return resp[0], resp[1], headers

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        tx.rollback(unexpected=True)
        log.exception("unhandled error on %s %s", request.method, request.path)
        if wants_json():
            return json_error(500, "server_error", "Something went wrong on our side; retry later.")
        return html_error(500, "Server error", "Something went wrong on our side.")


def json_body(fields: dict) -> dict:
    """The request's JSON object (parsed once per request, body.json_object), with each named field a string
    of at most the given length.

    fields: {name: (max_length, required)}. Unknown extra fields are ignored (forward compatible).
    """
    data = json_object()
    out = {}
    for name, (max_len, required) in fields.items():
        value = data.get(name)
        if value is None:
            if required:
                raise ProtocolError(400, "invalid_request", f"The field \"{name}\" is required.")
            out[name] = None
            continue
        if not isinstance(value, str):
            raise ProtocolError(400, "invalid_request", f"The field \"{name}\" must be a string.")
        if not value or len(value) > max_len:
            raise ProtocolError(400, "invalid_request",
                                f"The field \"{name}\" must be 1 to {max_len} characters long.")
        out[name] = value
    return out
