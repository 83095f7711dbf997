"""Schema versions: each migration runs once, in order, in its own transaction.

``migrate()`` is safe to run twice and from two processes at once (SQLite's
write lock or a PostgreSQL advisory lock serialises it). To change the schema,
append a migration; never edit one that has shipped.
"""

from __future__ import annotations

from collections.abc import Callable

from .database import db, dialect, transaction
from .ids import new_id
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
    utcnow,
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


_CREATE_GRANTS = [
    """CREATE TABLE credit_grant (
    id VARCHAR(40) NOT NULL PRIMARY KEY,
    account_id VARCHAR(40) NOT NULL REFERENCES credit_account (id) ON DELETE CASCADE,
    category VARCHAR(12) NOT NULL,
    amount BIGINT NOT NULL,
    remaining BIGINT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 50,
    expires_at {timestamp},
    status VARCHAR(12) NOT NULL,
    source VARCHAR(12) NOT NULL,
    reference TEXT,
    description TEXT NOT NULL DEFAULT '',
    metadata TEXT NOT NULL DEFAULT '{{}}',
    created_at {timestamp} NOT NULL,
    expiry_warned_at {timestamp})""",
    # The spendable grants of an account: one range of this index, in priority order.
    """CREATE INDEX credit_grant_spendable ON credit_grant (account_id, priority, expires_at, id)
    WHERE status = 'active'""",
    # An account's grants newest first (the list), and an order's grants (exact refunds).
    "CREATE INDEX credit_grant_account_id ON credit_grant (account_id, id)",
    "CREATE INDEX credit_grant_reference ON credit_grant (account_id, reference) WHERE reference IS NOT NULL",
    # What the worker warns about: active grants that expire and were not warned of yet.
    """CREATE INDEX credit_grant_to_warn ON credit_grant (expires_at)
    WHERE status = 'active' AND expires_at IS NOT NULL AND expiry_warned_at IS NULL""",
    """CREATE TABLE grant_allocation (
    entry_id VARCHAR(40) NOT NULL REFERENCES ledger_entry (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    grant_id VARCHAR(40) REFERENCES credit_grant (id) ON DELETE CASCADE,
    amount BIGINT NOT NULL,
    PRIMARY KEY (entry_id, position)){options}""",
    # What the worker expires: accounts whose soonest expiry has come.
    "CREATE INDEX credit_account_next_expiry_at ON credit_account (next_expiry_at) WHERE next_expiry_at IS NOT NULL",
]

_NEW_COLUMNS = (("credit_account", "next_expiry_at", "{timestamp}"),
                ("addon_product", "credit_expiry_days", "INTEGER"),
                ("ledger_entry", "grant_id", "VARCHAR(40)"))

# Each positive balance becomes one paid grant that never expires; negative balances stay debt.
_CARRY_OVER = """INSERT INTO credit_grant (id, account_id, category, amount, remaining, priority, status,
    source, description, metadata, created_at) VALUES (?, ?, 'paid', ?, ?, 50, 'active', 'migration', '', '{}', ?)"""


def _create_grants() -> None:
    options = {"sqlite": {"timestamp": "DATETIME", "options": " WITHOUT ROWID"},
               "postgresql": {"timestamp": "TIMESTAMP", "options": ""}}[dialect()]
    for table, column, kind in _NEW_COLUMNS:
        # A database whose first tables were made from today's models has them already.
        if column not in {c.name for c in db.get_columns(table)}:
            db.execute_sql(f"ALTER TABLE {table} ADD COLUMN {column} {kind.format(**options)}")
    for statement in _CREATE_GRANTS:
        db.execute_sql(statement.format(**options))
    _carry_over_balances()


def _carry_over_balances() -> None:
    insert = _CARRY_OVER.replace("?", "%s") if dialect() == "postgresql" else _CARRY_OVER
    now = utcnow()
    rows = db.execute_sql("SELECT id, balance FROM credit_account WHERE balance > 0 ORDER BY id").fetchall()
    for account_id, balance in rows:
        db.execute_sql(insert, (new_id("grant"), account_id, balance, balance, now))


#: (version, what it does, function): applied in order, each exactly once.
MIGRATIONS: list[tuple[int, str, Callable[[], None]]] = [
    (1, "merchants, keys, products, buyers, accounts, ledger, idempotency", _create_base),
    (2, "webhook endpoints, events, deliveries (the outbox) and attempts", _create_webhooks),
    (3, "automatic top-ups (at most one in flight per account)", _create_top_ups),
    (4, "orders the hooks reported: paid and refunded, in either order", _create_orders),
    (5, "credit grants and their allocations; positive balances carried over as paid grants", _create_grants),
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
