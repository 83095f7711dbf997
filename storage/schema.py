"""Schema versions: each migration runs once, in order, in its own transaction.

``migrate()`` is safe to run twice and from two processes at once (SQLite's
write lock or a PostgreSQL advisory lock serialises it). To change the schema,
append a migration; never edit one that has shipped.
"""

from __future__ import annotations

import hashlib
import json
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


# -- 4: idempotency key spaces -----------------------------------------------------------------------

_KEY_SPACES_SQL = {
    "ledger": [
        "DROP INDEX IF EXISTS ledger_entry_account_id_idempotency_key",
        "ALTER TABLE ledger_entry ADD COLUMN key_space VARCHAR(10)",
        # API requests record the API key's id as the actor; the hooks name themselves.
        ("UPDATE ledger_entry SET key_space = CASE"
         " WHEN actor IN ('hook:order_paid', 'hook:order_refunded') THEN 'hook'"
         " WHEN actor IN (SELECT id FROM api_key) THEN 'api' ELSE 'host' END"
         " WHERE idempotency_key IS NOT NULL"),
    ],
    "ledger_index": [
        ("CREATE UNIQUE INDEX ledger_entry_account_id_key_space_idempotency_key"
         " ON ledger_entry (account_id, key_space, idempotency_key) WHERE idempotency_key IS NOT NULL"),
    ],
    "sqlite_records": [  # a new primary key: SQLite rebuilds the table
        ('CREATE TABLE "idempotency_record_new" ("merchant_id" VARCHAR(40) NOT NULL,'
         ' "key_space" VARCHAR(100) NOT NULL, "key" VARCHAR(255) NOT NULL, "request_hash" VARCHAR(64) NOT NULL,'
         ' "response_status" INTEGER NOT NULL, "response_body" TEXT NOT NULL, "created_at" DATETIME NOT NULL,'
         ' PRIMARY KEY ("merchant_id", "key_space", "key"),'
         ' FOREIGN KEY ("merchant_id") REFERENCES "merchant" ("id") ON DELETE CASCADE) WITHOUT ROWID'),
        ("INSERT INTO idempotency_record_new (merchant_id, key_space, key, request_hash, response_status,"
         " response_body, created_at) SELECT merchant_id, 'api', key, request_hash, response_status,"
         " response_body, created_at FROM idempotency_record"),
        "DROP TABLE idempotency_record",
        "ALTER TABLE idempotency_record_new RENAME TO idempotency_record",
        'CREATE INDEX "idempotency_record_created_at" ON "idempotency_record" ("created_at")',
    ],
    "postgresql_records": [
        "ALTER TABLE idempotency_record ADD COLUMN key_space VARCHAR(100) NOT NULL DEFAULT 'api'",
        "ALTER TABLE idempotency_record ALTER COLUMN key_space DROP DEFAULT",
        "ALTER TABLE idempotency_record DROP CONSTRAINT idempotency_record_pkey",
        "ALTER TABLE idempotency_record ADD PRIMARY KEY (merchant_id, key_space, key)",
    ],
}


def _execute(sql: str, params: tuple = ()) -> list[tuple]:
    cursor = db.execute_sql(sql.replace("?", "%s") if dialect() == "postgresql" else sql, params)
    return cursor.fetchall() if cursor.description else []


def _hook_key(*parts: str) -> str:
    """The order hooks' key encoding as of this migration (a frozen copy): a
    JSON list, hashed past 255 characters."""
    key = json.dumps(parts, separators=(",", ":"))
    return key if len(key) <= 255 else "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _rekeyed_hook_entry(kind: str, order_id: str | None, key: str) -> str | None:
    """The new key of a hook's entry, from its old ``order_paid:<order>:<line>``
    or ``order_refunded:<order>`` key and its reference (the order id); None
    when it cannot be derived (a purchase key that was hashed)."""
    if order_id is None:
        return None
    if kind == "purchase" and key.startswith(f"order_paid:{order_id}:"):
        return _hook_key("order_paid", order_id, key[len(f"order_paid:{order_id}:"):])
    hashed = "order_refunded:" + hashlib.sha256(f"order_refunded:{order_id}".encode()).hexdigest()
    if kind == "refund" and key in (f"order_refunded:{order_id}", hashed):
        return _hook_key("order_refunded", order_id)
    return None


def _add_key_spaces() -> None:
    """Idempotency keys get a key space: who issued the key (the API, the order
    hooks, the host; a buyer for HTTP records), so keys of different callers never
    match. Old rows are carried over: hook keys re-encoded unambiguously, a
    buyer's records (``buyer:<email>\\x1f<key>``) split into space and key.
    A table that already has the column (created from today's models) is left as is."""
    if "key_space" not in {column.name for column in db.get_columns("ledger_entry")}:
        for sql in _KEY_SPACES_SQL["ledger"]:
            _execute(sql)
        hook_rows = _execute("SELECT id, kind, reference, idempotency_key FROM ledger_entry WHERE key_space = 'hook'")
        for entry_id, kind, order_id, key in hook_rows:
            new_key = _rekeyed_hook_entry(kind, order_id, key)
            if new_key is not None:
                _execute("UPDATE ledger_entry SET idempotency_key = ? WHERE id = ?", (new_key, entry_id))
        for sql in _KEY_SPACES_SQL["ledger_index"]:
            _execute(sql)
    if "key_space" not in {column.name for column in db.get_columns("idempotency_record")}:
        for sql in _KEY_SPACES_SQL[f"{dialect()}_records"]:
            _execute(sql)
        buyer_rows = _execute("SELECT merchant_id, key FROM idempotency_record WHERE key LIKE ?", ("buyer:%",))
        for merchant_id, key in buyer_rows:
            if "\x1f" in key:
                email, client_key = key[len("buyer:"):].split("\x1f", 1)
                space = "buyer:" + hashlib.sha256(email.encode()).hexdigest()
                _execute("UPDATE idempotency_record SET key_space = ?, key = ? WHERE merchant_id = ?"
                         " AND key_space = 'api' AND key = ?", (space, client_key, merchant_id, key))


#: (version, what it does, function): applied in order, each exactly once.
MIGRATIONS: list[tuple[int, str, Callable[[], None]]] = [
    (1, "merchants, keys, products, buyers, accounts, ledger, idempotency", _create_base),
    (2, "webhook endpoints, events, deliveries (the outbox) and attempts", _create_webhooks),
    (3, "automatic top-ups (at most one in flight per account)", _create_top_ups),
    (4, "idempotency key spaces: the API's, the hooks', the host's and each buyer's keys never collide",
     _add_key_spaces),
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
