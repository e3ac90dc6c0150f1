"""Credentials room: issue, look up (the hot path on every API call), revoke."""
from datetime import timedelta

from sqlalchemy import and_, or_, update

from . import settings
from .extensions import db
from .models import Credential, Delegation, Registration, User
from .secrets import digest, display_prefix, new_token
from .util import ProtocolError, utcnow

PREFIX = {"api_key": "sk_", "access_token": "at_"}
LAST_USED_GRANULARITY = timedelta(seconds=60)


def issue(registration: Registration, cred_type: str, scopes: list[str], *, user_id=None,
          delegation_id=None, now=None) -> tuple[Credential, str]:
    """Create a credential; returns (row, the secret shown once). Caller commits."""
    now = now or utcnow()
    token = new_token(PREFIX[cred_type], 32)
    expires = None
    if cred_type == "access_token":
        expires = now + timedelta(seconds=int(settings.get("access_token_ttl")))
    row = Credential(digest=digest(token), prefix=display_prefix(token), type=cred_type,
                     scopes=" ".join(scopes), registration_id=registration.id, user_id=user_id,
                     delegation_id=delegation_id, created_at=now, expires_at=expires)
    db.session.add(row)
    return row, token


def authenticate(token: str):
    """One indexed lookup by digest. Returns (credential, registration, user, delegation) or raises 401."""
    row = db.session.execute(
        db.select(Credential, Registration, User, Delegation)
        .join(Registration, Registration.id == Credential.registration_id)
        .outerjoin(User, User.id == Credential.user_id)
        .outerjoin(Delegation, Delegation.id == Credential.delegation_id)
        .where(Credential.digest == digest(token))
    ).first()
    if row is None:
        raise ProtocolError(401, "invalid_token", "The credential is not known.")
    cred, reg, user, delegation = row
    now = utcnow()
    if cred.revoked_at is not None:
        raise ProtocolError(401, "invalid_token", "The credential has been revoked.")
    if cred.expires_at is not None and cred.expires_at <= now:
        raise ProtocolError(401, "invalid_token", "The credential has expired.")
    if reg.status in ("expired", "revoked"):
        raise ProtocolError(401, "invalid_token", "The registration has ended.")
    if reg.status == "pending" and reg.claim_expires_at is not None and reg.claim_expires_at <= now:
        from .claims import expire_registration
        expire_registration(reg, now=now)
        db.session.commit()
        raise ProtocolError(401, "invalid_token", "The registration was not claimed in time and has expired.")
    if user is not None and not user.is_active:
        raise ProtocolError(401, "invalid_token", "The user behind this credential is disabled.")
    if cred.last_used_at is None or now - cred.last_used_at >= LAST_USED_GRANULARITY:
        # at most one write a minute per credential, so the hot path stays a read
        db.session.execute(update(Credential).where(Credential.id == cred.id).values(last_used_at=now))
        db.session.commit()
    return cred, reg, user, delegation


def revoke_where(*conditions, now=None) -> int:
    """Revoke every live credential matching the conditions in one UPDATE; returns how many."""
    now = now or utcnow()
    result = db.session.execute(
        update(Credential)
        .where(and_(*conditions), Credential.revoked_at.is_(None),
               or_(Credential.expires_at.is_(None), Credential.expires_at > now))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False))
    return result.rowcount or 0
