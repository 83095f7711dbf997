"""Schema versions: each migration runs once, in order, in its own transaction.

A migration is frozen history: it states its own DDL, per dialect, as it was
when it shipped, and never reads today's models (editing a model must not change
what migration 1 did). ``migrate()`` is safe to run twice and from two processes
at once (SQLite's write lock or a PostgreSQL advisory lock serialises it).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable

from .database import db, dialect, transaction
from .dialects import sql
from .ids import new_id
from .models import SchemaVersion, utcnow

__all__ = ["MIGRATIONS", "migrate", "current_version"]

_LOCK_ID = 0x4144444F4E53  # "ADDONS": the advisory lock that serialises migrations

# Which migrations have been applied; made (if missing) before any runs.
_SCHEMA_VERSION = {
    "sqlite": 'CREATE TABLE IF NOT EXISTS "schema_version" '
              '("version" INTEGER NOT NULL PRIMARY KEY, "applied_at" DATETIME NOT NULL)',
    "postgresql": 'CREATE TABLE IF NOT EXISTS "schema_version" '
                  '("version" INTEGER NOT NULL PRIMARY KEY, "applied_at" TIMESTAMP NOT NULL)',
}


def _run(script: str) -> None:
    """Execute a migration's SQL script, one statement at a time (each ends a line with ``;``)."""
    for statement in re.split(r";[ \t]*$", script, flags=re.MULTILINE):
        if statement.strip():
            db.execute_sql(sql(statement.strip()))


