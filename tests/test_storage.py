"""Storage: the database binding, migrations and SQLite's settings."""

from __future__ import annotations

import pytest

import storage
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


def test_bad_database_urls_fail_loudly():
    with pytest.raises(ValueError, match="ADDONS_DATABASE_URL"):
        storage.bind("")
    with pytest.raises(ValueError, match="sqlite"):
        storage.bind("sqlite://")


def test_ids_are_opaque_prefixed_and_time_ordered():
    ids = [storage.new_id("acct") for _ in range(200)]
    assert len(set(ids)) == 200
    assert all(i.startswith("acct_") and len(i) == 31 for i in ids)
    assert storage.new_id("x") > ids[0]


def test_a_transaction_rolls_back_as_a_whole(app, funded_account_id):
    from addon_plugin import ledger

    with pytest.raises(InsufficientCredits):
        with storage.transaction():
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

    with pytest.raises(RuntimeError):
        with storage.transaction():
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
