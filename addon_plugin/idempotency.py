"""Idempotent writes, on Stripe's rules.

A write that carries an idempotency key runs in one transaction with the record
of its result, so the two commit together or not at all. A replay (same merchant,
same key space, same key, same request) returns the stored status and body; the
same key with a different request is :class:`IdempotencyKeyReused`. Refusals
(402, 404, 409, …) are stored too: the failed attempt is rolled back first, so
nothing it wrote survives, and the refusal is recorded in a transaction of its
own. Validation errors (422, however deep they are found) and errors from a
receiver (5xx) store nothing, so the request may be corrected or retried with
the same key.

Key spaces keep callers apart within a merchant: the merchant's API keys share
:data:`MERCHANT_KEYS`; each signed-in buyer has :func:`buyer_key_space`. The key
itself is stored as sent, so any key of 1 to 255 characters fits.

While one request holds a key, a concurrent one with the same key is
:class:`IdempotencyKeyInUse` on PostgreSQL (an advisory lock); on SQLite the
write lock makes it wait, and it then replays the stored result.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from peewee import IntegrityError

import storage
from storage import Statements, db, dialect, transaction

from .errors import AddonError, IdempotencyKeyInUse, IdempotencyKeyReused, ValidationError

__all__ = ["MERCHANT_KEYS", "IN_USE", "Outcome", "Stored", "buyer_key_space", "fingerprint", "run", "claim_many",
           "replay_of", "store_many", "prune"]

#: The key space of every request made with one of the merchant's API keys.
MERCHANT_KEYS = "api"

_SQL = Statements(
    # PostgreSQL: take the key's lock and read its record in one round trip.
    lock_and_select={"postgresql": (
        "SELECT pg_try_advisory_xact_lock(hashtextextended(?, 0)), r.request_hash, r.response_status, "
        "r.response_body, r.created_at FROM (SELECT 1) AS one "
        "LEFT JOIN idempotency_record r ON r.merchant_id = ? AND r.key_space = ? AND r.key = ?")},
    select=("SELECT request_hash, response_status, response_body, created_at FROM idempotency_record "
            "WHERE merchant_id = ? AND key_space = ? AND key = ?"),
    delete="DELETE FROM idempotency_record WHERE merchant_id = ? AND key_space = ? AND key = ?",
    insert=("INSERT INTO idempotency_record (merchant_id, key_space, key, request_hash, response_status, "
            "response_body, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"),
    prune="DELETE FROM idempotency_record WHERE created_at < ?",
    # PostgreSQL: try many keys' locks in one round trip, in the order given.
    lock_many={"postgresql": ("SELECT pg_try_advisory_xact_lock(hashtextextended(k, 0)) "
                              "FROM unnest(?::text[]) WITH ORDINALITY AS t(k, n) ORDER BY n")},
)


@dataclass(frozen=True)
class Outcome:
    """A write's response: status, JSON body, and whether it was replayed."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)
    replayed: bool = False


#: A write: returns ``(body, status)``, or an :class:`Outcome` with ``replayed``
#: set when it found its change already made (the ledger keeps keys for good).
Action = Callable[[], "tuple[dict[str, Any], int] | Outcome"]


def buyer_key_space(email: str) -> str:
    """The key space of one signed-in buyer: their own, within their merchant's,
    and of a fixed length (a hash of the e-mail)."""
    return "buyer:" + hashlib.sha256(email.encode()).hexdigest()


def fingerprint(*parts: Any) -> str:
    """A stable hash of what makes two requests "the same request"."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def run(merchant_id: str, key: str | None, request_hash: str, action: Action, *,
        key_space: str = MERCHANT_KEYS, redact: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Outcome:
    """Run ``action`` at most once per key of ``key_space``.

    ``redact`` gives the body to store for replays when the first answer holds
    a secret that must not be kept (a new API key)."""
    if key is None:
        with transaction():
            return _outcome(action())
    record = (merchant_id, key_space, key)
    for attempt in (1, 2):
        try:
            return _run_once(record, request_hash, action, redact)
        except IntegrityError:
            # PostgreSQL: the key's first request committed after this claim's
            # snapshot was taken but before its lock was: the record was not
            # seen and its insert collided. All was rolled back; a second claim sees it.
            if attempt == 2 or db.in_transaction():
                raise
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Stored:
    """A key's stored outcome and the hash of the request that made it."""

    request_hash: str
    outcome: Outcome


#: What :func:`claim_many` answers for a key another transaction holds (PostgreSQL).
IN_USE = Stored("", Outcome(409))


