"""Tokens room: the latest protocol's access tokens (rows of `credentials`, so the one credential check
serves both protocols) and its rotating refresh tokens (`refresh_tokens`, digests only).

A refresh token is used once: rotating it spends it (a conditional UPDATE, so of two concurrent uses
exactly one wins) and hands out the next one of the same family. A spent token presented again means
two parties hold the family (RFC 9700 §4.14.2): the whole family is revoked, with the registration's
access tokens of this protocol, and the answer is the same 400 invalid_refresh_token as for an unknown
token. That revocation must land although the request fails, so it goes through tx.keep_on_error.

Access tokens are opaque (`at_…`) or, with the setting access_token_format = "jwt", RFC 9068 JWTs
(typ at+jwt, signed with the service keys published at jwks_uri) that an API may verify on its own. A JWT
is a credentials row too, keyed by the digest of the whole token: authmd's own checks (the API door,
introspection, forward auth) stay the one indexed lookup and refuse a revoked JWT at once; only an API
that verifies it locally accepts it until exp, which is why its lifetime (jwt_access_token_ttl) is short.
"""
import calendar
import uuid
from collections import namedtuple
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import update

from . import audit, credentials, keys, settings, tx
from .extensions import db
from .models import WIRE_TYPES, Credential, Delegation, RefreshToken, Registration, User
from .rawsql import Prepared
from .secrets import digest, display_prefix, new_token
from .util import ProtocolError, utcnow

REFRESH_PREFIX = "art_"
JWT_TYP = "at+jwt"
JWT_PREFIX = "jwt_"  # the display prefix of a JWT's row (its jti's first characters): a JWT has no prefix of its own
# the longest access token authmd issues: a JWT carries its scopes and a provider's subject
MAX_ACCESS_TOKEN_LENGTH = 4096
_registrations, _users = Registration.__table__, User.__table__
# What an exchange needs of the registration and its person, in one indexed read (rawsql: the exchange
# runs on every token request, and SQLAlchemy's per-statement work cost more than the database's).
_EXCHANGE_FIELDS = ("id", "protocol", "status", "type", "claim_expires_at", "claimed_at", "user_id",
                    "delegation_id", "iss")
_EXCHANGE_READ = Prepared(db.select(*(_registrations.c[name] for name in _EXCHANGE_FIELDS), _users.c.is_active)
                          .select_from(_registrations.outerjoin(_users, _users.c.id == _registrations.c.user_id))
                          .where(_registrations.c.id == db.bindparam("registration_id")))
_ExchangeRow = namedtuple("_ExchangeRow", _EXCHANGE_FIELDS + ("user_active",))


def subject(user_id, registration_id: str) -> str:
    """Who is behind a credential, stable across its checks: `user:<id>` once a person owns it, else
    `registration:<registration id>` (an unclaimed anonymous registration)."""
    return f"user:{user_id}" if user_id is not None else f"registration:{registration_id}"


def issue_access(registration, scopes: list[str], *, resource=None, now=None, ip=None, user_agent=None) -> dict:
    """A fresh access token for a latest registration (a Registration, or any row with its id, user_id,
    delegation_id, type, status and claim_expires_at): the token response's fields. Its row and audit row
    are written through rawsql, at once (no ORM object they depend on may be pending). Caller commits."""
    now = now or utcnow()
    jwt = settings.get("access_token_format") == "jwt"
    if jwt:
        now = now.replace(microsecond=0)  # a JWT's times are whole seconds: the row says the same
        values, token = _jwt_values(registration, scopes, resource, now)
    else:
        values, token = credentials.new_values(registration.id, "access_token", scopes,
                                               user_id=registration.user_id,
                                               delegation_id=registration.delegation_id, now=now)
    values.update(protocol="latest", resource=resource)
    conn = db.session.connection()
    cred_id = credentials.INSERT.first(values, conn)[0]
    audit.insert([audit.values("token.issued", "agent", registration_id=registration.id,
                               user_id=registration.user_id, protocol="latest", credential_id=cred_id,
                               credential_prefix=values["prefix"], scope=" ".join(scopes), resource=resource,
                               format="jwt" if jwt else "opaque", now=now, ip=ip, user_agent=user_agent)], conn)
    return {"access_token": token, "token_type": "Bearer",
            "expires_in": int((values["expires_at"] - now).total_seconds()), "scope": " ".join(scopes)}


