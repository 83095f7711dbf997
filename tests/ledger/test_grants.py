"""Credit grants in the ledger: creation, consumption order, debt, expiry,
voids and exact refunds, on both databases. Time is an injectable clock."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

import storage
from addon_plugin import errors, grants, ledger, signals, worker
from tests.helpers import create_product, ledger_sum, run_concurrently


def grant_of(change: ledger.Change) -> storage.CreditGrant:
    return storage.CreditGrant.get_by_id(change.entry.allocations[0].grant_id)


def allocations(change: ledger.Change) -> list[tuple[str | None, int]]:
    return [(a.grant_id, a.amount) for a in change.entry.allocations]


def promo(account_id: str, credits: int, **terms) -> storage.CreditGrant:
    return grant_of(ledger.record(account_id, credits, "adjustment", grant=grants.Terms(**terms)))


def test_every_positive_change_creates_one_grant_of_its_category(account_id, clock):
    purchase = grant_of(ledger.record(account_id, 100, "purchase", reference="order_1"))
    top_up = grant_of(ledger.record(account_id, 50, "top_up"))
    adjustment = grant_of(ledger.record(account_id, 30, "adjustment", description="welcome"))
    paid_adjustment = promo(account_id, 20, category="paid", priority=10)
    assert [(g.category, g.source, g.amount, g.remaining, g.status, g.priority) for g in
            (purchase, top_up, adjustment, paid_adjustment)] == [
        ("paid", "purchase", 100, 100, "active", 50), ("paid", "top_up", 50, 50, "active", 50),
        ("promotional", "adjustment", 30, 30, "active", 50), ("paid", "adjustment", 20, 20, "active", 10)]
    assert (purchase.reference, adjustment.description) == ("order_1", "welcome")


def test_a_product_with_credit_expiry_days_makes_purchases_expire(merchant_id, clock):
    product = create_product(merchant_id, credit_expiry_days=30)
    account_id = ledger.open_account(merchant_id, product.id, "bob@example.com")
    grant = grant_of(ledger.record(account_id, 100, "purchase"))
    assert grant.expires_at == clock.now + timedelta(days=30)


def test_deductions_draw_in_consumption_order_and_record_allocations(account_id, clock):
    paid_old = grant_of(ledger.record(account_id, 10, "purchase"))
    promo_never = promo(account_id, 10)
    paid_soon = grant_of(ledger.record(account_id, 10, "adjustment",
                                       grant=grants.Terms(category="paid", expires_at=clock.now + timedelta(days=1))))
    promo_late = promo(account_id, 10, expires_at=clock.now + timedelta(days=2))
    first = promo(account_id, 10, priority=0)
    change = ledger.record(account_id, -45, "usage")
    # priority first, then the soonest expiry, never-expiring last (promotional before paid), oldest first
    assert allocations(change) == [(first.id, -10), (paid_soon.id, -10), (promo_late.id, -10),
                                   (promo_never.id, -10), (paid_old.id, -5)]
    assert sum(n for _, n in allocations(change)) == change.entry.delta
    assert storage.CreditGrant.get_by_id(first.id).status == "depleted"
    assert storage.CreditGrant.get_by_id(paid_old.id).remaining == 5


def test_what_no_grant_covers_is_debt_and_the_next_grant_repays_it_first(merchant_id, clock):
    product = create_product(merchant_id, overdraft_limit=100)
    account_id = ledger.open_account(merchant_id, product.id, "eve@example.com")
    grant = promo(account_id, 30)
    change = ledger.record(account_id, -70, "usage")
    assert allocations(change) == [(grant.id, -30), (None, -40)]
    small = ledger.record(account_id, 25, "purchase")
    assert grant_of(small).remaining == 0 and grant_of(small).status == "depleted"
    assert allocations(small) == [(grant_of(small).id, 25)]
    big = ledger.record(account_id, 100, "purchase")
    assert grant_of(big).remaining == 85 == ledger.balance(account_id) == ledger_sum(account_id)


def test_an_expiry_is_written_before_any_read_reports_a_balance_after_it(account_id, clock):
    ledger.record(account_id, 100, "purchase")
    expiring = promo(account_id, 40, expires_at=clock.now + timedelta(hours=1))
    assert ledger.balance(account_id) == 140
    clock.advance(hours=1)
    assert ledger.balance(account_id) == 100 == ledger_sum(account_id)
    [expiry] = storage.LedgerEntry.select().where(storage.LedgerEntry.kind == "expiry")
    assert (expiry.delta, expiry.reference) == (-40, expiring.id)
    assert storage.CreditGrant.get_by_id(expiring.id).status == "expired"
    assert ledger.get_account(account_id).balance == 100  # nothing written twice


def test_a_deduction_at_the_expiry_instant_never_spends_the_expiring_credits(account_id, clock):
    expiring = promo(account_id, 40, expires_at=clock.now + timedelta(hours=1), priority=0)
    paid = grant_of(ledger.record(account_id, 100, "purchase"))
    clock.advance(hours=1)  # exactly expires_at: no longer spendable
    change = ledger.record(account_id, -30, "usage")
    assert allocations(change) == [(paid.id, -30)]
    assert change.previous_balance == 100 and change.account.balance == 70
    with pytest.raises(errors.InsufficientCredits):
        ledger.record(account_id, -71, "usage")
    assert storage.CreditGrant.get_by_id(expiring.id).status == "expired"
    assert ledger_sum(account_id) == 70


def test_deductions_racing_the_worker_at_the_expiry_instant_never_spend_the_expiring_credits(app, account_id,
                                                                                           clock):
    """Seven threads deduct while the worker expires, all at ``expires_at``: the
    expiry is written once, and every deduction draws on the paid grant alone."""
    expiring = promo(account_id, 40, expires_at=clock.now + timedelta(hours=1), priority=0)
    paid = grant_of(ledger.record(account_id, 100, "purchase"))
    clock.advance(hours=1)

    def work(index: int) -> None:
        if index == 0:
            worker.run_once()
        else:
            ledger.record(account_id, -10, "usage")

    assert run_concurrently(work, 8, app=app) == []
    used = storage.LedgerEntry.select().where(storage.LedgerEntry.kind == "usage")
    drawn = grants.allocations_of([(entry.id, entry.grant_id, entry.delta) for entry in used])
    assert sorted(drawn.values()) == [[(paid.id, -10)]] * 7
    [expiry] = storage.LedgerEntry.select().where(storage.LedgerEntry.kind == "expiry")
    assert (expiry.delta, expiry.reference) == (-40, expiring.id)
    assert storage.CreditGrant.get_by_id(paid.id).remaining == 30
    assert ledger.balance(account_id) == 30 == ledger_sum(account_id)


def test_the_worker_writes_due_expiries(app, account_id, clock):
    promo(account_id, 40, expires_at=clock.now + timedelta(seconds=30))
    clock.advance(seconds=30)
    worker.run_once()
    row = storage.CreditAccount.get_by_id(account_id)
    assert (row.balance, row.next_expiry_at) == (0, None)
    assert ledger_sum(account_id) == 0


def test_a_void_takes_the_remaining_credits_out(merchant_id, account_id, clock):
    grant = promo(account_id, 40)
    ledger.record(account_id, -15, "usage")
    voided = grants.void(grant.id, merchant_id, description="abuse")
    assert (voided.status, voided.remaining) == ("voided", 0)
    [void] = storage.LedgerEntry.select().where(storage.LedgerEntry.kind == "void")
    assert (void.delta, void.reference, void.description) == (-25, grant.id, "abuse")
    assert ledger.balance(account_id) == 0 == ledger_sum(account_id)
    assert grants.void(grant.id, merchant_id).status == "voided"  # again: nothing more
    with pytest.raises(errors.GrantNotFound):
        grants.void("grant_nope", merchant_id)


def test_a_spent_grant_is_just_marked_voided_and_never_drawn_again(merchant_id, account_id, clock):
    grant = promo(account_id, 10)
    ledger.record(account_id, -10, "usage")
    assert grants.void(grant.id, merchant_id).status == "voided"
    assert storage.LedgerEntry.select().where(storage.LedgerEntry.kind == "void").count() == 0


@pytest.mark.parametrize("first, second", [("A", "B"), ("B", "A")])
def test_refunds_take_exactly_what_each_orders_grant_holds(merchant_id, account_id, clock, first, second):
    ledger.purchase(account_id, 100, order_id="A", quantity=1, idempotency_key="pay-A")
    promo(account_id, 30)
    ledger.purchase(account_id, 100, order_id="B", quantity=1, idempotency_key="pay-B")
    ledger.record(account_id, -80, "usage")  # the promotional 30, then 50 of A
    taken = {}
    for order_id in (first, second):
        change = ledger.refund_unspent(account_id, order_id, idempotency_key=f"refund-{order_id}")
        taken[order_id] = -change.entry.delta
        assert change.entry.allocations[0].amount == change.entry.delta
    assert taken == {"A": 50, "B": 100}
    assert ledger.balance(account_id) == 0 == ledger_sum(account_id)


def test_a_grant_created_inside_the_warning_window_is_warned_of_at_once(app, account_id, clock):
    warned = []

    def receive(sender, **kwargs):
        warned.append(kwargs["grant"]["id"])

    signals.grant_expiring.connect(receive, sender=app)
    try:
        soon = promo(account_id, 10, expires_at=clock.now + timedelta(days=1))
        later = promo(account_id, 10, expires_at=clock.now + timedelta(days=10))
        promo(account_id, 10)
        assert warned == [soon.id]
        clock.advance(days=8)
        worker.run_once()
        worker.run_once()
        assert warned == [soon.id, later.id]
    finally:
        signals.grant_expiring.disconnect(receive, sender=app)


def test_an_expiry_in_the_past_is_refused(account_id, clock):
    with pytest.raises(errors.ValidationError) as refused:
        promo(account_id, 10, expires_at=clock.now)
    assert "expires_at" in refused.value.fields
    assert storage.LedgerEntry.select().count() == 0


def test_threads_drawing_on_several_grants_never_overdraw_any(app, merchant_id, clock):
    account_id = ledger.open_account(merchant_id, create_product(merchant_id).id, "many@example.com")
    for credits in (7, 11, 13, 17, 19):
        promo(account_id, credits)
    failures = []

    def spend() -> None:
        with app.app_context():
            for _ in range(10):
                try:
                    ledger.record(account_id, -1, "usage")
                except errors.InsufficientCredits:
                    pass
                except Exception as error:  # pragma: no cover - reported below
                    failures.append(error)

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert ledger.balance(account_id) == 0 == ledger_sum(account_id)
    rows = storage.LedgerEntry.select().where(storage.LedgerEntry.account == account_id)
    parts = grants.allocations_of([(e.id, e.grant_id, e.delta) for e in rows])
    for grant in storage.CreditGrant.select().where(storage.CreditGrant.account == account_id):
        drawn = sum(n for allocations in parts.values() for grant_id, n in allocations
                    if grant_id == grant.id and n < 0)
        assert grant.remaining == 0 and -drawn == grant.amount
