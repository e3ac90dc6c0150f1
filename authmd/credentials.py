"""Credentials room: issue, look up (the hot path on every API call), revoke."""
import os
import threading
import weakref
from datetime import datetime, timedelta

from sqlalchemy import Boolean, DateTime, and_, bindparam, event, or_, update

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
    values, token = new_values(registration.id, cred_type, scopes, user_id=user_id,
                               delegation_id=delegation_id, now=now)
    row = Credential(**values)
    db.session.add(row)
    return row, token


def new_values(registration_id: str, cred_type: str, scopes: list[str], *, user_id=None,
               delegation_id=None, now=None) -> tuple[dict, str]:
    """The column values of a new credential and its secret (shown once; only the digest is stored)."""
    now = now or utcnow()
    token = new_token(PREFIX[cred_type], 32)
    expires = None
    if cred_type == "access_token":
        expires = now + timedelta(seconds=int(settings.get("access_token_ttl")))
    return dict(digest=digest(token), prefix=display_prefix(token), type=cred_type,
                scopes=" ".join(scopes), registration_id=registration_id, user_id=user_id,
                delegation_id=delegation_id, created_at=now, expires_at=expires), token


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
    # every column but the user's password hash, which an API call has no business holding
    columns = [list(cred.c), list(reg.c), [c for c in user.c if c.key != "password_hash"], list(dele.c)]
    stmt = (db.select(*columns[0], *columns[1], *columns[2], *columns[3])
            .select_from(cred.join(reg, reg.c.id == cred.c.registration_id)
                         .outerjoin(user, user.c.id == cred.c.user_id)
                         .outerjoin(dele, dele.c.id == cred.c.delegation_id))
            .where(cred.c.digest == bindparam("digest")))
    spans, start = [], 0
    for cols in columns:
        names = [c.key for c in cols]
        spans.append((names, start, start + len(names)))
        start += len(names)
    return stmt, spans


_LOOKUP, _SPANS = _lookup_statement()  # built once
_PLANS: dict = {}


def _plan(engine):
    """The lookup compiled once per dialect to plain SQL, with the few type conversions SQLite needs.

    The hot path runs it on a pooled DBAPI connection: SQLAlchemy's per-execution machinery (cache key,
    result metadata, processors) cost more than the indexed lookup itself (profile in bench/README.md).
    """
    name = engine.dialect.name
    plan = _PLANS.get(name)
    if plan is None:
        sql = str(_LOOKUP.compile(dialect=engine.dialect))
        converters = []
        if name == "sqlite":  # SQLite hands back DateTime as text and Boolean as 0/1
            for index, column in enumerate(_LOOKUP.selected_columns):
                if isinstance(column.type, DateTime):
                    converters.append((index, datetime.fromisoformat))
                elif isinstance(column.type, Boolean):
                    converters.append((index, bool))
        plan = _PLANS[name] = (sql, engine.dialect.positional, converters)
    return plan


class _HeldConnection:
    """One DBAPI connection per worker process kept for the hot path, in autocommit mode.

    Checking a connection out of the pool and back (with its reset) cost as much as the lookup itself.
    Autocommit means every lookup is its own statement-level snapshot: a revocation committed by any
    worker or node is seen by the very next lookup; nothing but the connection is kept. Only a process's
    main thread holds one (a gunicorn sync worker serves there); other threads use the pool. The
    connection is closed when its engine is disposed and replaced after any error.
    """

    def __init__(self):
        self.engine_ref = None
        self.pid = None
        self.fairy = None

    def get(self, engine):
        if self.fairy is not None and self.pid == os.getpid() and self.engine_ref() is engine:
            return self.fairy
        self.drop()
        fairy = engine.raw_connection()
        raw = fairy.dbapi_connection
        if engine.dialect.name == "sqlite":
            raw.isolation_level = None
        else:
            raw.autocommit = True
        self.fairy, self.pid, self.engine_ref = fairy, os.getpid(), weakref.ref(engine)
        if not event.contains(engine, "engine_disposed", _on_dispose):
            event.listen(engine, "engine_disposed", _on_dispose)
        return fairy

    def drop(self):
        fairy, self.fairy, self.engine_ref = self.fairy, None, None
        if fairy is not None and self.pid == os.getpid():
            try:
                fairy.invalidate()  # never back into the pool: it is in autocommit mode
            except Exception:  # noqa: BLE001 - it is being thrown away
                pass


_held = _HeldConnection()


def _on_dispose(engine):
    if _held.engine_ref is not None and _held.engine_ref() is engine:
        _held.drop()


def _run(conn, sql, params):
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        return cur.fetchone()
    finally:
        cur.close()


def _lookup(token_digest: str):
    engine = db.engine
    sql, positional, converters = _plan(engine)
    params = (token_digest,) if positional else {"digest": token_digest}
    if threading.current_thread() is threading.main_thread():
        try:
            row = _run(_held.get(engine), sql, params)
        except Exception:  # noqa: BLE001 - a dropped connection: retry once on a fresh one
            _held.drop()
            row = _run(_held.get(engine), sql, params)
    else:
        conn = engine.raw_connection()  # from the pool; close() hands it back (rolled back)
        try:
            row = _run(conn, sql, params)
        finally:
            conn.close()
    if row is None or not converters:
        return row
    row = list(row)
    for index, convert in converters:
        if row[index] is not None:
            row[index] = convert(row[index])
    return row


def authenticate(token: str):
    """One indexed lookup by digest. Returns (credential, registration, user, delegation) or raises 401.

    The four are read-only snapshots of this request's row (user and delegation None when absent).
    """
    row = _lookup(digest(token))
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


def live(now=None):
    """The SQL condition for a credential that still works: not revoked, not expired."""
    now = now or utcnow()
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
