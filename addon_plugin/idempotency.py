"""Idempotent writes, on Stripe's rules.

A write that carries an idempotency key runs in one transaction with the record
of its result, so the two commit together or not at all. A replay (same merchant,
same key, same request) returns the stored status and body; the same key with a
different request is :class:`IdempotencyKeyReused`. Refusals (402, 404, 409, …)
are stored too: the failed attempt is rolled back first, so nothing it wrote
survives, and the refusal is recorded in a transaction of its own. Validation
errors (422, however deep they are found) and errors from a receiver (5xx) store
nothing, so the request may be corrected or retried with the same key.

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

from storage import Statements, db, dialect, transaction, utcnow

from .errors import AddonError, IdempotencyKeyInUse, IdempotencyKeyReused, ValidationError

__all__ = ["Outcome", "fingerprint", "run", "prune"]

Action = Callable[[], tuple[dict[str, Any], int]]

_SQL = Statements(
    # PostgreSQL: take the key's lock and read its record in one round trip.
    lock_and_select={"postgresql": (
        "SELECT pg_try_advisory_xact_lock(hashtextextended(?, 0)), r.request_hash, r.response_status, "
        "r.response_body, r.created_at FROM (SELECT 1) AS one "
        "LEFT JOIN idempotency_record r ON r.merchant_id = ? AND r.key = ?")},
    select=("SELECT request_hash, response_status, response_body, created_at FROM idempotency_record "
            "WHERE merchant_id = ? AND key = ?"),
    delete="DELETE FROM idempotency_record WHERE merchant_id = ? AND key = ?",
    insert=("INSERT INTO idempotency_record (merchant_id, key, request_hash, response_status, "
            "response_body, created_at) VALUES (?, ?, ?, ?, ?, ?)"),
    prune="DELETE FROM idempotency_record WHERE created_at < ?",
)


@dataclass(frozen=True)
class Outcome:
    """A write's response: status, JSON body, and whether it was replayed."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)
    replayed: bool = False


def fingerprint(*parts: Any) -> str:
    """A stable hash of what makes two requests "the same request"."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def run(merchant_id: str, key: str | None, request_hash: str, action: Action, *,
        redact: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Outcome:
    """Run ``action`` (which returns ``(body, status)``) at most once per key.

    ``redact`` gives the body to store for replays when the first answer holds
    a secret that must not be kept (a new API key)."""
    if key is None:
        with transaction():
            body, status = action()
        return Outcome(status, body)
    try:
        with transaction():
            stored = _claim(merchant_id, key, request_hash)
            if stored is not None:
                return stored
            body, status = action()
            _store(merchant_id, key, request_hash, status, redact(body) if redact else body)
            return Outcome(status, body)
    except (IdempotencyKeyInUse, ValidationError):
        raise
    except AddonError as refusal:
        if not 400 <= refusal.status < 500:
            raise
        body, status = refusal.to_dict(), refusal.status
    with transaction():
        stored = _claim(merchant_id, key, request_hash)
        if stored is not None:
            return stored
        _store(merchant_id, key, request_hash, status, body)
    return Outcome(status, body)


def prune(older_than: timedelta | None = None) -> int:
    """Delete records past their time to live; returns how many."""
    ttl = older_than or timedelta(seconds=current_app.config["ADDONS_IDEMPOTENCY_TTL"])
    return db.execute_sql(_SQL["prune"], (utcnow() - ttl,)).rowcount


def _claim(merchant_id: str, key: str, request_hash: str) -> Outcome | None:
    """Hold the key for this transaction; the stored outcome if there is one."""
    if dialect() == "postgresql":
        held, *row = db.execute_sql(_SQL["lock_and_select"], (f"{merchant_id}:{key}", merchant_id, key)).fetchone()
        if not held:
            raise IdempotencyKeyInUse(key=key)
        if row[0] is None:
            return None
    else:
        row = db.execute_sql(_SQL["select"], (merchant_id, key)).fetchone()
        if row is None:
            return None
    stored_hash, status, body, created_at = row
    if isinstance(created_at, str):
        created_at = datetime.fromisoformat(created_at)
    if created_at < utcnow() - timedelta(seconds=current_app.config["ADDONS_IDEMPOTENCY_TTL"]):
        db.execute_sql(_SQL["delete"], (merchant_id, key))
        return None
    if stored_hash != request_hash:
        raise IdempotencyKeyReused(key=key)
    return Outcome(status, json.loads(body), replayed=True)


def _store(merchant_id: str, key: str, request_hash: str, status: int, body: dict[str, Any]) -> None:
    db.execute_sql(_SQL["insert"], (merchant_id, key, request_hash, status,
                                    json.dumps(body, separators=(",", ":")), utcnow()))
