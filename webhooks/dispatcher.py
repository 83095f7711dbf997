"""The outbox writer: turns the ledger's signals into events and deliveries.

Subscribed like any third party (``sender=app``); the ledger never imports it.
Signals about a balance change arrive inside the transaction that makes the
change, so the event row and one delivery row per matching endpoint commit or
roll back with the balance: a crash right after the commit loses nothing, and a
change that rolls back sends nothing. Nothing here calls out; the worker
(``delivery``) makes the attempts.

This runs on every usage record, so its SQL is prepared once per dialect, a
merchant without endpoints costs one indexed read, and on PostgreSQL the event
and its deliveries are written in one statement.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from functools import lru_cache
from typing import Any

from blinker import Signal
from flask import Flask, current_app

from addon_plugin import signals
from storage import Statements, db, dialect, new_id, sql, transaction, transaction_cache, utcnow

from . import events, schedule

__all__ = ["SIGNAL_EVENTS", "connect", "publish", "forget_endpoints"]

#: Which signal becomes which event type.
SIGNAL_EVENTS: tuple[tuple[Signal, str], ...] = (
    (signals.balance_changed, "balance.updated"),
    (signals.balance_low, "balance.low"),
    (signals.balance_depleted, "balance.depleted"),
    (signals.addon_purchased, "addon.purchased"),
    (signals.top_up_succeeded, "top_up.succeeded"),
    (signals.top_up_failed, "top_up.failed"),
    (signals.top_up_unresolved, "top_up.unresolved"),
    (signals.auto_top_up_disabled, "auto_top_up.disabled"),
    (signals.grant_expiring, "grant.expiring"),
    (signals.balance_forecast_low, "balance.forecast_low"),
)

_SQL = {
    "endpoints": "SELECT id, event_types FROM webhook_endpoint WHERE merchant_id = ? AND enabled",
    "event": "INSERT INTO webhook_event (id, merchant_id, type, payload, created_at) VALUES (?, ?, ?, ?, ?)",
    "delivery": "(?, ?, ?, 'pending', 0, ?, ?)",
}
_DELIVERY_INSERT = ("INSERT INTO webhook_delivery "
                    "(id, event_id, endpoint_id, status, attempt_count, next_attempt_at, created_at) VALUES ")


@lru_cache(maxsize=64)
def _statements(kind: str, rows: int) -> tuple[str, ...]:
    """The SQL that writes one event and ``rows`` deliveries, in as few statements as the dialect allows."""
    deliveries = _DELIVERY_INSERT + ", ".join([_SQL["delivery"]] * rows)
    if kind == "postgresql":
        return (sql(f"WITH event AS ({_SQL['event']}) {deliveries}", kind),)
    return _SQL["event"], deliveries


# PostgreSQL reads the endpoints FOR KEY SHARE: the lock each delivery's foreign
# key check takes anyway, taken at the read instead, so what is read is what is
# written. An endpoint whose deletion is in progress is waited for and then
# skipped, and one deleted afterwards cascades to the deliveries written here.
# (Without it, a delete committing between the read and the insert made the
# insert, and with it the balance change, fail on the foreign key.) SQLite
# writers hold the database's write lock from their first statement.
_READ = Statements(endpoints={"sqlite": _SQL["endpoints"], "postgresql": _SQL["endpoints"] + " FOR KEY SHARE"})


@lru_cache(maxsize=256)
def _wants(event_types_json: str, event_type: str) -> bool:
    wanted = json.loads(event_types_json)
    return not wanted or event_type in wanted


def _endpoints(merchant_id: str) -> list[tuple[str, str]]:
    """The merchant's enabled endpoints, read once per transaction: a change's
    several signals, and a batch of usage records, share one read. Never across
    transactions: an endpoint created, changed or deleted by any process is
    seen by the next transaction, and within one the PostgreSQL read's key-share
    locks keep what was read there until it ends."""
    cache = transaction_cache()
    rows = cache.get(("webhook_endpoints", merchant_id))
    if rows is None:
        rows = cache[("webhook_endpoints", merchant_id)] = db.execute_sql(_READ["endpoints"], (merchant_id,)).fetchall()
    return rows


def forget_endpoints(merchant_id: str) -> None:
    """Drop this transaction's read of the merchant's endpoints (after a change to them)."""
    transaction_cache().pop(("webhook_endpoints", merchant_id), None)


def publish(merchant_id: str, event_type: str, body: dict[str, Any] | Callable[[], dict[str, Any]]) -> str | None:
    """Write the event and a due delivery for each of the merchant's enabled
    endpoints that wants it, in the current transaction (or a new one).

    ``body`` may be a function that makes it: it is called only when an endpoint
    wants the event (most changes of most merchants go to none).
    Returns the event id (the ``webhook-id``), or None when no endpoint wants it
    (then nothing is written).
    """
    if db.in_transaction():  # the signals' case: no block of our own to enter and leave
        return _publish(merchant_id, event_type, body)
    with transaction():
        return _publish(merchant_id, event_type, body)


def _publish(merchant_id: str, event_type: str, body: dict[str, Any] | Callable[[], dict[str, Any]]) -> str | None:
    targets = [endpoint_id for endpoint_id, types in _endpoints(merchant_id) if _wants(types, event_type)]
    if not targets:
        return None
    if callable(body):
        body = body()
    event_id = new_id("msg")
    now = utcnow()
    first = current_app.config["ADDONS_WEBHOOK_RETRY_SCHEDULE"]
    params: list[Any] = []
    for endpoint_id in targets:
        due = now + timedelta(seconds=schedule.jittered(float(first[0]) if first else 0.0))
        params += [new_id("dlv"), event_id, endpoint_id, due, now]
    event_params = [event_id, merchant_id, event_type, events.dumps(body), now]
    statements = _statements(dialect(), len(targets))
    if len(statements) == 1:
        db.execute_sql(statements[0], event_params + params)
    else:
        db.execute_sql(statements[0], event_params)
        db.execute_sql(statements[1], params)
    return event_id


def _receiver(event_type: str):
    def receive(app: Flask, *, account: Any, entry: Any = None, **extra: Any) -> None:
        publish(account.merchant_id, event_type, lambda: events.build_body(event_type, account, entry, extra))

    receive.__name__ = f"publish_{event_type.replace('.', '_')}"
    return receive


def connect(app: Flask) -> None:
    """Subscribe the outbox to the app's signals (``init_app`` calls this once per app)."""
    for signal, event_type in SIGNAL_EVENTS:
        signal.connect(_receiver(event_type), sender=app, weak=False)
