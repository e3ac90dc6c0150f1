"""Agent-verified room: register an agent from a provider-signed ID-JAG (§2.3), and the provider's
revocation by logout token (§4)."""
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from . import audit, credentials, scopes, settings, trust
from .extensions import db
from .models import Credential, Delegation, Registration, TrustedIssuer
from .secrets import new_id
from .users import normalize_email, normalize_phone, resolve_for_delegation
from .util import ProtocolError, iso, utcnow

CREDENTIAL_TYPES = ("access_token", "api_key")


def _text(value, limit: int):
    return value[:limit] if isinstance(value, str) and value else None


def agent_details(claims: dict) -> tuple[str | None, str | None]:
    """(agent_platform, agent_context_id). v0.1 names neither claim, so we read the explicit
    `agent_platform` / `agent_context_id` first, then fall back to the OAuth-standard ones: the
    authorized party (`azp`, else `client_id`) names the platform, and the actor (`act.sub`, RFC 8693)
    names the agent instance / conversation."""
    platform = _text(claims.get("agent_platform"), 200) or _text(claims.get("azp"), 200) \
        or _text(claims.get("client_id"), 200)
    context = _text(claims.get("agent_context_id"), 255)
    if context is None and isinstance(claims.get("act"), dict):
        context = _text(claims["act"].get("sub"), 255)
    return platform, context


def _check_policy(claims: dict, row: TrustedIssuer) -> None:
    """Steps 8 and 9: a verified email or phone, then the issuer's policy."""
    if claims.get("email_verified") is not True and claims.get("phone_number_verified") is not True:
        raise ProtocolError(400, "missing_verified_email",
                            "The ID-JAG must assert email_verified or phone_number_verified as true.")
    if row.require_amr:
        amr = claims.get("amr")
        values = amr if isinstance(amr, list) else [amr]
        if row.require_amr not in values:
            raise ProtocolError(400, "insufficient_user_authentication",
                                f"This service requires the user to have signed in with amr \"{row.require_amr}\".")
    if row.allowed_client_ids:
        if claims.get("client_id") not in row.allowed_client_ids.split():
            raise ProtocolError(400, "invalid_client_id", "This client_id is not allowed for this issuer here.")


def granted_scopes(row: TrustedIssuer) -> list[str]:
    if row.scopes:
        wanted = set(row.scopes.split())
        return [s for s in scopes.names() if s in wanted]
    return scopes.post_claim()


def _verified_email(claims: dict):
    if claims.get("email_verified") is not True:
        return None
    try:
        return normalize_email(claims.get("email"))
    except ProtocolError:
        return None


def _verified_phone(claims: dict):
    if claims.get("phone_number_verified") is not True:
        return None
    return normalize_phone(claims.get("phone_number"))


def _delegation(iss, sub, aud, user, platform, context, now) -> Delegation:
    """The delegation row for (iss, sub, aud), created once even when two workers race for it."""
    query = db.select(Delegation).where(Delegation.iss == iss, Delegation.sub == sub, Delegation.aud == aud)
    row = db.session.execute(query).scalar()
    if row is None:
        try:
            with db.session.begin_nested():
                row = Delegation(iss=iss, sub=sub, aud=aud, user_id=user.id, agent_platform=platform,
                                 agent_context_id=context, first_seen=now, last_seen=now)
                db.session.add(row)
        except IntegrityError:
            row = db.session.execute(query).scalar()
    row.last_seen = now
    row.revoked_at = None
    if platform:
        row.agent_platform = platform
    if context:
        row.agent_context_id = context
    if row.user_id is None:
        row.user_id = user.id
    return row


def _registration(delegation: Delegation, wanted, ip, user_agent, platform, now) -> tuple[Registration, bool]:
    """One agent-provider registration per delegation; a revoked one comes back to life on a fresh ID-JAG."""
    reg = db.session.get(Registration, delegation.registration_id) if delegation.registration_id else None
    created = reg is None
    if reg is None:
        reg = Registration(id=new_id("reg_"), type="agent-provider", status="active", created_at=now,
                           user_id=delegation.user_id, delegation_id=delegation.id, iss=delegation.iss)
        db.session.add(reg)
        delegation.registration_id = reg.id
    reg.status, reg.ended_at = "active", None
    reg.requested_credential_type = wanted
    reg.ip, reg.user_agent = ip, (user_agent or None) and user_agent[:300]
    reg.agent_platform = platform or reg.agent_platform
    reg.user_id = delegation.user_id
    return reg, created