# 1. On SQLite the ledger (by its time-ordered id) and the idempotency records (by
# merchant and key) are clustered (WITHOUT ROWID): no second index on the key is kept.
_BASE = {
    "sqlite": """
CREATE TABLE IF NOT EXISTS "merchant" (
    "id" VARCHAR(40) NOT NULL PRIMARY KEY,
    "name" VARCHAR(200) NOT NULL,
    "created_at" DATETIME NOT NULL
);
CREATE TABLE IF NOT EXISTS "api_key" (
    "id" VARCHAR(40) NOT NULL PRIMARY KEY,
    "merchant_id" VARCHAR(40) NOT NULL,
    "secret_hash" VARCHAR(64) NOT NULL,
    "created_at" DATETIME NOT NULL,
    "revoked_at" DATETIME,
    FOREIGN KEY ("merchant_id") REFERENCES "merchant" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "api_key_merchant_id" ON "api_key" ("merchant_id");
CREATE TABLE IF NOT EXISTS "buyer" (
    "id" VARCHAR(40) NOT NULL PRIMARY KEY,
    "merchant_id" VARCHAR(40) NOT NULL,
    "email" VARCHAR(320) NOT NULL,
    "host_customer_id" VARCHAR(255),
    "created_at" DATETIME NOT NULL,
    FOREIGN KEY ("merchant_id") REFERENCES "merchant" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "buyer_merchant_id" ON "buyer" ("merchant_id");
CREATE UNIQUE INDEX IF NOT EXISTS "buyer_merchant_id_email" ON "buyer" ("merchant_id", "email");
CREATE TABLE IF NOT EXISTS "addon_product" (
    "id" VARCHAR(40) NOT NULL PRIMARY KEY,
    "merchant_id" VARCHAR(40) NOT NULL,
    "name" VARCHAR(200) NOT NULL,
    "price_minor" INTEGER NOT NULL,
    "currency" VARCHAR(3) NOT NULL,
    "credit_amount" INTEGER NOT NULL,
    "top_up_allowed" INTEGER NOT NULL,
    "overdraft_limit" INTEGER NOT NULL,
    "host_product_id" VARCHAR(255),
    "created_at" DATETIME NOT NULL,
    "updated_at" DATETIME NOT NULL,
    FOREIGN KEY ("merchant_id") REFERENCES "merchant" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "addon_product_merchant_id" ON "addon_product" ("merchant_id");
CREATE UNIQUE INDEX IF NOT EXISTS "addon_product_merchant_id_host_product_id"
    ON "addon_product" ("merchant_id", "host_product_id");
CREATE TABLE IF NOT EXISTS "credit_account" (
    "id" VARCHAR(40) NOT NULL PRIMARY KEY,
    "merchant_id" VARCHAR(40) NOT NULL,
    "product_id" VARCHAR(40) NOT NULL,
    "buyer_id" VARCHAR(40) NOT NULL,
    "buyer_email" VARCHAR(320) NOT NULL,
    "balance" INTEGER NOT NULL,
    "last_sequence" INTEGER NOT NULL,
    "threshold" INTEGER,
    "auto_top_up_enabled" INTEGER NOT NULL,
    "payment_method" VARCHAR(255),
    "customer" VARCHAR(255),
    "top_up_failures" INTEGER NOT NULL,
    "top_up_blocked_until" DATETIME,
    "created_at" DATETIME NOT NULL,
    "updated_at" DATETIME NOT NULL,
    FOREIGN KEY ("merchant_id") REFERENCES "merchant" ("id") ON DELETE CASCADE,
    FOREIGN KEY ("product_id") REFERENCES "addon_product" ("id") ON DELETE CASCADE,
    FOREIGN KEY ("buyer_id") REFERENCES "buyer" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "credit_account_merchant_id" ON "credit_account" ("merchant_id");
CREATE INDEX IF NOT EXISTS "credit_account_product_id" ON "credit_account" ("product_id");
CREATE INDEX IF NOT EXISTS "credit_account_buyer_id" ON "credit_account" ("buyer_id");
CREATE UNIQUE INDEX IF NOT EXISTS "credit_account_product_id_buyer_email"
    ON "credit_account" ("product_id", "buyer_email");
CREATE INDEX IF NOT EXISTS "credit_account_merchant_id_buyer_email"
    ON "credit_account" ("merchant_id", "buyer_email");
CREATE TABLE IF NOT EXISTS "idempotency_record" (
    "merchant_id" VARCHAR(40) NOT NULL,
    "key" VARCHAR(255) NOT NULL,
    "request_hash" VARCHAR(64) NOT NULL,
    "response_status" INTEGER NOT NULL,
    "response_body" TEXT NOT NULL,
    "created_at" DATETIME NOT NULL,
    PRIMARY KEY ("merchant_id", "key"),
    FOREIGN KEY ("merchant_id") REFERENCES "merchant" ("id") ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS "idempotency_record_created_at" ON "idempotency_record" ("created_at");
CREATE TABLE IF NOT EXISTS "ledger_entry" (
    "id" VARCHAR(40) NOT NULL PRIMARY KEY,
    "account_id" VARCHAR(40) NOT NULL,
    "sequence" INTEGER NOT NULL,
    "delta" INTEGER NOT NULL,
    "balance_after" INTEGER NOT NULL,
    "kind" VARCHAR(20) NOT NULL,
    "description" TEXT NOT NULL,
    "reference" TEXT,
    "metadata" TEXT NOT NULL,
    "idempotency_key" VARCHAR(300),
    "actor" VARCHAR(100),
    "created_at" DATETIME NOT NULL,
    FOREIGN KEY ("account_id") REFERENCES "credit_account" ("id") ON DELETE CASCADE
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS "ledger_entry_account_id_sequence"
    ON "ledger_entry" ("account_id", "sequence");
CREATE UNIQUE INDEX IF NOT EXISTS "ledger_entry_account_id_idempotency_key"
    ON "ledger_entry" ("account_id", "idempotency_key")
    WHERE ("idempotency_key" IS NOT NULL);
CREATE INDEX IF NOT EXISTS "ledger_entry_reference"
    ON "ledger_entry" ("reference")
    WHERE ("reference" IS NOT NULL);
""",
    "postgresql": """
CREATE TABLE IF NOT EXISTS "merchant" (
    "id" VARCHAR(40) NOT NULL PRIMARY KEY,
    "name" VARCHAR(200) NOT NULL,
    "created_at" TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS "api_key" (
    "id" VARCHAR(40) NOT NULL PRIMARY KEY,
    "merchant_id" VARCHAR(40) NOT NULL,
    "secret_hash" VARCHAR(64) NOT NULL,
    "created_at" TIMESTAMP NOT NULL,
    "revoked_at" TIMESTAMP,
    FOREIGN KEY ("merchant_id") REFERENCES "merchant" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "api_key_merchant_id" ON "api_key" ("merchant_id");
CREATE TABLE IF NOT EXISTS "buyer" (
    "id" VARCHAR(40) NOT NULL PRIMARY KEY,
    "merchant_id" VARCHAR(40) NOT NULL,
    "email" VARCHAR(320) NOT NULL,
    "host_customer_id" VARCHAR(255),
    "created_at" TIMESTAMP NOT NULL,
    FOREIGN KEY ("merchant_id") REFERENCES "merchant" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "buyer_merchant_id" ON "buyer" ("merchant_id");
CREATE UNIQUE INDEX IF NOT EXISTS "buyer_merchant_id_email" ON "buyer" ("merchant_id", "email");
CREATE TABLE IF NOT EXISTS "addon_product" (
    "id" VARCHAR(40) NOT NULL PRIMARY KEY,
    "merchant_id" VARCHAR(40) NOT NULL,
    "name" VARCHAR(200) NOT NULL,
    "price_minor" BIGINT NOT NULL,
    "currency" VARCHAR(3) NOT NULL,
    "credit_amount" BIGINT NOT NULL,
    "top_up_allowed" BOOLEAN NOT NULL,
    "overdraft_limit" BIGINT NOT NULL,
    "host_product_id" VARCHAR(255),
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    FOREIGN KEY ("merchant_id") REFERENCES "merchant" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "addon_product_merchant_id" ON "addon_product" ("merchant_id");
CREATE UNIQUE INDEX IF NOT EXISTS "addon_product_merchant_id_host_product_id"
    ON "addon_product" ("merchant_id", "host_product_id");
CREATE TABLE IF NOT EXISTS "credit_account" (
    "id" VARCHAR(40) NOT NULL PRIMARY KEY,
    "merchant_id" VARCHAR(40) NOT NULL,
    "product_id" VARCHAR(40) NOT NULL,
    "buyer_id" VARCHAR(40) NOT NULL,
    "buyer_email" VARCHAR(320) NOT NULL,
    "balance" BIGINT NOT NULL,
    "last_sequence" BIGINT NOT NULL,
    "threshold" BIGINT,
    "auto_top_up_enabled" BOOLEAN NOT NULL,
    "payment_method" VARCHAR(255),
    "customer" VARCHAR(255),
    "top_up_failures" INTEGER NOT NULL,
    "top_up_blocked_until" TIMESTAMP,
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    FOREIGN KEY ("merchant_id") REFERENCES "merchant" ("id") ON DELETE CASCADE,
    FOREIGN KEY ("product_id") REFERENCES "addon_product" ("id") ON DELETE CASCADE,
    FOREIGN KEY ("buyer_id") REFERENCES "buyer" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "credit_account_merchant_id" ON "credit_account" ("merchant_id");
CREATE INDEX IF NOT EXISTS "credit_account_product_id" ON "credit_account" ("product_id");
CREATE INDEX IF NOT EXISTS "credit_account_buyer_id" ON "credit_account" ("buyer_id");
CREATE UNIQUE INDEX IF NOT EXISTS "credit_account_product_id_buyer_email"
    ON "credit_account" ("product_id", "buyer_email");
CREATE INDEX IF NOT EXISTS "credit_account_merchant_id_buyer_email"
    ON "credit_account" ("merchant_id", "buyer_email");
CREATE TABLE IF NOT EXISTS "idempotency_record" (
    "merchant_id" VARCHAR(40) NOT NULL,
    "key" VARCHAR(255) NOT NULL,
    "request_hash" VARCHAR(64) NOT NULL,
    "response_status" INTEGER NOT NULL,
    "response_body" TEXT NOT NULL,
    "created_at" TIMESTAMP NOT NULL,
    PRIMARY KEY ("merchant_id", "key"),
    FOREIGN KEY ("merchant_id") REFERENCES "merchant" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "idempotency_record_created_at" ON "idempotency_record" ("created_at");
CREATE TABLE IF NOT EXISTS "ledger_entry" (
    "id" VARCHAR(40) NOT NULL PRIMARY KEY,
    "account_id" VARCHAR(40) NOT NULL,
    "sequence" BIGINT NOT NULL,
    "delta" BIGINT NOT NULL,
    "balance_after" BIGINT NOT NULL,
    "kind" VARCHAR(20) NOT NULL,
    "description" TEXT NOT NULL,
    "reference" TEXT,
    "metadata" TEXT NOT NULL,
    "idempotency_key" VARCHAR(300),
    "actor" VARCHAR(100),
    "created_at" TIMESTAMP NOT NULL,
    FOREIGN KEY ("account_id") REFERENCES "credit_account" ("id") ON DELETE CASCADE
);
CREATE UNIQUE INDEX IF NOT EXISTS "ledger_entry_account_id_sequence"
    ON "ledger_entry" ("account_id", "sequence");
CREATE UNIQUE INDEX IF NOT EXISTS "ledger_entry_account_id_idempotency_key"
    ON "ledger_entry" ("account_id", "idempotency_key")
    WHERE ("idempotency_key" IS NOT NULL);
CREATE INDEX IF NOT EXISTS "ledger_entry_reference"
    ON "ledger_entry" ("reference")
    WHERE ("reference" IS NOT NULL);
""",
}


