"""Lifecycle room: when a credential is live, ending credentials, and expiring unclaimed registrations.

Below both the credential check and the claim ceremony: credentials.authenticate hands an overdue
registration to expire_by_id, claims expires before it answers, and neither imports the other. This
module imports no other domain room but audit and tx.
"""
from sqlalchemy import and_, or_, update

from . import audit, tx
from .extensions import db
from .models import ClaimAttempt, Credential, Registration
from .util import utcnow


def live(now=None):
    """The SQL condition for a credential that still works: not revoked, not expired. now: a time, or a
    bind parameter for a statement built once (the provider revocation's)."""
    if now is None:
        now = utcnow()
    return and_(Credential.revoked_at.is_(None), or_(Credential.expires_at.is_(None), Credential.expires_at > now))


def revoke_where(*conditions, now=None) -> int:
    """Revoke every live credential matching the conditions in one UPDATE; returns how many."""
    now = now or utcnow()
    result = db.session.execute(
        update(Credential)
        .where(and_(*conditions), live(now))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False))
    return result.rowcount or 0


def expire_registration(reg: Registration, now=None, **why) -> bool:
    """Mark an unclaimed registration expired, revoke its key; records the event exactly once.
    why: extra data for the audit row (e.g. reason="claim mail not delivered")."""
    now = now or utcnow()
    won = db.session.execute(
        update(Registration).where(Registration.id == reg.id, Registration.status == "pending")
        .values(status="expired", ended_at=now).execution_options(synchronize_session=False)).rowcount
    if not won:
        db.session.refresh(reg)
        return False
    reg.status, reg.ended_at = "expired", now
    revoked = revoke_where(Credential.registration_id == reg.id, now=now)
    db.session.execute(update(ClaimAttempt).where(ClaimAttempt.registration_id == reg.id,
                                                  ClaimAttempt.status == "initiated")
                       .values(status="superseded").execution_options(synchronize_session=False))
    audit.record("registration.expired", "system", registration_id=reg.id, protocol=reg.protocol,
                 registration_type=reg.type, revoked_count=revoked, **why)
    return True


def expire_if_due(reg: Registration, now=None) -> None:
    """Expire an unclaimed registration past its deadline, in the caller's transaction; the expiry also
    lands when the request then fails (tx.keep_on_error), as it usually does (410 claim_expired)."""
    now = now or utcnow()
    if reg.status == "pending" and reg.claim_expires_at and reg.claim_expires_at <= now:
        expire_registration(reg, now=now)
        tx.keep_on_error(expire_by_id, reg.id, now)


def expire_by_id(registration_id: str, now=None) -> bool:
    """expire_registration() for a registration named by id (what a failed request leaves behind)."""
    reg = db.session.get(Registration, registration_id)
    return reg is not None and expire_registration(reg, now=now)


def expire_due(now=None, batch: int = 500) -> int:
    """Expire every unclaimed registration past its deadline (for `flask expire`, which it commits for,
    one batch at a time, so a large backlog never holds the write lock for long)."""
    now = now or utcnow()
    count = 0
    while True:
        due = list(db.session.execute(
            db.select(Registration).where(Registration.status == "pending",
                                          Registration.claim_expires_at <= now).limit(batch)).scalars())
        if not due:
            return count
        for reg in due:
            count += expire_registration(reg, now=now)
        db.session.commit()
