"""Credentials room: issue, look up (the hot path on every API call), revoke."""
import contextlib
import functools
import logging
import os
import sqlite3
import threading
import time
import weakref
from datetime import timedelta

from sqlalchemy import bindparam, event, or_

from . import settings, tx
from .extensions import db
from .lifecycle import expire_by_id, live, revoke_where  # noqa: F401 - live, revoke_where: this room's names too
from .models import Credential, Delegation, Registration, User
from .rawsql import Prepared
from .secrets import digest, display_prefix, new_token
from .util import ProtocolError, utcnow

PREFIX = {"api_key": "sk_", "access_token": "at_"}
LAST_USED_GRANULARITY = timedelta(seconds=60)
HOT_PATH_MMAP_BYTES = 256 * 1024 * 1024  # SQLite's mmap_size on the hot path's held connection
log = logging.getLogger("authmd")


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


# A credential row, written through rawsql (the registration paths): its id comes back by RETURNING.
INSERT = Prepared(Credential.__table__.insert().returning(Credential.__table__.c.id))


class Snapshot:
    """A read-only view of one table's columns in the hot path's row (attribute names as on the model).

    Loading four ORM entities per API call was most of the hot path's cost (see bench/README.md). A
    snapshot only keeps a reference to the row; each attribute is a property reading its column (and,
    on SQLite, the column type's conversion when it is read), so building one costs well under a
    microsecond and a request pays only for the columns it looks at. Never cached: built per request.
    The classes are made once per dialect by `_snapshot_class`.
    """

    __slots__ = ("_row",)

    def __init__(self, row):
        self._row = row

    def __repr__(self):
        return f"<{type(self).__name__} {self.id!r}>"


class CredentialSnapshot(Snapshot):
    __slots__ = ()

    @property
    def scope_list(self) -> list:
        return self.scopes.split() if self.scopes else []


class UserSnapshot(Snapshot):
    __slots__ = ()

    def public(self) -> dict:
        return {"id": self.id, "email": self.email, "email_verified": bool(self.email_verified), "name": self.name}


def _column(index, convert=None):
    if convert is None:
        return property(lambda self: self._row[index])

    def read(self):
        value = self._row[index]
        return None if value is None else convert(value)
    return property(read)


def _snapshot_class(name, base, columns, start, dialect):
    """A Snapshot subclass reading `columns` from the row positions start, start+1, ..., each through
    its column type's own result processing for the dialect (SQLite's DateTime text, Boolean 0/1), as
    rawsql.Prepared and SQLAlchemy do."""
    namespace = {"__slots__": ()}
    for offset, column in enumerate(columns):
        convert = column.type.dialect_impl(dialect).result_processor(dialect, None)
        namespace[column.key] = _column(start + offset, convert)
    return type(name, (base,), namespace)


# What a protected view gets to read (g.credential, g.registration, g.user, g.delegation): the columns
# that say who is calling and with what, nothing secret or merely administrative (no digests, no password
# hash, no IP or User-Agent). Each column fetched costs the hot path time (bench/README.md), so the set
# is kept to what the checks and a view need.
VIEW_COLUMNS = (
    (Credential, ("id", "type", "scopes", "registration_id", "user_id", "delegation_id", "created_at",
                  "expires_at", "revoked_at", "last_used_at", "protocol", "resource")),
    (Registration, ("id", "type", "status", "email", "claim_expires_at", "agent_platform")),
    (User, ("id", "email", "email_verified", "name", "is_active")),
    (Delegation, ("id", "iss", "sub", "aud", "agent_platform", "agent_context_id")),
)


def _lookup_statement():
    columns = [[model.__table__.c[name] for name in names] for model, names in VIEW_COLUMNS]
    cred, reg, user, dele = (model.__table__ for model, _ in VIEW_COLUMNS)
    stmt = (db.select(*columns[0], *columns[1], *columns[2], *columns[3])
            .select_from(cred.join(reg, reg.c.id == cred.c.registration_id)
                         .outerjoin(user, user.c.id == cred.c.user_id)
                         .outerjoin(dele, dele.c.id == cred.c.delegation_id))
            .where(cred.c.digest == bindparam("digest")))
    return stmt, columns


_LOOKUP, _COLUMNS = _lookup_statement()  # built once
_PLANS: dict = {}