def _create_base() -> None:
    _run(_BASE[dialect()])


# 2. The outbox: an event, one delivery per endpoint, one row per HTTP attempt.
_WEBHOOKS = {
    "sqlite": """
CREATE TABLE IF NOT EXISTS "webhook_event" (
    "id" VARCHAR(40) NOT NULL PRIMARY KEY,
    "merchant_id" VARCHAR(40) NOT NULL,
    "type" VARCHAR(40) NOT NULL,
    "payload" TEXT NOT NULL,
    "created_at" DATETIME NOT NULL,
    FOREIGN KEY ("merchant_id") REFERENCES "merchant" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "webhook_event_created_at" ON "webhook_event" ("created_at");
CREATE TABLE IF NOT EXISTS "webhook_endpoint" (
    "id" VARCHAR(40) NOT NULL PRIMARY KEY,
    "merchant_id" VARCHAR(40) NOT NULL,
    "url" TEXT NOT NULL,
    "description" TEXT NOT NULL,
    "event_types" TEXT NOT NULL,
    "secret" VARCHAR(100) NOT NULL,
    "previous_secret" VARCHAR(100),
    "previous_secret_expires_at" DATETIME,
    "enabled" INTEGER NOT NULL,
    "disabled_reason" VARCHAR(40),
    "created_at" DATETIME NOT NULL,
    "updated_at" DATETIME NOT NULL,
    FOREIGN KEY ("merchant_id") REFERENCES "merchant" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "webhook_endpoint_merchant_id" ON "webhook_endpoint" ("merchant_id");
CREATE TABLE IF NOT EXISTS "webhook_delivery" (
    "id" VARCHAR(40) NOT NULL PRIMARY KEY,
    "event_id" VARCHAR(40) NOT NULL,
    "endpoint_id" VARCHAR(40) NOT NULL,
    "status" VARCHAR(12) NOT NULL,
    "attempt_count" INTEGER NOT NULL,
    "next_attempt_at" DATETIME,
    "lease_token" VARCHAR(40),
    "lease_expires_at" DATETIME,
    "last_attempt_at" DATETIME,
    "completed_at" DATETIME,
    "created_at" DATETIME NOT NULL,
    FOREIGN KEY ("event_id") REFERENCES "webhook_event" ("id") ON DELETE CASCADE,
    FOREIGN KEY ("endpoint_id") REFERENCES "webhook_endpoint" ("id") ON DELETE CASCADE
);
CREATE UNIQUE INDEX IF NOT EXISTS "webhook_delivery_event_id_endpoint_id"
    ON "webhook_delivery" ("event_id", "endpoint_id");
CREATE INDEX IF NOT EXISTS "webhook_delivery_endpoint_id_id" ON "webhook_delivery" ("endpoint_id", "id");
CREATE INDEX IF NOT EXISTS "webhook_delivery_next_attempt_at"
    ON "webhook_delivery" ("next_attempt_at")
    WHERE ("status" = 'pending');
CREATE TABLE IF NOT EXISTS "webhook_attempt" (
    "id" VARCHAR(40) NOT NULL PRIMARY KEY,
    "delivery_id" VARCHAR(40) NOT NULL,
    "number" INTEGER NOT NULL,
    "status_code" INTEGER,
    "duration_ms" INTEGER NOT NULL,
    "error" TEXT,
    "response_excerpt" TEXT,
    "created_at" DATETIME NOT NULL,
    FOREIGN KEY ("delivery_id") REFERENCES "webhook_delivery" ("id") ON DELETE CASCADE
);
CREATE UNIQUE INDEX IF NOT EXISTS "webhook_attempt_delivery_id_number"
    ON "webhook_attempt" ("delivery_id", "number");
""",
    "postgresql": """
CREATE TABLE IF NOT EXISTS "webhook_event" (
    "id" VARCHAR(40) NOT NULL PRIMARY KEY,
    "merchant_id" VARCHAR(40) NOT NULL,
    "type" VARCHAR(40) NOT NULL,
    "payload" TEXT NOT NULL,
    "created_at" TIMESTAMP NOT NULL,
    FOREIGN KEY ("merchant_id") REFERENCES "merchant" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "webhook_event_created_at" ON "webhook_event" ("created_at");
CREATE TABLE IF NOT EXISTS "webhook_endpoint" (
    "id" VARCHAR(40) NOT NULL PRIMARY KEY,
    "merchant_id" VARCHAR(40) NOT NULL,
    "url" TEXT NOT NULL,
    "description" TEXT NOT NULL,
    "event_types" TEXT NOT NULL,
    "secret" VARCHAR(100) NOT NULL,
    "previous_secret" VARCHAR(100),
    "previous_secret_expires_at" TIMESTAMP,
    "enabled" BOOLEAN NOT NULL,
    "disabled_reason" VARCHAR(40),
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    FOREIGN KEY ("merchant_id") REFERENCES "merchant" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "webhook_endpoint_merchant_id" ON "webhook_endpoint" ("merchant_id");
CREATE TABLE IF NOT EXISTS "webhook_delivery" (
    "id" VARCHAR(40) NOT NULL PRIMARY KEY,
    "event_id" VARCHAR(40) NOT NULL,
    "endpoint_id" VARCHAR(40) NOT NULL,
    "status" VARCHAR(12) NOT NULL,
    "attempt_count" INTEGER NOT NULL,
    "next_attempt_at" TIMESTAMP,
    "lease_token" VARCHAR(40),
    "lease_expires_at" TIMESTAMP,
    "last_attempt_at" TIMESTAMP,
    "completed_at" TIMESTAMP,
    "created_at" TIMESTAMP NOT NULL,
    FOREIGN KEY ("event_id") REFERENCES "webhook_event" ("id") ON DELETE CASCADE,
    FOREIGN KEY ("endpoint_id") REFERENCES "webhook_endpoint" ("id") ON DELETE CASCADE
);
CREATE UNIQUE INDEX IF NOT EXISTS "webhook_delivery_event_id_endpoint_id"
    ON "webhook_delivery" ("event_id", "endpoint_id");
CREATE INDEX IF NOT EXISTS "webhook_delivery_endpoint_id_id" ON "webhook_delivery" ("endpoint_id", "id");
CREATE INDEX IF NOT EXISTS "webhook_delivery_next_attempt_at"
    ON "webhook_delivery" ("next_attempt_at")
    WHERE ("status" = 'pending');
CREATE TABLE IF NOT EXISTS "webhook_attempt" (
    "id" VARCHAR(40) NOT NULL PRIMARY KEY,
    "delivery_id" VARCHAR(40) NOT NULL,
    "number" INTEGER NOT NULL,
    "status_code" INTEGER,
    "duration_ms" INTEGER NOT NULL,
    "error" TEXT,
    "response_excerpt" TEXT,
    "created_at" TIMESTAMP NOT NULL,
    FOREIGN KEY ("delivery_id") REFERENCES "webhook_delivery" ("id") ON DELETE CASCADE
);
CREATE UNIQUE INDEX IF NOT EXISTS "webhook_attempt_delivery_id_number"
    ON "webhook_attempt" ("delivery_id", "number");
""",
}


