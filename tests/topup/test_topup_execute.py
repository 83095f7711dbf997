"""Executing top-ups: charge then credit exactly once, declines, retries, limits, signals."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest

import storage
from addon_plugin import ledger, worker
from addon_plugin.ledger import Account, Entry
from addon_plugin.topup import GatewayUnavailable, TestGateway, execute, set_auto_top_up
from storage import utcnow
from tests.helpers import THRESHOLD, account_row, top_up_entries, top_ups


def deduct_below(account_id: str) -> storage.TopUp:
    """Take the balance to the threshold minus 10 and return the top-up that decided."""
    before = {t.id for t in top_ups(account_id)}
    ledger.record(account_id, -(ledger.balance(account_id) - THRESHOLD + 10), "usage")
    [new] = [t for t in top_ups(account_id) if t.id not in before]
    return new


class FlakyGateway(TestGateway):
    """Unavailable for the first ``outages`` calls, then a :class:`TestGateway`."""

    def __init__(self, outages: int) -> None:
        super().__init__()
        self.outages = outages
        self.keys: list[str] = []

    def charge(self, **kwargs) -> str:
        self.keys.append(kwargs["idempotency_key"])
        if len(self.keys) <= self.outages:
            raise GatewayUnavailable("HTTP 503")
        return super().charge(**kwargs)


# -- success -------------------------------------------------------------------

def test_the_worker_charges_the_top_up_then_credits_it_once(app, auto_account_id, gateway, received):
    top_up = deduct_below(auto_account_id)
    assert ledger.balance(auto_account_id) == 490
    assert gateway.calls == 0  # worker mode: nothing happens before the worker runs

    assert worker.run_once() == 1
    top_up = storage.TopUp.get_by_id(top_up.id)
    charge = gateway.charges[execute.charge_key(top_up.id)]
    assert (charge.amount, charge.currency, charge.payment_method) == (Decimal("19.00"), "USD", "pm_card_visa")
    assert charge.metadata == {"top_up_id": top_up.id, "account_id": auto_account_id,
                               "merchant_id": top_up.merchant_id, "consent_id": top_up.consent_id}
    assert top_up.consent_id is not None
    assert (top_up.status, top_up.charge_id, top_up.attempts, top_up.lease) == ("succeeded", charge.id, 1, None)
    assert top_up.completed_at is not None

    [entry] = top_up_entries(auto_account_id)
    assert (entry.delta, entry.balance_after, entry.reference, entry.actor) == (100, 590, top_up.id, "top_up")
    assert entry.idempotency_key == execute.credit_key(top_up.id)
    assert ledger.balance(auto_account_id) == 590

    [signal] = received["top_up_succeeded"]
    assert isinstance(signal["account"], Account) and signal["account"].balance == 590
    assert isinstance(signal["entry"], Entry) and signal["entry"].id == entry.id
    assert {k: signal["top_up"][k] for k in ("id", "status", "banks", "credits", "amount", "currency", "charge_id")} \
        == {"id": top_up.id, "status": "succeeded", "banks": 1, "credits": 100, "amount": "19.00",
            "currency": "USD", "charge_id": charge.id}
    assert received["top_up_failed"] == []

    assert worker.run_once() == 0  # nothing left to do


def test_inline_mode_charges_right_after_the_commit(app, auto_account_id, gateway):
    app.config["ADDONS_TOP_UP_MODE"] = "inline"
    change = ledger.record(auto_account_id, -510, "usage")
    assert change.account.balance == 490  # the change reports its own balance…
    assert ledger.balance(auto_account_id) == 590  # …and the top-up ran before record() returned
    assert [t.status for t in top_ups(auto_account_id)] == ["succeeded"]
    assert gateway.calls == 1


def test_inline_mode_charges_nothing_when_the_change_rolls_back(app, auto_account_id, gateway):
    app.config["ADDONS_TOP_UP_MODE"] = "inline"
    with pytest.raises(RuntimeError), storage.transaction():
        ledger.record(auto_account_id, -510, "usage")
        raise RuntimeError("abort")
    assert gateway.calls == 0 and top_ups(auto_account_id) == []


def test_a_success_resets_the_failure_count(auto_account_id):
    storage.CreditAccount.update(top_up_failures=2).where(storage.CreditAccount.id == auto_account_id).execute()
    deduct_below(auto_account_id)
    execute.run_due()
    assert account_row(auto_account_id).top_up_failures == 0


# -- declines --------------------------------------------------------------------

@pytest.mark.parametrize(("payment_method", "code"), [
    ("pm_card_chargeDeclined", "card_declined"),
    ("pm_card_authenticationRequired", "authentication_required"),
    ("pm_card_unknown", "invalid_payment_method"),
])
def test_a_decline_fails_the_top_up_counts_it_and_blocks_retries(
        app, auto_account_id, merchant_id, received, payment_method, code):
    set_auto_top_up(auto_account_id, merchant_id=merchant_id, enabled=True, threshold=THRESHOLD,
                    payment_method=payment_method)
    top_up = deduct_below(auto_account_id)
    assert execute.run_due() == 1

    top_up = storage.TopUp.get_by_id(top_up.id)
    assert (top_up.status, top_up.failure_code, top_up.charge_id) == ("failed", code, None)
    account = account_row(auto_account_id)
    assert account.top_up_failures == 1 and account.auto_top_up_enabled
    assert account.top_up_blocked_until == top_up.completed_at + timedelta(seconds=3600)
    assert top_up_entries(auto_account_id) == [] and ledger.balance(auto_account_id) == 490

    [signal] = received["top_up_failed"]
    assert signal["failure"]["code"] == code and signal["failure"]["message"]
    assert signal["top_up"]["status"] == "failed" and signal["top_up"]["failure_code"] == code
    assert signal["account"].id == auto_account_id
    assert received["auto_top_up_disabled"] == []

    ledger.record(auto_account_id, -1, "usage")  # blocked: the card is not tried again
    assert len(top_ups(auto_account_id)) == 1


def test_auto_top_up_switches_off_after_the_maximum_consecutive_failures(
        app, auto_account_id, merchant_id, received):
    app.config["ADDONS_TOP_UP_RETRY_AFTER"] = 0  # each next change may try again at once
    set_auto_top_up(auto_account_id, merchant_id=merchant_id, enabled=True, threshold=THRESHOLD,
                    payment_method="pm_card_chargeDeclined")
    ledger.record(auto_account_id, -510, "usage")
    for failures in (1, 2, 3):
        execute.run_due()
        assert account_row(auto_account_id).top_up_failures == failures
        ledger.record(auto_account_id, -1, "usage")

    assert [t.status for t in top_ups(auto_account_id)] == ["failed"] * 3  # the 4th change decided nothing
    assert not account_row(auto_account_id).auto_top_up_enabled
    assert len(received["top_up_failed"]) == 3
    [disabled] = received["auto_top_up_disabled"]
    assert disabled["reason"] == "max_failures"
    assert disabled["account"].auto_top_up_enabled is False


# -- the gateway unavailable ---------------------------------------------------------

def test_an_unavailable_gateway_is_retried_with_backoff_and_the_same_key(app, auto_account_id, received):
    gateway = app.config["ADDONS_PAYMENT_GATEWAY"] = FlakyGateway(outages=2)
    top_up = deduct_below(auto_account_id)
    start = top_up.next_attempt_at

    assert execute.run_due(start) == 1
    top_up = storage.TopUp.get_by_id(top_up.id)
    assert (top_up.status, top_up.attempts, top_up.next_attempt_at) == ("pending", 1, start + timedelta(seconds=30))
    assert execute.run_due(start + timedelta(seconds=29)) == 0  # not due yet

    assert execute.run_due(start + timedelta(seconds=30)) == 1
    assert storage.TopUp.get_by_id(top_up.id).next_attempt_at == start + timedelta(seconds=150)

    assert execute.run_due(start + timedelta(seconds=150)) == 1
    top_up = storage.TopUp.get_by_id(top_up.id)
    assert (top_up.status, top_up.attempts) == ("succeeded", 3)
    assert gateway.keys == [execute.charge_key(top_up.id)] * 3
    assert len(gateway.charges) == 1 and len(top_up_entries(auto_account_id)) == 1
    assert received["top_up_failed"] == []


def test_when_the_retries_run_out_the_top_up_is_unresolved_not_failed(app, auto_account_id, received):
    gateway = app.config["ADDONS_PAYMENT_GATEWAY"] = FlakyGateway(outages=99)
    top_up = deduct_below(auto_account_id)
    moment = top_up.next_attempt_at
    for delay in (0, 30, 120, 600):  # the first attempt, then the schedule's three retries
        moment += timedelta(seconds=delay)
        assert execute.run_due(moment) == 1

    top_up = storage.TopUp.get_by_id(top_up.id)
    assert (top_up.status, top_up.failure_code, top_up.attempts) == ("unresolved", None, 4)
    assert top_up.next_attempt_at == moment + timedelta(seconds=300)  # its first lookup
    assert len(gateway.keys) == 4 and gateway.charges == {}
    assert account_row(auto_account_id).top_up_failures == 0  # not a failure: money may have been taken
    assert received["top_up_failed"] == [] and len(received["top_up_unresolved"]) == 1
    assert execute.run_due(moment + timedelta(days=1)) == 0  # never sent again


def test_no_gateway_configured_at_charge_time_is_treated_as_unavailable(app, auto_account_id):
    top_up = deduct_below(auto_account_id)
    app.config["ADDONS_PAYMENT_GATEWAY"] = None
    execute.run_due()
    assert (storage.TopUp.get_by_id(top_up.id).status, storage.TopUp.get_by_id(top_up.id).attempts) == ("pending", 1)


# -- exactly once across crashes and lost leases ----------------------------------------

class Crash(BaseException):
    """Stands in for the process dying: nothing in the executor catches it."""


def test_a_top_up_interrupted_after_the_charge_is_resumed_without_a_second_charge(app, auto_account_id):
    class DyingGateway(TestGateway):
        def charge(self, **kwargs):
            charge_id = super().charge(**kwargs)
            if self.calls == 1:
                raise Crash()  # the gateway took the money; the worker dies before the credit
            return charge_id

    gateway = app.config["ADDONS_PAYMENT_GATEWAY"] = DyingGateway()
    top_up = deduct_below(auto_account_id)
    with pytest.raises(Crash):
        execute.run_due()
    left = storage.TopUp.get_by_id(top_up.id)
    assert left.status == "charging" and top_up_entries(auto_account_id) == []

    assert execute.run_due(left.next_attempt_at - timedelta(seconds=1)) == 0  # still leased
    assert execute.run_due(left.next_attempt_at) == 1  # the lease ran out: resumed
    assert gateway.calls == 2 and len(gateway.charges) == 1
    assert storage.TopUp.get_by_id(top_up.id).status == "succeeded"
    assert len(top_up_entries(auto_account_id)) == 1 and ledger.balance(auto_account_id) == 590


def test_a_worker_that_lost_its_lease_records_nothing(app, auto_account_id):
    """Worker A is slow; its lease runs out and worker B claims and finishes the
    top-up while A's charge call is still out. A's late answer changes nothing."""
    finished_by_b: list[bool] = []

    class SlowGateway(TestGateway):
        def charge(self, **kwargs):
            if self.calls == 0:  # A's call: B runs in the meantime
                self.calls += 1
                later = utcnow() + execute.lease_duration() + timedelta(seconds=1)
                finished_by_b.append(execute.run(top_up.id, now=later))
                return super().charge(**kwargs)
            return super().charge(**kwargs)

    gateway = app.config["ADDONS_PAYMENT_GATEWAY"] = SlowGateway()
    top_up = deduct_below(auto_account_id)
    assert execute.run(top_up.id) is True
    assert finished_by_b == [True]
    assert len(gateway.charges) == 1 and len(top_up_entries(auto_account_id)) == 1
    assert storage.TopUp.get_by_id(top_up.id).attempts == 2


def test_a_pending_top_up_is_canceled_if_auto_top_up_was_switched_off_before_the_charge(
        auto_account_id, merchant_id, gateway, received):
    top_up = deduct_below(auto_account_id)
    set_auto_top_up(auto_account_id, merchant_id=merchant_id, enabled=False)
    execute.run_due()
    top_up = storage.TopUp.get_by_id(top_up.id)
    assert (top_up.status, top_up.failure_code) == ("canceled", "auto_top_up_disabled")
    assert gateway.calls == 0 and received["top_up_failed"] == []


def test_a_top_up_already_sent_to_the_gateway_is_seen_through_even_if_switched_off(
        app, auto_account_id, merchant_id):
    gateway = app.config["ADDONS_PAYMENT_GATEWAY"] = FlakyGateway(outages=1)
    top_up = deduct_below(auto_account_id)
    execute.run_due()  # attempt 1: the outcome is unknown
    set_auto_top_up(auto_account_id, merchant_id=merchant_id, enabled=False)
    execute.run_due(utcnow() + timedelta(seconds=30))
    assert storage.TopUp.get_by_id(top_up.id).status == "succeeded" and len(gateway.charges) == 1


def test_a_pending_top_up_charges_the_card_and_customer_in_force_when_it_is_charged(
        auto_account_id, merchant_id, gateway, received):
    set_auto_top_up(auto_account_id, merchant_id=merchant_id, enabled=True, threshold=THRESHOLD,
                    payment_method="pm_card_chargeDeclined", customer="cus_old")
    top_up = deduct_below(auto_account_id)  # decided while card A was on file
    set_auto_top_up(auto_account_id, merchant_id=merchant_id, enabled=False)
    set_auto_top_up(auto_account_id, merchant_id=merchant_id, enabled=True, threshold=THRESHOLD,
                    payment_method="pm_card_visa", customer="cus_new")  # card B
    assert len(top_ups(auto_account_id)) == 1

    assert execute.run_due() == 1
    top_up = storage.TopUp.get_by_id(top_up.id)
    charge = gateway.charges[execute.charge_key(top_up.id)]
    assert (charge.payment_method, charge.customer) == ("pm_card_visa", "cus_new")
    assert (top_up.status, top_up.payment_method, top_up.customer) == ("succeeded", "pm_card_visa", "cus_new")
    assert received["top_up_failed"] == []


def test_every_retry_sends_the_charge_its_first_attempt_sent(app, auto_account_id, merchant_id):
    gateway = app.config["ADDONS_PAYMENT_GATEWAY"] = FlakyGateway(outages=1)
    top_up = deduct_below(auto_account_id)
    execute.run_due()  # attempt 1 with pm_card_visa: the outcome is unknown
    set_auto_top_up(auto_account_id, merchant_id=merchant_id, enabled=True, threshold=THRESHOLD,
                    payment_method="pm_card_chargeDeclined", customer="cus_new")
    execute.run_due(utcnow() + timedelta(seconds=30))
    top_up = storage.TopUp.get_by_id(top_up.id)
    [charge] = gateway.charges.values()
    assert (charge.payment_method, charge.customer, top_up.status) == ("pm_card_visa", None, "succeeded")
    assert gateway.keys == [execute.charge_key(top_up.id)] * 2


# -- what could refuse the credit is checked before the charge --------------------------------

def _near_the_balance_limit(account_id: str, merchant_id: str, *, below_limit: int, threshold_gap: int) -> None:
    """Balance ``MAX_CREDITS - below_limit``; switching the threshold to
    ``MAX_CREDITS - threshold_gap`` (at or above it) decides a top-up of one bank."""
    ledger.record(account_id, ledger.MAX_CREDITS - below_limit - ledger.balance(account_id), "adjustment")
    set_auto_top_up(account_id, merchant_id=merchant_id, enabled=True, threshold=ledger.MAX_CREDITS - threshold_gap,
                    payment_method="pm_card_visa")


def test_a_top_up_whose_credit_would_pass_the_balance_limit_fails_without_a_charge(
        auto_account_id, merchant_id, gateway, received):
    _near_the_balance_limit(auto_account_id, merchant_id, below_limit=60, threshold_gap=50)
    [top_up] = top_ups(auto_account_id)
    assert top_up.credits == 100

    assert execute.run_due() == 1
    top_up = storage.TopUp.get_by_id(top_up.id)
    assert (top_up.status, top_up.failure_code, top_up.attempts, top_up.charge_id) == (
        "failed", "balance_limit_exceeded", 0, None)
    assert gateway.calls == 0 and top_up_entries(auto_account_id) == []
    account = account_row(auto_account_id)
    assert account.top_up_failures == 0 and account.auto_top_up_enabled  # not a card failure…
    assert account.top_up_blocked_until == top_up.completed_at + timedelta(seconds=3600)  # …but not repeated
    [signal] = received["top_up_failed"]
    assert signal["failure"]["code"] == "balance_limit_exceeded"
    ledger.record(auto_account_id, -1, "usage")
    assert len(top_ups(auto_account_id)) == 1


def test_a_credit_refused_after_the_charge_fails_the_top_up_and_is_never_charged_again(
        app, auto_account_id, merchant_id, received):
    class GrowingGateway(TestGateway):
        """While the charge is out, a grant takes the balance to the limit's edge."""

        def charge(self, **kwargs) -> str:
            ledger.record(auto_account_id, 150, "adjustment")
            return super().charge(**kwargs)

    _near_the_balance_limit(auto_account_id, merchant_id, below_limit=200, threshold_gap=150)
    gateway = app.config["ADDONS_PAYMENT_GATEWAY"] = GrowingGateway()
    [top_up] = top_ups(auto_account_id)
    assert execute.run_due() == 1

    top_up = storage.TopUp.get_by_id(top_up.id)
    [charge] = gateway.charges.values()
    assert (top_up.status, top_up.failure_code, top_up.charge_id) == ("failed", "balance_limit_exceeded", charge.id)
    assert charge.id in top_up.failure_message  # the charge to refund
    assert top_up_entries(auto_account_id) == [] and ledger.balance(auto_account_id) == ledger.MAX_CREDITS - 50
    assert account_row(auto_account_id).top_up_failures == 0
    assert execute.run_due(utcnow() + execute.lease_duration() * 10) == 0 and gateway.calls == 1
    assert [signal["top_up"]["charge_id"] for signal in received["top_up_failed"]] == [charge.id]


