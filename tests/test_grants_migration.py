"""Migration 5 on a database that migration 4 wrote, with real balances:
each positive balance becomes one paid grant that never expires; zero and
negative balances get none (a negative one stays debt)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime

import pytest
from conftest import POSTGRES_ADMIN_URL, _postgres_admin, make_app

import storage
from addon_plugin import ledger


@pytest.fixture
def fresh_url(request, database_url, tmp_path) -> Iterator[str]:
    """An empty database of the same kind as ``database_url``, never migrated."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path}/old.sqlite3"
        return
    admin = _postgres_admin()
    name = f"addons_migration_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        storage.bind("sqlite:///:memory:")
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _sql(statement: str) -> str:
    return statement.replace("?", "%s") if storage.dialect() == "postgresql" else statement


def _seed_version_4(balances: dict[str, int]) -> None:
    """What migration 4's schema held: accounts and their ledgers, written as SQL."""
    now = datetime(2026, 1, 1)
    run = storage.db.execute_sql
    run(_sql("INSERT INTO merchant (id, name, created_at) VALUES (?, ?, ?)"), ("mrch_1", "Old", now))
    run(_sql("INSERT INTO addon_product (id, merchant_id, name, price_minor, currency, credit_amount, "
             "top_up_allowed, overdraft_limit, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
        ("prod_1", "mrch_1", "100 credits", 1900, "USD", 100, False, 500, now, now))
    for n, (email, balance) in enumerate(balances.items()):
        run(_sql("INSERT INTO buyer (id, merchant_id, email, created_at) VALUES (?, ?, ?, ?)"),
            (f"buyer_{n}", "mrch_1", email, now))
        run(_sql("INSERT INTO credit_account (id, merchant_id, product_id, buyer_id, buyer_email, balance, "
                 "last_sequence, auto_top_up_enabled, top_up_failures, created_at, updated_at) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            (f"acct_{n}", "mrch_1", "prod_1", f"buyer_{n}", email, balance, 1 if balance else 0, False, 0, now, now))
        if balance:
            run(_sql("INSERT INTO ledger_entry (id, account_id, sequence, delta, balance_after, kind, description, "
                     "metadata, created_at) VALUES (?, ?, 1, ?, ?, ?, '', '{}', ?)"),
                (f"entry_{n}", f"acct_{n}", balance, balance, "purchase" if balance > 0 else "usage", now))


def test_positive_balances_become_paid_grants_and_debt_stays_debt(fresh_url, tmp_path, monkeypatch):
    app = make_app(fresh_url, str(tmp_path))
    with app.app_context():
        with monkeypatch.context() as old:
            old.setattr(storage.schema, "MIGRATIONS", storage.schema.MIGRATIONS[:4])
            assert storage.migrate() == [1, 2, 3, 4]
        _seed_version_4({"pos@example.com": 250, "zero@example.com": 0, "neg@example.com": -40})
        assert storage.migrate() == [5]

        grants = list(storage.CreditGrant.select())
        assert [(g.account_id, g.category, g.amount, g.remaining, g.status, g.source, g.expires_at)
                for g in grants] == [("acct_0", "paid", 250, 250, "active", "migration", None)]
        assert ledger.balance("acct_0") == 250 and ledger.balance("acct_1") == 0 and ledger.balance("acct_2") == -40

        # The carried-over grant is drawn on; new credits repay the debt first.
        assert [(a.grant_id, a.amount) for a in ledger.record("acct_0", -50, "usage").entry.allocations] == [
            (grants[0].id, -50)]
        repaid = ledger.record("acct_2", 100, "adjustment").entry
        assert repaid.balance_after == 60
        assert storage.CreditGrant.get_by_id(repaid.allocations[0].grant_id).remaining == 60
        storage.db.close()
