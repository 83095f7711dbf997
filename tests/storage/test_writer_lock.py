"""SQLite writers take turns through a file lock (storage.writer_lock)."""

from __future__ import annotations

import fcntl
import os
import threading

import pytest

import storage
from storage.writer_lock import TurnTakingSqliteDatabase


@pytest.fixture
def database(tmp_path):
    database = storage.bind(f"sqlite:///{tmp_path}/turns.sqlite3")
    assert isinstance(database, TurnTakingSqliteDatabase)
    storage.db.execute_sql("CREATE TABLE IF NOT EXISTS t (n INTEGER)")
    yield database
    storage.unbind()


def _taken(database) -> bool:
    """True while some transaction holds the writer lock (tried from another open file)."""
    probe = os.open(database.lock_path, os.O_RDWR)
    try:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(probe)
    return False


def test_a_transaction_holds_the_writer_lock_until_it_commits(database):
    with storage.transaction():
        storage.db.execute_sql("INSERT INTO t VALUES (1)")
        assert _taken(database)
    assert not _taken(database)
    assert storage.db.execute_sql("SELECT COUNT(*) FROM t").fetchone() == (1,)


def test_a_rolled_back_transaction_gives_the_lock_back(database):
    with pytest.raises(RuntimeError), storage.transaction():
        storage.db.execute_sql("INSERT INTO t VALUES (1)")
        assert _taken(database)
        raise RuntimeError("roll back")
    assert not _taken(database)
    assert storage.db.execute_sql("SELECT COUNT(*) FROM t").fetchone() == (0,)


def test_a_writer_waits_for_the_holder_and_then_writes(database):
    """Another process holding the lock (an open file of its own) makes a writer wait, not fail."""
    holder = os.open(database.lock_path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    done = threading.Event()

    def write() -> None:
        with storage.transaction():
            storage.db.execute_sql("INSERT INTO t VALUES (2)")
        storage.db.close()
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert not done.wait(0.3)  # still waiting for the lock
    finally:
        fcntl.flock(holder, fcntl.LOCK_UN)
        os.close(holder)
    writer.join(30)
    assert done.is_set()
    assert storage.db.execute_sql("SELECT n FROM t").fetchall() == [(2,)]


def test_closing_a_connection_closes_its_lock_file(database):
    with storage.transaction():
        pass
    connection = database.connection()
    lock = connection.writer_lock
    assert lock is not None
    database.close_all()
    assert connection.writer_lock is None
    with pytest.raises(OSError):
        os.fstat(lock)