def test_a_retry_whose_credit_would_now_be_refused_is_not_sent_but_left_unresolved(
        app, auto_account_id, received):
    gateway = app.config["ADDONS_PAYMENT_GATEWAY"] = FlakyGateway(outages=1)
    top_up = deduct_below(auto_account_id)
    execute.run_due()  # attempt 1: the outcome is unknown
    ledger.record(auto_account_id, ledger.MAX_CREDITS - 50 - ledger.balance(auto_account_id), "adjustment")
    assert execute.run_due(utcnow() + timedelta(seconds=30)) == 1
    top_up = storage.TopUp.get_by_id(top_up.id)
    assert (top_up.status, top_up.attempts, len(gateway.keys)) == ("unresolved", 2, 1)
    assert len(received["top_up_unresolved"]) == 1 and received["top_up_failed"] == []


def test_a_top_up_claimed_more_often_than_its_schedule_allows_is_left_unresolved(app, auto_account_id, received):
    class AlwaysDyingGateway(TestGateway):
        def charge(self, **kwargs):
            super().charge(**kwargs)
            raise Crash()  # the worker dies after every charge: the credit is never recorded

    gateway = app.config["ADDONS_PAYMENT_GATEWAY"] = AlwaysDyingGateway()
    top_up = deduct_below(auto_account_id)
    moment = utcnow()
    for _ in range(4):  # the first attempt and the schedule's three retries
        with pytest.raises(Crash):
            execute.run_due(moment)
        moment += execute.lease_duration()
    assert execute.run_due(moment) == 1  # the fifth claim sends nothing
    top_up = storage.TopUp.get_by_id(top_up.id)
    assert (top_up.status, top_up.attempts, gateway.calls, len(gateway.charges)) == ("unresolved", 5, 4, 1)
    assert len(received["top_up_unresolved"]) == 1 and top_up_entries(auto_account_id) == []


