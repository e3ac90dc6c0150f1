"""Bearer room: the one check of a presented credential and its RFC 6750 / RFC 9728 answers, shared by
require_credential (authmd's own API), token introspection and forward auth."""
from flask import current_app

from .. import credentials, tx
from ..tokens import MAX_ACCESS_TOKEN_LENGTH
from ..util import ProtocolError
from .errors import json_error

# every opaque credential authmd issues is far shorter, a JWT access token (eyJ…) at most
# MAX_ACCESS_TOKEN_LENGTH; a longer string is never one of ours, and is not hashed or looked up
MAX_TOKEN_LENGTH = 200
JWT_START = "eyJ"  # '{"' in base64url: how every JOSE header begins


def from_header(environ) -> str | None:
    """The token of `Authorization: Bearer <token>` (the scheme in any case), or None without one."""
    header = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if not header or scheme.lower() != "bearer" or not token:
        return None
    return token


def check(token: str):
    """(credential, registration, user, delegation) read-only snapshots of a live credential (user and
    delegation None when absent); else ProtocolError 401 invalid_token, after the refused request's
    transaction was ended (tx.rollback writes what the refusal leaves behind: an unclaimed registration
    found past its deadline is marked expired). An accepted call records last_used_at (at most once a
    minute), whichever door it came through. A JWT access token is checked by its row like any other
    credential (its digest is the key): revoked at authmd, it is refused here at once."""
    if len(token) > MAX_TOKEN_LENGTH and (len(token) > MAX_ACCESS_TOKEN_LENGTH or not token.startswith(JWT_START)):
        raise ProtocolError(401, "invalid_token", "The credential is not known.")
    try:
        return credentials.authenticate(token)
    except ProtocolError:
        tx.rollback()
        raise


def challenge(extra: str = "") -> str:
    prm = current_app.config["ISSUER"] + "/.well-known/oauth-protected-resource"
    return f'Bearer {extra}resource_metadata="{prm}"'


def unauthorized():
    return json_error(401, "unauthorized",
                      "Send Authorization: Bearer <credential>; see the resource metadata to get one.",
                      {"WWW-Authenticate": challenge()})


def invalid(message: str):
    return json_error(401, "invalid_token", message, {"WWW-Authenticate": challenge('error="invalid_token", ')})


def insufficient(scope: str):
    """403 for a live credential without `scope` (one name, or several separated by spaces; callers pass
    only scope names checked against a strict pattern, so the challenge needs no escaping)."""
    return json_error(403, "insufficient_scope", f"This call needs the scope {scope}.",
                      {"WWW-Authenticate": challenge(f'error="insufficient_scope", scope="{scope}", ')})
