"""The database binding: one proxy every model uses, bound late from a URL.

SQLite is the embedded default (WAL, foreign keys on, a busy timeout, and
``BEGIN IMMEDIATE`` so a writing transaction holds the write lock from its first
statement: two writers queue instead of deadlocking on a lock upgrade; they
queue on a file lock, :mod:`storage.writer_lock`, rather than SQLite's sleeps).
PostgreSQL is for production; ``postgresql://`` URLs get a connection pool.

One database per process: a second :func:`bind` to another URL is refused, so
one app cannot silently move another's data; :func:`unbind` releases it first.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

from peewee import Database, DatabaseProxy, SqliteDatabase
from playhouse.db_url import connect as connect_url
from playhouse.db_url import parse as parse_url
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

from .prepared import PreparingPostgresqlDatabase
from .writer_lock import TurnTakingSqliteDatabase

__all__ = ["db", "bind", "unbind", "dialect", "transaction", "on_commit", "after_transaction",
           "transaction_cache", "SQLITE_BUSY_TIMEOUT"]

log = logging.getLogger(__name__)

#: The proxy every model is bound to; :func:`bind` points it at a real database.
db = DatabaseProxy()

#: Seconds a SQLite writer waits for the write lock before giving up.
SQLITE_BUSY_TIMEOUT = 30

_SQLITE_PRAGMAS = (
    ("journal_mode", "wal"),
    ("foreign_keys", 1),
    ("synchronous", "normal"),
    ("busy_timeout", SQLITE_BUSY_TIMEOUT * 1000),
)

_binding_lock = threading.Lock()
_bound_url: str | None = None


def bind(url: str, *, pool_size: int = 20, prepare: bool = True) -> Database:
    """Open the database named by ``url`` and point :data:`db` at it.

    ``sqlite:///path`` (relative paths are relative to the working directory),
    ``postgresql://user@host:port/name``; both pooled (``pool_size`` connections
    per process). ``prepare``: on PostgreSQL, run the statements of
    :class:`~storage.Statements` as server-side prepared statements (off behind
    PgBouncer in transaction mode). Returns the database. Binding the URL already bound returns its
    database (the first pool size stays); another URL raises ``RuntimeError``
    until :func:`unbind` has released the first.
    """
    global _bound_url
    if not url:
        raise ValueError("Missing database URL: set ADDONS_DATABASE_URL.")
    with _binding_lock:
        if _bound_url == url:
            return db.obj
        if _bound_url is not None:
            raise RuntimeError(
                f"storage is already bound to {_redacted(_bound_url)}; refusing to rebind it to {_redacted(url)} "
                "(one database per process: call storage.unbind() first to switch on purpose)."
            )
        database = _open(url, pool_size, prepare)
        db.initialize(database)
        _bound_url = url
        return database


def unbind() -> None:
    """Close the bound database's connections and forget it, so :func:`bind` may
    name another. Does nothing when none is bound."""
    global _bound_url
    with _binding_lock:
        database, _bound_url = db.obj, None
        db.initialize(None)
        _release(database)


def _open(url: str, pool_size: int, prepare: bool) -> Database:
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
        if not path:
            raise ValueError(f"Bad SQLite URL {url!r}: use sqlite:///relative.db or sqlite:////abs/path.db")
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        # Pooled: closing a request's connection keeps it for the next request,
        # instead of reopening (pragmas) and, for the last one, checkpointing the WAL.
        # Writers take turns through a file lock (storage.writer_lock).
        return (PooledSqliteDatabase if path == ":memory:" else TurnTakingSqliteDatabase)(
            path,
            pragmas=_SQLITE_PRAGMAS,
            timeout=SQLITE_BUSY_TIMEOUT,
            lock_type="IMMEDIATE",
            check_same_thread=False,
            max_connections=pool_size,
            stale_timeout=300,
        )
    if scheme in ("postgres", "postgresql"):
        options = dict(parse_url(url), max_connections=pool_size, stale_timeout=300, timeout=10, connect_timeout=5)
        return (PreparingPostgresqlDatabase if prepare else PooledPostgresqlDatabase)(**options)
    return connect_url(url)


def _redacted(url: str) -> str:
    """``url`` without its password, fit for an error message."""
    parts = urlparse(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _release(database: Database | None) -> None:
    """Close a database the proxy no longer points at."""
    if database is None:
        return
    try:
        if hasattr(database, "close_all"):
            database.close_all()
        elif not database.is_closed():
            database.close()
    except Exception:  # e.g. a transaction left open in this thread
        log.debug("previous database did not close cleanly", exc_info=True)


def dialect() -> str:
    """``"sqlite"`` or ``"postgresql"``: which prepared SQL the hot path uses."""
    return "sqlite" if isinstance(db.obj, SqliteDatabase) else "postgresql"


# Per thread: how deep this thread is in transaction() blocks, and what runs
# when the outermost one ends (see after_transaction).
_blocks = threading.local()


@contextmanager
def transaction() -> Iterator[None]:
    """Join the current transaction, or begin one.

    Nested blocks do not open savepoints: an exception that leaves any block
    rolls the whole transaction back. Code that catches an error inside a
    transaction and carries on must only catch errors raised before it wrote.
    """
    depth = getattr(_blocks, "depth", 0)
    _blocks.depth = depth + 1
    try:
        with db.transaction():
            yield
    finally:
        _blocks.depth = depth
        if depth == 0:
            _blocks.cache = None
            _run_after_transaction()


def transaction_cache() -> dict:
    """A dict that lives as long as the current outermost :func:`transaction`
    block (a fresh, throwaway one outside any): for reads that several changes
    of one transaction share (a batch of usage records, the signals of one
    change), never for anything another transaction may change and this one
    must see (each new transaction starts empty)."""
    if getattr(_blocks, "depth", 0) == 0:
        return {}
    cache = getattr(_blocks, "cache", None)
    if cache is None:
        cache = _blocks.cache = {}
    return cache


def _guarded(fn: Callable[[], object], what: str) -> Callable[[], None]:
    """``fn`` with its errors logged, never raised: what it follows is already over."""

    def guarded() -> None:
        try:
            fn()
        except Exception:
            log.exception("%s callback %r failed", what, fn)

    return guarded


def on_commit(fn: Callable[[], object]) -> None:
    """Run ``fn`` after the current transaction commits (now, if none is open).

    Nothing runs if the transaction rolls back. Errors ``fn`` raises are logged,
    never raised: the change they follow is already committed.
    """
    guarded = _guarded(fn, "on_commit")
    if db.obj is not None and db.in_transaction():
        db.after_commit(guarded)
    else:
        guarded()


def after_transaction(fn: Callable[[], object]) -> None:
    """Run ``fn`` once the outermost :func:`transaction` block has ended,
    committed or rolled back (now, if none is open).

    For what follows a refusal: a refused change rolls its transaction back, yet
    what it tells (a deduction was refused) stays true. ``fn`` runs outside the
    transaction and opens its own to write. Errors are logged, never raised.
    """
    guarded = _guarded(fn, "after_transaction")
    if getattr(_blocks, "depth", 0) == 0:
        guarded()
    else:
        _blocks.pending = [*getattr(_blocks, "pending", ()), guarded]


def _run_after_transaction() -> None:
    pending, _blocks.pending = getattr(_blocks, "pending", ()), []
    for fn in pending:
        fn()
