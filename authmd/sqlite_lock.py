"""SQLite room: serialize writers across processes with a kernel lock, so they queue instead of polling.

SQLite has one writer at a time. When two gunicorn workers both want to write, the loser does not
queue: SQLite's busy handler sleeps (1, 2, 5, 10, ... up to 100 ms) and retries, so a registration that
lost a race by a microsecond waits for the next poll. Under load that was most of POST /agent/auth's
time (p50 20 ms, p99 76 ms at 8 connections; bench/README.md). Here every write transaction first
takes an exclusive flock() on `<database>.lock`: a waiting writer sleeps in the kernel and is woken the
moment the holder commits. Holding that lock before the first write of a transaction gives the
transaction BEGIN IMMEDIATE semantics among authmd's processes, and SQLite's own locking stays as it was
underneath (busy_timeout still covers anything that writes without this lock, e.g. the sqlite3 shell).

Readers never take it: WAL lets them run beside the writer.

Where a write transaction starts: Python's sqlite3 (legacy transaction control, which SQLAlchemy uses)
runs SELECTs outside a transaction and opens one (BEGIN DEFERRED) just before the first INSERT/UPDATE/
DELETE/REPLACE; SAVEPOINT or DDL may open one too. So a connection takes the lock before executing any
statement that is not a SELECT, and gives it back as soon as the connection is out of its transaction:
after commit(), rollback(), close(), or after a statement in autocommit mode.

Within a process the lock is one flock on one file descriptor (reopened after fork) guarded by a mutex:
threads queue on the mutex, and a thread that writes through a second connection while its first one
holds the lock re-enters instead of deadlocking with itself (SQLite then decides, as it always did).
A holder that never finishes is bounded by gunicorn's worker timeout (the kernel drops a dead
process's flock); a thread waiting in-process gives up after the busy timeout, like SQLite would.
"""
import fcntl
import os
import sqlite3
import threading

_WRITE_FREE = ("SELECT",)  # statements that never need the writer lock (the hot path's lookup is one)


class _ProcessLock:
    def __init__(self, path: str, timeout: float):
        self.path, self.timeout = path, timeout
        # a plain Lock, not an RLock: a connection may be given back (rolled back) by another thread than
        # the one that wrote through it (e.g. the pool reset after garbage collection), and an RLock can
        # only be released by its owner. Re-entry by the owning thread is tracked by hand (owner, depth).
        self.mutex = threading.Lock()
        self.owner = None
        self.depth = 0  # how many connections of the owning thread hold it
        self.fd, self.pid = None, None

    def _fd(self) -> int:
        if self.pid != os.getpid():  # a forked worker must not share the parent's open file description
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self.pid = os.getpid()
        return self.fd

    def acquire(self) -> None:
        me = threading.get_ident()
        if self.owner == me:  # only this thread ever sets owner to its own ident, so this read is safe
            self.depth += 1
            return
        if not self.mutex.acquire(timeout=self.timeout):
            raise sqlite3.OperationalError("database is locked (another thread of this process holds the writer lock)")
        try:
            fcntl.flock(self._fd(), fcntl.LOCK_EX)  # blocks in the kernel until the holder is done
        except BaseException:
            self.mutex.release()
            raise
        self.owner, self.depth = me, 1

    def release(self) -> None:
        if self.depth <= 0:  # a connection inherited across fork releasing its parent's hold: not ours
            return
        self.depth -= 1
        if self.depth == 0:
            self.owner = None
            try:
                fcntl.flock(self._fd(), fcntl.LOCK_UN)
            finally:
                self.mutex.release()


_locks: dict[str, _ProcessLock] = {}
_locks_guard = threading.Lock()


def _after_fork_in_child():
    # A child forked while some thread held the lock must not inherit that hold (it is the parent's):
    # start from nothing; its own fd is opened on first use (see _fd).
    global _locks_guard
    _locks_guard = threading.Lock()
    for lock in _locks.values():
        lock.mutex, lock.owner, lock.depth, lock.fd, lock.pid = threading.Lock(), None, 0, None, None


os.register_at_fork(after_in_child=_after_fork_in_child)


def lock_for(database_path: str, timeout: float = 30.0) -> _ProcessLock:
    path = os.path.abspath(database_path) + ".lock"
    with _locks_guard:
        if path not in _locks:
            _locks[path] = _ProcessLock(path, timeout)
        return _locks[path]


class LockingCursor(sqlite3.Cursor):
    def execute(self, sql, *args):
        self.connection._before(sql)
        try:
            return super().execute(sql, *args)
        finally:
            self.connection._after()

    def executemany(self, sql, *args):
        self.connection._before(sql)
        try:
            return super().executemany(sql, *args)
        finally:
            self.connection._after()

    def executescript(self, script):
        self.connection._before(script)
        try:
            return super().executescript(script)
        finally:
            self.connection._after()


class LockingConnection(sqlite3.Connection):
    """sqlite3.connect(factory=...) for a database file; `writer_lock` is set right after connecting."""

    writer_lock: _ProcessLock | None = None
    _holds = False

    def cursor(self, factory=LockingCursor):
        return super().cursor(factory)

    def execute(self, sql, *args):  # the shortcut; SQLAlchemy uses cursors, sqlite3 users may not
        return self.cursor().execute(sql, *args)

    def executemany(self, sql, *args):
        return self.cursor().executemany(sql, *args)

    def _before(self, sql: str) -> None:
        if self._holds or self.writer_lock is None:
            return
        if sql.lstrip()[:6].upper().startswith(_WRITE_FREE):
            return
        self.writer_lock.acquire()
        self._holds = True

    def _after(self) -> None:
        if self._holds and not self.in_transaction:  # autocommit statement done, or COMMIT/ROLLBACK as SQL
            self._release()

    def _release(self) -> None:
        self._holds = False
        self.writer_lock.release()

    def commit(self):
        try:
            super().commit()
        finally:
            if self._holds and not self.in_transaction:
                self._release()

    def rollback(self):
        try:
            super().rollback()
        finally:
            if self._holds and not self.in_transaction:
                self._release()

    def close(self):
        try:
            super().close()
        finally:
            if self._holds:
                self._release()


def install(engine, timeout: float = 30.0) -> bool:
    """Make every new DBAPI connection of this SQLite engine take the writer lock. False for :memory:."""
    from sqlalchemy import event

    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return False
    lock = lock_for(database, timeout)

    @event.listens_for(engine, "do_connect")
    def _factory(_dialect, _record, _cargs, cparams):
        cparams["factory"] = LockingConnection

    @event.listens_for(engine, "connect", insert=True)
    def _attach(dbapi_conn, _record):
        dbapi_conn.writer_lock = lock

    return True
