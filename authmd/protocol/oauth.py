"""OAuth endpoints room: POST /oauth2/token (RFC 7523 jwt-bearer) and POST /oauth2/revoke (RFC 7009).

Form-encoded bodies only; errors are RFC 6749 §5.2 objects {"error", "error_description"}; every answer
says Cache-Control: no-store and Pragma: no-cache. Over a rate limit: 429 rate_limit_exceeded (see
ratelimit.too_many: OAuth has no code for it).
"""
from flask import Blueprint, current_app, request
from flask_limiter.errors import RateLimitExceeded

from .. import ratelimit as rl
from .. import tokens, tx
from ..extensions import limiter
from ..util import ProtocolError, printable
from .errors import no_store, oauth_error

bp = Blueprint("oauth", __name__)
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FORM = "application/x-www-form-urlencoded"


class OAuthError(ProtocolError):
    """An RFC 6749 §5.2 error: answered as {"error", "error_description"}."""


@bp.errorhandler(ProtocolError)
def _oauth_error(exc: ProtocolError):
    tx.rollback()
    return oauth_error(exc.status, exc.code, exc.message, exc.headers)


@bp.errorhandler(RateLimitExceeded)
def _rate_limited(exc):
    return rl.too_many("oauth")


def _form(*names: str, required=()) -> dict:
    """The named form fields (each at most once, at most 16 KiB); RFC 6749 §3.2: form-encoded only."""
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit and (request.content_length or 0) > limit:
        raise OAuthError(413, "invalid_request", "The request body is larger than 64 KiB.")
    if request.mimetype != FORM:
        raise OAuthError(400, "invalid_request", f"Send the parameters as Content-Type: {FORM}.")
    form = request.form
    out = {}
    for name in names:
        values = form.getlist(name)
        if len(values) > 1:
            raise OAuthError(400, "invalid_request", f"The parameter {name} is sent more than once.")
        value = values[0] if values else None
        if value is not None and len(value) > 16384:
            raise OAuthError(400, "invalid_request", f"The parameter {name} is too long.")
        if name in required and not value:
            raise OAuthError(400, "invalid_request", f"The parameter {name} is required.")
        out[name] = value or None
    return out


def _ua():
    return printable(request.user_agent.string)


@bp.post("/oauth2/token")
@limiter.limit(rl.limit_value("RATELIMIT_OAUTH_TOKEN_PER_IP"), scope="oauth-token-ip")
def token():
    params = _form("grant_type", "assertion", "resource")
    if params["grant_type"] != JWT_BEARER:  # missing too, as the public reference service answers
        raise OAuthError(400, "unsupported_grant_type", f"grant_type must be {JWT_BEARER}.")
    if not params["assertion"]:
        raise OAuthError(400, "invalid_request", "The parameter assertion is required.")
    resource = params["resource"]
    if resource is not None and resource.rstrip("/") != current_app.config["RESOURCE"].rstrip("/"):
        raise OAuthError(400, "invalid_target", f"resource must be {current_app.config['RESOURCE']}.")
    answer = tokens.exchange(params["assertion"], resource=resource, ip=request.remote_addr, user_agent=_ua())
    tx.commit()
    return no_store(answer)


@bp.post("/oauth2/revoke")
@limiter.limit(rl.limit_value("RATELIMIT_OAUTH_REVOKE_PER_IP"), scope="oauth-revoke-ip")
def revoke():
    params = _form("token", "token_type_hint", required=("token",))
    hint = params["token_type_hint"]
    if hint is not None and hint not in ("access_token", "refresh_token"):
        raise OAuthError(400, "unsupported_token_type", "token_type_hint must be access_token or refresh_token.")
    tokens.revoke_token(params["token"], ip=request.remote_addr, user_agent=_ua())
    tx.commit()
    return current_app.response_class(status=200, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})
