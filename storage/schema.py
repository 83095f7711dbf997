"""Schema versions: each migration runs once, in order, in its own transaction.

``migrate()`` is safe to run twice and from two processes at once (SQLite's
write lock or a PostgreSQL advisory lock serialises it). To change the schema,
append a migration; never edit one that has shipped.
"""

from __future__ import annotations

from collections.abc import Callable

from .database import db, dialect, transaction
from .models import (
    ApiKey,
    Buyer,
    CreditAccount,
    IdempotencyRecord,
    LedgerEntry,
    Merchant,
    Product,
    SchemaVersion,
    TopUp,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

__all__ = ["MIGRATIONS", "migrate", "current_version"]

_LOCK_ID = 0x4144444F4E53  # "ADDONS": the advisory lock that serialises migrations


def _create_base() -> None:
    # On SQLite the ledger (by its time-ordered id) and the idempotency records
    # (by merchant and key) are clustered tables (WITHOUT ROWID): no second index
    # on the key is kept. PostgreSQL has no such clause.
    LedgerEntry._meta.without_rowid = dialect() == "sqlite"
    IdempotencyRecord._meta.without_rowid = dialect() == "sqlite"
    db.create_tables(
        [Merchant, ApiKey, Product, Buyer, CreditAccount, LedgerEntry, IdempotencyRecord],
        safe=True,
    )


def _create_webhooks() -> None:
    db.create_tables([WebhookEndpoint, WebhookEvent, WebhookDelivery, WebhookAttempt], safe=True)
def _create_top_ups() -> None:
    db.create_tables([TopUp], safe=True)


_TOP_UP_OUTCOMES_SQL = {
    "sqlite": [
        "DROP INDEX IF EXISTS top_up_one_in_flight",
        "CREATE UNIQUE INDEX top_up_one_in_flight ON top_up (account_id) "
        "WHERE status IN ('pending', 'charging', 'unresolved', 'pending_settlement')",
    ],
    "postgresql": [
        "ALTER TABLE top_up ALTER COLUMN status TYPE VARCHAR(32)",
        "DROP INDEX IF EXISTS top_up_one_in_flight",
        "CREATE UNIQUE INDEX top_up_one_in_flight ON top_up (account_id) "
        "WHERE status IN ('pending', 'charging', 'unresolved', 'pending_settlement')",
    ],
}


def _top_up_outcomes() -> None:
    # "pending_settlement" is longer than the old 16 characters (SQLite keeps no lengths).
    for sql in _TOP_UP_OUTCOMES_SQL[dialect()]:
        db.execute_sql(sql)


#: (version, what it does, function): applied in order, each exactly once.
MIGRATIONS: list[tuple[int, str, Callable[[], None]]] = [
    (1, "merchants, keys, products, buyers, accounts, ledger, idempotency", _create_base),
    (2, "webhook endpoints, events, deliveries (the outbox) and attempts", _create_webhooks),
    (3, "automatic top-ups (at most one in flight per account)", _create_top_ups),
    (4, "unresolved and pending-settlement top-ups block a new one too", _top_up_outcomes),
]


def current_version() -> int:
    """The highest applied migration, or 0 for an empty database."""
    if not SchemaVersion.table_exists():
        return 0
    row = SchemaVersion.select(SchemaVersion.version).order_by(SchemaVersion.version.desc()).first()
    return row.version if row else 0


def migrate() -> list[int]:
    """Apply every pending migration; returns the versions applied now."""
    applied = []
    with transaction():
        if dialect() == "postgresql":
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        db.create_tables([SchemaVersion], safe=True)
        done = {row.version for row in SchemaVersion.select(SchemaVersion.version)}
        for version, _, apply in MIGRATIONS:
            if version in done:
                continue
            apply()
            SchemaVersion.create(version=version)
            applied.append(version)
    return applied