def register(assertion, requested_credential_type, *, ip=None, user_agent=None) -> dict:
    """Verify an ID-JAG and issue a credential now. Caller commits."""
    try:
        return _register(assertion, requested_credential_type, ip=ip, user_agent=user_agent)
    except ProtocolError as exc:
        trust.record_rejection(exc, assertion, "id_jag", ip=ip, user_agent=user_agent)
        raise


def _register(assertion, wanted, *, ip, user_agent) -> dict:
    if not settings.get("id_jag_enabled") or not trust.list_issuers(enabled_only=True):
        raise ProtocolError(400, "issuer_not_enabled", "No identity provider is trusted by this service.")
    if wanted not in CREDENTIAL_TYPES:
        raise ProtocolError(400, "unsupported_credential_type",
                            "requested_credential_type must be \"access_token\" or \"api_key\".")
    verified = trust.verify(assertion, typ=trust.ID_JAG_TYP, kind="id_jag")
    claims, row = verified.claims, verified.issuer
    _check_policy(claims, row)
    now = utcnow()
    iss, sub = row.issuer, claims["sub"]
    aud = claims["aud"][0] if isinstance(claims["aud"], list) else claims["aud"]
    aud = aud.rstrip("/")  # "https://x" and "https://x/" name the same audience: one delegation
    platform, context = agent_details(claims)
    user = resolve_for_delegation(iss, sub, email=_verified_email(claims), phone=_verified_phone(claims),
                                  existing_only=bool(settings.get("existing_users_only")))
    db.session.flush()
    delegation = _delegation(iss, sub, aud, user, platform, context, now)
    db.session.flush()
    reg, created = _registration(delegation, wanted, ip, user_agent, platform, now)
    db.session.flush()
    granted = granted_scopes(row)
    cred, secret = credentials.issue(reg, wanted, granted, user_id=user.id, delegation_id=delegation.id, now=now)
    db.session.flush()
    who = {"iss": iss, "sub": sub, "agent_platform": platform, "agent_context_id": context}
    audit.record("registration.created", "agent", registration_id=reg.id, user_id=user.id, ip=ip,
                 user_agent=user_agent, registration_type="agent-provider", scopes=granted,
                 new_registration=created, **who)
    audit.record("credential.issued", "agent", registration_id=reg.id, user_id=user.id, ip=ip,
                 user_agent=user_agent, credential_id=cred.id, credential_prefix=cred.prefix,
                 credential_type=wanted, scopes=granted, **who)
    return {"registration_id": reg.id, "registration_type": "agent-provider", "credential_type": wanted,
            "credential": secret, "credential_expires": iso(cred.expires_at), "scopes": granted}


def revoke(logout_token, *, ip=None, user_agent=None) -> dict:
    """Verify a logout token and revoke every live credential of every delegation of (iss, sub). Caller commits."""
    try:
        return _revoke(logout_token, ip=ip, user_agent=user_agent)
    except ProtocolError as exc:
        trust.record_rejection(exc, logout_token, "logout", ip=ip, user_agent=user_agent)
        raise


def _revoke(token, *, ip, user_agent) -> dict:
    # a disabled issuer may still take back what it vouched for: revocation only removes access
    verified = trust.verify(token, typ=trust.LOGOUT_TYP, kind="logout", lookup_disabled=True)
    iss, sub = verified.issuer.issuer, verified.claims["sub"]
    now = utcnow()
    delegations = list(db.session.execute(
        db.select(Delegation).where(Delegation.iss == iss, Delegation.sub == sub)).scalars())
    ids = [d.id for d in delegations]
    revoked = credentials.revoke_where(Credential.delegation_id.in_(ids), now=now) if ids else 0
    reg_ids = [d.registration_id for d in delegations if d.registration_id]
    if reg_ids:
        db.session.execute(update(Registration).where(Registration.id.in_(reg_ids), Registration.status == "active")
                           .values(status="revoked", ended_at=now).execution_options(synchronize_session=False))
    for d in delegations:
        d.revoked_at = now
        audit.record("registration.revoked", "provider", actor_id=iss, registration_id=d.registration_id,
                     user_id=d.user_id, iss=iss, sub=sub, agent_platform=d.agent_platform,
                     agent_context_id=d.agent_context_id, ip=ip, user_agent=user_agent,
                     reason="logout_token", revoked_count=revoked)
    if not delegations:
        audit.record("registration.revoked", "provider", actor_id=iss, iss=iss, sub=sub, ip=ip,
                     user_agent=user_agent, reason="logout_token", revoked_count=0)
    return {"revoked": revoked}