def _plan(engine):
    """The lookup compiled once per dialect to plain SQL, and the four snapshot classes over its row.

    The hot path runs it on a held DBAPI connection: SQLAlchemy's per-execution machinery (cache key,
    result metadata, processors) cost more than the indexed lookup itself (profile in bench/README.md).
    """
    name = engine.dialect.name
    plan = _PLANS.get(name)
    if plan is None:
        sql = str(_LOOKUP.compile(dialect=engine.dialect))
        classes, start = [], 0
        bases = [("CredentialSnapshot", CredentialSnapshot), ("RegistrationSnapshot", Snapshot),
                 ("UserSnapshot", UserSnapshot), ("DelegationSnapshot", Snapshot)]
        for (class_name, base), columns in zip(bases, _COLUMNS):
            classes.append((_snapshot_class(class_name, base, columns, start, engine.dialect), start))
            start += len(columns)
        plan = _PLANS[name] = (sql, engine.dialect.positional, classes)
    return plan


class _HeldConnection:
    """One DBAPI connection per worker process kept for the hot path, in autocommit mode.

    Checking a connection out of the pool and back (with its reset) cost as much as the lookup itself.
    Autocommit means every lookup is its own statement-level snapshot: a revocation committed by any
    worker or node is seen by the very next lookup; nothing but the connection is kept. The once-a-minute
    last_used_at UPDATE runs on it too, as one autocommit statement (`writer`: on SQLite the cursor that
    takes the writer lock). Only a process's main thread holds one (a gunicorn sync worker serves there);
    other threads use the pool. The connection is closed when its engine is disposed and replaced after
    any error.
    """

    def __init__(self):
        self.engine_ref = None
        self.pid = None
        self.fairy = None
        self.cursor = None
        self.writer = None

    def get(self, engine):
        """The held connection's cursor factory for reads (its `writer` is the one for the UPDATE)."""
        if self.fairy is not None and self.pid == os.getpid() and self.engine_ref() is engine:
            return self.cursor
        self.drop()
        fairy = engine.raw_connection()
        raw = fairy.dbapi_connection
        if engine.dialect.name == "sqlite":
            raw.isolation_level = None
            # a plain sqlite3 cursor: the lookup is a read, so the writer lock's cursor has nothing to do
            self.cursor = functools.partial(sqlite3.Cursor, raw)
            # read the file through a memory map: with a million credentials most lookups miss SQLite's
            # page cache, and each miss was a pread() (bench/README.md). Only this connection maps; what
            # it maps is the kernel's page cache, shared, not the worker's own memory.
            self.cursor().execute(f"PRAGMA mmap_size={HOT_PATH_MMAP_BYTES}").fetchall()
        else:
            raw.autocommit = True
            self.cursor = raw.cursor
        self.writer = raw.cursor
        self.fairy, self.pid, self.engine_ref = fairy, os.getpid(), weakref.ref(engine)
        if not event.contains(engine, "engine_disposed", _on_dispose):
            event.listen(engine, "engine_disposed", _on_dispose)
        return self.cursor

    def drop(self):
        fairy, self.fairy, self.engine_ref, self.cursor, self.writer = self.fairy, None, None, None, None
        if fairy is not None and self.pid == os.getpid():
            try:
                fairy.invalidate()  # never back into the pool: it is in autocommit mode
            except Exception:  # noqa: BLE001 - it is being thrown away
                pass


_held = _HeldConnection()


def _on_dispose(engine):
    if _held.engine_ref is not None and _held.engine_ref() is engine:
        _held.drop()


def _run(cursor_factory, sql, params):
    cur = cursor_factory()
    try:
        cur.execute(sql, params)
        return cur.fetchone()
    finally:
        cur.close()


def _lookup(token_digest: str):
    """The row for this digest (or None) and the snapshot classes over it."""
    engine = db.engine
    sql, positional, classes = _plan(engine)
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
            row = _run(conn.cursor, sql, params)
        except Exception:
            conn.invalidate()  # a connection that failed is not pooled again
            raise
        finally:
            conn.close()
    return row, classes