# -- the daily limit ----------------------------------------------------------------

def _succeeded_earlier(account_id: str, count: int, completed_at: datetime) -> None:
    account = account_row(account_id)
    for _ in range(count):
        storage.TopUp.create(id=storage.new_id("topup"), account=account_id, merchant=account.merchant_id,
                             status="succeeded", banks=1, credits=100, amount_minor=1900, currency="USD",
                             payment_method="pm_card_visa", completed_at=completed_at)


def test_the_daily_limit_records_a_failed_top_up_without_charging_once(
        app, auto_account_id, merchant_id, gateway, received):
    app.config["ADDONS_TOP_UP_DAILY_LIMIT"] = 3
    _succeeded_earlier(auto_account_id, 3, utcnow())
    top_up = deduct_below(auto_account_id)

    assert (top_up.status, top_up.failure_code, top_up.attempts) == ("failed", "daily_limit_reached", 0)
    assert gateway.calls == 0
    account = account_row(auto_account_id)
    assert account.top_up_failures == 0 and account.auto_top_up_enabled  # not counted toward the maximum
    tomorrow = top_up.completed_at.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    assert account.top_up_blocked_until == tomorrow
    [signal] = received["top_up_failed"]
    assert signal["failure"]["code"] == "daily_limit_reached"
    assert signal["top_up"]["id"] == top_up.id and signal["account"].balance == 490

    ledger.record(auto_account_id, -1, "usage")  # said once, not on every change
    assert len(top_ups(auto_account_id)) == 4 and len(received["top_up_failed"]) == 1


def test_top_ups_of_an_earlier_utc_day_do_not_count_toward_the_daily_limit(app, auto_account_id):
    app.config["ADDONS_TOP_UP_DAILY_LIMIT"] = 3
    midnight = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    _succeeded_earlier(auto_account_id, 3, midnight - timedelta(microseconds=1))
    assert deduct_below(auto_account_id).status == "pending"
