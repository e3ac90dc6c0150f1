"""auth.md room: discovery metadata from live settings, and /auth.md rendered from the edited template."""
import functools
import hashlib
import itertools
import json
import os
from datetime import timedelta

from flask import current_app
from jinja2 import TemplateError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from . import audit, scopes, settings
from .extensions import db
from .models import AuthDocVersion, TrustedIssuer
from . import wire
from .util import ProtocolError, utcnow

DEFAULT_TEMPLATE_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "templates", "authmd_default.md")

# Every error code this service emits to agents: (code, status, where, what to do)
ERRORS = [
    ("invalid_request", 400, "any endpoint", "Fix the body as the message says; do not resend it unchanged."),
    ("unsupported_credential_type", 400, "POST /agent/auth", "Ask for a credential type the method offers."),
    ("anonymous_not_enabled", 400, "POST /agent/auth", "Use an identity assertion instead."),
    ("verified_email_not_enabled", 400, "POST /agent/auth", "Use another method."),
    ("issuer_not_enabled", 400, "POST /agent/auth", "No provider is trusted here; use another method."),
    ("invalid_issuer", 400, "POST /agent/auth, /agent/auth/revoke", "The token's iss is not trusted here."),
    ("invalid_signature", 400, "POST /agent/auth, /agent/auth/revoke", "Get a fresh token from your provider."),
    ("invalid_audience", 400, "POST /agent/auth", "Ask your provider for a token whose aud is this service."),
    ("expired", 400, "POST /agent/auth", "Get a fresh ID-JAG."),
    ("replay_detected", 400, "POST /agent/auth, /agent/auth/revoke", "Every token may be used once; get a new one."),
    ("missing_verified_email", 400, "POST /agent/auth", "The provider must assert a verified email or phone."),
    ("insufficient_user_authentication", 400, "POST /agent/auth", "The user must sign in to the provider with the required method (e.g. MFA)."),
    ("invalid_client_id", 400, "POST /agent/auth", "This client is not allowed by the issuer's policy here."),
    ("user_not_provisioned", 400, "POST /agent/auth, /agent/identity (service_auth), /agent/identity/claim", "Only existing users may register agents here: name a person who has an account."),
    ("invalid_claim_token", 401, "/agent/auth/claim, /agent/auth/claim/complete", "Use the claim_token from your registration."),
    ("claimed_or_in_flight", 409, "POST /agent/auth/claim", "Nothing to claim: it is claimed or has its own email flow."),
    ("claim_denied", 403, "POST /agent/auth/claim", "That address refused the claim; ask your user for the right one."),
    ("claim_expired", 410, "claim endpoints", "Register again."),
    ("email_unavailable", 503, "POST /agent/auth, /agent/auth/claim", "Retry the same request after Retry-After seconds."),
    ("claim_superseded", 410, "claim page", "A newer claim request replaced this one."),
    ("claim_completed", 409, "claim page", "Already claimed; nothing to do."),
    ("wrong_account", 403, "claim page (/claim, the portal)", "The person signed in is not the one the claim names: they sign in as that address."),
    ("previously_claimed", 409, "POST /agent/auth/claim/complete", "Already claimed; keep using your credential."),
    ("otp_not_generated", 400, "POST /agent/auth/claim/complete", "Wait for the user to reveal the code, then retry."),
    ("otp_expired", 410, "POST /agent/auth/claim/complete", "Ask the user to reveal a fresh code."),
    ("otp_invalid", 401, "POST /agent/auth/claim/complete", "Ask the user to read the code again."),
    ("rate_limited", 429, "/agent/auth endpoints (v0.1)", "Wait Retry-After seconds."),
    ("rate_limit_exceeded", 429, "/agent/identity*, /oauth2/* (latest)", "Wait retry_after (also Retry-After) seconds."),
    ("unsupported_media_type", 415, "any POST endpoint", "Send the body as Content-Type: application/json."),
    ("request_too_large", 413, "any POST endpoint", "Bodies are limited to 64 KiB."),
    ("not_found", 404, "any path", "Check the URL against the metadata; nothing is at this path."),
    ("method_not_allowed", 405, "any path", "Use the method named in the Allow header."),
    ("server_error", 500, "any endpoint", "Our fault: retry after Retry-After seconds."),
    ("unauthorized", 401, "protected API", "Send Authorization: Bearer <credential>."),
    ("invalid_token", 401, "protected API", "The credential is unknown, revoked or expired; register again."),
    ("insufficient_scope", 403, "protected API", "The credential lacks the scope named in WWW-Authenticate; claim it or ask for more."),
    ("interaction_required", 401, "POST /agent/identity, /agent/auth (ID-JAG)", "Your provider identity matches an account here by email: hand the verification_uri to the person, who confirms; then complete the claim (v0.1: register again)."),
    ("login_required", 401, "POST /agent/identity (ID-JAG)", "The user must sign in to the provider again (auth_time older than max_age); get a fresh ID-JAG."),
    ("anonymous_registration_disabled", 400, "POST /agent/identity", "Anonymous registration is switched off; use another type."),
    ("service_auth_registration_disabled", 400, "POST /agent/identity", "Registration for a person (service_auth) is switched off; use another type."),
    ("invalid_login_hint", 400, "POST /agent/identity", "login_hint must be the person's email address."),
    ("already_claimed", 409, "POST /agent/identity/claim, /claim/complete", "Already claimed; exchange the assertion you hold."),
    ("invalid_claim", 400, "POST /agent/identity/claim/complete", "Use the claim token from your registration."),
    ("claim_not_confirmed", 409, "POST /agent/identity/claim/complete", "The person has not pressed Authorize yet; wait for them, then retry."),
    ("invalid_user_code", 401, "POST /agent/identity/claim/complete", "Ask the person to read the code again."),
    ("user_code_expired", 410, "POST /agent/identity/claim/complete", "Start a new claim request (POST /agent/identity/claim); the person confirms again."),
    ("too_many_attempts", 429, "POST /agent/identity/claim/complete", "Too many wrong codes; start a new claim request."),
    ("invalid_grant", 400, "POST /oauth2/token", "The assertion is not valid (expired, revoked, superseded or unclaimed); get a fresh one from /agent/identity."),
    ("invalid_refresh_token", 400, "POST /agent/identity (refresh)", "The refresh token is unknown, expired, used or revoked; register again."),
]


