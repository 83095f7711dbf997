"""Migrations: frozen history that upgrades an old database to exactly a new one,
and stays in step with the models."""

from __future__ import annotations

import re
import threading
from datetime import datetime

from peewee import CharField, Database, SqliteDatabase
from playhouse.db_url import connect

import storage
from storage.models import BaseModel

LATEST = max(version for version, _, _ in storage.schema.MIGRATIONS)


def schema_of(database: Database, *, defaults: bool = True) -> dict[str, dict]:
    """What the migrations decided, read back from ``database``: per table its
    columns (type, NOT NULL, default), primary key, indexes (columns, uniqueness,
    predicate), foreign keys (with ON DELETE) and, on SQLite, WITHOUT ROWID.
    ``defaults=False`` leaves out what the models do not state: defaults, WITHOUT ROWID."""
    read = _sqlite_table if isinstance(database, SqliteDatabase) else _postgres_table
    tables = {name: read(database, name) for name in database.get_tables()}
    if not defaults:
        for table in tables.values():
            table["columns"] = {name: column[:2] for name, column in table["columns"].items()}
            table.pop("without_rowid", None)
    return tables


def _predicate(text: str | None) -> str | None:
    """An index's WHERE clause with quoting, brackets, case and spacing left out."""
    return None if text is None else re.sub(r'[\s"()]', "", text).lower()


def _sqlite_table(database: Database, table: str) -> dict:
    rows = lambda sql, *params: database.execute_sql(sql, params).fetchall()  # noqa: E731
    (create,), = rows("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", table)
    columns = rows(f'PRAGMA table_xinfo("{table}")')
    indexes = {}
    for _, name, unique, origin, _ in rows(f'PRAGMA index_list("{table}")'):
        if origin == "pk":
            continue  # the primary key's own index
        (text,), = rows("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", name)
        where = re.search(r"\bWHERE\b(.*)$", text, re.IGNORECASE | re.DOTALL)
        indexes[name] = (tuple(row[2] for row in rows(f'PRAGMA index_info("{name}")')), bool(unique),
                         _predicate(where.group(1) if where else None))
    keys: dict[int, list] = {}
    for key_id, _, target, source, column, _, on_delete, _ in rows(f'PRAGMA foreign_key_list("{table}")'):
        keys.setdefault(key_id, [target, [], [], on_delete])
        keys[key_id][1].append(source)
        keys[key_id][2].append(column)
    # SQLite enforces no VARCHAR length (a migration cannot alter it either): compare the type alone.
    return {
        "columns": {name: (re.sub(r"^VARCHAR\(\d+\)$", "VARCHAR", kind.upper()), bool(notnull), default)
                    for _, name, kind, notnull, default, _, _ in columns},
        "primary_key": tuple(name for *_, name, _, _, _, pk, _ in sorted(columns, key=lambda c: c[5]) if pk),
        "indexes": indexes,
        "foreign_keys": sorted((tuple(source), target, tuple(column), on_delete)
                               for target, source, column, on_delete in keys.values()),
        "without_rowid": "WITHOUT ROWID" in create.upper(),
    }


_PG_COLUMNS = """SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid)
FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped"""
_PG_INDEXES = """SELECT c.relname, i.indisunique, i.indisprimary, pg_get_expr(i.indpred, i.indrelid),
       ARRAY(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.n)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass"""
_PG_FOREIGN_KEYS = """SELECT f.relname, f.confdeltype,
       ARRAY(SELECT a.attname FROM unnest(f.conkey) WITH ORDINALITY AS k(attnum, n)
             JOIN pg_attribute a ON a.attrelid = f.conrelid AND a.attnum = k.attnum ORDER BY k.n),
       ARRAY(SELECT a.attname FROM unnest(f.confkey) WITH ORDINALITY AS k(attnum, n)
             JOIN pg_attribute a ON a.attrelid = f.confrelid AND a.attnum = k.attnum ORDER BY k.n)
FROM (SELECT c.*, t.relname FROM pg_constraint c JOIN pg_class t ON t.oid = c.confrelid
      WHERE c.conrelid = %s::regclass AND c.contype = 'f') AS f"""
_ON_DELETE = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


def _postgres_table(database: Database, table: str) -> dict:
    rows = lambda sql: database.execute_sql(sql, (f'"{table}"',)).fetchall()  # noqa: E731
    indexes, primary_key = {}, ()
    for name, unique, primary, where, columns in rows(_PG_INDEXES):
        if primary:
            primary_key = tuple(columns)
        else:
            indexes[name] = (tuple(columns), unique, _predicate(where))
    return {
        "columns": {name: (kind.upper(), notnull, default) for name, kind, notnull, default in rows(_PG_COLUMNS)},
        "primary_key": primary_key,
        "indexes": indexes,
        "foreign_keys": sorted((tuple(source), target, tuple(column), _ON_DELETE[on_delete])
                               for target, on_delete, source, column in rows(_PG_FOREIGN_KEYS)),
    }


