"""Demo resource room: the protected API and the one door for credentials, require_credential."""
import functools
import json

from flask import Blueprint, current_app, g, jsonify, request

from .. import credentials, tx
from ..util import ProtocolError
from .errors import json_error

bp = Blueprint("api", __name__)


def _challenge(extra: str = "") -> str:
    prm = current_app.config["ISSUER"] + "/.well-known/oauth-protected-resource"
    return f'Bearer {extra}resource_metadata="{prm}"'


def require_credential(scope: str | None = None):
    """Protect a view: 401 with the RFC 9728 challenge without a valid credential, 403 without the scope."""
    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            header = request.environ.get("HTTP_AUTHORIZATION", "")
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if not header or scheme.lower() != "bearer" or not token:
                return json_error(401, "unauthorized",
                                  "Send Authorization: Bearer <credential>; see the resource metadata to get one.",
                                  {"WWW-Authenticate": _challenge()})
            if len(token) > 200:
                return _invalid("The credential is not known.")
            try:
                cred, reg, user, delegation = credentials.authenticate(token)
            except ProtocolError as exc:
                tx.rollback()  # writes what the refusal leaves behind (an unclaimed registration expired)
                return _invalid(exc.message)
            if scope is not None and scope not in cred.scope_list:
                return json_error(403, "insufficient_scope", f"This call needs the scope {scope}.",
                                  {"WWW-Authenticate": _challenge(f'error="insufficient_scope", scope="{scope}", ')})
            ctx = g._get_current_object()  # one context lookup instead of four (the hot path)
            ctx.credential, ctx.registration, ctx.user, ctx.delegation = cred, reg, user, delegation
            return view(*args, **kwargs)
        return wrapper
    return decorate


def _invalid(message: str):
    return json_error(401, "invalid_token", message,
                      {"WWW-Authenticate": _challenge('error="invalid_token", ')})


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
