"""A state machine over holds, captures, releases, usage, purchases, expiring
promotional grants, voids and clock advances (both databases), checking after
every step that available = balance - active holds (straight from the tables),
that the account's ``held`` is its held holds' sum and never counts an expired
one, and every invariant of grants (§10)."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

import storage
from addon_plugin import errors, grants, holds, ledger
from tests.helpers import Clock, create_product
from tests.ledger.test_grants_properties import check_invariants

_machines = itertools.count()


def _time(value: datetime | str) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _holds(account_id: str) -> list[storage.CreditHold]:
    return list(storage.CreditHold.select().where(storage.CreditHold.account == account_id))


def test_holds_keep_available_exact_whatever_happens(app, merchant_id, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(ledger, "utcnow", clock)
    overdraft_limit = 20
    product = create_product(merchant_id, overdraft_limit=overdraft_limit)

    class Holds(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.account_id = ledger.open_account(merchant_id, product.id, f"h{next(_machines)}@example.com")
            self.captured = 0  # credits captured, each by exactly one usage entry

        def open_holds(self) -> list[storage.CreditHold]:
            return sorted((h for h in _holds(self.account_id) if h.status == "held"), key=lambda h: h.id)

        @rule(credits=st.integers(1, 100))
        def purchase(self, credits):
            ledger.record(self.account_id, credits, "purchase")

        @rule(credits=st.integers(1, 60), hours=st.none() | st.integers(1, 48))
        def promotional(self, credits, hours):
            expires_at = None if hours is None else clock.now + timedelta(hours=hours)
            ledger.record(self.account_id, credits, "adjustment", grant=grants.Terms(expires_at=expires_at))

        @rule(credits=st.integers(1, 80))
        def spend(self, credits):
            available = ledger.get_account(self.account_id).available
            try:
                ledger.record(self.account_id, -credits, "usage")
            except errors.InsufficientCredits:
                assert available - credits < -overdraft_limit
            else:
                assert available - credits >= -overdraft_limit

        @rule(credits=st.integers(1, 80), seconds=st.integers(1, 4 * 3600))
        def hold(self, credits, seconds):
            available = ledger.get_account(self.account_id).available
            try:
                placed = holds.place(self.account_id, credits, expires_in=seconds)
            except errors.InsufficientCredits:
                assert available - credits < -overdraft_limit
            else:
                assert available - credits >= -overdraft_limit and placed["status"] == "held"

        @precondition(lambda self: self.open_holds())
        @rule(data=st.data())
        def capture(self, data):
            hold = data.draw(st.sampled_from(self.open_holds()))
            value = data.draw(st.integers(1, hold.amount))
            expired = _time(hold.expires_at) <= clock.now
            account = ledger.get_account(self.account_id)
            others = account.held - (0 if expired else hold.amount)
            try:
                captured = holds.capture(hold.id, merchant_id, value)
            except errors.HoldNotActive:
                assert expired
            except errors.InsufficientCredits:
                assert not expired and account.balance - value - others < -overdraft_limit
                assert storage.CreditHold.get_by_id(hold.id).status == "held"
            else:
                assert not expired and account.balance - value - others >= -overdraft_limit
                assert (captured["status"], captured["captured_amount"]) == ("captured", value)
                entry = storage.LedgerEntry.get_by_id(captured["entry_id"])
                assert (entry.kind, entry.delta) == ("usage", -value)
                self.captured += value

        @precondition(lambda self: self.open_holds())
        @rule(data=st.data())
        def release(self, data):
            hold = data.draw(st.sampled_from(self.open_holds()))
            expired = _time(hold.expires_at) <= clock.now
            try:
                assert holds.release(hold.id, merchant_id)["status"] == "released"
            except errors.HoldNotActive:
                assert expired
            else:
                assert not expired

        @precondition(lambda self: storage.CreditGrant.select().where(
            storage.CreditGrant.account == self.account_id).exists())
        @rule(data=st.data())
        def void(self, data):
            ids = sorted(g.id for g in storage.CreditGrant.select(storage.CreditGrant.id).where(
                storage.CreditGrant.account == self.account_id))
            grants.void(data.draw(st.sampled_from(ids)), merchant_id)

        @rule(minutes=st.integers(1, 6 * 60))
        def advance(self, minutes):
            clock.advance(minutes=minutes)

        @rule()
        def worker_tidies(self):
            holds.expire_due_accounts()

        @invariant()
        def available_is_balance_less_active_holds(self):
            now = clock.now
            active = sum(h.amount for h in _holds(self.account_id)
                         if h.status == "held" and _time(h.expires_at) > now)
            account = ledger.get_account(self.account_id)  # a read: marks expired holds first
            assert account.available == account.balance - active
            rows = _holds(self.account_id)
            assert account.held == sum(h.amount for h in rows if h.status == "held") == active
            assert storage.CreditAccount.get_by_id(self.account_id).held == active
            assert all(_time(h.expires_at) > now for h in rows if h.status == "held")
            for h in rows:
                assert (h.status == "captured") == (h.captured_amount is not None) == (h.entry_id is not None)
                assert h.captured_amount is None or 1 <= h.captured_amount <= h.amount
            usage = storage.LedgerEntry.select().where((storage.LedgerEntry.account == self.account_id)
                                                       & (storage.LedgerEntry.kind == "usage"))
            captured_entries = {h.entry_id for h in rows if h.entry_id}
            assert sum(-e.delta for e in usage if e.id in captured_entries) == self.captured
            check_invariants(self.account_id, now, overdraft_limit)

    run_state_machine_as_test(Holds, settings=settings(
        max_examples=25, stateful_step_count=25, deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]))