def _migrated_schema(url: str, *, defaults: bool = True) -> dict[str, dict]:
    """The schema of the database at ``url`` after every migration."""
    storage.bind(url)
    try:
        storage.migrate()
        return schema_of(storage.db.obj, defaults=defaults)
    finally:
        storage.unbind()


# Rows written with migration 1's own columns: later migrations must keep them.
_AT_MIGRATION_1 = [
    ("INSERT INTO merchant (id, name, created_at) VALUES (?, ?, ?)", ("mer_1", "Acme", "{now}")),
    ("INSERT INTO api_key (id, merchant_id, secret_hash, created_at) VALUES (?, ?, ?, ?)",
     ("key_1", "mer_1", "0" * 64, "{now}")),
    ("INSERT INTO addon_product (id, merchant_id, name, price_minor, currency, credit_amount, top_up_allowed,"
     " overdraft_limit, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
     ("prod_1", "mer_1", "100 credits", 1900, "USD", 100, True, 0, "{now}", "{now}")),
    ("INSERT INTO buyer (id, merchant_id, email, created_at) VALUES (?, ?, ?, ?)",
     ("buyer_1", "mer_1", "bob@example.com", "{now}")),
    ("INSERT INTO credit_account (id, merchant_id, product_id, buyer_id, buyer_email, balance, last_sequence,"
     " auto_top_up_enabled, top_up_failures, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
     ("acct_1", "mer_1", "prod_1", "buyer_1", "bob@example.com", 100, 1, False, 0, "{now}", "{now}")),
    ("INSERT INTO ledger_entry (id, account_id, sequence, delta, balance_after, kind, description, metadata,"
     " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
     ("entry_1", "acct_1", 1, 100, 100, "purchase", "", "{}", "{now}")),
    ("INSERT INTO idempotency_record (merchant_id, key, request_hash, response_status, response_body, created_at)"
     " VALUES (?, ?, ?, ?, ?, ?)", ("mer_1", "key-1", "0" * 64, 200, "{}", "{now}")),
]


def test_a_database_upgraded_from_migration_1_matches_a_fresh_one(new_database):
    old, fresh = new_database(), new_database()
    storage.bind(old)
    assert storage.migrate(to=1) == [1] and storage.current_version() == 1
    now = datetime(2026, 1, 31, 12, 0)
    with storage.transaction():
        for statement, params in _AT_MIGRATION_1:
            storage.db.execute_sql(storage.sql(statement), [now if p == "{now}" else p for p in params])
    assert storage.migrate() == [version for version, _, _ in storage.schema.MIGRATIONS if version >= 2]
    assert storage.current_version() == LATEST
    upgraded = schema_of(storage.db.obj)
    # Today's models read yesterday's rows.
    assert storage.CreditAccount.get_by_id("acct_1").balance == 100
    assert [e.id for e in storage.LedgerEntry.select()] == ["entry_1"]
    assert storage.IdempotencyRecord.select().count() == 1
    storage.unbind()

    assert upgraded == _migrated_schema(fresh)


def test_the_migrations_do_not_read_todays_models(new_database):
    """Editing a model must not change what an old migration does."""
    storage.Merchant._meta.add_field("nickname", CharField(null=True))
    try:
        columns = _migrated_schema(new_database())["merchant"]["columns"]
    finally:
        storage.Merchant._meta.remove_field("nickname")
    assert set(columns) == {"id", "name", "created_at"}


def test_the_migrations_make_what_the_models_expect(new_database):
    """A model changed without a migration (or a migration the model does not
    follow) is caught here: columns, types, NOT NULL, keys and indexes agree."""
    models = set()
    pending = [BaseModel]
    while pending:
        for model in pending.pop().__subclasses__():
            models.add(model)
            pending.append(model)
    assert models == set(storage.ALL_MODELS), "every model belongs in storage.ALL_MODELS"

    # Defaults are left out: the models fill them in Python, and a migration
    # adding a NOT NULL column gives the rows already there a DEFAULT.
    migrated_url, models_url = new_database(), new_database()
    migrated = _migrated_schema(migrated_url, defaults=False)
    scratch = connect(models_url)
    with scratch.bind_ctx(storage.ALL_MODELS):
        scratch.create_tables(storage.ALL_MODELS)
        expected = schema_of(scratch, defaults=False)
    scratch.close()
    assert migrated == expected


def test_migrate_from_two_connections_at_once_applies_each_migration_once(new_database):
    storage.bind(new_database())
    start = threading.Barrier(2, timeout=30)
    results: list[list[int]] = []

    def migrate() -> None:
        start.wait()
        try:
            results.append(storage.migrate())
        finally:
            storage.db.close()

    threads = [threading.Thread(target=migrate) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [[], [version for version, _, _ in storage.schema.MIGRATIONS]]
    assert storage.current_version() == LATEST
