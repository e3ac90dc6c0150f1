"""Database faults room: which errors leave a connection unfit for use, and the write probe behind /readyz.

A fault must end by itself when its cause does. SQLite decides once, when it opens a connection, whether
the file can be written: a connection opened while the file was read-only (a full or remounted disk, a
file made immutable, wrong permissions) stays read-only for good, and one that hit an I/O error may be
left in a state nobody should trust. Kept in the pool, such connections failed every write long after the
file was writable again ("attempt to write a readonly database" until a restart). So these errors count
as a lost connection: SQLAlchemy then invalidates the connection that saw one, and the pool replaces every
connection opened before it on its next checkout. A connection SQLite opened read-only is used at most
once. On PostgreSQL the same holds for a server that turned into a read-only standby (failover).
"""
import os
import sqlite3

from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError

# SQLite primary result codes after which the connection is replaced
_SQLITE_UNFIT = {sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_FULL,
                 sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_NOTADB}
# PostgreSQL: connection exceptions (class 08), and read_only_sql_transaction (a standby after failover)
_PG_UNFIT_CLASSES = ("08",)
_PG_UNFIT = {"25006"}

# A write that changes nothing, as one autocommit statement: it fails on a read-only database (checked
# before any lock is taken) and otherwise only queues briefly for the write lock. BEGIN IMMEDIATE alone
# is no probe: SQLite grants it to a connection that opened the file read-only.
PROBE = "UPDATE settings SET value = value WHERE 1 = 0"


def unfit(exc: BaseException) -> bool:
    """Whether a DBAPI error means the connection that raised it must not be used again."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _SQLITE_UNFIT
    state = getattr(exc, "sqlstate", None)
    return bool(state) and (state in _PG_UNFIT or state[:2] in _PG_UNFIT_CLASSES)


def install(engine) -> None:
    """Make the engine treat unfit() errors as a lost connection. SQLAlchemy asks the dialect's
    is_disconnect on every DBAPI error, on its own paths and on rawsql's, and invalidates the connection
    (and the pool's older ones) when it says yes; the dialect object is this engine's own."""
    dialect = engine.dialect
    if getattr(dialect, "_authmd_unfit", False):
        return
    own = dialect.is_disconnect

    def is_disconnect(e, connection, cursor):
        return own(e, connection, cursor) or unfit(e)

    dialect.is_disconnect = is_disconnect
    dialect._authmd_unfit = True
    path = engine.url.database if engine.dialect.name == "sqlite" else None
    if not path or path == ":memory:" or path.startswith("file:"):
        return

    @event.listens_for(engine, "connect")
    def _note_read_only(_dbapi_conn, record):
        # SQLite opens a file it may not write read-only, without a word: ask the OS the same question
        record.info["authmd_read_only"] = not writable(path)

    @event.listens_for(engine, "checkout")
    def _read_only_once(_dbapi_conn, record, _proxy):
        if record.info.get("authmd_read_only"):
            if record.info.get("authmd_used"):
                raise DisconnectionError("opened while the database file was read-only")  # the pool reconnects
            record.info["authmd_used"] = True


def writable(path: str) -> bool:
    """Whether this process may write the file, as SQLite will find when it opens it (root included:
    access(2) refuses root too for an immutable file or a read-only mount). The file is never opened here:
    closing any descriptor of a SQLite database drops every POSIX lock this process holds on it, those of
    its open connections included (sqlite.org/howtocorrupt.html §2.2), which let readers see stale data."""
    if not os.path.exists(path):
        return True  # SQLite creates it
    return os.access(path, os.W_OK)


def probe_sqlite(path: str, timeout: float = 5.0) -> None:
    """The write probe on a fresh connection (a pooled one may predate the fault and only fail at its
    next commit); it queues for authmd's writer lock like any write. Raises what SQLite raises."""
    from . import sqlite_lock
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, factory=sqlite_lock.LockingConnection)
    try:
        conn.writer_lock = sqlite_lock.lock_for(path, timeout)
        conn.execute(PROBE).close()
    finally:
        conn.close()
