"""Refunds through the hooks: the estimate (oldest credits spent first)
checked against an exact model over any sequence of purchases, usage,
adjustments and refunds."""

from __future__ import annotations

import itertools

import pytest
from conftest import create_product, ledger_sum
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

import storage
from addon_plugin import AddonPlugin, errors, ledger


@pytest.fixture
def plugin(app) -> AddonPlugin:
    return app.extensions["addons"]


@pytest.fixture
def addon(merchant_id):
    """An add-on the host knows as product "host-7": 100 credits for 19.00."""
    return create_product(merchant_id, host_product_id="host-7")


def order(merchant_id, order_id="order_1", quantity=1, email="bob@example.com", **extra):
    return {"id": order_id, "merchant_id": merchant_id, "buyer_email": email,
            "lines": [{"id": "l1", "host_product_id": "host-7", "quantity": quantity}], **extra}


def refund(merchant_id, order_id="order_1"):
    return {"id": order_id, "merchant_id": merchant_id}


def entries(kind=None):
    query = storage.LedgerEntry.select().order_by(storage.LedgerEntry.sequence)
    if kind:
        query = query.where(storage.LedgerEntry.kind == kind)
    return list(query)


def account_of(merchant_id, product, email="bob@example.com") -> ledger.Account:
    return ledger.get_account(ledger.find_account_id(merchant_id, product.id, email))


# -- refunds count earlier refunds ---------------------------------------------------

@pytest.mark.parametrize("spent", [0, 50])
@pytest.mark.parametrize("refunds", [("A", "B"), ("B", "A")])
def test_refunding_every_order_leaves_nothing_whatever_the_order(plugin, merchant_id, addon, spent, refunds):
    plugin.order_paid(order(merchant_id, "A"), None)                   # +100
    plugin.order_paid(order(merchant_id, "B"), None)                   # +100
    account = account_of(merchant_id, addon)
    if spent:
        ledger.record(account.id, -spent, "usage")
    for order_id in refunds:
        plugin.order_refunded(refund(merchant_id, order_id), None)
    assert ledger.balance(account.id) == 0 == ledger_sum(account.id)


def test_refunds_leave_the_credits_of_an_adjustment_between_the_orders(plugin, merchant_id, addon):
    plugin.order_paid(order(merchant_id, "A"), None)                   # +100
    account = account_of(merchant_id, addon)
    ledger.record(account.id, 40, "adjustment")                         # +40, not an order's
    plugin.order_paid(order(merchant_id, "B"), None)                   # +100
    ledger.record(account.id, -120, "usage")                            # all of A, 20 of the adjustment
    plugin.order_refunded(refund(merchant_id, "B"), None)
    plugin.order_refunded(refund(merchant_id, "A"), None)
    assert [e.delta for e in entries("refund")] == [-100]               # A had nothing left
    assert ledger.balance(account.id) == 20


class _Fifo:
    """The exact model: lots of credits, each an order's or not, spent oldest
    first; a refund takes what is left of its order's lots."""

    def __init__(self) -> None:
        self.lots: list[list] = []                                     # [order id or None, remaining]

    @property
    def balance(self) -> int:
        return sum(remaining for _, remaining in self.lots)

    def grant(self, order_id: str | None, credits: int) -> None:
        self.lots.append([order_id, credits])

    def spend(self, credits: int) -> None:
        for lot in self.lots:
            taken = min(lot[1], credits)
            lot[1] -= taken
            credits -= taken

    def refund(self, order_id: str) -> int:
        taken = 0
        for lot in self.lots:
            if lot[0] == order_id:
                taken, lot[1] = taken + lot[1], 0
        return taken

    def not_orders(self) -> int:
        return sum(remaining for order_id, remaining in self.lots if order_id is None)


_machines = itertools.count()


def test_refunds_take_exactly_what_oldest_first_spending_left_of_each_order(plugin, merchant_id):
    """Whatever the sequence, the refund estimate is exact for oldest-first
    spending: a refund takes no more than its order granted and never goes
    below zero, and once every order is refunded only credits no order granted
    remain (none at all without adjustments)."""
    create_product(merchant_id, host_product_id="host-7", credit_amount=10)

    class Orders(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.name = f"m{next(_machines)}"
            self.email = f"{self.name}@example.com"
            self.model = _Fifo()
            self.granted: dict[str, int] = {}
            self.refunded: set[str] = set()
            self.account_id: str | None = None

        def _paid(self, order_id: str, quantity: int) -> None:
            plugin.order_paid(order(merchant_id, order_id, quantity, email=self.email), None)
            self.account_id = self.account_id or ledger.find_account_id(
                merchant_id, storage.Product.get(storage.Product.host_product_id == "host-7").id, self.email)

        @property
        def balance(self) -> int:
            return ledger.balance(self.account_id) if self.account_id else 0

        @rule(quantity=st.integers(1, 5))
        def pay(self, quantity):
            order_id = f"{self.name}-{len(self.granted)}"
            self._paid(order_id, quantity)
            self.granted[order_id] = 10 * quantity
            self.model.grant(order_id, 10 * quantity)

        @precondition(lambda self: self.account_id)
        @rule(credits=st.integers(1, 60), kind=st.sampled_from(["usage", "adjustment"]))
        def spend(self, credits, kind):
            try:
                ledger.record(self.account_id, -credits, kind)
            except errors.InsufficientCredits:
                assert credits > self.model.balance
            else:
                self.model.spend(credits)

        @precondition(lambda self: self.account_id)
        @rule(credits=st.integers(1, 40))
        def adjust(self, credits):
            ledger.record(self.account_id, credits, "adjustment")
            self.model.grant(None, credits)

        @precondition(lambda self: set(self.granted) - self.refunded)
        @rule(data=st.data())
        def refund(self, data):
            order_id = data.draw(st.sampled_from(sorted(set(self.granted) - self.refunded)))
            before = self.balance
            plugin.order_refunded(refund(merchant_id, order_id), None)
            taken = before - self.balance
            assert 0 <= taken <= self.granted[order_id] and self.balance >= 0
            assert taken == self.model.refund(order_id)
            self.refunded.add(order_id)

        @invariant()
        def the_balance_is_the_models(self):
            assert self.balance == self.model.balance
            if self.account_id:
                assert self.balance == ledger_sum(self.account_id)
            if self.refunded == set(self.granted):
                assert self.balance == self.model.not_orders()

    run_state_machine_as_test(Orders, settings=settings(
        max_examples=30, stateful_step_count=15, deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]))
