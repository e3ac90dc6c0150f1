"""Latest agent endpoints room: POST /agent/identity, /agent/identity/claim, /agent/identity/claim/complete.
Errors are {"error", "message"} JSON like v0.1's (the error handlers of protocol/errors.py); over a rate
limit, 429 rate_limit_exceeded with retry_after (decision 10)."""
from flask import Blueprint, request
from flask_limiter.errors import RateLimitExceeded

from .. import identity, latest_claims, tx
from .. import ratelimit as rl
from ..extensions import limiter
from ..util import ProtocolError, printable
from ..wire import ID_JAG
from .errors import TOKEN_MAX, json_body, no_store

bp = Blueprint("agent_identity", __name__)


@bp.errorhandler(RateLimitExceeded)
def _rate_limited(exc):
    return rl.too_many("latest")


def _who() -> dict:
    return {"ip": request.remote_addr, "user_agent": printable(request.user_agent.string)}


@bp.post("/agent/identity")
@rl.registration_limited  # the same counters as /agent/auth's: service_auth counts as identity_assertion
@limiter.limit(rl.limit_value("RATELIMIT_REFRESH_PER_IP"), scope="refresh-ip",
               exempt_when=lambda: rl.registration_kind() != "refresh")
def register():
    body = json_body({"type": (40, True), "login_hint": (320, False), "assertion_type": (100, False),
                      "assertion": (16384, False), "refresh_token": (TOKEN_MAX, False)})
    kind = body["type"]
    if kind == "anonymous":
        answer = identity.register_anonymous(**_who())
    elif kind == "service_auth":
        if body["login_hint"] is None:
            raise ProtocolError(400, "invalid_login_hint", "login_hint (the person's email address) is required.")
        answer = identity.register_service_auth(body["login_hint"], **_who())
    elif kind == "identity_assertion":
        if body["assertion_type"] != ID_JAG or body["assertion"] is None:
            raise ProtocolError(400, "invalid_request",
                                f"identity_assertion needs assertion_type \"{ID_JAG}\" and the assertion.")
        answer = identity.register_id_jag(body["assertion"], **_who())
    elif kind == "refresh":
        if body["refresh_token"] is None:
            raise ProtocolError(400, "invalid_request", "refresh needs the refresh_token.")
        answer = identity.refresh(body["refresh_token"], **_who())
    else:
        raise ProtocolError(400, "invalid_request",
                            "type must be anonymous, service_auth, identity_assertion or refresh.")
    tx.commit()
    return no_store(answer)


@bp.post("/agent/identity/claim")
@limiter.limit(rl.limit_value("RATELIMIT_IDENTITY_CLAIM_PER_IP"), scope="identity-claim-ip")
@limiter.limit(rl.limit_value("RATELIMIT_IDENTITY_CLAIM_PER_REGISTRATION"), key_func=rl.field_key("claim_token"),
               scope="identity-claim-registration", exempt_when=rl.lacks_field("claim_token"))
def claim():
    body = json_body({"type": (40, True), "claim_token": (TOKEN_MAX, True), "login_hint": (320, True)})
    if body["type"] != "service_auth":
        raise ProtocolError(400, "invalid_request", "type must be \"service_auth\".")
    hint = identity.login_hint(body["login_hint"], "invalid_request")
    answer = latest_claims.request(body["claim_token"], hint, **_who())
    tx.commit()
    return no_store(answer)


@bp.post("/agent/identity/claim/complete")
@limiter.limit(rl.limit_value("RATELIMIT_IDENTITY_COMPLETE_PER_IP"), scope="identity-complete-ip")
@limiter.limit(rl.limit_value("RATELIMIT_IDENTITY_COMPLETE_PER_REGISTRATION"), key_func=rl.field_key("claim_token"),
               scope="identity-complete-registration", exempt_when=rl.lacks_field("claim_token"))
def complete():
    body = json_body({"claim_token": (TOKEN_MAX, True), "user_code": (32, True)})
    answer = identity.complete_claim(body["claim_token"], body["user_code"], **_who())
    tx.commit()
    return no_store(answer)