def _jwt_values(reg, scopes: list[str], resource, now: datetime) -> tuple[dict, str]:
    """An RFC 9068 access token and its row's values. It ends at jwt_access_token_ttl, or at an unclaimed
    registration's claim deadline when that comes first (an API checking it locally cannot know the
    deadline; introspection answers the same exp)."""
    expires = now + timedelta(seconds=int(settings.get("jwt_access_token_ttl")))
    if reg.status == "pending" and reg.claim_expires_at is not None:
        expires = min(expires, reg.claim_expires_at.replace(microsecond=0))
    cfg = current_app.config
    jti = uuid.uuid4().hex
    claims = {"iss": cfg["ISSUER"], "sub": subject(reg.user_id, reg.id), "aud": resource or cfg["RESOURCE"],
              "client_id": reg.id, "iat": _epoch(now), "exp": _epoch(expires), "jti": jti,
              "scope": " ".join(scopes), "registration_type": WIRE_TYPES.get(reg.type, reg.type),
              "protocol": "latest"}
    if reg.delegation_id is not None:
        delegation = db.session.get(Delegation, reg.delegation_id)
        if delegation is not None:
            claims["agent_iss"], claims["agent_sub"] = delegation.iss, delegation.sub
    token = keys.sign(claims, JWT_TYP)
    return dict(digest=digest(token), prefix=JWT_PREFIX + jti[:6], type="access_token", scopes=" ".join(scopes),
                registration_id=reg.id, user_id=reg.user_id, delegation_id=reg.delegation_id, created_at=now,
                expires_at=expires), token


def _epoch(dt: datetime) -> int:
    return calendar.timegm(dt.timetuple())


def revoke_access_tokens(registration_id: str, now=None) -> int:
    """Revoke every live access token of the latest protocol of a registration. Caller commits."""
    return credentials.revoke_where(Credential.registration_id == registration_id,
                                    Credential.protocol == "latest", now=now)


_refresh = RefreshToken.__table__
_INSERT_REFRESH = Prepared(_refresh.insert())
# A refresh request's reads in one indexed statement: the token (by digest), its registration and the person.
_REFRESH_READ = Prepared(db.select(_refresh.c.id, _refresh.c.family_id, _refresh.c.user_id, _refresh.c.expires_at,
                                   _refresh.c.spent_at, _refresh.c.revoked_at, _registrations.c.id,
                                   _registrations.c.status, _registrations.c.user_id, _users.c.is_active,
                                   _users.c.email, _users.c.email_verified)
                         .select_from(_refresh.join(_registrations, _registrations.c.id == _refresh.c.registration_id)
                                      .outerjoin(_users, _users.c.id == _registrations.c.user_id))
                         .where(_refresh.c.digest == db.bindparam("token_digest")))
# Spending is a conditional UPDATE: of two concurrent uses exactly one gets its row back (RETURNING).
_SPEND = Prepared(_refresh.update().where(_refresh.c.id == db.bindparam("token_id"), _refresh.c.spent_at.is_(None),
                                          _refresh.c.revoked_at.is_(None))
                  .values(spent_at=db.bindparam("now", type_=_refresh.c.spent_at.type)).returning(_refresh.c.id))
# Who a rotation was for: what /agent/identity's refresh answer and its new assertion need.
Refreshed = namedtuple("Refreshed", ("id", "user_id", "email", "email_verified"))


