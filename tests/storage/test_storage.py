"""Storage: the database binding, migrations and SQLite's settings."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from flask import Flask

import storage
from addon_plugin import AddonPlugin
from addon_plugin.errors import InsufficientCredits


def test_migrate_is_safe_to_run_twice(app):
    assert storage.migrate() == []
    assert storage.current_version() == max(v for v, _, _ in storage.schema.MIGRATIONS)


def test_a_fresh_database_gets_every_migration(tmp_path):
    storage.bind(f"sqlite:///{tmp_path}/fresh.sqlite3")
    assert storage.current_version() == 0
    assert storage.migrate() == [v for v, _, _ in storage.schema.MIGRATIONS]
    assert set(m._meta.table_name for m in storage.ALL_MODELS) <= set(storage.db.get_tables())
    storage.db.close()


def test_sqlite_runs_in_wal_mode_with_foreign_keys_and_a_busy_timeout(tmp_path):
    storage.bind(f"sqlite:///{tmp_path}/pragmas.sqlite3")
    pragma = lambda name: storage.db.execute_sql(f"PRAGMA {name}").fetchone()[0]  # noqa: E731
    assert pragma("journal_mode") == "wal"
    assert pragma("foreign_keys") == 1
    assert pragma("busy_timeout") >= 5000
    storage.db.close()


def test_binding_the_bound_url_again_keeps_its_database(tmp_path):
    url = f"sqlite:///{tmp_path}/one.sqlite3"
    first = storage.bind(url)
    assert storage.bind(url) is first and storage.db.obj is first


def test_binding_another_database_is_refused_until_the_first_is_released(tmp_path):
    first = storage.bind(f"sqlite:///{tmp_path}/one.sqlite3")
    with pytest.raises(RuntimeError, match="already bound to sqlite:///.*one.sqlite3.*storage.unbind()"):
        storage.bind(f"sqlite:///{tmp_path}/two.sqlite3")
    assert storage.db.obj is first
    storage.unbind()
    assert storage.db.obj is None and first.is_closed()
    second = storage.bind(f"sqlite:///{tmp_path}/two.sqlite3")
    assert storage.db.obj is second is not first


def test_a_second_app_cannot_move_the_first_apps_database(tmp_path):
    def host(name: str, database: str) -> Flask:
        app = Flask(name, instance_path=str(tmp_path / name))
        app.config["ADDONS_DATABASE_URL"] = f"sqlite:///{tmp_path}/{database}"
        AddonPlugin(app)
        return app

    first = host("first", "first.sqlite3")
    with pytest.raises(RuntimeError, match="already bound"):
        host("second", "second.sqlite3")
    assert storage.db.database == f"{tmp_path}/first.sqlite3"
    host("third", "first.sqlite3")  # another app on the same database: fine
    with first.app_context():
        assert storage.migrate()


def test_the_refusal_shows_no_password(tmp_path):
    storage.bind("postgresql://addons:s3cret@127.0.0.1:1/addons")  # pools connect lazily
    with pytest.raises(RuntimeError) as refused:
        storage.bind("postgresql://addons:other-s3cret@127.0.0.1:1/other")
    assert "s3cret" not in str(refused.value) and "addons:***@127.0.0.1:1/addons" in str(refused.value)


def test_bad_database_urls_fail_loudly():
    with pytest.raises(ValueError, match="ADDONS_DATABASE_URL"):
        storage.bind("")
    with pytest.raises(ValueError, match="sqlite"):
        storage.bind("sqlite://")


def test_sql_is_written_with_question_marks_and_translated_for_postgresql():
    text = "SELECT ? FROM t WHERE a LIKE 'x%' AND b = '?' AND c = 'it''s ?' AND d = ?"
    assert storage.sql(text, "sqlite") == text
    assert (storage.sql(text, "postgresql")
            == "SELECT %s FROM t WHERE a LIKE 'x%%' AND b = '?' AND c = 'it''s ?' AND d = %s")
    with pytest.raises(ValueError, match="dialect"):
        storage.sql(text, "mysql")
    with pytest.raises(ValueError, match="dialect"):
        storage.Statements(one={"oracle": "SELECT 1"})


def test_statements_run_as_written_on_either_database(app):
    statements = storage.Statements(
        echo="SELECT ? || ' 100% sure?'",
        which={"sqlite": "SELECT 'sqlite', ?", "postgresql": "SELECT 'postgresql', CAST(? AS INTEGER)"},
    )
    assert storage.db.execute_sql(statements["echo"], ("am I",)).fetchone()[0] == "am I 100% sure?"
    assert storage.db.execute_sql(statements["which"], (1,)).fetchone() == (storage.dialect(), 1)
    assert storage.db.execute_sql(storage.sql("SELECT '50%' || ?"), ("!",)).fetchone()[0] == "50%!"


def test_no_module_translates_placeholders_on_its_own():
    """The placeholder rule has one home, storage.dialects (storage.prepared works
    below it, on the text psycopg2 gets)."""
    root = Path(storage.__file__).resolve().parents[1]
    home = {root / "storage" / "dialects.py", root / "storage" / "prepared.py"}
    translating = re.compile(r"""\.replace\(\s*["']\?["']|=\s*%s\b""")  # by hand, or written for psycopg2 only
    offenders = [str(path.relative_to(root)) for package in ("addon_plugin", "storage", "webhooks")
                 for path in sorted((root / package).rglob("*.py"))
                 if path not in home and translating.search(path.read_text())]
    assert offenders == []


def test_ids_are_opaque_prefixed_and_time_ordered():
    ids = [storage.new_id("acct") for _ in range(200)]
    assert len(set(ids)) == 200
    assert all(i.startswith("acct_") and len(i) == 31 for i in ids)
    assert storage.new_id("x") > ids[0]


def test_an_id_is_its_creation_millisecond_in_crockford_base32():
    alphabet = "0123456789abcdefghjkmnpqrstvwxyz"
    before = time.time_ns() // 1_000_000
    digits = storage.new_id("acct").removeprefix("acct_")
    after = time.time_ns() // 1_000_000
    value = 0
    for char in digits:
        value = value * 32 + alphabet.index(char)
    assert before <= value >> 80 <= after


def test_a_transaction_rolls_back_as_a_whole(app, funded_account_id):
    from addon_plugin import ledger

    with pytest.raises(InsufficientCredits), storage.transaction():
        ledger.record(funded_account_id, -10, "usage")
        ledger.record(funded_account_id, -5000, "usage")
    assert ledger.balance(funded_account_id) == 1000


def test_secret_columns_never_reach_the_query_log(app, merchant_id, caplog):
    """Peewee logs every statement with its parameters at DEBUG: a secret column's
    values show as '<secret>', and are stored, read and compared as usual."""
    secret = "whsec_c2VjcmV0LW5vdC10by1iZS1sb2dnZWQtYW55d2hlcmU="
    with caplog.at_level("DEBUG", logger="peewee"):
        endpoint = storage.WebhookEndpoint.create(id=storage.new_id("ep"), merchant=merchant_id,
                                                  url="https://example.com/hook", secret=secret)
        storage.WebhookEndpoint.update(previous_secret=secret).where(
            storage.WebhookEndpoint.id == endpoint.id).execute()
        found = storage.WebhookEndpoint.get(storage.WebhookEndpoint.secret == secret)
    assert (found.secret, found.previous_secret) == (secret, secret)
    assert type(found.secret) is str
    assert "'<secret>'" in caplog.text and "whsec_" not in caplog.text


def test_after_transaction_runs_once_the_outermost_block_ends_committed_or_rolled_back(app, caplog):
    seen: list[tuple[str, bool]] = []

    def note(name: str):
        return lambda: seen.append((name, storage.db.in_transaction()))

    with storage.transaction():
        with storage.transaction():
            storage.after_transaction(note("inner"))
        assert seen == []  # the inner block ended, the transaction did not
        storage.after_transaction(lambda: 1 / 0)  # logged, never raised
        storage.after_transaction(note("committed"))
    assert seen == [("inner", False), ("committed", False)]
    assert "after_transaction callback" in caplog.text

    with pytest.raises(RuntimeError), storage.transaction():
        storage.after_transaction(note("rolled back"))
        raise RuntimeError("abort")
    storage.after_transaction(note("no transaction: at once"))
    assert seen[2:] == [("rolled back", False), ("no transaction: at once", False)]


def _index_names() -> set[str]:
    if storage.dialect() == "sqlite":
        return {row[0] for row in storage.db.execute_sql("SELECT name FROM sqlite_master WHERE type = 'index'")}
    return {row[0] for row in storage.db.execute_sql("SELECT indexname FROM pg_indexes")}


def test_migration_5_adds_the_indexes_that_decide_top_ups_to_an_older_database(app):
    decisions = {"top_up_account_completed", "credit_account_retry_at"}
    with storage.transaction():  # a database made before migration 5
        for name in decisions:
            storage.db.execute_sql(f"DROP INDEX {name}")
        storage.SchemaVersion.delete().where(storage.SchemaVersion.version == 5).execute()
    assert not decisions & _index_names()
    assert storage.migrate() == [5]
    assert decisions <= _index_names()


# -- the key spaces migration --------------------------------------------------------------

_OLD_IDEMPOTENCY_RECORD = (
    'CREATE TABLE "idempotency_record" ("merchant_id" VARCHAR(40) NOT NULL, "key" VARCHAR(255) NOT NULL,'
    ' "request_hash" VARCHAR(64) NOT NULL, "response_status" INTEGER NOT NULL, "response_body" TEXT NOT NULL,'
    ' "created_at" {timestamp} NOT NULL, PRIMARY KEY ("merchant_id", "key"),'
    ' FOREIGN KEY ("merchant_id") REFERENCES "merchant" ("id") ON DELETE CASCADE){suffix}')


def _back_before_key_spaces() -> None:
    """The ledger and the idempotency records as they were before key spaces:
    the ledger's keys per account alone, a buyer's key inside the merchant's
    (``buyer:<email>`` U+001F key), hook keys joined with colons."""
    db, sqlite = storage.db, storage.dialect() == "sqlite"
    records = db.execute_sql("SELECT merchant_id, key_space, key, request_hash, response_status, response_body,"
                             " created_at FROM idempotency_record").fetchall()
    db.execute_sql("DROP INDEX ledger_entry_account_id_key_space_idempotency_key")
    db.execute_sql("ALTER TABLE ledger_entry DROP COLUMN key_space")
    db.execute_sql("CREATE UNIQUE INDEX ledger_entry_account_id_idempotency_key ON ledger_entry"
                   " (account_id, idempotency_key) WHERE idempotency_key IS NOT NULL")
    db.execute_sql("UPDATE ledger_entry SET idempotency_key = 'order_paid:' || reference || ':1'"
                   " WHERE kind = 'purchase'")
    db.execute_sql("UPDATE ledger_entry SET idempotency_key = 'order_refunded:' || reference WHERE kind = 'refund'")
    db.execute_sql("DROP TABLE idempotency_record")
    db.execute_sql(_OLD_IDEMPOTENCY_RECORD.format(timestamp="DATETIME" if sqlite else "TIMESTAMP",
                                                  suffix=" WITHOUT ROWID" if sqlite else ""))
    db.execute_sql("CREATE INDEX idempotency_record_created_at ON idempotency_record (created_at)")
    insert = "INSERT INTO idempotency_record VALUES (?, ?, ?, ?, ?, ?)"
    for merchant_id, space, key, *rest in records:
        old_key = key if space == "api" else "buyer:bob@example.com\x1f" + key
        db.execute_sql(insert if sqlite else insert.replace("?", "%s"), (merchant_id, old_key, *rest))
    [version] = [v for v, _, apply in storage.schema.MIGRATIONS if apply is storage.schema._add_key_spaces]
    storage.SchemaVersion.delete().where(storage.SchemaVersion.version == version).execute()


def test_the_key_spaces_migration_carries_old_keys_over(app, client, merchant_id, api_key, product):
    """Old rows keep working after the upgrade: a repeated hook grants and refunds
    nothing, a client's and a buyer's keys still replay their stored answers."""
    from addon_plugin import ledger

    plugin = app.extensions["addons"].plugin
    app.config["ADDONS_PAYMENT_GATEWAY"] = "test"
    plugin.buyer_loader(lambda: (merchant_id, "bob@example.com"))
    paid = {"id": "A:B", "merchant_id": merchant_id, "buyer_email": "bob@example.com",
            "lines": [{"id": "1", "product_id": product.id, "quantity": 1}]}
    plugin.order_paid(paid, None)
    account_id = ledger.find_account_id(merchant_id, product.id, "bob@example.com")
    usage = ("/api/buyer-addon/usage/add", {"product_id": product.id, "buyer_email": "bob@example.com", "value": -10},
             {"Authorization": f"Bearer {api_key}", "Idempotency-Key": "job-1"})
    used = client.post(usage[0], json=usage[1], headers=usage[2])
    ledger.record(account_id, 5, "adjustment", idempotency_key="host-1")
    plugin.order_refunded(paid, None)
    switch = (f"/api/addons/me/accounts/{account_id}/auto-top-up", {"enabled": False})
    switched = client.put(switch[0], json=switch[1], headers={"Idempotency-Key": "k"})
    _back_before_key_spaces()

    assert storage.migrate() != []
    keys = {e.kind: (e.key_space, e.idempotency_key) for e in storage.LedgerEntry.select()}
    assert keys == {"purchase": ("hook", '["order_paid","A:B","1"]'), "usage": ("api", "job-1"),
                    "adjustment": ("host", "host-1"), "refund": ("hook", '["order_refunded","A:B"]')}
    plugin.order_paid(paid, None)
    plugin.order_refunded(paid, None)
    assert [e.delta for e in storage.LedgerEntry.select().order_by(storage.LedgerEntry.sequence)] == [100, -10, 5, -90]
    again = client.post(usage[0], json=usage[1], headers=usage[2])
    assert again.headers["Idempotent-Replayed"] == "true" and again.get_json() == used.get_json()
    again = client.put(switch[0], json=switch[1], headers={"Idempotency-Key": "k"})
    assert again.headers["Idempotent-Replayed"] == "true" and again.get_json() == switched.get_json()
    assert client.put(switch[0], json=switch[1], headers={"Idempotency-Key": "k" * 255}).status_code == 200
    assert ledger.balance(account_id) == 5
