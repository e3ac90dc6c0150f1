"""Agent endpoints room: registration, the agent's side of the claim, the claim page's JSON button."""
from flask import Blueprint, jsonify, request

from .. import claims, registration
from ..extensions import db, limiter
from ..users import normalize_email
from ..util import ProtocolError, printable
from .errors import json_body

bp = Blueprint("agent_auth", __name__)

ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"
TOKEN_MAX = 200


def _no_store(payload: dict):
    resp = jsonify(payload)
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Pragma"] = "no-cache"
    return resp


def _ua() -> str | None:
    return printable(request.user_agent.string)


def _registration_kind() -> str:
    data = request.get_json(silent=True) if request.mimetype == "application/json" else None
    if isinstance(data, dict) and data.get("type") == "identity_assertion":
        return "identity_assertion"
    return "anonymous"


@bp.post("/agent/auth")
@limiter.limit(lambda: _limit("RATELIMIT_ANONYMOUS_PER_IP", "5/hour"),
               exempt_when=lambda: _registration_kind() != "anonymous")
@limiter.limit(lambda: _limit("RATELIMIT_ASSERTION_PER_IP", "60/hour"),
               exempt_when=lambda: _registration_kind() != "identity_assertion")
@limiter.limit(lambda: _limit("RATELIMIT_ANONYMOUS_GLOBAL", "100/hour"), key_func=lambda: "global-anonymous",
               scope="global-anonymous", exempt_when=lambda: _registration_kind() != "anonymous")
@limiter.limit(lambda: _limit("RATELIMIT_ASSERTION_GLOBAL", "1000/hour"), key_func=lambda: "global-assertion",
               scope="global-assertion", exempt_when=lambda: _registration_kind() != "identity_assertion")
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
            answer = _register_id_jag(body["assertion"], wanted)
        else:
            raise ProtocolError(400, "invalid_request", f"Unknown assertion_type {atype[:100]!r}.")
    else:
        raise ProtocolError(400, "invalid_request", f"Unknown type {kind[:40]!r}.")
    db.session.commit()
    return _no_store(answer)


def _register_id_jag(assertion: str, wanted: str) -> dict:
    try:
        from .. import idjag
    except ImportError:
        raise ProtocolError(400, "issuer_not_enabled", "No identity provider is trusted by this service.") from None
    return idjag.register(assertion, wanted, ip=request.remote_addr, user_agent=_ua())


def _limit(key: str, default: str) -> str:
    from flask import current_app
    return current_app.config.get(key) or default


@bp.post("/agent/auth/claim")
@limiter.limit(lambda: _limit("RATELIMIT_CLAIM_PER_IP", "30/hour"))
def claim():
    body = json_body({"claim_token": (TOKEN_MAX, True), "email": (320, True)})
    email = normalize_email(body["email"])
    answer = claims.request_claim(body["claim_token"], email, ip=request.remote_addr, user_agent=_ua())
    db.session.commit()
    return jsonify(answer)


@bp.post("/agent/auth/claim/attempt/challenge")
@limiter.limit(lambda: _limit("RATELIMIT_CHALLENGE_PER_IP", "60/hour"))
def challenge():
    body = json_body({"claim_attempt_token": (TOKEN_MAX, True)})
    answer = claims.mint_code(body["claim_attempt_token"], ip=request.remote_addr, user_agent=_ua())
    db.session.commit()
    return _no_store(answer)


@bp.post("/agent/auth/claim/complete")
@limiter.limit(lambda: _limit("RATELIMIT_COMPLETE_PER_IP", "120/hour"))
def complete():
    body = json_body({"claim_token": (TOKEN_MAX, True), "otp": (32, True)})
    answer = claims.complete(body["claim_token"], body["otp"])
    db.session.commit()
    return _no_store(answer)
