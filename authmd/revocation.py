"""Revocation room: revoke a credential, a registration, a delegation, all of a user's or an issuer's.

Each revoke_* is one UPDATE of credentials (credentials.revoke_where: v0.1 keys and the latest protocol's
access tokens alike) plus the registration status change (_end_registrations, which also ends the refresh
tokens of every registration it ends) and the audit rows, added to the caller's transaction; each returns
how many credentials stopped working. The count_* twins tell a confirmation page how many would go,
without changing anything. An audit row about one registration carries its protocol; a row about many
(a user's, an issuer's) carries none.
"""
from sqlalchemy import or_, update

from . import audit, credentials
from .extensions import db
from .models import ClaimAttempt, Credential, Delegation, RefreshToken, Registration
from .util import utcnow

LIVE_REGISTRATION = ("pending", "claimed", "active")


def count_live(*conditions) -> int:
    """Live credentials matching the conditions (all of them without any)."""
    return db.session.execute(
        db.select(db.func.count(Credential.id)).where(credentials.live(), *conditions)).scalar() or 0


def _count_registrations(*conditions) -> int:
    return db.session.execute(db.select(db.func.count(Registration.id)).where(
        Registration.status.in_(LIVE_REGISTRATION), *conditions)).scalar() or 0


def _end_registrations(condition, now, actor_kind, actor_id, reason, *, ip=None, user_agent=None,
                       **extra) -> list[str]:
    """Mark the live registrations matching `condition` revoked, end their open claim attempts and their
    refresh tokens; one audit row each, tagged with its registration's protocol. Every revocation of a
    registration (console, portal, CLI) goes through here."""
    # the status is checked here, not in the WHERE: beside it, SQLite's planner (no statistics) walked every
    # live registration by the status index instead of following `condition`'s own index
    found = [(reg_id, protocol) for reg_id, protocol, status in db.session.execute(
        db.select(Registration.id, Registration.protocol, Registration.status).where(condition))
        if status in LIVE_REGISTRATION]
    ids = [reg_id for reg_id, _ in found]
    for start in range(0, len(ids), 500):  # stay under the bound-parameter limit of SQLite
        chunk = ids[start:start + 500]
        db.session.execute(update(Registration).where(Registration.id.in_(chunk),
                                                      Registration.status.in_(LIVE_REGISTRATION))
                           .values(status="revoked", ended_at=now).execution_options(synchronize_session=False))
        db.session.execute(update(ClaimAttempt).where(ClaimAttempt.registration_id.in_(chunk),
                                                      ClaimAttempt.status == "initiated")
                           .values(status="superseded").execution_options(synchronize_session=False))
        end_refresh_tokens(chunk, now)
    for reg_id, protocol in found:
        audit.record("registration.revoked", actor_kind, actor_id=actor_id, registration_id=reg_id,
                     reason=reason, ip=ip, user_agent=user_agent, protocol=protocol, **extra)
    return ids


def end_refresh_tokens(registration_ids: list[str], now) -> int:
    """Revoke every refresh token of these registrations (latest protocol): a revoked registration must stay
    dead although a fresh ID-JAG may bring an agent-provider registration back to life (identity.py), and
    the tokens handed out before the revocation must not come back with it. Returns how many."""
    if not registration_ids:
        return 0
    return db.session.execute(
        update(RefreshToken).where(RefreshToken.registration_id.in_(registration_ids),
                                   RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now).execution_options(synchronize_session=False)).rowcount or 0


# --- one credential -------------------------------------------------------------------------------
def count_credential(credential_id: int) -> int:
    return count_live(Credential.id == credential_id)


def revoke_credential(credential_id: int, *, actor_kind="admin", actor_id=None, ip=None, user_agent=None) -> int:
    cred = db.session.get(Credential, credential_id)
    if cred is None:
        return 0
    n = credentials.revoke_where(Credential.id == credential_id)
    if n:
        protocol = db.session.execute(db.select(Registration.protocol)
                                      .where(Registration.id == cred.registration_id)).scalar()
        audit.record("credential.revoked", actor_kind, actor_id=actor_id, ip=ip, user_agent=user_agent,
                     registration_id=cred.registration_id, protocol=protocol,
                     user_id=cred.user_id, credential_id=cred.id, credential_prefix=cred.prefix)
    return n


# --- one registration -----------------------------------------------------------------------------
def count_registration(registration_id: str) -> int:
    return count_live(Credential.registration_id == registration_id)