def enabled_issuers() -> list[TrustedIssuer]:
    return list(db.session.execute(
        db.select(TrustedIssuer).where(TrustedIssuer.enabled.is_(True)).order_by(TrustedIssuer.issuer)).scalars())


def flows() -> dict:
    s = settings.all_settings()
    issuers = enabled_issuers()
    return {"anonymous": bool(s["anonymous_enabled"]),
            "verified_email": bool(s["verified_email_enabled"]),
            "id_jag": bool(s["id_jag_enabled"]) and bool(issuers),
            "issuers": [i.issuer for i in issuers]}


def protected_resource_metadata() -> dict:
    cfg = current_app.config
    s = settings.all_settings()
    doc = {"resource": cfg["RESOURCE"], "resource_name": s["service_name"]}
    if s.get("logo_uri"):
        doc["resource_logo_uri"] = s["logo_uri"]
    doc.update({"authorization_servers": [cfg["ISSUER"]],
                "scopes_supported": scopes.names(),
                "bearer_methods_supported": ["header"],
                "resource_documentation": cfg["ISSUER"] + "/auth.md"})
    return doc


def authorization_server_metadata() -> dict:
    cfg = current_app.config
    issuer = cfg["ISSUER"]
    f = flows()
    identity_types, block = [], {}
    if f["anonymous"]:
        identity_types.append("anonymous")
        block["anonymous"] = {"credential_types_supported": ["api_key"]}
    assertion_types = ([wire.ID_JAG] if f["id_jag"] else []) + (["verified_email"] if f["verified_email"] else [])
    if assertion_types:
        identity_types.append("identity_assertion")
        block["identity_assertion"] = {"assertion_types_supported": assertion_types,
                                       "credential_types_supported": ["access_token", "api_key"]}
    if f["verified_email"]:
        identity_types.append("service_auth")  # the latest protocol's form of the email-verified flow
    agent_auth = {"skill": issuer + "/auth.md",
                  # v0.1 (/agent/auth)
                  "register_uri": issuer + "/agent/auth", "claim_uri": issuer + "/agent/auth/claim",
                  "revocation_uri": issuer + "/agent/auth/revoke",
                  # the latest protocol (/agent/identity, /oauth2/*)
                  "identity_endpoint": issuer + "/agent/identity", "claim_endpoint": issuer + "/agent/identity/claim",
                  "events_endpoint": issuer + "/agent/event/notify",
                  "identity_types_supported": identity_types, **block,
                  "events_supported": [wire.REVOKED_EVENT],
                  "trusted_issuers": f["issuers"]}
    return {"issuer": issuer, "resource": cfg["RESOURCE"], "authorization_servers": [issuer],
            "scopes_supported": scopes.names(), "bearer_methods_supported": ["header"],
            "token_endpoint": issuer + "/oauth2/token", "revocation_endpoint": issuer + "/oauth2/revoke",
            "jwks_uri": issuer + "/.well-known/jwks.json",
            "grant_types_supported": ["urn:ietf:params:oauth:grant-type:jwt-bearer"],
            "token_endpoint_auth_methods_supported": ["none"],
            "introspection_endpoint": issuer + "/oauth2/introspect",
            "agent_auth": agent_auth}


