"""Introspection room: POST /oauth2/introspect (RFC 7662) for the team's resource servers, and the one
description of a live credential that introspection and forward auth both give."""
import base64
import binascii
import calendar
import json
import logging
from urllib.parse import parse_qsl, unquote_plus

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import HTTPException

from .. import resource_servers, tokens, tx
from ..models import WIRE_TYPES
from ..util import ProtocolError
from . import bearer
from .errors import oauth_error

log = logging.getLogger("authmd")
bp = Blueprint("introspect", __name__)
PATH = "/oauth2/introspect"
INACTIVE = b'{"active":false}'
MAX_FIELDS = 20


def _epoch(dt) -> int:
    return calendar.timegm(dt.timetuple())


def subject(user, registration) -> str:
    """A stable id of who is behind a credential: `user:<id>` once a person owns it, else
    `registration:<registration id>` (an unclaimed anonymous registration). A claim moves a credential
    from the second to the first. A JWT access token carries the same `sub`."""
    return tokens.subject(user.id if user is not None else None, registration.id)


def describe(cred, reg, user, delegation) -> dict:
    """The RFC 7662 answer for a live credential of either protocol (snapshots from bearer.check): the
    protocol from the credential's row; for the latest protocol the registration type in its wire words
    and the audience the token was asked for."""
    cfg = current_app.config
    out = {"active": True, "scope": " ".join(cred.scope_list), "token_type": "Bearer"}
    ends = [cred.expires_at]
    if reg.status == "pending":
        ends.append(reg.claim_expires_at)  # an unclaimed registration's key stops at the claim deadline
    ends = [t for t in ends if t is not None]
    if ends:
        out["exp"] = _epoch(min(ends))
    latest = cred.protocol == "latest"
    out.update({"iat": _epoch(cred.created_at), "iss": cfg["ISSUER"],
                "aud": (cred.resource or cfg["RESOURCE"]) if latest else cfg["RESOURCE"],
                "sub": subject(user, reg), "client_id": reg.id,
                "registration_type": WIRE_TYPES.get(reg.type, reg.type) if latest else reg.type,
                "protocol": cred.protocol})
    if delegation is not None:
        out["agent_iss"], out["agent_sub"] = delegation.iss, delegation.sub
    return out


def _row(token: str) -> dict | None:
    try:
        return describe(*bearer.check(token))
    except ProtocolError:
        return None  # why is nobody's business but authmd's: revoked, expired, ended, disabled, unknown


# Token kinds by their first characters, each answered from its credentials row (None: not live): API keys,
# opaque access tokens, and JWT access tokens ('{"' in base64url), which are rows keyed by the digest of the
# whole token like the others, so a revoked one is inactive at once. A string no kind claims is never
# looked up.
FAMILIES = {"sk_": _row, "at_": _row, bearer.JWT_START: _row}


def answer(token: str) -> dict | None:
    """The introspection answer for a presented token: its description when live, else None."""
    family = FAMILIES.get(token[:3])
    return family(token) if family is not None else None


# ------------------------------------------------------------------------------------------------ the endpoint
def _client_credentials() -> tuple[str, str]:
    """client_secret_basic (RFC 6749 §2.3.1): both parts form-urlencoded, then Base64."""
    header = request.environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        raise resource_servers.invalid_client(
            "Authenticate as a resource server with HTTP Basic: client_id and client_secret.")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise resource_servers.invalid_client("The Basic credentials are not valid Base64 of id:secret.") from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise resource_servers.invalid_client("The Basic credentials are not valid Base64 of id:secret.")
    return unquote_plus(client_id), unquote_plus(secret)


def _token() -> str:
    if request.mimetype != "application/x-www-form-urlencoded":
        raise ProtocolError(400, "invalid_request", "Send the body as application/x-www-form-urlencoded.")
    # the body is a few dozen bytes: parse_qsl reads it in a few microseconds, where Werkzeug's form parser
    # (streams, MultiDict) was a third of the request (bench/micro_resource.py)
    try:
        pairs = parse_qsl(request.get_data(cache=False).decode("utf-8", "replace"), keep_blank_values=True,
                          max_num_fields=MAX_FIELDS)
    except ValueError:
        raise ProtocolError(400, "invalid_request", f"The form has more than {MAX_FIELDS} fields.") from None
    names = [name for name, _ in pairs]
    if "client_secret" in names or "client_id" in names:
        raise ProtocolError(400, "invalid_request",
                            "Send the client credentials in the Authorization header only (client_secret_basic).")
    for name in ("token", "token_type_hint"):
        if names.count(name) > 1:
            raise ProtocolError(400, "invalid_request", f"The parameter {name} is given more than once.")
    token = dict(pairs).get("token", "")
    if not token:
        raise ProtocolError(400, "invalid_request", "The parameter token is required.")
    return token  # token_type_hint is optional and only a hint (RFC 7662 §2.1): the prefix says the family


@bp.post(PATH)
def introspect():
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit and (request.content_length or 0) > limit:
        raise ProtocolError(413, "invalid_request", "The request body is larger than 64 KiB.")
    caller = resource_servers.authenticate(*_client_credentials())
    body = answer(_token())
    if resource_servers.touch(caller):
        tx.commit()
    resp = Response(json.dumps(body, separators=(",", ":")) if body is not None else INACTIVE,
                    mimetype="application/json")  # compact, as every answer (protocol/errors.register)
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Pragma"] = "no-cache"
    return resp


@bp.route(PATH, methods=["GET", "PUT", "PATCH", "DELETE"])
def wrong_method():
    return oauth_error(405, "invalid_request", f"{request.method} is not allowed here; POST the form.",
                       {"Allow": "POST, OPTIONS"})


@bp.errorhandler(ProtocolError)
def _refused(exc: ProtocolError):
    tx.rollback()
    return oauth_error(exc.status, exc.code, exc.message, exc.headers)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    tx.rollback()
    if exc.code == 413:
        return oauth_error(413, "invalid_request", "The request body is larger than 64 KiB.")
    return oauth_error(exc.code or 400, "invalid_request" if (exc.code or 400) < 500 else "server_error",
                       exc.description or "The request could not be read.")


@bp.errorhandler(Exception)
def _unexpected(exc: Exception):
    tx.rollback(unexpected=True)
    log.exception("unhandled error on %s %s", request.method, request.path)
    return oauth_error(500, "server_error", "Something went wrong on our side; retry later.", {"Retry-After": "60"})
