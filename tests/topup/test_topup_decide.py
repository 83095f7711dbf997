"""Deciding top-ups: threshold semantics, k banks, the cap, one in flight, exactly once."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from peewee import IntegrityError

import storage
from addon_plugin import ledger, worker
from addon_plugin.topup import Declined, TestGateway, decide, execute, set_auto_top_up
from addon_plugin.topup.records import amount
from storage import utcnow
from tests.helpers import THRESHOLD, account_row, create_product, run_concurrently, top_up_entries, top_ups


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
    with pytest.raises(RuntimeError), storage.transaction():
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
    with pytest.raises(IntegrityError), storage.transaction():
        storage.TopUp.create(id=storage.new_id("topup"), status="charging", **values)
    storage.TopUp.create(id=storage.new_id("topup"), status="failed", **values)  # not in flight: fine


def test_twenty_threads_deducting_across_the_threshold_make_one_top_up_and_one_charge(
        app, auto_account_id, gateway):
    def deduct(_: int) -> None:
        ledger.record(auto_account_id, -30, "usage")  # 1000 → 400, across 500

    assert run_concurrently(deduct, 20, app=app) == []
    assert ledger.balance(auto_account_id) == 400
    [top_up] = top_ups(auto_account_id)

    # Several workers racing for it charge it once.
    assert run_concurrently(lambda _: execute.run_due(), 4, app=app) == []
    assert list(gateway.charges) == [execute.charge_key(top_up.id)]
    assert len(top_up_entries(auto_account_id)) == 1
    assert ledger.balance(auto_account_id) == 400 + top_up.credits


# -- what decides: only the buyer's consumption ------------------------------------------

@pytest.mark.parametrize("kind", ["refund", "expiry", "void", "adjustment"])
def test_only_the_buyers_consumption_among_balance_changes_decides_a_top_up(app, auto_account_id, gateway, kind):
    app.config["ADDONS_TOP_UP_MODE"] = "inline"
    ledger.record(auto_account_id, -900, kind)        # 1000 → 100, far below the threshold
    ledger.record(auto_account_id, 50, "adjustment")  # credits given are no consumption either
    assert top_ups(auto_account_id) == [] and gateway.calls == 0
    ledger.record(auto_account_id, -1, "usage")
    assert [t.status for t in top_ups(auto_account_id)] == ["succeeded"] and gateway.calls == 1


def test_a_refunded_order_never_charges_the_card(app, merchant_id, product, gateway):
    app.config["ADDONS_TOP_UP_MODE"] = "inline"
    plugin = app.extensions["addons"].plugin
    plugin.order_paid({"id": "order_A", "merchant_id": merchant_id, "buyer_email": "bob@example.com",
                       "lines": [{"id": "1", "product_id": product.id, "quantity": 6}],
                       "payment_method": "pm_card_visa", "auto_top_up_threshold": THRESHOLD}, None)
    account_id = ledger.find_account_id(merchant_id, product.id, "bob@example.com")
    assert ledger.get_account(account_id).auto_top_up_enabled and ledger.balance(account_id) == 600

    plugin.order_refunded({"id": "order_A", "merchant_id": merchant_id}, None)
    assert ledger.balance(account_id) == 0
    assert top_ups(account_id) == [] and gateway.calls == 0


def test_a_merchants_negative_adjustment_decides_nothing_the_next_usage_does(client, auth, product, auto_account_id):
    adjusted = client.post(f"/api/addons/accounts/{auto_account_id}/adjustments", headers=auth,
                           json={"value": -900, "description": "chargeback"})
    assert adjusted.status_code == 201 and adjusted.json["balance"] == 100
    assert top_ups(auto_account_id) == []

    used = client.post("/api/buyer-addon/usage/add", headers=auth,
                       json={"product_id": product.id, "buyer_email": "bob@example.com", "value": -1})
    assert used.status_code == 200 and used.json["data"]["balance"] == 99
    [top_up] = top_ups(auto_account_id)
    assert (top_up.status, top_up.banks) == ("pending", 5)


# -- the decline budget ------------------------------------------------------------------

def _finished(account_id: str, completed_at, status: str = "failed", code: str | None = "card_declined") -> None:
    """A top-up of the account that ended at ``completed_at``."""
    row = storage.CreditAccount.get_by_id(account_id)
    storage.TopUp.create(id=storage.new_id("topup"), account=account_id, merchant=row.merchant_id, status=status,
                         banks=1, credits=100, amount_minor=1900, currency="USD", payment_method="pm_card_visa",
                         failure_code=code, attempts=1, created_at=completed_at, completed_at=completed_at)


def test_the_decline_budget_counts_declines_in_the_last_window_only(auto_account_id):
    now = utcnow()
    for minutes in (61, 62, 63):  # older than the window (3600 s)
        _finished(auto_account_id, now - timedelta(minutes=minutes))
    for status, code in (("failed", "gateway_unavailable"), ("failed", "daily_limit_reached"),
                         ("canceled", "auto_top_up_disabled"), ("succeeded", None)):
        _finished(auto_account_id, now - timedelta(minutes=5), status, code)  # not declines
    for minutes in (50, 30):
        _finished(auto_account_id, now - timedelta(minutes=minutes))
    assert decide.decide_for_account(auto_account_id, now=now) is None  # above the threshold
    ledger.record(auto_account_id, -600, "usage")  # two of three declines spent: decides
    [decided] = [t for t in top_ups(auto_account_id) if t.status == "pending"]
    storage.TopUp.delete().where(storage.TopUp.id == decided.id).execute()

    _finished(auto_account_id, now - timedelta(minutes=10))  # the third
    before = len(top_ups(auto_account_id))
    assert decide.decide_for_account(auto_account_id, now=now) is None
    assert len(top_ups(auto_account_id)) == before  # nothing decided, nothing recorded
    # Blocked until the oldest counted decline leaves the window: the worker decides then.
    frees_at = now - timedelta(minutes=50) + timedelta(hours=1)
    assert account_row(auto_account_id).top_up_blocked_until == frees_at
    assert decide.retry_due(frees_at - timedelta(microseconds=1)) == 0
    assert decide.retry_due(frees_at) == 1
    assert [t.status for t in top_ups(auto_account_id)].count("pending") == 1


def test_a_new_card_lifts_the_retry_block_but_not_the_decline_budget(auto_account_id, merchant_id, gateway):
    now = utcnow()
    for minutes in (40, 20, 1):
        _finished(auto_account_id, now - timedelta(minutes=minutes))
    ledger.record(auto_account_id, -600, "usage")
    set_auto_top_up(auto_account_id, merchant_id=merchant_id, enabled=True, threshold=THRESHOLD,
                    payment_method="pm_card_mastercard", now=now)
    set_auto_top_up(auto_account_id, merchant_id=merchant_id, enabled=False, now=now)
    set_auto_top_up(auto_account_id, merchant_id=merchant_id, enabled=True, threshold=THRESHOLD + 1,
                    payment_method="pm_card_visa", now=now)
    assert [t.status for t in top_ups(auto_account_id)] == ["failed"] * 3
    assert account_row(auto_account_id).top_up_blocked_until == now - timedelta(minutes=40) + timedelta(hours=1)


# -- after a failure: the worker, and refused deductions -----------------------------------

class CardFundedLater(TestGateway):
    """Declines the first charge (no funds on the card), then charges like ``pm_card_visa``."""

    def charge(self, **kwargs) -> str:
        if self.calls == 0:
            self.calls += 1
            raise Declined("card_declined", "Your card was declined.")
        return super().charge(**kwargs)


@pytest.fixture
def stalled(app, auto_account_id) -> CardFundedLater:
    """bob at the floor after a declined top-up, blocked until its ``retry_at``."""
    gateway = app.config["ADDONS_PAYMENT_GATEWAY"] = CardFundedLater()
    ledger.record(auto_account_id, -1000, "usage")
    execute.run_due()
    assert [t.failure_code for t in top_ups(auto_account_id)] == ["card_declined"]
    assert account_row(auto_account_id).top_up_blocked_until is not None
    return gateway


def _retry_block_passes(account_id: str) -> None:
    storage.CreditAccount.update(top_up_blocked_until=utcnow() - timedelta(seconds=1)).where(
        storage.CreditAccount.id == account_id).execute()


def test_the_worker_decides_the_next_top_up_once_the_retry_block_has_passed(app, auto_account_id, stalled,
                                                                           merchant_id, product):
    above = ledger.open_account(merchant_id, create_product(merchant_id).id, "bob@example.com")
    retry_at = account_row(auto_account_id).top_up_blocked_until
    storage.CreditAccount.update(top_up_blocked_until=retry_at).where(storage.CreditAccount.id == above).execute()

    assert decide.retry_due(retry_at - timedelta(seconds=1)) == 0
    assert decide.retry_due(retry_at) == 2  # both blocks end; only bob's account wants a top-up
    [_, retry] = top_ups(auto_account_id)
    assert (retry.status, retry.banks) == ("pending", 6) and top_ups(above) == []
    assert account_row(above).top_up_blocked_until is None
    execute.run_due(retry_at)
    assert ledger.balance(auto_account_id) == 600 and storage.TopUp.get_by_id(retry.id).status == "succeeded"
    assert decide.retry_due(retry_at) == 0


def test_flask_addons_worker_decides_and_charges_the_retry(app, auto_account_id, stalled):
    assert app.extensions["addons"].worker_tasks["top_up_retries"][0] is decide.retry_due
    _retry_block_passes(auto_account_id)
    worker.run_once()
    assert [t.status for t in top_ups(auto_account_id)] == ["failed", "succeeded"]
    assert ledger.balance(auto_account_id) == 600


def test_only_the_buyers_refused_consumption_outside_a_retry_block_decides_a_top_up(
        app, client, auth, product, auto_account_id, stalled):
    app.config["ADDONS_TOP_UP_MODE"] = "inline"
    usage = {"product_id": product.id, "buyer_email": "bob@example.com", "value": -10}
    refused = client.post("/api/buyer-addon/usage/add", headers=auth, json=usage)
    assert refused.status_code == 402 and len(top_ups(auto_account_id)) == 1  # still blocked

    _retry_block_passes(auto_account_id)
    adjusted = client.post(f"/api/addons/accounts/{auto_account_id}/adjustments", headers=auth,
                           json={"value": -10, "description": "fee"})
    assert adjusted.status_code == 402 and len(top_ups(auto_account_id)) == 1  # the merchant's: no

    headers = {**auth, "Idempotency-Key": "render-7"}
    refused = client.post("/api/buyer-addon/usage/add", headers=headers, json=usage)
    assert refused.status_code == 402 and refused.json["error"]["code"] == "insufficient_credits"
    assert [t.status for t in top_ups(auto_account_id)] == ["failed", "succeeded"]  # decided, charged inline
    assert [e.kind for e in storage.LedgerEntry.select().where(storage.LedgerEntry.account == auto_account_id)
            .order_by(storage.LedgerEntry.sequence)] == ["purchase", "usage", "top_up"]  # nothing for the 402
    assert ledger.balance(auto_account_id) == 600
    replay = client.post("/api/buyer-addon/usage/add", headers=headers, json=usage)
    assert replay.status_code == 402 and replay.headers["Idempotent-Replayed"] == "true"  # it stays refused
    served = client.post("/api/buyer-addon/usage/add", headers=auth, json=usage)
    assert served.status_code == 200 and served.json["data"]["balance"] == 590


def test_a_refused_deduction_decides_in_worker_mode_too_and_never_while_one_is_in_flight(
        client, auth, product, auto_account_id, stalled):
    _retry_block_passes(auto_account_id)
    usage = {"product_id": product.id, "buyer_email": "bob@example.com", "value": -10}
    for _ in range(3):
        assert client.post("/api/buyer-addon/usage/add", headers=auth, json=usage).status_code == 402
    assert [t.status for t in top_ups(auto_account_id)] == ["failed", "pending"]
    assert stalled.calls == 1  # worker mode: charged by the worker, not the request