def default_template() -> str:
    with open(DEFAULT_TEMPLATE_PATH, encoding="utf-8") as fh:
        return fh.read()


def current_version() -> AuthDocVersion | None:
    return db.session.execute(db.select(AuthDocVersion).order_by(AuthDocVersion.id.desc()).limit(1)).scalar()


def current_template() -> str:
    version = current_version()
    return version.body if version else default_template()


_env = SandboxedEnvironment(autoescape=False, keep_trailing_newline=True)


def context() -> dict:
    cfg = current_app.config
    s = settings.all_settings()
    all_scopes = scopes.enabled_scopes()
    issuer = cfg["ISSUER"]
    return {
        "service_name": s["service_name"], "issuer": issuer, "resource": cfg["RESOURCE"],
        "host": issuer.split("://", 1)[-1],
        "prm_url": issuer + "/.well-known/oauth-protected-resource",
        "as_url": issuer + "/.well-known/oauth-authorization-server",
        "authmd_url": issuer + "/auth.md", "register_uri": issuer + "/agent/auth",
        "claim_uri": issuer + "/agent/auth/claim", "claim_complete_uri": issuer + "/agent/auth/claim/complete",
        "revocation_uri": issuer + "/agent/auth/revoke", "api_url": issuer + "/api/resource",
        "scopes": [{"name": x.name, "description": x.description, "pre_claim": x.pre_claim,
                    "post_claim": x.post_claim} for x in all_scopes],
        "pre_claim_scopes": [x.name for x in all_scopes if x.pre_claim],
        "post_claim_scopes": [x.name for x in all_scopes if x.post_claim],
        "flows": flows(), "errors": ERRORS,
        "registration_ttl_hours": round(int(s["registration_ttl"]) / 3600, 2),
        "claim_link_ttl_minutes": int(s["claim_link_ttl"]) // 60,
        "otp_ttl_minutes": int(s["otp_ttl"]) // 60,
        "access_token_ttl_minutes": int(s["access_token_ttl"]) // 60,
        # the latest protocol
        "identity_endpoint": issuer + "/agent/identity", "claim_endpoint": issuer + "/agent/identity/claim",
        "claim_complete_endpoint": issuer + "/agent/identity/claim/complete",
        "token_endpoint": issuer + "/oauth2/token", "token_revocation_endpoint": issuer + "/oauth2/revoke",
        "events_endpoint": issuer + "/agent/event/notify", "jwks_uri": issuer + "/.well-known/jwks.json",
        "assertion_ttl_minutes": int(s["assertion_ttl"]) // 60,
        "refresh_token_ttl_days": round(int(s["refresh_token_ttl"]) / 86400, 1),
        "user_code_ttl_minutes": int(s["user_code_ttl"]) // 60,
        "max_age_minutes": int(s["id_jag_max_auth_age"]) // 60,
        "id_jag_type": wire.ID_JAG, "revoked_event": wire.REVOKED_EVENT,
        # the live agent_auth block, so the document shows exactly what the metadata says
        "agent_auth_json": json.dumps(authorization_server_metadata()["agent_auth"], indent=2),
    }


@functools.lru_cache(maxsize=8)
def _compiled(text: str):
    # compiling the document (~18 ms for the default one) cost a hundred times its render (~0.2 ms), and
    # every worker rebuilds the document each DISCOVERY_CACHE_SECONDS: compile once per distinct text.
    # A compiled sandboxed template keeps no state between renders.
    return _env.from_string(text)


def render(template_text: str | None = None) -> str:
    text = template_text if template_text is not None else current_template()
    return _compiled(text).render(**context())


