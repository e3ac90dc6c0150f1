"""Forward-auth room: GET /auth/forward, the credential check for reverse proxies (nginx auth_request,
Traefik ForwardAuth, Caddy forward_auth) in front of the team's API."""
import json
import logging
import re

from flask import Blueprint, Response, request

from .. import tx
from ..util import ProtocolError
from . import bearer
from .errors import json_error
from .introspect import describe

log = logging.getLogger("authmd")
bp = Blueprint("forward", __name__)
PATH = "/auth/forward"
SCOPE_RE = re.compile(r"[A-Za-z0-9._:\-]{1,100}")
MAX_REQUIRED = 20
_SEPARATORS = re.compile(r"[ ,]")  # a space between names; a comma where a server joined repeated headers
# what the proxy passes upstream (the names its configuration lists)
HEADERS = {"sub": "X-Authmd-Subject", "scope": "X-Authmd-Scopes", "client_id": "X-Authmd-Registration",
           "agent_iss": "X-Authmd-Agent-Iss", "agent_sub": "X-Authmd-Agent-Sub"}
_UNSAFE = re.compile(r"[^\x21-\x24\x26-\x7e ]")  # printable ASCII and space, less '%'


def header_value(text: str, limit: int = 512) -> str:
    """A value fit for an HTTP header whatever it holds (a provider's sub may be any Unicode text): every
    byte outside printable ASCII, and '%' itself, is percent-encoded (UTF-8), so no CR, LF or NUL can
    reach the proxy and the value decodes back exactly; cut to at most `limit` characters between two
    characters of the original (a proxy keeps an auth answer's headers in a small buffer)."""
    if len(text) <= limit and _UNSAFE.search(text) is None:
        return text  # the usual case: ids and scope names
    out, size = [], 0
    for char in text:
        piece = char if not _UNSAFE.match(char) else "".join(
            f"%{b:02X}" for b in char.encode("utf-8", "surrogatepass"))
        size += len(piece)
        if size > limit:
            break
        out.append(piece)
    return "".join(out)


def required_scopes() -> list[str]:
    """The scopes the route needs: every name in X-Authmd-Required-Scope headers and ?scope= parameters,
    separated by spaces (or commas). Both sources add up, so a client whose own header reaches us through the proxy can
    only ask for more, never for less than the proxy's configuration."""
    values = request.headers.getlist("X-Authmd-Required-Scope") + request.args.getlist("scope")
    names = list(dict.fromkeys(name for value in values for name in _SEPARATORS.split(value) if name))
    if len(names) > MAX_REQUIRED or not all(SCOPE_RE.fullmatch(n) for n in names):
        raise ProtocolError(400, "invalid_request",
                            "X-Authmd-Required-Scope and ?scope= take scope names (letters, digits, . _ : -) "
                            "separated by spaces.")
    return names


@bp.get(PATH, provide_automatic_options=False)
def forward():
    needed = required_scopes()
    token = bearer.from_header(request.environ)
    if token is None:
        return bearer.unauthorized()
    try:
        snapshots = bearer.check(token)
    except ProtocolError as exc:
        return bearer.invalid(exc.message)
    granted = snapshots[0].scope_list
    if any(name not in granted for name in needed):
        return bearer.insufficient(" ".join(needed))
    claims = describe(*snapshots)
    resp = Response(json.dumps({k: claims[k] for k in ("sub", "scope", "client_id", "registration_type",
                                                       "protocol", "agent_iss", "agent_sub") if k in claims},
                               separators=(",", ":")), mimetype="application/json")
    for key, name in HEADERS.items():
        # the agent headers go out empty when there is no delegation: a proxy that copies a header the
        # answer lacks may pass the client's own value, or a placeholder (Caddy before 2.9), upstream
        resp.headers[name] = header_value(claims.get(key, ""))
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.route(PATH, methods=["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def wrong_method():
    # OPTIONS too: an automatic 200 would read as "allowed" to a proxy that forwarded the method
    return json_error(405, "method_not_allowed", f"{request.method} is not allowed here; the proxy sends GET.",
                      {"Allow": "GET, HEAD"})


@bp.errorhandler(ProtocolError)
def _refused(exc: ProtocolError):
    tx.rollback()
    return json_error(exc.status, exc.code, exc.message, exc.headers)


@bp.errorhandler(Exception)
def _unexpected(exc: Exception):
    from werkzeug.exceptions import HTTPException
    if isinstance(exc, HTTPException):
        tx.rollback()
        return json_error(exc.code or 400, "invalid_request", exc.description or "The request could not be read.")
    tx.rollback(unexpected=True)
    log.exception("unhandled error on %s %s", request.method, request.path)
    return json_error(500, "server_error", "Something went wrong on our side; retry later.")
