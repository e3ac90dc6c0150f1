"""Provider revocation room: POST /agent/auth/revoke with a logout token (§4)."""
from flask import Blueprint, jsonify, request

from .. import idjag
from .. import ratelimit as rl
from ..extensions import db, limiter
from ..util import ProtocolError, printable

bp = Blueprint("revoke", __name__)


def _logout_token() -> str:
    mime = request.mimetype
    if mime == "application/logout+jwt":
        raw = request.get_data(cache=False)
        try:
            token = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise ProtocolError(400, "invalid_request", "The body must be a compact JWS.") from None
    elif mime == "application/x-www-form-urlencoded":
        token = request.form.get("logout_token", "")
    else:
        raise ProtocolError(400, "invalid_request",
                            "Send the logout token as Content-Type: application/logout+jwt, "
                            "or as the form field logout_token (application/x-www-form-urlencoded).")
    if not token:
        raise ProtocolError(400, "invalid_request", "The logout token is missing.")
    return token


@bp.post("/agent/auth/revoke")
@limiter.limit(rl.limit_value("RATELIMIT_REVOKE_PER_IP"), scope="revoke-ip", deduct_when=rl.refused)
def revoke():
    token = _logout_token()
    answer = idjag.revoke(token, ip=request.remote_addr, user_agent=printable(request.user_agent.string))
    db.session.commit()
    resp = jsonify(answer)
    resp.headers["Cache-Control"] = "no-store"
    return resp
