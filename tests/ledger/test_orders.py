"""An order's life through the hooks: paid and refunded, repeated, in either
order, concurrently; and exact refunds (what the order's grants still hold)
checked against a model of the consumption order over any sequence of
purchases, usage, adjustments and refunds."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

import storage
from addon_plugin import errors, hooks, ledger, orders, signals
from addon_plugin.errors import ValidationError
from addon_plugin.topup import set_auto_top_up
from tests.helpers import create_product, ledger_sum, run_concurrently


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


def record_of(merchant_id, order_id="order_1") -> storage.Order:
    return storage.Order.get((storage.Order.merchant == merchant_id) & (storage.Order.order_id == order_id))


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
    ledger.record(account.id, -120, "usage")                            # the promotional 40 first, then 80 of A
    plugin.order_refunded(refund(merchant_id, "B"), None)
    plugin.order_refunded(refund(merchant_id, "A"), None)
    assert [e.delta for e in entries("refund")] == [-100, -20]          # what each order's grant held
    assert ledger.balance(account.id) == 0


class _Fifo:
    """The exact model: lots of credits, each an order's (paid) or an
    adjustment's (promotional), spent promotional first, then oldest first; a
    refund takes what is left of its order's lots."""

    def __init__(self) -> None:
        self.lots: list[list] = []                                     # [order id or None, remaining]

    @property
    def balance(self) -> int:
        return sum(remaining for _, remaining in self.lots)

    def grant(self, order_id: str | None, credits: int) -> None:
        self.lots.append([order_id, credits])

    def spend(self, credits: int) -> None:
        for lot in sorted(self.lots, key=lambda lot: lot[0] is not None):  # stable: oldest first
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


