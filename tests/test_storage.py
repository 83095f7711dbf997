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
