"""SQLite writers take turns through a file lock, instead of SQLite's busy sleeps.

SQLite lets one transaction write at a time; one that finds the write lock
taken sleeps 1, 2, 5, 10 … up to 100 ms between tries (its busy handler), so
with two processes writing short transactions the second mostly sleeps while
the first takes the lock again: two gunicorn workers wrote hardly more than one.
Here every transaction first takes an exclusive ``flock`` on ``<database>-writer.lock``
(one open file per connection, so threads take turns too) and gives it back when
it commits or rolls back: a waiting writer is woken by the kernel the moment the
lock is free, in the order they came.

Like a PostgreSQL row lock, the wait has no timeout. A writer that does not
take this lock (another program) still meets SQLite's busy timeout.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from typing import Any

from playhouse.pool import PooledSqliteDatabase

__all__ = ["TurnTakingSqliteDatabase"]


class _Connection(sqlite3.Connection):
    """A SQLite connection with its own open file of the writer lock."""

    writer_lock: int | None = None

    def close(self) -> None:
        super().close()
        if self.writer_lock is not None:
            os.close(self.writer_lock)
            self.writer_lock = None


class TurnTakingSqliteDatabase(PooledSqliteDatabase):
    """A pooled SQLite database whose transactions take the writer lock first."""

    def __init__(self, database: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, factory=_Connection, **kwargs)
        self.lock_path = f"{os.path.abspath(database)}-writer.lock"

    def _lock_file(self) -> int:
        conn = self.connection()
        if conn.writer_lock is None:
            conn.writer_lock = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return conn.writer_lock

    def begin(self, lock_type: str | None = None) -> None:
        lock = self._lock_file()
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            super().begin(lock_type)
        except BaseException:
            fcntl.flock(lock, fcntl.LOCK_UN)
            raise

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            fcntl.flock(self._lock_file(), fcntl.LOCK_UN)

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            fcntl.flock(self._lock_file(), fcntl.LOCK_UN)
