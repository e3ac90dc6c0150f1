"""Demo resource room: the protected API and the one door for credentials, require_credential."""
import functools
import json

from flask import Blueprint, current_app, g, jsonify, request

from ..util import ProtocolError
from . import bearer

bp = Blueprint("api", __name__)


def require_credential(scope: str | None = None):
    """Protect a view: 401 with the RFC 9728 challenge without a valid credential, 403 without the scope."""
    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            token = bearer.from_header(request.environ)
            if token is None:
                return bearer.unauthorized()
            try:
                cred, reg, user, delegation = bearer.check(token)
            except ProtocolError as exc:
                return bearer.invalid(exc.message)
            if scope is not None and scope not in cred.scope_list:
                return bearer.insufficient(scope)
            ctx = g._get_current_object()  # one context lookup instead of four (the hot path)
            ctx.credential, ctx.registration, ctx.user, ctx.delegation = cred, reg, user, delegation
            return view(*args, **kwargs)
        return wrapper
    return decorate


def identity() -> dict:
    ctx = g._get_current_object()
    cred, reg, user, delegation = ctx.credential, ctx.registration, ctx.user, ctx.delegation
    return {"user": user.public() if user is not None else None,
            "credential": {"type": cred.type, "scope": cred.scope_list,
                           "source": {"anonymous": "anonymous", "email-verification": "verified_email",
                                      "agent-provider": "id_jag"}.get(reg.type, reg.type),
                           "iss": delegation.iss if delegation else None,
                           "sub": delegation.sub if delegation else None,
                           "aud": delegation.aud if delegation else None,
                           "registration_id": reg.id}}


# jsonify's output, as every agent-facing answer has it (compact, keys in written order, ASCII, a final
# newline: errors.register sets the app's JSON style), with the encoder built once: jsonify's provider
# lookup showed up in the hot path's profile
_ENCODE = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


@bp.get("/api/resource")
@require_credential()
def read_resource():
    body = _ENCODE({"message": "Hello from the protected resource.", **identity()}) + "\n"
    return current_app.response_class(body, mimetype="application/json")


@bp.post("/api/resource")
@require_credential("api.write")
def write_resource():
    return jsonify({"message": "Write accepted.", **identity()})
