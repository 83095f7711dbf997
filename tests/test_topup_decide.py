"""Deciding top-ups: threshold semantics, k banks, the cap, one in flight, exactly once."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from peewee import IntegrityError

import storage
from addon_plugin import ledger
from addon_plugin.topup import decide, execute
from addon_plugin.topup.records import amount
from storage import utcnow
from topup_fixtures import THRESHOLD, auto_account_id, gateway, top_up_entries, top_ups  # noqa: F401


@pytest.mark.parametrize(("balance", "threshold", "expected"), [
    (500, 500, 1),    # at the threshold: one bank lifts it to 600
    (401, 500, 1),
    (400, 500, 2),    # one bank would leave it at 500: not above
    (-50, 500, 6),
    (0, 0, 1),
    (-10_000, 500, 10),  # capped
])
def test_banks_needed_is_the_fewest_that_lift_the_balance_above_the_threshold(balance, threshold, expected):
    assert decide.banks_needed(balance, threshold, 100, 10) == expected


def test_a_change_leaving_the_balance_above_the_threshold_decides_nothing(auto_account_id):
    ledger.record(auto_account_id, -(1000 - THRESHOLD - 1), "usage")
    assert ledger.balance(auto_account_id) == THRESHOLD + 1
    assert top_ups(auto_account_id) == []


def test_a_change_leaving_the_balance_at_the_threshold_decides_one_bank(auto_account_id, merchant_id):
    ledger.record(auto_account_id, -(1000 - THRESHOLD), "usage")
    [top_up] = top_ups(auto_account_id)
    assert (top_up.status, top_up.banks, top_up.credits) == ("pending", 1, 100)
    assert (amount(top_up), top_up.currency) == (Decimal("19.00"), "USD")
    assert (top_up.merchant_id, top_up.payment_method, top_up.attempts) == (merchant_id, "pm_card_visa", 0)


def test_a_change_leaving_the_balance_below_the_threshold_decides_a_top_up(auto_account_id):
    ledger.record(auto_account_id, -510, "usage")
    [top_up] = top_ups(auto_account_id)
    assert top_up.banks == 1


def test_one_deduction_far_below_the_threshold_buys_the_fewest_banks_that_lift_it_above(auto_account_id):
    ledger.record(auto_account_id, -850, "usage")  # 150: 350 short, so 4 banks → 550
    [top_up] = top_ups(auto_account_id)
    assert (top_up.banks, top_up.credits, amount(top_up)) == (4, 400, Decimal("76.00"))
    execute.run_due()
    assert ledger.balance(auto_account_id) == 550


def test_an_exact_multiple_short_needs_one_more_bank(auto_account_id):
    ledger.record(auto_account_id, -700, "usage")  # 300: two banks would reach 500, not above
    assert top_ups(auto_account_id)[0].banks == 3


def test_the_cap_is_respected_and_the_next_change_decides_again(app, auto_account_id, gateway):
    app.config["ADDONS_TOP_UP_MAX_BANKS"] = 3
    ledger.record(auto_account_id, -1000, "usage")  # 0: 5 banks needed, 3 allowed
    [first] = top_ups(auto_account_id)
    assert (first.banks, first.credits, amount(first)) == (3, 300, Decimal("57.00"))

    execute.run_due()
    assert ledger.balance(auto_account_id) == 300  # still below: bought anyway…
    assert len(top_ups(auto_account_id)) == 1      # …and its own credit decided nothing

    ledger.record(auto_account_id, -1, "usage")    # the next change decides again
    second = top_ups(auto_account_id)[1]
    assert (second.status, second.banks) == ("pending", 3)


def test_no_second_top_up_is_decided_while_one_is_in_flight(auto_account_id):
    ledger.record(auto_account_id, -600, "usage")
    ledger.record(auto_account_id, -300, "usage")
    assert [t.status for t in top_ups(auto_account_id)] == ["pending"]


def test_nothing_is_decided_when_auto_top_up_is_off_or_has_no_threshold(funded_account_id, merchant_id, gateway):
    from addon_plugin.topup import set_auto_top_up

    set_auto_top_up(funded_account_id, merchant_id=merchant_id, enabled=False, threshold=900)
    ledger.record(funded_account_id, -200, "usage")
    storage.CreditAccount.update(auto_top_up_enabled=True, threshold=None, payment_method="pm_card_visa").where(
        storage.CreditAccount.id == funded_account_id).execute()
    ledger.record(funded_account_id, -200, "usage")
    assert top_ups(funded_account_id) == []


def test_nothing_is_decided_for_a_product_that_no_longer_allows_top_ups(auto_account_id, product):
    storage.Product.update(top_up_allowed=False).where(storage.Product.id == product.id).execute()
    ledger.record(auto_account_id, -600, "usage")
    assert top_ups(auto_account_id) == []


def test_a_blocked_account_decides_nothing_until_the_block_has_passed(auto_account_id):
    storage.CreditAccount.update(top_up_blocked_until=utcnow() + timedelta(hours=1)).where(
        storage.CreditAccount.id == auto_account_id).execute()
    ledger.record(auto_account_id, -600, "usage")
    assert top_ups(auto_account_id) == []

    storage.CreditAccount.update(top_up_blocked_until=utcnow() - timedelta(seconds=1)).where(
        storage.CreditAccount.id == auto_account_id).execute()
    ledger.record(auto_account_id, -1, "usage")
    assert len(top_ups(auto_account_id)) == 1


def test_a_decision_rolls_back_with_its_change(auto_account_id):
    with pytest.raises(RuntimeError):
        with storage.transaction():
            ledger.record(auto_account_id, -600, "usage")
            assert len(top_ups(auto_account_id)) == 1
            raise RuntimeError("the caller fails after the change")
    assert ledger.balance(auto_account_id) == 1000
    assert top_ups(auto_account_id) == []


def test_the_database_refuses_a_second_top_up_in_flight(auto_account_id):
    ledger.record(auto_account_id, -600, "usage")
    [top_up] = top_ups(auto_account_id)
    values = {field: getattr(top_up, field) for field in ("account", "merchant", "banks", "credits",
                                                          "amount_minor", "currency", "payment_method")}
    with pytest.raises(IntegrityError):
        with storage.transaction():
            storage.TopUp.create(id=storage.new_id("topup"), status="charging", **values)
    storage.TopUp.create(id=storage.new_id("topup"), status="failed", **values)  # not in flight: fine


def test_twenty_threads_deducting_across_the_threshold_make_one_top_up_and_one_charge(
        app, auto_account_id, gateway):
    threads, errors = 20, []
    start = threading.Barrier(threads)

    def deduct() -> None:
        try:
            with app.app_context():
                start.wait()
                ledger.record(auto_account_id, -30, "usage")  # 1000 → 400, across 500
        except Exception as error:  # surfaced below
            errors.append(error)

    workers = [threading.Thread(target=deduct) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    assert errors == []
    assert ledger.balance(auto_account_id) == 400
    [top_up] = top_ups(auto_account_id)

    # Several workers racing for it charge it once.
    runners = [threading.Thread(target=lambda: _in_app(app, execute.run_due)) for _ in range(4)]
    for thread in runners:
        thread.start()
    for thread in runners:
        thread.join()
    assert list(gateway.charges) == [execute.charge_key(top_up.id)]
    assert len(top_up_entries(auto_account_id)) == 1
    assert ledger.balance(auto_account_id) == 400 + top_up.credits


def _in_app(app, fn) -> None:
    with app.app_context():
        fn()