def claim_many(merchant_id: str, keys: list[str], *, key_space: str = MERCHANT_KEYS) -> dict[str, Stored]:
    """Hold each of ``keys`` for the current transaction, as :func:`run` does one:
    ``{key: stored outcome}`` for the keys that have one (their request hashes are
    checked by :func:`replay_of`), and :data:`IN_USE` for those a concurrent
    transaction holds (PostgreSQL; on SQLite the write lock orders them).
    A few statements for any number of keys: a batch of usage records."""
    found: dict[str, Stored] = {}
    keys = list(dict.fromkeys(keys))
    if not keys:
        return found
    if dialect() == "postgresql":
        locks = [json.dumps((merchant_id, key_space, key)) for key in keys]
        held = [row[0] for row in db.execute_sql(_SQL["lock_many"], (locks,)).fetchall()]
        found.update((key, IN_USE) for key, ok in zip(keys, held, strict=True) if not ok)
    expired = storage.utcnow() - _ttl()
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        rows = db.execute_sql(storage.sql(
            "SELECT key, request_hash, response_status, response_body, created_at FROM idempotency_record "
            f"WHERE merchant_id = ? AND key_space = ? AND key IN ({', '.join(['?'] * len(chunk))})"),
            (merchant_id, key_space, *chunk)).fetchall()
        for key, request_hash, status, body, created_at in rows:
            if key in found:
                continue
            if isinstance(created_at, str):
                created_at = datetime.fromisoformat(created_at)
            if created_at < expired:
                db.execute_sql(_SQL["delete"], (merchant_id, key_space, key))
                continue
            found[key] = Stored(request_hash, Outcome(status, json.loads(body), replayed=True))
    return found


def replay_of(stored: Stored, request_hash: str, key: str) -> Outcome:
    """The outcome :func:`claim_many` found stored, for the request ``request_hash``;
    :class:`IdempotencyKeyReused` if the key was used for another request."""
    if stored.request_hash != request_hash:
        raise IdempotencyKeyReused(key=key)
    return stored.outcome


def store_many(merchant_id: str, results: list[tuple[str, str, Outcome]], *, key_space: str = MERCHANT_KEYS) -> None:
    """Record ``(key, request_hash, outcome)`` results in the current transaction,
    as :func:`run` records one (keys held by :func:`claim_many`)."""
    now = storage.utcnow()
    for start in range(0, len(results), 200):
        chunk = results[start:start + 200]
        params: list[Any] = []
        for key, request_hash, outcome in chunk:
            params += [merchant_id, key_space, key, request_hash, outcome.status,
                       json.dumps(outcome.body, separators=(",", ":")), now]
        db.execute_sql(storage.sql(
            "INSERT INTO idempotency_record (merchant_id, key_space, key, request_hash, response_status, "
            "response_body, created_at) VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(chunk))), params)


def prune(older_than: timedelta | None = None) -> int:
    """Delete records past their time to live; returns how many."""
    return db.execute_sql(_SQL["prune"], (storage.utcnow() - (older_than or _ttl()),)).rowcount


def _run_once(record: tuple[str, str, str], request_hash: str, action: Action,
              redact: Callable[[dict[str, Any]], dict[str, Any]] | None) -> Outcome:
    try:
        with transaction():
            stored = _claim(record, request_hash)
            if stored is not None:
                return stored
            outcome = _outcome(action())
            _store(record, request_hash, outcome.status, redact(outcome.body) if redact else outcome.body)
            return outcome
    except (IdempotencyKeyInUse, ValidationError):
        raise
    except AddonError as refusal:
        if not 400 <= refusal.status < 500:
            raise
        outcome = Outcome(refusal.status, refusal.to_dict())
    with transaction():
        stored = _claim(record, request_hash)
        if stored is not None:
            return stored
        _store(record, request_hash, outcome.status, outcome.body)
    return outcome


def _outcome(result: tuple[dict[str, Any], int] | Outcome) -> Outcome:
    if isinstance(result, Outcome):
        return result
    body, status = result
    return Outcome(status, body)


def _ttl() -> timedelta:
    return timedelta(seconds=current_app.config["ADDONS_IDEMPOTENCY_TTL"])


def _claim(record: tuple[str, str, str], request_hash: str) -> Outcome | None:
    """Hold the key for this transaction; the stored outcome if there is one
    (and it has not expired: ``storage.utcnow`` is read at each call, so a test
    can move the clock)."""
    if dialect() == "postgresql":
        held, *row = db.execute_sql(_SQL["lock_and_select"], (json.dumps(record), *record)).fetchone()
        if not held:
            raise IdempotencyKeyInUse(key=record[2])
        if row[0] is None:
            return None
    else:
        row = db.execute_sql(_SQL["select"], record).fetchone()
        if row is None:
            return None
    stored_hash, status, body, created_at = row
    if isinstance(created_at, str):
        created_at = datetime.fromisoformat(created_at)
    if created_at < storage.utcnow() - _ttl():
        db.execute_sql(_SQL["delete"], record)
        return None
    if stored_hash != request_hash:
        raise IdempotencyKeyReused(key=record[2])
    return Outcome(status, json.loads(body), replayed=True)


def _store(record: tuple[str, str, str], request_hash: str, status: int, body: dict[str, Any]) -> None:
    db.execute_sql(_SQL["insert"], (*record, request_hash, status,
                                    json.dumps(body, separators=(",", ":")), storage.utcnow()))
