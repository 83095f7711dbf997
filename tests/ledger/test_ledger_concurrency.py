"""Concurrency: many threads changing balances at once, on SQLite (the write
lock is taken at BEGIN) and PostgreSQL (conditional UPDATE row locks)."""

from __future__ import annotations

from collections import Counter

import storage
from addon_plugin import errors, ledger
from tests.helpers import ledger_sum, run_concurrently, sequences

THREADS, PER_THREAD = 8, 200


def test_deductions_on_one_hot_account_are_exact(app, merchant_id, product):
    account_id = ledger.open_account(merchant_id, product.id, "hot@example.com")
    funded = THREADS * PER_THREAD * 3 - 500  # 4300: room for 1433 deductions of 3, not 1600
    ledger.record(account_id, funded, "purchase")
    refused = Counter()

    def work(index: int) -> None:
        for _ in range(PER_THREAD):
            try:
                ledger.record(account_id, -3, "usage")
            except errors.InsufficientCredits:
                refused[index] += 1

    assert run_concurrently(work, THREADS, app=app) == []
    applied = THREADS * PER_THREAD - sum(refused.values())
    assert applied == funded // 3 and sum(refused.values()) == THREADS * PER_THREAD - funded // 3
    assert ledger.balance(account_id) == funded - 3 * applied == funded % 3
    assert ledger.balance(account_id) == ledger_sum(account_id)
    assert sequences(account_id) == list(range(1, applied + 2))


def test_deductions_spread_over_many_accounts_are_exact(app, merchant_id, product):
    accounts = [ledger.open_account(merchant_id, product.id, f"b{i}@example.com") for i in range(THREADS * 4)]
    for account_id in accounts:
        ledger.record(account_id, 10_000, "purchase")

    def work(index: int) -> None:
        for n in range(PER_THREAD):
            ledger.record(accounts[(index * 7 + n) % len(accounts)], -1, "usage")

    assert run_concurrently(work, THREADS, app=app) == []
    balances = {a: ledger.balance(a) for a in accounts}
    assert sum(10_000 - b for b in balances.values()) == THREADS * PER_THREAD
    for account_id in accounts:
        assert balances[account_id] == ledger_sum(account_id)
        assert sequences(account_id) == list(range(1, 10_001 - balances[account_id] + 1))


def test_replays_under_concurrency_apply_once(app, funded_account_id):
    keys = [f"job-{n}" for n in range(50)]

    def work(index: int) -> None:
        for key in keys[index % 5:] + keys[: index % 5]:
            ledger.record(funded_account_id, -2, "usage", idempotency_key=key)

    assert run_concurrently(work, THREADS, app=app) == []
    assert ledger.balance(funded_account_id) == 1000 - 2 * len(keys) == ledger_sum(funded_account_id)
    rows = storage.LedgerEntry.select().where(storage.LedgerEntry.idempotency_key.is_null(False))
    assert sorted(r.idempotency_key for r in rows) == sorted(keys)