def _create_webhooks() -> None:
    _run(_WEBHOOKS[dialect()])


# 3. At most one top-up in flight per account: a unique partial index.
_TOP_UPS = {
    "sqlite": """
CREATE TABLE IF NOT EXISTS "top_up" (
    "id" VARCHAR(40) NOT NULL PRIMARY KEY,
    "account_id" VARCHAR(40) NOT NULL,
    "merchant_id" VARCHAR(40) NOT NULL,
    "status" VARCHAR(16) NOT NULL,
    "banks" INTEGER NOT NULL,
    "credits" INTEGER NOT NULL,
    "amount_minor" INTEGER NOT NULL,
    "currency" VARCHAR(3) NOT NULL,
    "payment_method" VARCHAR(255) NOT NULL,
    "customer" VARCHAR(255),
    "charge_id" VARCHAR(255),
    "failure_code" VARCHAR(64),
    "failure_message" TEXT,
    "attempts" INTEGER NOT NULL,
    "next_attempt_at" DATETIME,
    "lease" VARCHAR(40),
    "created_at" DATETIME NOT NULL,
    "updated_at" DATETIME NOT NULL,
    "completed_at" DATETIME,
    FOREIGN KEY ("account_id") REFERENCES "credit_account" ("id") ON DELETE CASCADE,
    FOREIGN KEY ("merchant_id") REFERENCES "merchant" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "top_up_merchant_id" ON "top_up" ("merchant_id");
CREATE INDEX IF NOT EXISTS "top_up_account_id_id" ON "top_up" ("account_id", "id");
CREATE INDEX IF NOT EXISTS "top_up_status_next_attempt_at" ON "top_up" ("status", "next_attempt_at");
CREATE UNIQUE INDEX IF NOT EXISTS "top_up_one_in_flight"
    ON "top_up" ("account_id")
    WHERE status IN ('pending', 'charging');
""",
    "postgresql": """
CREATE TABLE IF NOT EXISTS "top_up" (
    "id" VARCHAR(40) NOT NULL PRIMARY KEY,
    "account_id" VARCHAR(40) NOT NULL,
    "merchant_id" VARCHAR(40) NOT NULL,
    "status" VARCHAR(16) NOT NULL,
    "banks" INTEGER NOT NULL,
    "credits" BIGINT NOT NULL,
    "amount_minor" BIGINT NOT NULL,
    "currency" VARCHAR(3) NOT NULL,
    "payment_method" VARCHAR(255) NOT NULL,
    "customer" VARCHAR(255),
    "charge_id" VARCHAR(255),
    "failure_code" VARCHAR(64),
    "failure_message" TEXT,
    "attempts" INTEGER NOT NULL,
    "next_attempt_at" TIMESTAMP,
    "lease" VARCHAR(40),
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "completed_at" TIMESTAMP,
    FOREIGN KEY ("account_id") REFERENCES "credit_account" ("id") ON DELETE CASCADE,
    FOREIGN KEY ("merchant_id") REFERENCES "merchant" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "top_up_merchant_id" ON "top_up" ("merchant_id");
CREATE INDEX IF NOT EXISTS "top_up_account_id_id" ON "top_up" ("account_id", "id");
CREATE INDEX IF NOT EXISTS "top_up_status_next_attempt_at" ON "top_up" ("status", "next_attempt_at");
CREATE UNIQUE INDEX IF NOT EXISTS "top_up_one_in_flight"
    ON "top_up" ("account_id")
    WHERE status IN ('pending', 'charging');
""",
}