def issue_refresh(registration_id: str, user_id=None, *, family_id=None, now=None) -> tuple[str, "datetime"]:
    """A new refresh token (a new family unless family_id is given): (token, expires_at). Written through
    rawsql at once (pending ORM changes are flushed first: the row points at its registration and person).
    Caller commits."""
    now = now or utcnow()
    token = new_token(REFRESH_PREFIX, 32)
    expires = now + timedelta(seconds=int(settings.get("refresh_token_ttl")))
    db.session.flush()
    _INSERT_REFRESH.execute(dict(digest=digest(token), prefix=display_prefix(token),
                                 family_id=family_id or "rtf_" + uuid.uuid4().hex, registration_id=registration_id,
                                 user_id=user_id, created_at=now, expires_at=expires))
    return token, expires


def _invalid() -> ProtocolError:
    return ProtocolError(400, "invalid_refresh_token",
                         "The refresh token is not valid (unknown, expired, revoked or already used); "
                         "register again.")


def rotate_refresh(token, *, now=None) -> tuple[Refreshed, str, "datetime"]:
    """Spend a refresh token and hand out the next one of its family: (who it was for, new token, its
    expiry). Raises 400 invalid_refresh_token; a spent token used again revokes its family (see the module).
    Every statement through rawsql (a refresh is an agent's routine call), in the session's transaction."""
    now = now or utcnow()
    if not isinstance(token, str) or not token.startswith(REFRESH_PREFIX) or len(token) > 200:
        raise _invalid()
    conn = db.session.connection()
    settings.all_settings(conn)  # read once, through rawsql, for the rest of the request
    found = _REFRESH_READ.first({"token_digest": digest(token)}, conn)
    if found is None:
        raise _invalid()
    (token_id, family_id, token_user, expires_at, spent_at, revoked_at,
     reg_id, status, user_id, active, email, email_verified) = found
    if revoked_at is not None:
        raise _invalid()
    if spent_at is not None:
        _reused(family_id, now)
    if expires_at <= now or status in ("expired", "revoked") or (user_id is not None and not active):
        raise _invalid()
    if _SPEND.first({"token_id": token_id, "now": now}, conn) is None:
        _reused(family_id, now)  # a concurrent use of the same token won: this one is the second use
    new, expires = issue_refresh(reg_id, token_user, family_id=family_id, now=now)
    return Refreshed(reg_id, user_id, email, email_verified), new, expires


def _reused(family_id: str, now) -> None:
    tx.keep_on_error(revoke_family, family_id, reason="reuse", now=now)
    raise _invalid()


def revoke_family(family_id: str, *, reason: str, now=None, actor_kind: str = "system") -> int:
    """Revoke every token of a refresh-token family and its registration's latest access tokens; audit
    refresh_token.reused (reason "reuse") or token.revoked. Returns how many access tokens stopped."""
    now = now or utcnow()
    reg_id = db.session.execute(db.select(RefreshToken.registration_id)
                                .where(RefreshToken.family_id == family_id).limit(1)).scalar()
    if reg_id is None:
        return 0
    families = db.session.execute(
        update(RefreshToken).where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now).execution_options(synchronize_session=False)).rowcount or 0
    revoked, ended = 0, 0
    if reason == "reuse":
        revoked = revoke_access_tokens(reg_id, now=now)
        # the assertions the family handed out would buy new access tokens for another hour (and the official
        # client re-exchanges its stored assertion after a 401 at once): the registration ends with the family.
        # An ID-JAG registration comes back on a fresh ID-JAG; the others register again.
        ended = db.session.execute(
            update(Registration).where(Registration.id == reg_id, Registration.status.not_in(("expired", "revoked")))
            .values(status="revoked", ended_at=now).execution_options(synchronize_session=False)).rowcount or 0
    event = "refresh_token.reused" if reason == "reuse" else "token.revoked"
    audit.record(event, actor_kind, registration_id=reg_id, protocol="latest", family_id=family_id,
                 refresh_tokens_revoked=families, revoked_count=revoked,
                 **({"registration_revoked": bool(ended)} if reason == "reuse" else {}))
    return revoked


