"""Migration 8 on a database that migration 7 wrote, with real balances:
each positive balance becomes one paid grant that never expires; zero and
negative balances get none (a negative one stays debt)."""

from __future__ import annotations

from datetime import datetime

import storage
from addon_plugin import ledger
from tests.helpers import make_app


def _seed_version_7(balances: dict[str, int]) -> None:
    """What migration 7's schema held: accounts and their ledgers, written as SQL."""
    now = datetime(2026, 1, 1)
    run = storage.db.execute_sql
    run(storage.sql("INSERT INTO merchant (id, name, created_at) VALUES (?, ?, ?)"), ("mrch_1", "Old", now))
    run(storage.sql("INSERT INTO addon_product (id, merchant_id, name, price_minor, currency, credit_amount, "
                    "top_up_allowed, overdraft_limit, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
        ("prod_1", "mrch_1", "100 credits", 1900, "USD", 100, False, 500, now, now))
    for n, (email, balance) in enumerate(balances.items()):
        run(storage.sql("INSERT INTO buyer (id, merchant_id, email, created_at) VALUES (?, ?, ?, ?)"),
            (f"buyer_{n}", "mrch_1", email, now))
        run(storage.sql("INSERT INTO credit_account (id, merchant_id, product_id, buyer_id, buyer_email, balance, "
                        "last_sequence, auto_top_up_enabled, top_up_failures, created_at, updated_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            (f"acct_{n}", "mrch_1", "prod_1", f"buyer_{n}", email, balance, 1 if balance else 0, False, 0, now, now))
        if balance:
            run(storage.sql("INSERT INTO ledger_entry (id, account_id, sequence, delta, balance_after, kind, "
                            "description, metadata, created_at) VALUES (?, ?, 1, ?, ?, ?, '', '{}', ?)"),
                (f"entry_{n}", f"acct_{n}", balance, balance, "purchase" if balance > 0 else "usage", now))


def test_positive_balances_become_paid_grants_and_debt_stays_debt(new_database, tmp_path):
    app = make_app(new_database(), str(tmp_path))
    with app.app_context():
        assert storage.migrate(to=7) == [1, 2, 3, 4, 5, 6, 7]
        _seed_version_7({"pos@example.com": 250, "zero@example.com": 0, "neg@example.com": -40})
        assert storage.migrate()[0] == 8  # and every later one

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
