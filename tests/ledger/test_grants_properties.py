"""A state machine over purchases, top-ups, promotional grants with and without
expiry, usage into the overdraft, negative adjustments, voids, refunds and clock
advances, checking every grant invariant after every step (both databases)."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from peewee import fn

import storage
from addon_plugin import errors, grants, ledger
from tests.helpers import Clock, create_product

_machines = itertools.count()


def _time(value: datetime | str | None) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def check_invariants(account_id: str, now: datetime, overdraft_limit: int) -> None:
    """Every invariant of grants for one account, straight from the tables."""
    balance = ledger.balance(account_id)  # writes what expired first, as every read does
    entry, grant = storage.LedgerEntry, storage.CreditGrant
    entries = list(entry.select().where(entry.account == account_id).order_by(entry.sequence))
    assert balance == sum(e.delta for e in entries) and balance >= -overdraft_limit
    assert [e.sequence for e in entries] == list(range(1, len(entries) + 1))

    rows = {g.id: g for g in grant.select().where(grant.account == account_id)}
    spendable = sum(g.remaining for g in rows.values()
                    if g.status == "active" and (g.expires_at is None or _time(g.expires_at) > now))
    assert max(balance, 0) == spendable
    assert balance >= 0 or spendable == 0

    by_entry = grants.allocations_of([(e.id, e.grant_id, e.delta) for e in entries])
    drawn = {grant_id: 0 for grant_id in rows}
    repaid = {grant_id: 0 for grant_id in rows}
    for e in entries:
        parts = by_entry[e.id]
        assert sum(amount for _, amount in parts) == e.delta
        if e.delta > 0:
            [(created, _)] = parts
            repaid[created] = min(e.delta, max(0, -(e.balance_after - e.delta)))
            continue
        for grant_id, amount in parts:
            assert amount < 0
            if grant_id is None:
                assert e.kind in ("usage", "adjustment")  # only consumption runs into debt
                continue
            drawn[grant_id] += -amount
            expires_at = _time(rows[grant_id].expires_at)
            if e.kind != "expiry" and expires_at is not None:
                assert _time(e.created_at) < expires_at, "drew on a grant after it expired"
    for grant_id, g in rows.items():
        assert 0 <= g.remaining <= g.amount
        assert g.remaining == g.amount - repaid[grant_id] - drawn[grant_id]
        assert (g.status == "active") == (g.remaining > 0) or g.status in ("expired", "voided")
        if g.status in ("expired", "voided"):
            assert g.remaining == 0


def test_grants_keep_every_invariant_whatever_happens(app, merchant_id, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(ledger, "utcnow", clock)
    overdraft_limit = 50
    product = create_product(merchant_id, overdraft_limit=overdraft_limit, credit_expiry_days=2)

    class Grants(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            name = f"m{next(_machines)}"
            self.account_id = ledger.open_account(merchant_id, product.id, f"{name}@example.com")
            self.orders: list[str] = []
            self.refunded: set[str] = set()
            self.name = name

        @rule(credits=st.integers(1, 100))
        def purchase(self, credits):
            order_id = f"{self.name}-{len(self.orders)}"
            ledger.purchase(self.account_id, credits, order_id=order_id, quantity=1, idempotency_key=order_id)
            self.orders.append(order_id)

        @rule(credits=st.integers(1, 100))
        def top_up(self, credits):
            ledger.record(self.account_id, credits, "top_up")

        @rule(credits=st.integers(1, 100), hours=st.none() | st.integers(1, 72), priority=st.integers(0, 100))
        def promotional(self, credits, hours, priority):
            expires_at = None if hours is None else clock.now + timedelta(hours=hours)
            ledger.record(self.account_id, credits, "adjustment",
                          grant=grants.Terms(expires_at=expires_at, priority=priority))

        @rule(credits=st.integers(1, 150), kind=st.sampled_from(["usage", "adjustment"]))
        def spend(self, credits, kind):
            before = ledger.balance(self.account_id)
            try:
                ledger.record(self.account_id, -credits, kind)
            except errors.InsufficientCredits:
                assert before - credits < -overdraft_limit

        @precondition(lambda self: storage.CreditGrant.select().where(
            storage.CreditGrant.account == self.account_id).exists())
        @rule(data=st.data())
        def void(self, data):
            ids = [g.id for g in storage.CreditGrant.select(storage.CreditGrant.id).where(
                storage.CreditGrant.account == self.account_id).order_by(storage.CreditGrant.id)]
            grants.void(data.draw(st.sampled_from(ids)), merchant_id)

        @precondition(lambda self: set(self.orders) - self.refunded)
        @rule(data=st.data())
        def refund(self, data):
            order_id = data.draw(st.sampled_from(sorted(set(self.orders) - self.refunded)))
            held = (storage.CreditGrant.select(fn.COALESCE(fn.SUM(storage.CreditGrant.remaining), 0))
                    .where((storage.CreditGrant.reference == order_id) & (storage.CreditGrant.status == "active")
                           & (storage.CreditGrant.expires_at.is_null() | (storage.CreditGrant.expires_at > clock.now)))
                    .scalar())
            change = ledger.refund_unspent(self.account_id, order_id, idempotency_key=f"refund-{order_id}")
            assert (0 if change is None else -change.entry.delta) == held
            self.refunded.add(order_id)

        @rule(minutes=st.integers(1, 60 * 30))
        def advance(self, minutes):
            clock.advance(minutes=minutes)

        @invariant()
        def invariants_hold(self):
            check_invariants(self.account_id, clock.now, overdraft_limit)

    run_state_machine_as_test(Grants, settings=settings(
        max_examples=25, stateful_step_count=20, deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]))