def revoke_registration(registration_id: str, *, actor_kind="admin", actor_id=None, ip=None,
                        user_agent=None) -> int:
    reg = db.session.get(Registration, registration_id)
    if reg is None:
        return 0
    now = utcnow()
    n = credentials.revoke_where(Credential.registration_id == registration_id, now=now)
    ended = _end_registrations(Registration.id == registration_id, now, actor_kind, actor_id,
                               "registration", ip=ip, user_agent=user_agent, user_id=reg.user_id, revoked_count=n)
    if not ended and n:
        audit.record("credential.revoked", actor_kind, actor_id=actor_id, ip=ip, user_agent=user_agent,
                     registration_id=registration_id, protocol=reg.protocol,
                     revoked_count=n)
    db.session.expire(reg)
    return n


# --- one delegation (iss, sub, aud) ---------------------------------------------------------------
def count_delegation(delegation_id: int) -> int:
    return count_live(Credential.delegation_id == delegation_id)


def revoke_delegation(delegation_id: int, *, actor_kind="admin", actor_id=None, ip=None, user_agent=None) -> int:
    dele = db.session.get(Delegation, delegation_id)
    if dele is None:
        return 0
    now = utcnow()
    n = credentials.revoke_where(Credential.delegation_id == delegation_id, now=now)
    if dele.revoked_at is None:
        dele.revoked_at = now
    cond = Registration.delegation_id == delegation_id
    if dele.registration_id:
        cond = or_(cond, Registration.id == dele.registration_id)
    ended = _end_registrations(cond, now, actor_kind, actor_id, "delegation", ip=ip, user_agent=user_agent,
                               iss=dele.iss, sub=dele.sub, delegation_id=dele.id)
    if not ended:
        audit.record("credential.revoked", actor_kind, actor_id=actor_id, ip=ip, user_agent=user_agent,
                     iss=dele.iss, sub=dele.sub,
                     delegation_id=dele.id, revoked_count=n)
    return n


# --- everything of one user -----------------------------------------------------------------------
def _user_condition(user_id: int):
    return or_(Credential.user_id == user_id,
               Credential.registration_id.in_(db.select(Registration.id).where(Registration.user_id == user_id)))


def count_user(user_id: int) -> int:
    return count_live(_user_condition(user_id))


def revoke_user(user_id: int, *, actor_kind="admin", actor_id=None, ip=None, user_agent=None) -> int:
    now = utcnow()
    n = credentials.revoke_where(_user_condition(user_id), now=now)
    _end_registrations(Registration.user_id == user_id, now, actor_kind, actor_id, "user", ip=ip,
                       user_agent=user_agent, user_id=user_id)
    audit.record("credential.revoked", actor_kind, actor_id=actor_id, ip=ip, user_agent=user_agent,
                     user_id=user_id, scope_of="user",
                 revoked_count=n)
    return n


# --- everything one issuer vouched for ------------------------------------------------------------
def _issuer_condition(iss: str):
    return or_(Credential.delegation_id.in_(db.select(Delegation.id).where(Delegation.iss == iss)),
               Credential.registration_id.in_(db.select(Registration.id).where(Registration.iss == iss)))


def count_issuer(iss: str) -> int:
    # a UNION of two indexed joins: an OR across two subqueries would scan every credential
    live = credentials.live()
    ids = db.union(
        db.select(Credential.id).join(Delegation, Delegation.id == Credential.delegation_id)
        .where(Delegation.iss == iss, live),
        db.select(Credential.id).join(Registration, Registration.id == Credential.registration_id)
        .where(Registration.iss == iss, live)).subquery()
    return db.session.execute(db.select(db.func.count()).select_from(ids)).scalar() or 0


def revoke_issuer(iss: str, *, actor_kind="admin", actor_id=None, ip=None, user_agent=None) -> int:
    now = utcnow()
    n = credentials.revoke_where(_issuer_condition(iss), now=now)
    db.session.execute(update(Delegation).where(Delegation.iss == iss, Delegation.revoked_at.is_(None))
                       .values(revoked_at=now).execution_options(synchronize_session=False))
    _end_registrations(or_(Registration.iss == iss,
                           Registration.delegation_id.in_(db.select(Delegation.id).where(Delegation.iss == iss))),
                       now, actor_kind, actor_id, "issuer", ip=ip, user_agent=user_agent, iss=iss)
    audit.record("credential.revoked", actor_kind, actor_id=actor_id, ip=ip, user_agent=user_agent,
                     iss=iss, scope_of="issuer",
                 revoked_count=n)
    return n


def count_registrations_of_user(user_id: int) -> int:
    return _count_registrations(Registration.user_id == user_id)


def count_registrations_of_issuer(iss: str) -> int:
    return _count_registrations(Registration.iss == iss)