def _create_top_ups() -> None:
    _run(_TOP_UPS[dialect()])


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
    for statement in statements[dialect()]:
        db.execute_sql(statement)


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
    for statement in _TOP_UP_OUTCOMES_SQL[dialect()]:
        db.execute_sql(statement)


# -- 7: idempotency key spaces -----------------------------------------------------------------------

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


def _execute(statement: str, params: tuple = ()) -> list[tuple]:
    cursor = db.execute_sql(sql(statement), params)
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
        for statement in _KEY_SPACES_SQL["ledger"]:
            _execute(statement)
        hook_rows = _execute("SELECT id, kind, reference, idempotency_key FROM ledger_entry WHERE key_space = 'hook'")
        for entry_id, kind, order_id, key in hook_rows:
            new_key = _rekeyed_hook_entry(kind, order_id, key)
            if new_key is not None:
                _execute("UPDATE ledger_entry SET idempotency_key = ? WHERE id = ?", (new_key, entry_id))
        for statement in _KEY_SPACES_SQL["ledger_index"]:
            _execute(statement)
    if "key_space" not in {column.name for column in db.get_columns("idempotency_record")}:
        for statement in _KEY_SPACES_SQL[f"{dialect()}_records"]:
            _execute(statement)
        buyer_rows = _execute("SELECT merchant_id, key FROM idempotency_record WHERE key LIKE ?", ("buyer:%",))
        for merchant_id, key in buyer_rows:
            if "\x1f" in key:
                email, client_key = key[len("buyer:"):].split("\x1f", 1)
                space = "buyer:" + hashlib.sha256(email.encode()).hexdigest()
                _execute("UPDATE idempotency_record SET key_space = ?, key = ? WHERE merchant_id = ?"
                         " AND key_space = 'api' AND key = ?", (space, client_key, merchant_id, key))


