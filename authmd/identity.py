"""Identity room: POST /agent/identity of the latest protocol (anonymous, service_auth, identity_assertion,
refresh) and the claim's completion, answered in the protocol's nested envelopes.

A registration here never gets a credential directly: it gets a service-signed identity assertion
(authmd/assertions.py) that the agent exchanges at /oauth2/token for access tokens (authmd/tokens.py).
"""
from datetime import datetime, timedelta

from flask import current_app

from . import assertions, audit, idjag, latest_claims, registration, scopes, settings, stepup, tokens, users
from .trust import verify as trust
from .extensions import db
from .models import WIRE_TYPES, Registration
from .secrets import digest, new_id, new_token
from .util import ProtocolError, iso, utcnow

_EPOCH = datetime(1970, 1, 1)


def _identity(assertion: str, expires_at, refresh=None) -> dict:
    out = {"assertion": assertion, "expires_at": iso(expires_at)}
    if refresh is not None:
        out["refresh_token"] = {"value": refresh[0], "expires_at": iso(refresh[1])}
    return out


def _new_pending(reg_type: str, *, email=None, ip=None, user_agent=None, now) -> tuple[Registration, str]:
    claim_token = new_token("clm_", 32)
    reg = Registration(id=new_id("reg_"), type=reg_type, status="pending", protocol="latest", email=email,
                       claim_token_digest=digest(claim_token),
                       claim_expires_at=now + timedelta(seconds=int(settings.get("registration_ttl"))),
                       created_at=now, ip=ip, user_agent=(user_agent or None) and user_agent[:300])
    db.session.add(reg)
    db.session.flush()
    audit.record("registration.created", "agent", registration_id=reg.id, registration_type=reg_type,
                 type=WIRE_TYPES[reg_type], protocol="latest", ip=ip, user_agent=user_agent)
    return reg, claim_token



def _claim_block(claim_token: str, expires_at, attempt: dict | None = None) -> dict:
    block = {"token": claim_token, "expires_at": iso(expires_at), "url": latest_claims.claim_url()}
    if attempt is not None:
        block["attempt"] = attempt
    return block


def login_hint(value, code: str) -> str:
    """A login_hint as the one normalised address (else 400 with the given code)."""
    try:
        return users.normalize_email(value.strip() if isinstance(value, str) else value)
    except ProtocolError:
        raise ProtocolError(400, code, "login_hint must be the email address of the person to ask.") from None


# ---------------------------------------------------------------- the four registration types

def register_anonymous(*, ip=None, user_agent=None) -> dict:
    # As v0.1's anonymous registration (authmd/registration.py): every statement through rawsql in the
    # session's one transaction, the values built (and the assertion signed) first, then written in one
    # short burst (on SQLite the writer lock is held from the first INSERT to the commit).
    conn = db.session.connection()
    cfg = settings.all_settings(conn)
    if not cfg["anonymous_enabled"]:
        raise ProtocolError(400, "anonymous_registration_disabled", "Anonymous registration is switched off here.")
    now = utcnow()
    pre, post = scopes.pre_and_post_claim(conn)
    reg_id, claim_token = new_id("reg_"), new_token("clm_", 32)
    claim_expires = now + timedelta(seconds=int(cfg["registration_ttl"]))
    rows = [audit.values("registration.created", "agent", registration_id=reg_id, registration_type="anonymous",
                         type=WIRE_TYPES["anonymous"], protocol="latest", now=now, ip=ip, user_agent=user_agent)]
    assertion, expires = assertions.issue(reg_id, pre_claim=True, now=now, ip=ip, user_agent=user_agent,
                                          audit_rows=rows)
    registration.INSERT.execute(dict(id=reg_id, type="anonymous", status="pending", protocol="latest", email=None,
                                     claim_token_digest=digest(claim_token), claim_expires_at=claim_expires,
                                     created_at=now, ip=ip, user_agent=(user_agent or None) and user_agent[:300]),
                                conn)
    audit.insert(rows, conn)
    return {"id": reg_id, "type": "anonymous", "identity": _identity(assertion, expires),
            "scopes": {"pre_claim": pre, "post_claim": post},
            "claim": _claim_block(claim_token, claim_expires)}


def register_service_auth(hint, *, ip=None, user_agent=None) -> dict:
    if not settings.get("verified_email_enabled"):
        raise ProtocolError(400, "service_auth_registration_disabled",
                            "Registration on behalf of a person (service_auth) is switched off here.")
    email = login_hint(hint, "invalid_login_hint")
    now = utcnow()
    reg, claim_token = _new_pending("service-auth", email=email, ip=ip, user_agent=user_agent, now=now)
    attempt = latest_claims.start_attempt(reg, email, ip=ip, user_agent=user_agent, now=now)
    return {"id": reg.id, "type": "service_auth", "scopes": {"post_claim": scopes.post_claim()},
            "claim": _claim_block(claim_token, reg.claim_expires_at, attempt)}