def test_refunds_take_exactly_what_consumption_order_left_of_each_order(plugin, merchant_id):
    """Whatever the sequence, a refund takes exactly what the order's grants
    still hold: no more than its order granted, never going
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

        @rule(quantity=st.integers(1, 5))
        def refund_then_pay(self, quantity):
            order_id = f"{self.name}-{len(self.granted)}"
            plugin.order_refunded(refund(merchant_id, order_id), None)
            self._paid(order_id, quantity)                              # grants nothing
            self.granted[order_id] = 0
            self.refunded.add(order_id)

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

        @precondition(lambda self: self.granted)
        @rule(data=st.data())
        def repeat(self, data):
            order_id = data.draw(st.sampled_from(sorted(self.granted)))
            before = self.balance
            self._paid(order_id, 5)                                     # changes nothing
            if order_id in self.refunded:
                plugin.order_refunded(refund(merchant_id, order_id), None)
            assert self.balance == before

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


# -- a refund before the payment -----------------------------------------------------

def test_a_refund_before_order_paid_is_remembered_and_the_payment_grants_nothing(app, plugin, merchant_id, addon):
    app.config["ADDONS_PAYMENT_GATEWAY"] = "test"
    sentinel = object()
    assert plugin.order_refunded(refund(merchant_id), sentinel) is sentinel
    assert entries() == [] and record_of(merchant_id).refunded_at is not None
    assert plugin.order_paid(order(merchant_id, payment_method="pm_card_visa", auto_top_up_threshold=20),
                             sentinel) is sentinel
    assert entries() == [] and storage.CreditAccount.select().count() == 0  # no credits, no opt-in
    assert record_of(merchant_id).paid_at is not None


def test_a_paid_order_refunded_twice_is_refunded_once(plugin, merchant_id, addon):
    plugin.order_paid(order(merchant_id), None)
    plugin.order_refunded(refund(merchant_id), None)
    plugin.order_paid(order(merchant_id), None)
    plugin.order_refunded(refund(merchant_id), None)
    assert [e.delta for e in entries()] == [100, -100]


def test_orders_of_two_merchants_with_one_id_are_two_orders(plugin, merchant_id, addon):
    from addon_plugin import merchants

    other, _ = merchants.create_merchant("Other")
    plugin.order_refunded(refund(other.id), None)
    plugin.order_paid(order(merchant_id), None)
    assert account_of(merchant_id, addon).balance == 100


@pytest.mark.parametrize("order_id", ["x" * 256, "bad\x00id"])
def test_an_order_id_no_ledger_can_keep_is_refused_and_nothing_recorded(plugin, merchant_id, addon, order_id):
    with pytest.raises(ValidationError) as caught:
        plugin.order_refunded(refund(merchant_id, order_id), None)
    assert set(caught.value.messages) == {"id"}
    with pytest.raises(ValidationError):
        plugin.order_paid(order(merchant_id, order_id), None)
    assert storage.Order.select().count() == 0 and entries() == []


def test_a_refused_order_is_not_recorded_and_may_be_sent_again(plugin, merchant_id, addon):
    with pytest.raises(ValidationError):
        plugin.order_paid(order(merchant_id, quantity=0), None)
    assert storage.Order.select().count() == 0
    plugin.order_paid(order(merchant_id), None)
    assert account_of(merchant_id, addon).balance == 100


# -- a repeated order_paid changes nothing ---------------------------------------------

def test_a_repeated_order_paid_does_not_switch_auto_top_up_back_on(app, plugin, merchant_id, addon):
    app.config["ADDONS_PAYMENT_GATEWAY"] = "test"
    paid = order(merchant_id, payment_method="pm_card_visa", auto_top_up_threshold=150)
    plugin.order_paid(paid, None)
    account = account_of(merchant_id, addon)
    assert account.auto_top_up_enabled and storage.TopUp.select().count() == 1  # 100 <= 150: one top-up
    storage.TopUp.delete().execute()
    set_auto_top_up(account.id, merchant_id=merchant_id, enabled=False)      # the buyer switches it off
    plugin.order_paid(paid, None)                                             # the host delivers it again
    account = account_of(merchant_id, addon)
    assert (account.auto_top_up_enabled, account.balance) == (False, 100)
    assert storage.TopUp.select().count() == 0 and len(entries()) == 1


def test_a_repeated_order_paid_after_the_product_changed_replays_the_first_grant(plugin, merchant_id, addon):
    plugin.order_paid(order(merchant_id, quantity=2), None)
    plugin.save_pricing("addon", {"price": "25.00", "credit_amount": "150", "name": "Big pack"}, None,
                        merchant=merchant_id, host_product_id="host-7")
    plugin.order_paid(order(merchant_id, quantity=2), None)
    [entry] = entries()
    assert (entry.delta, entry.description) == (200, "2 × 100 credits")
    assert account_of(merchant_id, addon).balance == 200


def test_orders_paid_before_the_orders_table_are_known_after_the_migration(app, plugin, merchant_id, addon):
    """Orders the hooks applied before orders were recorded (their ledger
    entries only) are found by the migration's backfill."""
    plugin.order_paid(order(merchant_id, "old_paid"), None)
    plugin.order_paid(order(merchant_id, "old_refunded"), None)
    plugin.order_refunded(refund(merchant_id, "old_refunded"), None)
    ledger.record(account_of(merchant_id, addon).id, 5, "purchase", reference="not_a_hooks")
    storage.Order.delete().execute()
    storage.schema._backfill_orders()
    rows = {row.order_id: row for row in storage.Order.select()}
    assert set(rows) == {"old_paid", "old_refunded"}
    assert rows["old_paid"].paid_at is not None and rows["old_paid"].refunded_at is None
    assert rows["old_refunded"].paid_at is not None and rows["old_refunded"].refunded_at is not None
    plugin.save_pricing("addon", {"price": "25.00", "credit_amount": "150"}, None,
                        merchant=merchant_id, host_product_id="host-7")
    plugin.order_paid(order(merchant_id, "old_paid"), None)                   # a replay, not a reused key
    plugin.order_paid(order(merchant_id, "old_refunded"), None)
    assert account_of(merchant_id, addon).balance == 105


# -- concurrency ------------------------------------------------------------------------

def _together(app, *calls) -> list[BaseException]:
    """Run each call in its own thread (own app context, own connection),
    released at once; the exceptions they raised."""
    return run_concurrently(lambda index: calls[index](), len(calls), app=app)