def authenticate(token: str):
    """One indexed lookup by digest. Returns (credential, registration, user, delegation) or raises 401.

    The four are read-only snapshots of this request's row (user and delegation None when absent).
    """
    row, ((cred_class, _), (reg_class, _), (user_class, user_at), (dele_class, dele_at)) = _lookup(digest(token))
    if row is None:
        raise ProtocolError(401, "invalid_token", "The credential is not known.")
    cred, reg = cred_class(row), reg_class(row)
    user = user_class(row) if row[user_at] is not None else None
    delegation = dele_class(row) if row[dele_at] is not None else None
    now = utcnow()
    if cred.revoked_at is not None:
        raise ProtocolError(401, "invalid_token", "The credential has been revoked.")
    if cred.expires_at is not None and cred.expires_at <= now:
        raise ProtocolError(401, "invalid_token", "The credential has expired.")
    if reg.status in ("expired", "revoked"):
        raise ProtocolError(401, "invalid_token", "The registration has ended.")
    if reg.status == "pending" and reg.claim_expires_at is not None and reg.claim_expires_at <= now:
        tx.keep_on_error(expire_by_id, reg.id, now)  # the caller's error path writes it (tx.rollback)
        raise ProtocolError(401, "invalid_token", "The registration was not claimed in time and has expired.")
    if user is not None and not user.is_active:
        raise ProtocolError(401, "invalid_token", "The user behind this credential is disabled.")
    if cred.last_used_at is None or now - cred.last_used_at >= LAST_USED_GRANULARITY:
        # at most one write a minute per credential, so the hot path stays a read for busy callers; an
        # agent that calls less often than that writes on each call, so the write is one cheap statement
        _touch({"credential_id": cred.id, "last_used_at": now, "stale_before": now - LAST_USED_GRANULARITY})
    return cred, reg, user, delegation


def _touch(params: dict) -> None:
    """The last_used_at UPDATE as one autocommit statement outside the session: through the session it was
    five round trips on PostgreSQL (pool ping, BEGIN, UPDATE, COMMIT, reset) and SQLAlchemy's transaction
    machinery on both (bench/README.md). A single UPDATE is atomic by itself, so nothing here commits.

    The write is bookkeeping: when it fails (a read-only or failing database) the caller is still who it
    is, so the API call goes on; the connection that failed is thrown away, so the next one works as soon
    as the database does again."""
    engine = db.engine
    try:
        if threading.current_thread() is threading.main_thread():
            _held.get(engine)
            cursor = _held.writer()
            try:
                _TOUCH.execute_on(engine.dialect, cursor, params)
                cursor.close()
            except Exception:
                _held.drop()  # never keep a connection in an unknown state; the next request gets a fresh one
                raise
        else:
            conn = engine.raw_connection()  # from the pool; autocommit for this one statement
            try:
                with _autocommit(conn.dbapi_connection):
                    cursor = conn.cursor()
                    _TOUCH.execute_on(engine.dialect, cursor, params)
                    cursor.close()
            except Exception:
                conn.invalidate()  # not back into the pool in an unknown state (e.g. opened read-only)
                raise
            finally:
                conn.close()
    except Exception as exc:  # noqa: BLE001 - see above: the last_used_at write may fail, the call may not
        _warn_touch_failed(exc)


@contextlib.contextmanager
def _autocommit(raw):
    """A pooled DBAPI connection in autocommit mode for a statement, then as the pool expects it back."""
    if isinstance(raw, sqlite3.Connection):
        before, raw.isolation_level = raw.isolation_level, None
        try:
            yield
        finally:
            raw.isolation_level = before
    else:
        before, raw.autocommit = raw.autocommit, True
        try:
            yield
        finally:
            if not raw.closed:
                raw.autocommit = before


_touch_warned = [0.0]


def _warn_touch_failed(exc: Exception) -> None:
    now = time.monotonic()
    if now - _touch_warned[0] >= 60:  # at most once a minute per process: a fault would flood the log
        _touch_warned[0] = now
        log.warning("last_used_at not written (%s: %s); the calls go on", type(exc).__name__, exc)


_credentials = Credential.__table__
# Only moves last_used_at forward: two workers or nodes touching the same credential cannot set it back.
# Compiled once (rawsql.Prepared), with the column types' conversions: as session.execute(update(...))
# this write cost more than the rest of the request (bench/README.md).
_TOUCH = Prepared(_credentials.update()
                  .where(_credentials.c.id == bindparam("credential_id"),
                         or_(_credentials.c.last_used_at.is_(None),
                             _credentials.c.last_used_at < bindparam("stale_before"))))