def etag(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def try_render(template_text: str) -> tuple[str | None, str | None]:
    """(rendered Markdown, None), or (None, why the template does not render, at its line in the text)."""
    try:
        return _compiled(template_text).render(**context()), None
    except SecurityError as exc:
        return None, f"The template tried something not allowed{_at_line(exc)}: {exc}"
    except TemplateError as exc:
        return None, f"Template error{_at_line(exc)}: {exc.message or exc}"
    except Exception as exc:  # noqa: BLE001 - an admin's template can raise anything (1/0, a huge range…)
        return None, f"Template error{_at_line(exc)}: {exc}"


def _at_line(exc: Exception) -> str:
    """' on line N' of the admin's template. A syntax error carries its line; an error raised while rendering
    does not, but Jinja rewrites the traceback so that the template's frames name the template's lines."""
    line = getattr(exc, "lineno", None)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno  # the innermost frame of the template is where it failed
        tb = tb.tb_next
    return f" on line {line}" if line else ""


def publish(body: str, note: str = "", *, user_id=None, rollback_of=None, actor_id=None, ip=None,
            user_agent=None) -> AuthDocVersion:
    """A new version of the template, served at /auth.md once the caller commits. 400 when it does not render.
    actor_id, ip and user_agent name who asked, for the audit row (as in every change below)."""
    body = body.replace("\r\n", "\n")
    _, error = try_render(body)
    if error:
        raise ProtocolError(400, "invalid_request", error)
    row = AuthDocVersion(body=body, note=(note or "").strip(), created_at=utcnow(), created_by=user_id)
    db.session.add(row)
    db.session.flush()
    extra = {"rollback_of": rollback_of} if rollback_of is not None else {}
    audit.record("authmd.published", "admin", actor_id=actor_id, ip=ip, user_agent=user_agent, user_id=user_id,
                 version_id=row.id, note=row.note, **extra)
    config_changed()
    return row


def rollback(version_id: int, *, user_id=None, actor_id=None, ip=None, user_agent=None) -> AuthDocVersion:
    """Publish an earlier version's text again, as a new version (the history only grows)."""
    old = db.session.get(AuthDocVersion, version_id)
    if old is None:
        raise ProtocolError(404, "not_found", f"No version {version_id}.")
    return publish(old.body, f"Rollback to version {old.id}", user_id=user_id, rollback_of=old.id,
                   actor_id=actor_id, ip=ip, user_agent=user_agent)


# ---------------------------------------------------------------- per-worker cache of the published documents
# Discovery and /auth.md are read on every agent's first step and change only when an admin edits settings,
# scopes, trusted issuers or the document. Building them costs several queries and a Jinja render, so each
# worker keeps the built bytes:
#  - every domain function that changes what they are built from (settings.update, the scope operations,
#    publish / rollback here, the trusted-issuer operations) calls config_changed(): the worker that made the
#    change serves it on its next request, whichever door (console, CLI, a test) the change came through;
#  - other workers and nodes rebuild after DISCOVERY_CACHE_SECONDS (default 1 s; 0 turns the cache off).
# The spec lets clients cache these documents for 300 s (Cache-Control) anyway, and POST /agent/auth reads
# the live settings on every call, so a flow switched off is refused at once even while a document is ≤ 1 s old.
# Credentials are never cached: only these public documents are.
_cache: dict = {}
_app_numbers = itertools.count(1)


def invalidate() -> None:
    """Drop every document this process has built."""
    _cache.clear()


def config_changed() -> None:
    """Settings, scopes, trusted issuers or the published document changed in the caller's transaction.

    Called before the caller commits: a request of this worker that rebuilds a document between this call
    and the commit keeps the old one for at most DISCOVERY_CACHE_SECONDS, the bound every other worker has."""
    invalidate()


def cached(kind: str, build):
    app = current_app._get_current_object()
    ttl = float(app.config.get("DISCOVERY_CACHE_SECONDS", 1) or 0)
    if ttl <= 0:
        return build()
    # a number of the app's own, not id(app): an id is reused once an app is freed (tests build many)
    number = app.extensions.setdefault("authmd_documents", next(_app_numbers))
    key = (number, app.config["ISSUER"], app.config["RESOURCE"], kind)
    now = utcnow()
    hit = _cache.get(key)
    if hit is not None and hit[0] > now:
        return hit[1]
    value = build()
    _cache[key] = (now + timedelta(seconds=ttl), value)
    return value


def _metadata_json(build) -> bytes:
    # jsonify's form, as every agent-facing answer (compact, keys in written order)
    return (json.dumps(build(), separators=(",", ":")) + "\n").encode()


def protected_resource_json() -> bytes:
    return cached("prm", lambda: _metadata_json(protected_resource_metadata))


def authorization_server_json() -> bytes:
    return cached("as", lambda: _metadata_json(authorization_server_metadata))


def document() -> tuple[bytes, str]:
    """The served /auth.md (UTF-8 bytes) and its ETag."""
    def build():
        text = render()
        return text.encode("utf-8"), etag(text)
    return cached("authmd", build)
