"""Provider events room: POST /agent/event/notify, Security Event Tokens (RFC 8417) pushed per RFC 8935.

The body is the SET itself (Content-Type: application/secevent+jwt). Accepted: 202 with an empty body,
also when no event in it is one authmd acts on. Refused: 400 {"err", "description"} with RFC 8935's
codes. The revoked-assertion event tears down everything bound to the subject exactly as a v0.1 logout
token does (authmd/idjag.py revoke), with the same replay store. Refused SETs count against a per-IP limit
(as refused logout tokens at /agent/auth/revoke); over it, 429 {"err": "rate_limit_exceeded"} with
Retry-After (RFC 8935 has no code for it: ratelimit.too_many).
"""
from flask import Blueprint, current_app, jsonify, request
from flask_limiter.errors import RateLimitExceeded

from .. import idjag, tx
from .. import ratelimit as rl
from ..extensions import limiter
from ..util import ProtocolError, printable

bp = Blueprint("events", __name__)
SET_MEDIA_TYPE = "application/secevent+jwt"
# authmd's error codes -> RFC 8935 §2.3 err values
ERR = {"invalid_issuer": "invalid_issuer", "invalid_audience": "invalid_audience",
       "invalid_signature": "authentication_failed", "expired": "authentication_failed"}


class SetError(ProtocolError):
    pass


@bp.errorhandler(ProtocolError)
def _set_error(exc: ProtocolError):
    tx.rollback()
    code = exc.code if isinstance(exc, SetError) else ERR.get(exc.code, "invalid_request")
    if exc.status >= 500 or exc.status == 429:  # not a verdict on the SET: the sender retries
        resp = jsonify({"err": exc.code, "description": exc.message})
        resp.status_code = exc.status
        resp.headers["Retry-After"] = exc.headers.get("Retry-After", "60")
        return resp
    resp = jsonify({"err": code, "description": exc.message})
    resp.status_code = 400
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.errorhandler(RateLimitExceeded)
def _rate_limited(exc):
    return rl.too_many("set")


@bp.post("/agent/event/notify")
@limiter.limit(rl.limit_value("RATELIMIT_EVENTS_PER_IP"), scope="events-ip", deduct_when=rl.refused)
def notify():
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit and (request.content_length or 0) > limit:
        raise SetError(400, "invalid_request", "The SET is larger than 64 KiB.")
    if request.mimetype != SET_MEDIA_TYPE:
        raise SetError(400, "invalid_request", f"Send the SET as the body with Content-Type: {SET_MEDIA_TYPE}.")
    try:
        token = request.get_data(cache=False).decode("ascii").strip()
    except UnicodeDecodeError:
        raise SetError(400, "invalid_request", "The body must be a compact JWS.") from None
    if not token:
        raise SetError(400, "invalid_request", "The body is empty: send the SET.")
    idjag.revoke(token, kind="set", ip=request.remote_addr, user_agent=printable(request.user_agent.string))
    tx.commit()
    return current_app.response_class(status=202)