def test_order_paid_racing_order_refunded_never_keeps_credits(app, plugin, merchant_id, addon):
    ids = [f"race_{n}" for n in range(10)]
    calls = [call for order_id in ids for call in (
        lambda order_id=order_id: plugin.order_paid(order(merchant_id, order_id), None),
        lambda order_id=order_id: plugin.order_refunded(refund(merchant_id, order_id), None))]
    assert _together(app, *calls) == []
    for order_id in ids:
        deltas = [e.delta for e in entries() if e.reference == order_id]
        assert deltas in ([], [100, -100]), (order_id, deltas)              # refunded first, or paid then refunded
        assert record_of(merchant_id, order_id).refunded_at is not None
    account_id = ledger.find_account_id(merchant_id, addon.id, "bob@example.com")
    assert account_id is None or ledger.balance(account_id) == 0 == ledger_sum(account_id)


def test_repeats_of_one_order_racing_apply_it_once(app, plugin, merchant_id, addon, monkeypatch):
    app.config["ADDONS_PAYMENT_GATEWAY"] = "test"
    opted_in = []

    def counting(account_id, **settings):
        opted_in.append(account_id)
        return set_auto_top_up(account_id, **settings)

    monkeypatch.setattr(hooks, "set_auto_top_up", counting)
    paid = order(merchant_id, payment_method="pm_card_visa", auto_top_up_threshold=20)
    assert _together(app, *[lambda: plugin.order_paid(paid, None)] * 8) == []
    assert [e.delta for e in entries()] == [100] and len(opted_in) == 1


def _lock_waiters(url: str) -> int:
    import psycopg2

    with psycopg2.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity"
                       " WHERE datname = current_database() AND wait_event_type = 'Lock'")
        return cursor.fetchone()[0]


def _hold_until_another_waits(database_url: str, inside: threading.Event) -> None:
    """Keep the caller's transaction open until another one waits on a lock
    (SQLite's BEGIN IMMEDIATE already queues it)."""
    inside.set()
    if storage.dialect() == "postgresql":
        deadline = time.monotonic() + 10
        while _lock_waiters(database_url) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)


def _first_then_second(app, first, second, inside: threading.Event) -> list[Exception]:
    failures = []

    def run(call):
        try:
            with app.app_context():
                call()
        except Exception as error:  # surfaced to the test
            failures.append(error)

    one = threading.Thread(target=run, args=(first,))
    one.start()
    assert inside.wait(timeout=10)
    two = threading.Thread(target=run, args=(second,))
    two.start()
    one.join(timeout=30)
    two.join(timeout=30)
    return failures


def test_a_refund_waiting_on_the_payment_takes_its_credits_back(app, plugin, merchant_id, addon, database_url):
    """The race made certain: order_paid holds its transaction open (in an
    ``addon_purchased`` receiver) until the refund waits on a lock."""
    ledger.open_account(merchant_id, addon.id, "bob@example.com")
    inside = threading.Event()

    def hold(sender, **kwargs):
        _hold_until_another_waits(database_url, inside)

    signals.addon_purchased.connect(hold)
    try:
        failures = _first_then_second(app, lambda: plugin.order_paid(order(merchant_id), None),
                                      lambda: plugin.order_refunded(refund(merchant_id), None), inside)
    finally:
        signals.addon_purchased.disconnect(hold)
    assert failures == [] and [e.delta for e in entries()] == [100, -100]


def test_a_payment_waiting_on_the_refund_grants_nothing(app, plugin, merchant_id, addon, database_url,
                                                        monkeypatch):
    """The race made certain the other way: order_refunded holds the order's
    record until order_paid waits on it."""
    inside, report = threading.Event(), orders.report

    def holding(merchant, order_id, event):
        seen = report(merchant, order_id, event)
        if event == "refunded":
            _hold_until_another_waits(database_url, inside)
        return seen

    monkeypatch.setattr(orders, "report", holding)
    failures = _first_then_second(app, lambda: plugin.order_refunded(refund(merchant_id), None),
                                  lambda: plugin.order_paid(order(merchant_id), None), inside)
    assert failures == [] and entries() == []
