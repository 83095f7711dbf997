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


_CREATE_ORDERS = """CREATE TABLE addon_order (
    merchant_id VARCHAR(40) NOT NULL REFERENCES merchant (id) ON DELETE CASCADE,
    order_id VARCHAR(255) NOT NULL,
    paid_at {timestamp},
    refunded_at {timestamp},
    created_at {timestamp} NOT NULL,
    PRIMARY KEY (merchant_id, order_id)){options}"""

# Orders the hooks applied before this table existed, from the ledger rows they wrote.
_BACKFILL_ORDERS = """INSERT INTO addon_order (merchant_id, order_id, paid_at, refunded_at, created_at)
SELECT a.merchant_id, e.reference,
       MIN(CASE WHEN e.actor = 'hook:order_paid' THEN e.created_at END),
       MIN(CASE WHEN e.actor = 'hook:order_refunded' THEN e.created_at END),
       MIN(e.created_at)
  FROM ledger_entry e JOIN credit_account a ON a.id = e.account_id
 WHERE e.actor IN ('hook:order_paid', 'hook:order_refunded') AND e.reference IS NOT NULL
 GROUP BY a.merchant_id, e.reference"""


def _create_orders() -> None:
    options = {"sqlite": {"timestamp": "DATETIME", "options": " WITHOUT ROWID"},
               "postgresql": {"timestamp": "TIMESTAMP", "options": ""}}[dialect()]
    db.execute_sql(_CREATE_ORDERS.format(**options))
    _backfill_orders()


def _backfill_orders() -> None:
    db.execute_sql(_BACKFILL_ORDERS)


def _index_top_up_decisions() -> None:
    # Same SQL on both dialects (both take partial indexes and IF NOT EXISTS).
    statements = {
        "sqlite": [
            "CREATE INDEX IF NOT EXISTS top_up_account_completed ON top_up (account_id, completed_at)",
            "CREATE INDEX IF NOT EXISTS credit_account_retry_at ON credit_account (top_up_blocked_until) "
            "WHERE top_up_blocked_until IS NOT NULL",
        ],
    }
    statements["postgresql"] = statements["sqlite"]
    for sql in statements[dialect()]:
        db.execute_sql(sql)


#: (version, what it does, function): applied in order, each exactly once.
MIGRATIONS: list[tuple[int, str, Callable[[], None]]] = [
    (1, "merchants, keys, products, buyers, accounts, ledger, idempotency", _create_base),
    (2, "webhook endpoints, events, deliveries (the outbox) and attempts", _create_webhooks),
    (3, "automatic top-ups (at most one in flight per account)", _create_top_ups),
    (4, "orders the hooks reported: paid and refunded, in either order", _create_orders),
    (5, "indexes for deciding top-ups: recent outcomes per account, passed retry blocks",
     _index_top_up_decisions),
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