def revoke_token(token, *, now=None, ip=None, user_agent=None) -> bool:
    """RFC 7009: revoke the access token (any credential its holder presents) or the refresh token (its
    family) this is; nothing for an unknown token. Returns whether something was revoked. Caller commits."""
    now = now or utcnow()
    if not isinstance(token, str) or not token or len(token) > MAX_ACCESS_TOKEN_LENGTH:
        return False
    if token.startswith(REFRESH_PREFIX):
        family = db.session.execute(db.select(RefreshToken.family_id)
                                    .where(RefreshToken.digest == digest(token))).scalar()
        if family is None:
            return False
        revoke_family(family, reason="holder", now=now, actor_kind="agent")
        return True
    row = db.session.execute(db.select(Credential.id, Credential.registration_id, Credential.prefix,
                                       Credential.protocol)
                             .where(Credential.digest == digest(token))).first()
    if row is None:
        return False
    n = credentials.revoke_where(Credential.id == row.id, now=now)
    if n:
        audit.record("token.revoked", "agent", registration_id=row.registration_id, protocol=row.protocol,
                     credential_id=row.id, credential_prefix=row.prefix, ip=ip, user_agent=user_agent)
    return bool(n)


def exchange(assertion, *, resource=None, ip=None, user_agent=None) -> dict:
    """RFC 7523 jwt-bearer: a service identity assertion for an access token (the token response).
    Refused with 400 invalid_grant: a bad assertion; an unknown, v0.1, ended or (where a claim is needed)
    unclaimed registration; an assertion issued before the registration's claim. Caller commits."""
    from . import assertions, scopes
    claims = assertions.check(assertion)
    conn = db.session.connection()
    settings.all_settings(conn)  # read once, through rawsql, for the rest of the request
    found = _EXCHANGE_READ.first({"registration_id": claims["sub"]}, conn)
    reg = None if found is None else _ExchangeRow(*found)
    if reg is None or reg.protocol != "latest":
        raise ProtocolError(400, "invalid_grant", "The assertion names no registration here.")
    now = utcnow()
    if reg.status == "pending" and reg.claim_expires_at is not None and reg.claim_expires_at <= now:
        from .lifecycle import expire_by_id
        tx.keep_on_error(expire_by_id, reg.id, now)
        raise ProtocolError(400, "invalid_grant", "The registration was not claimed in time and has expired.")
    if reg.status in ("expired", "revoked"):
        raise ProtocolError(400, "invalid_grant", "The registration has ended; register again.")
    if reg.type != "anonymous" and reg.status == "pending":
        raise ProtocolError(400, "invalid_grant", "The registration is waiting for its claim to complete.")
    if reg.user_id is not None and not reg.user_active:
        raise ProtocolError(400, "invalid_grant", "The person behind this registration is disabled here.")
    if reg.claimed_at is not None and (claims.get(assertions.PRE_CLAIM) is True
                                       or assertions.issued_at(claims) < reg.claimed_at.replace(microsecond=0)):
        raise ProtocolError(400, "invalid_grant",
                            "This assertion was issued before the claim: use the one the claim returned.")
    if reg.type == "agent-provider":
        granted = _provider_scopes(reg)
    else:
        pre, post = scopes.pre_and_post_claim(conn)
        granted = pre if reg.status == "pending" else post
    return issue_access(reg, granted, resource=resource, now=now, ip=ip, user_agent=user_agent)


def _provider_scopes(reg: Registration) -> list[str]:
    """What the registration's provider is granted here (the trusted issuer's scopes, as at v0.1)."""
    from . import idjag
    from .models import TrustedIssuer
    row = db.session.execute(db.select(TrustedIssuer).where(TrustedIssuer.issuer == reg.iss)).scalar()
    if row is None or not row.enabled:
        raise ProtocolError(400, "invalid_grant", "The registration's provider is no longer trusted here.")
    return idjag.granted_scopes(row)