def refresh(refresh_token, *, ip=None, user_agent=None) -> dict:
    reg, new, expires = tokens.rotate_refresh(refresh_token)
    rows = []
    assertion, assertion_expires = assertions.issue(reg.id, email=reg.email, email_verified=reg.email_verified,
                                                    ip=ip, user_agent=user_agent, audit_rows=rows)
    rows.append(audit.values("assertion.refreshed", "agent", registration_id=reg.id, user_id=reg.user_id,
                             protocol="latest", ip=ip, user_agent=user_agent))
    audit.insert(rows)
    return {"id": reg.id, "type": "refresh", "identity": _identity(assertion, assertion_expires, (new, expires))}


def register_id_jag(assertion, *, ip=None, user_agent=None) -> dict:
    try:
        return _register_id_jag(assertion, ip=ip, user_agent=user_agent)
    except ProtocolError as exc:
        if exc.code != "interaction_required":  # not a rejection: the token was good and is spent
            idjag.rejected(exc, assertion, "id_jag", ip=ip, user_agent=user_agent, protocol="latest")
        raise


def _check_auth_time(claims: dict, cfg: dict) -> None:
    """The latest protocol requires a recent sign-in at the provider (auth_time), else 401 login_required."""
    max_age = int(cfg["id_jag_max_auth_age"])
    skew = int(current_app.config.get("CLOCK_SKEW", 60))
    now = (utcnow() - _EPOCH).total_seconds()
    value = claims.get("auth_time")
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if ok and now - max_age - skew <= value <= now + skew:
        return
    description = (f"The user must have signed in to the provider within the last {max_age} seconds "
                   "(auth_time); ask the provider for a fresh ID-JAG after a new sign-in.")
    raise ProtocolError(401, "login_required", description,
                        {"WWW-Authenticate": f'AgentAuth error="login_required", max_age="{max_age}", '
                                             f'error_description="The user must sign in again."'},
                        extra={"error_description": description, "max_age": max_age})


def _register_id_jag(assertion, *, ip, user_agent) -> dict:
    c = idjag.check(assertion)
    _check_auth_time(c.claims, c.cfg)
    matched = idjag.confirmation_needed(c)
    if matched is not None:
        stepup.refuse(c, matched, protocol="latest", ip=ip, user_agent=user_agent)  # raises 401
    now = utcnow()
    trust.insert_jti(c.iss, c.claims["jti"], c.keep_until)
    user_id = users.provision(c.plan, email=c.email, phone=c.phone, now=now)
    delegation_id, _, _, deleg_user = idjag._upsert_delegation(c.found, c.iss, c.sub, c.aud, user_id, c.platform,
                                                               c.context, now, v01_registration=False)
    reg = db.session.execute(db.select(Registration).where(
        Registration.delegation_id == delegation_id, Registration.protocol == "latest",
        Registration.type == "agent-provider").order_by(Registration.created_at).limit(1)).scalar()
    created = reg is None
    if created:
        reg = Registration(id=new_id("reg_"), type="agent-provider", protocol="latest", created_at=now,
                           delegation_id=delegation_id, iss=c.iss)
        db.session.add(reg)
    # one registration per delegation; a revoked one comes back to life on a fresh ID-JAG
    reg.status, reg.ended_at, reg.user_id, reg.claim_token_digest = "active", None, deleg_user, None
    reg.ip, reg.user_agent = ip, (user_agent or None) and user_agent[:300]
    if c.platform:
        reg.agent_platform = c.platform
    db.session.flush()
    audit.record("registration.created", "agent", registration_id=reg.id, user_id=deleg_user, iss=c.iss,
                 sub=c.sub, agent_platform=c.platform, agent_context_id=c.context, protocol="latest",
                 registration_type="agent-provider", type="identity_assertion", scopes=c.granted,
                 new_registration=created, ip=ip, user_agent=user_agent)
    amr = c.claims.get("amr") if isinstance(c.claims.get("amr"), list) else None
    token, expires = assertions.issue(reg.id, email=c.email, email_verified=True if c.email else None, amr=amr,
                                      now=now, ip=ip, user_agent=user_agent)
    return {"id": reg.id, "type": "identity_assertion", "identity": _identity(token, expires), "scopes": c.granted}


# ---------------------------------------------------------------- the claim's completion

def complete_claim(claim_token, user_code, *, ip=None, user_agent=None) -> dict:
    reg, user = latest_claims.complete(claim_token, user_code, ip=ip, user_agent=user_agent)
    now = utcnow()
    if reg.type == "agent-provider":
        stepup.bind(reg, user, now)
        reg.status = "active"
    else:
        reg.status = "claimed"
    reg.user_id, reg.claimed_at, reg.email = user.id, now, user.email
    revoked = tokens.revoke_access_tokens(reg.id, now=now) if reg.type == "anonymous" else 0
    refresh_token = tokens.issue_refresh(reg.id, user.id, now=now)
    audit.record("claim.confirmed", "agent", registration_id=reg.id, user_id=user.id, claimed_by_user_id=user.id,
                 protocol="latest", pre_claim_tokens_revoked=revoked, ip=ip, user_agent=user_agent)
    assertion, expires = assertions.issue(reg.id, email=user.email, email_verified=True, now=now, ip=ip,
                                          user_agent=user_agent)
    return {"id": reg.id, "status": "claimed", "identity": _identity(assertion, expires, refresh_token)}
