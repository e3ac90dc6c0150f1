"""Agent endpoints room: registration, the agent's side of the claim, the claim page's JSON button."""
from flask import Blueprint, jsonify, request

from .. import claims, idjag, mail, registration
from .. import ratelimit as rl
from ..extensions import db, limiter
from ..users import normalize_email
from ..util import ProtocolError, printable
from ..wire import ID_JAG
from .errors import TOKEN_MAX, json_body, no_store

bp = Blueprint("agent_auth", __name__)



def _ua() -> str | None:
    return printable(request.user_agent.string)


@bp.post("/agent/auth")
@rl.registration_limited  # the same counters as /agent/identity's
@rl.claim_mail_limit
def register():
    body = json_body({"type": (40, True), "requested_credential_type": (40, False),
                      "assertion_type": (100, False), "assertion": (16384, False)})
    kind = body["type"]
    wanted = body["requested_credential_type"] or "api_key"
    if kind == "anonymous":
        answer = registration.register_anonymous(wanted, ip=request.remote_addr, user_agent=_ua())
    elif kind == "identity_assertion":
        atype = body["assertion_type"]
        if atype is None or body["assertion"] is None:
            raise ProtocolError(400, "invalid_request", "assertion_type and assertion are required.")
        if atype == "verified_email":
            email = normalize_email(body["assertion"])
            answer = registration.register_verified_email(email, wanted, ip=request.remote_addr, user_agent=_ua())
        elif atype == ID_JAG:
            answer = idjag.register(body["assertion"], wanted, ip=request.remote_addr, user_agent=_ua())
        else:
            raise ProtocolError(400, "invalid_request", f"Unknown assertion_type {atype[:100]!r}.")
    else:
        raise ProtocolError(400, "invalid_request", f"Unknown type {kind[:40]!r}.")
    db.session.commit()
    mail.deliver_queued()  # after the commit: no lock waits on the mail server (the email-required flow)
    return no_store(answer)


@bp.post("/agent/auth/claim")
@limiter.limit(rl.limit_value("RATELIMIT_CLAIM_PER_IP"), scope="claim-ip")
@limiter.limit(rl.limit_value("RATELIMIT_CLAIM_PER_REGISTRATION"), key_func=rl.field_key("claim_token"),
               scope="claim-registration", exempt_when=rl.lacks_field("claim_token"))
@rl.claim_mail_limit
def claim():
    body = json_body({"claim_token": (TOKEN_MAX, True), "email": (320, True)})
    email = normalize_email(body["email"])
    answer = claims.request_claim(body["claim_token"], email, ip=request.remote_addr, user_agent=_ua())
    db.session.commit()
    mail.deliver_queued()
    return jsonify(answer)


@bp.post("/agent/auth/claim/attempt/challenge")
@limiter.limit(rl.limit_value("RATELIMIT_CHALLENGE_PER_IP"), scope="challenge-ip")
@limiter.limit(rl.limit_value("RATELIMIT_CHALLENGE_PER_REGISTRATION"), key_func=rl.field_key("claim_attempt_token"),
               scope="challenge-attempt", exempt_when=rl.lacks_field("claim_attempt_token"))
def challenge():
    body = json_body({"claim_attempt_token": (TOKEN_MAX, True)})
    answer = claims.mint_code(body["claim_attempt_token"], ip=request.remote_addr, user_agent=_ua())
    db.session.commit()
    return no_store(answer)


@bp.post("/agent/auth/claim/complete")
@limiter.limit(rl.limit_value("RATELIMIT_COMPLETE_PER_IP"), scope="complete-ip")
@limiter.limit(rl.limit_value("RATELIMIT_COMPLETE_PER_REGISTRATION"), key_func=rl.field_key("claim_token"),
               scope="complete-registration", exempt_when=rl.lacks_field("claim_token"))
def complete():
    body = json_body({"claim_token": (TOKEN_MAX, True), "otp": (32, True)})
    answer = claims.complete(body["claim_token"], body["otp"], ip=request.remote_addr, user_agent=_ua())
    db.session.commit()
    return no_store(answer)