# -- 8: credit grants ---------------------------------------------------------------------------------

_CREATE_GRANTS = [
    """CREATE TABLE credit_grant (
    id VARCHAR(40) NOT NULL PRIMARY KEY,
    account_id VARCHAR(40) NOT NULL REFERENCES credit_account (id) ON DELETE CASCADE,
    category VARCHAR(12) NOT NULL,
    amount {bigint} NOT NULL,
    remaining {bigint} NOT NULL,
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
    amount {bigint} NOT NULL,
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
    options = {"sqlite": {"timestamp": "DATETIME", "bigint": "INTEGER", "options": " WITHOUT ROWID"},
               "postgresql": {"timestamp": "TIMESTAMP", "bigint": "BIGINT", "options": ""}}[dialect()]
    for table, column, kind in _NEW_COLUMNS:
        db.execute_sql(f"ALTER TABLE {table} ADD COLUMN {column} {kind.format(**options)}")
    for statement in _CREATE_GRANTS:
        db.execute_sql(statement.format(**options))
    _carry_over_balances()


def _carry_over_balances() -> None:
    insert = sql(_CARRY_OVER)
    now = utcnow()
    rows = db.execute_sql("SELECT id, balance FROM credit_account WHERE balance > 0 ORDER BY id").fetchall()
    for account_id, balance in rows:
        db.execute_sql(insert, (new_id("grant"), account_id, balance, balance, now))


# -- 9: spend holds ------------------------------------------------------------------------------------

_CREATE_HOLDS = [
    # The held amount lives on the account row (``held``), so every guard that
    # compares available credits reads the row it locks; ``next_hold_expiry_at``
    # makes a change or read at or after the soonest hold expiry tidy it first.
    "ALTER TABLE credit_account ADD COLUMN held {bigint} NOT NULL DEFAULT 0",
    "ALTER TABLE credit_account ADD COLUMN next_hold_expiry_at {timestamp}",
    """CREATE TABLE credit_hold (
    id VARCHAR(40) NOT NULL PRIMARY KEY,
    account_id VARCHAR(40) NOT NULL REFERENCES credit_account (id) ON DELETE CASCADE,
    amount {bigint} NOT NULL,
    status VARCHAR(12) NOT NULL,
    captured_amount {bigint},
    entry_id VARCHAR(40),
    expires_at {timestamp} NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    reference TEXT,
    metadata TEXT NOT NULL DEFAULT '{{}}',
    created_at {timestamp} NOT NULL,
    updated_at {timestamp} NOT NULL)""",
    # The active holds of an account, soonest expiry first: one range of this index.
    "CREATE INDEX credit_hold_active ON credit_hold (account_id, expires_at) WHERE status = 'held'",
    # An account's holds newest first (the list).
    "CREATE INDEX credit_hold_account_id ON credit_hold (account_id, id)",
    # What the worker tidies: accounts whose soonest hold expiry has come.
    """CREATE INDEX credit_account_next_hold_expiry_at ON credit_account (next_hold_expiry_at)
    WHERE next_hold_expiry_at IS NOT NULL""",
]


def _create_holds() -> None:
    options = {"sqlite": {"timestamp": "DATETIME", "bigint": "INTEGER"},
               "postgresql": {"timestamp": "TIMESTAMP", "bigint": "BIGINT"}}[dialect()]
    for statement in _CREATE_HOLDS:
        db.execute_sql(statement.format(**options))
# -- 10: auto top-up the buyer can trust ---------------------------------------------------------------
# (Numbered 10: migration 9 is the spend holds'. The runner applies versions in list order and needs no
# contiguous numbers.)

_TRUST_COLUMNS = (("credit_account", "monthly_limit_minor", "{bigint}"),
                  ("credit_account", "consent_id", "VARCHAR(40)"),
                  ("credit_account", "forecast_warned_at", "{timestamp}"),
                  ("top_up", "consent_id", "VARCHAR(40)"))

_TRUST_TABLES = [
    # Consent records: append-only (the triggers below refuse UPDATE and DELETE), and
    # kept without a foreign key so that nothing cascades them away.
    """CREATE TABLE auto_top_up_consent (
    id VARCHAR(40) NOT NULL PRIMARY KEY,
    account_id VARCHAR(40) NOT NULL,
    merchant_id VARCHAR(40) NOT NULL,
    enabled {boolean} NOT NULL,
    threshold {bigint},
    payment_method VARCHAR(255),
    customer VARCHAR(255),
    monthly_limit_minor {bigint},
    bank_credits {bigint} NOT NULL,
    bank_price_minor {bigint} NOT NULL,
    currency VARCHAR(3) NOT NULL,
    terms TEXT NOT NULL,
    actor VARCHAR(100) NOT NULL,
    ip VARCHAR(64),
    user_agent TEXT,
    created_at {timestamp} NOT NULL)""",
    "CREATE INDEX auto_top_up_consent_account_id_id ON auto_top_up_consent (account_id, id)",
    # Usage credits per account per UTC day (days since 1970-01-01): the forecast reads a
    # primary-key range of them instead of summing ledger entries.
    """CREATE TABLE usage_day (
    account_id VARCHAR(40) NOT NULL REFERENCES credit_account (id) ON DELETE CASCADE,
    day INTEGER NOT NULL,
    credits {bigint} NOT NULL,
    PRIMARY KEY (account_id, day)){options}""",
    "CREATE INDEX usage_day_day ON usage_day (day)",
    # An account's latest failed top-up, without walking its succeeded ones.
    "CREATE INDEX top_up_account_failed ON top_up (account_id, id) WHERE status = 'failed'",
]

_APPEND_ONLY_FUNCTION = """CREATE OR REPLACE FUNCTION auto_top_up_consent_append_only() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'consent records are append-only'; END $$ LANGUAGE plpgsql"""

_CONSENT_TRIGGER = {
    "sqlite": ("CREATE TRIGGER auto_top_up_consent_no_{verb} BEFORE {verb} ON auto_top_up_consent "
               "BEGIN SELECT RAISE(ABORT, 'consent records are append-only'); END"),
    "postgresql": ("CREATE TRIGGER auto_top_up_consent_no_{verb} BEFORE {verb} ON auto_top_up_consent "
                   "FOR EACH ROW EXECUTE FUNCTION auto_top_up_consent_append_only()"),
}

# The usage entries already in the ledger, as day buckets.
_BACKFILL_USAGE_DAYS = {
    "sqlite": """INSERT INTO usage_day (account_id, day, credits)
SELECT account_id, CAST(julianday(substr(created_at, 1, 10)) - 2440587.5 AS INTEGER), -SUM(delta)
  FROM ledger_entry WHERE kind = 'usage'
 GROUP BY account_id, CAST(julianday(substr(created_at, 1, 10)) - 2440587.5 AS INTEGER)""",
    "postgresql": """INSERT INTO usage_day (account_id, day, credits)
SELECT account_id, created_at::date - DATE '1970-01-01', -SUM(delta)
  FROM ledger_entry WHERE kind = 'usage'
 GROUP BY account_id, created_at::date - DATE '1970-01-01'""",
}


def _trust_auto_top_up() -> None:
    options = {"sqlite": {"timestamp": "DATETIME", "bigint": "INTEGER", "boolean": "INTEGER",
                          "options": " WITHOUT ROWID"},
               "postgresql": {"timestamp": "TIMESTAMP", "bigint": "BIGINT", "boolean": "BOOLEAN",
                              "options": ""}}[dialect()]
    for table, column, kind in _TRUST_COLUMNS:
        db.execute_sql(f"ALTER TABLE {table} ADD COLUMN {column} {kind.format(**options)}")
    for statement in _TRUST_TABLES:
        db.execute_sql(statement.format(**options))
    if dialect() == "postgresql":
        db.execute_sql(_APPEND_ONLY_FUNCTION)
    for verb in ("UPDATE", "DELETE"):
        db.execute_sql(_CONSENT_TRIGGER[dialect()].format(verb=verb))
    db.execute_sql(_BACKFILL_USAGE_DAYS[dialect()])


#: (version, what it does, function): applied in order, each exactly once.
#: Append a new one at the end; never edit or reorder one that has shipped.
MIGRATIONS: list[tuple[int, str, Callable[[], None]]] = [
    (1, "merchants, keys, products, buyers, accounts, ledger, idempotency", _create_base),
    (2, "webhook endpoints, events, deliveries (the outbox) and attempts", _create_webhooks),
    (3, "automatic top-ups (at most one in flight per account)", _create_top_ups),
    (4, "orders the hooks reported: paid and refunded, in either order", _create_orders),
    (5, "indexes for deciding top-ups: recent outcomes per account, passed retry blocks",
     _index_top_up_decisions),
    (6, "unresolved and pending-settlement top-ups block a new one too", _top_up_outcomes),
    (7, "idempotency key spaces: the API's, the hooks', the host's and each buyer's keys never collide",
     _add_key_spaces),
    (8, "credit grants and their allocations; positive balances carried over as paid grants", _create_grants),
    (9, "spend holds: reserved credits, held on the account row", _create_holds),
    (10, "auto top-up consent records (append-only), monthly limits, usage by day for the forecast",
     _trust_auto_top_up),
]


def current_version() -> int:
    """The highest applied migration, or 0 for an empty database."""
    if not SchemaVersion.table_exists():
        return 0
    row = SchemaVersion.select(SchemaVersion.version).order_by(SchemaVersion.version.desc()).first()
    return row.version if row else 0


def migrate(*, to: int | None = None) -> list[int]:
    """Apply every pending migration (up to version ``to``, if given); returns
    the versions applied now."""
    applied = []
    with transaction():
        if dialect() == "postgresql":
            db.execute_sql(sql("SELECT pg_advisory_xact_lock(?)"), (_LOCK_ID,))
        db.execute_sql(_SCHEMA_VERSION[dialect()])
        done = {row.version for row in SchemaVersion.select(SchemaVersion.version)}
        for version, _, apply in MIGRATIONS:
            if version in done or (to is not None and version > to):
                continue
            apply()
            SchemaVersion.create(version=version)
            applied.append(version)
    return applied
