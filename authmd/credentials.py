"""Credentials room: issue, look up (the hot path on every API call), revoke."""
from datetime import timedelta

from sqlalchemy import and_, bindparam, or_, update

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


class Snapshot:
    """A read-only copy of one row, taken by the hot path (attribute names as on the model).

    Loading four ORM entities per API call was most of the hot path's cost (see bench/README.md);
    a plain object built from one Core row costs a few microseconds. Never cached: built per request.
    """

    def __init__(self, names, values):
        self.__dict__.update(zip(names, values))

    def __repr__(self):
        return f"<{type(self).__name__} {self.__dict__.get('id')!r}>"


class CredentialSnapshot(Snapshot):
    @property
    def scope_list(self) -> list:
        return self.scopes.split() if self.scopes else []


class UserSnapshot(Snapshot):
    def public(self) -> dict:
        return {"id": self.id, "email": self.email, "email_verified": bool(self.email_verified), "name": self.name}


def _lookup_statement():
    tables = [Credential.__table__, Registration.__table__, User.__table__, Delegation.__table__]
    cred, reg, user, dele = tables
    stmt = (db.select(*cred.c, *reg.c, *user.c, *dele.c)
            .select_from(cred.join(reg, reg.c.id == cred.c.registration_id)
                         .outerjoin(user, user.c.id == cred.c.user_id)
                         .outerjoin(dele, dele.c.id == cred.c.delegation_id))
            .where(cred.c.digest == bindparam("digest")))
    spans, start = [], 0
    for table in tables:
        names = [c.key for c in table.c]
        spans.append((names, start, start + len(names)))
        start += len(names)
    return stmt, spans


_LOOKUP, _SPANS = _lookup_statement()  # built once: the statement's compiled form is cached by SQLAlchemy


def authenticate(token: str):
    """One indexed lookup by digest. Returns (credential, registration, user, delegation) or raises 401.

    The four are read-only snapshots of this request's row (user and delegation None when absent).
    """
    with db.engine.connect() as conn:  # a plain pooled connection: no ORM session needed for one read
        row = conn.execute(_LOOKUP, {"digest": digest(token)}).first()
    if row is None:
        raise ProtocolError(401, "invalid_token", "The credential is not known.")
    (cn, c0, c1), (rn, r0, r1), (un, u0, u1), (dn, d0, d1) = _SPANS
    cred = CredentialSnapshot(cn, row[c0:c1])
    reg = Snapshot(rn, row[r0:r1])
    user = UserSnapshot(un, row[u0:u1]) if row[u0] is not None else None
    delegation = Snapshot(dn, row[d0:d1]) if row[d0] is not None else None
    now = utcnow()
    if cred.revoked_at is not None:
        raise ProtocolError(401, "invalid_token", "The credential has been revoked.")
    if cred.expires_at is not None and cred.expires_at <= now:
        raise ProtocolError(401, "invalid_token", "The credential has expired.")
    if reg.status in ("expired", "revoked"):
        raise ProtocolError(401, "invalid_token", "The registration has ended.")
    if reg.status == "pending" and reg.claim_expires_at is not None and reg.claim_expires_at <= now:
        from .claims import expire_registration
        expire_registration(db.session.get(Registration, reg.id), now=now)
        db.session.commit()
        raise ProtocolError(401, "invalid_token", "The registration was not claimed in time and has expired.")
    if user is not None and not user.is_active:
        raise ProtocolError(401, "invalid_token", "The user behind this credential is disabled.")
    if cred.last_used_at is None or now - cred.last_used_at >= LAST_USED_GRANULARITY:
        # at most one write a minute per credential, so the hot path stays a read
        db.session.execute(update(Credential).where(Credential.id == cred.id).values(last_used_at=now))
        db.session.commit()
        cred.last_used_at = now
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
