"""SQLite writer lock: write transactions hold an flock on <database>.lock from first write to commit."""
import fcntl
import multiprocessing
import os
import sqlite3

import pytest

from authmd import sqlite_lock
from authmd.extensions import db
from authmd.models import Setting


def _locked(path: str) -> bool:
    """Whether some other open file description holds the flock (a fresh fd conflicts even in-process)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@pytest.fixture
def raw(tmp_path):
    path = str(tmp_path / "x.sqlite3")
    conn = sqlite3.connect(path, factory=sqlite_lock.LockingConnection)
    conn.writer_lock = sqlite_lock.lock_for(path, timeout=5)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (v INTEGER)")
    conn.commit()
    yield conn, path + ".lock"
    conn.close()


def test_write_transaction_holds_the_lock_until_commit(raw):
    conn, lock = raw
    conn.execute("SELECT count(*) FROM t").fetchone()
    assert not _locked(lock)  # readers never take it
    conn.execute("INSERT INTO t VALUES (1)")
    assert conn.in_transaction and _locked(lock)
    conn.execute("INSERT INTO t VALUES (2)")  # the same transaction: still held once
    conn.commit()
    assert not _locked(lock)


def test_rollback_and_autocommit_release_the_lock(raw):
    conn, lock = raw
    conn.execute("UPDATE t SET v = 3")
    assert _locked(lock)
    conn.rollback()
    assert not _locked(lock)
    conn.isolation_level = None  # autocommit: each statement its own transaction
    conn.execute("INSERT INTO t VALUES (4)")
    assert not _locked(lock)


def test_close_releases_the_lock(tmp_path):
    path = str(tmp_path / "y.sqlite3")
    conn = sqlite3.connect(path, factory=sqlite_lock.LockingConnection)
    conn.writer_lock = sqlite_lock.lock_for(path, timeout=5)
    conn.execute("CREATE TABLE t (v INTEGER)")
    conn.execute("INSERT INTO t VALUES (1)")
    assert _locked(path + ".lock")
    conn.close()
    assert not _locked(path + ".lock")


def _writer(path, n, queue):
    # SQLite's own busy handler would retry for `timeout` seconds and hide a missing lock: give it none,
    # so a writer that finds the database busy fails at once unless the flock made it queue first
    conn = sqlite3.connect(path, factory=sqlite_lock.LockingConnection, timeout=0)
    conn.writer_lock = sqlite_lock.lock_for(path, timeout=30)
    for i in range(n):
        conn.execute("INSERT INTO t VALUES (?)", (i,))
        conn.commit()
    conn.close()
    queue.put(n)


def test_processes_queue_on_the_lock_and_every_write_lands(raw):
    conn, lock = raw
    path = lock[:-len(".lock")]
    conn.execute("INSERT INTO t VALUES (-1)")  # hold it: the children must wait in flock, then all succeed
    ctx = multiprocessing.get_context("spawn")  # never fork with an open SQLite connection
    queue = ctx.Queue()
    children = [ctx.Process(target=_writer, args=(path, 200, queue)) for _ in range(3)]
    for c in children:
        c.start()
    conn.commit()
    for c in children:
        c.join(60)
        assert c.exitcode == 0
    assert sorted(queue.get() for _ in children) == [200, 200, 200]
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 601


def test_the_app_takes_and_releases_the_lock(app, client, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite only")
    with app.app_context():
        lock = os.path.abspath(db.engine.url.database) + ".lock"
        assert not _locked(lock)
        db.session.merge(Setting(key="service_name", value='"Locked"'))
        db.session.flush()
        assert _locked(lock)
        db.session.commit()
        assert not _locked(lock)
    r = client.post("/agent/auth", json={"type": "anonymous"})
    assert r.status_code == 200
    assert not _locked(lock)


def test_another_thread_may_give_the_connection_back(raw):
    """A pool reset can roll a connection back on another thread: the lock must come free all the same."""
    import threading
    conn, lock = raw
    conn.execute("INSERT INTO t VALUES (5)")
    assert _locked(lock)
    conn2 = sqlite3.connect(lock[:-len(".lock")], factory=sqlite_lock.LockingConnection, check_same_thread=False)
    conn2.writer_lock = conn.writer_lock
    conn.rollback()  # give back the first hold on this thread
    conn2.execute("INSERT INTO t VALUES (6)")  # take it again on this thread, through another connection
    t = threading.Thread(target=conn2.rollback)
    t.start()
    t.join()
    assert not _locked(lock)
    conn.execute("INSERT INTO t VALUES (7)")  # and this thread can take it again at once
    conn.commit()
    conn2.close()


def test_one_thread_writing_through_two_connections_reenters(raw):
    conn, lock = raw
    conn2 = sqlite3.connect(lock[:-len(".lock")], factory=sqlite_lock.LockingConnection, timeout=0.1)
    conn2.writer_lock = conn.writer_lock
    conn.execute("INSERT INTO t VALUES (8)")
    # the same thread does not deadlock with itself on the kernel lock; SQLite then refuses the second
    # writer as it always did (busy), and the hold is still released cleanly
    with pytest.raises(sqlite3.OperationalError):
        conn2.execute("INSERT INTO t VALUES (9)")
    conn2.rollback()
    assert _locked(lock)
    conn.commit()
    assert not _locked(lock)
    conn2.close()
