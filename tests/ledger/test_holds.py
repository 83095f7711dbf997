"""Spend holds (addon_plugin.holds) on both databases: parallel holds never
reserve more than is available, capture races release and expiry with exactly
one winner, an expired hold stops counting without any job, a capture is one
usage entry drawn on grants, and a hold that crosses the threshold buys a top-up."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest

import storage
from addon_plugin import errors, grants, holds, ledger, signals, worker
from tests.helpers import ledger_sum, run_concurrently, top_ups


def held_sum(account_id: str) -> int:
    """What the account's ``held`` holds should be: straight from the hold table."""
    rows = storage.CreditHold.select().where((storage.CreditHold.account == account_id)
                                             & (storage.CreditHold.status == "held"))
    return sum(row.amount for row in rows)


def assert_consistent(account_id: str) -> None:
    account = ledger.get_account(account_id)
    assert account.balance == ledger_sum(account_id)
    assert account.held == held_sum(account_id) == storage.CreditAccount.get_by_id(account_id).held


@pytest.fixture
def hundred(merchant_id, product) -> str:
    """An account holding exactly 100 credits."""
    account_id = ledger.open_account(merchant_id, product.id, "hundred@example.com")
    ledger.record(account_id, 100, "purchase")
    return account_id


def test_twenty_parallel_holds_of_ten_reserve_exactly_what_is_available(app, hundred):
    placed, refused = Counter(), Counter()

    def work(index: int) -> None:
        try:
            holds.place(hundred, 10)
            placed[index] += 1
        except errors.InsufficientCredits:
            refused[index] += 1

    assert run_concurrently(work, 20, app=app) == []
    assert sum(placed.values()) == 10 and sum(refused.values()) == 10
    account = ledger.get_account(hundred)
    assert (account.balance, account.held, account.available) == (100, 100, 0)
    assert_consistent(hundred)
    with pytest.raises(errors.InsufficientCredits) as refusal:
        ledger.record(hundred, -1, "usage")
    assert "Available credits are 0 (balance 100, 100 held)" in refusal.value.message


def test_parallel_holds_and_deductions_never_spend_the_same_credits(app, hundred):
    """Holds and deductions of 10 race for 100 credits: no deduction slips past a hold."""
    done = Counter()

    def work(index: int) -> None:
        try:
            if index % 2:
                holds.place(hundred, 10)
                done["hold"] += 1
            else:
                ledger.record(hundred, -10, "usage")
                done["usage"] += 1
        except errors.InsufficientCredits:
            done["refused"] += 1

    assert run_concurrently(work, 20, app=app) == []
    account = ledger.get_account(hundred)
    assert done["hold"] + done["usage"] == 10 and done["refused"] == 10
    assert account.balance == 100 - 10 * done["usage"] and account.held == 10 * done["hold"]
    assert account.available == 0
    assert_consistent(hundred)


def test_a_capture_writes_one_usage_entry_drawn_on_grants_and_releases_the_rest(app, hundred, clock):
    ledger.record(hundred, 30, "adjustment", grant=grants.Terms(priority=10))  # promotional, drawn first
    seen: list[tuple[str, dict]] = []
    receivers = []
    for name in ("hold_placed", "hold_captured", "hold_released"):
        def receiver(sender, *, hold, account, _name=name):
            assert sender is app
            seen.append((_name, {"status": hold["status"], "held": account.held, "available": account.available}))
        receivers.append((getattr(signals, name), receiver))
        getattr(signals, name).connect(receiver, sender=app)
    try:
        hold = holds.place(hundred, 50, description="render 7", reference="job_7", metadata={"frames": "12"})
        merchant_id = ledger.get_account(hundred).merchant_id
        captured = holds.capture(hold["id"], merchant_id, 37)
        other = holds.place(hundred, 5)
        released = holds.release(other["id"], merchant_id)
    finally:
        for signal, receiver in receivers:
            signal.disconnect(receiver, sender=app)

    assert captured["status"] == "captured" and captured["captured_amount"] == 37
    entry = storage.LedgerEntry.get_by_id(captured["entry_id"])
    assert (entry.kind, entry.delta, entry.description, entry.reference, entry.metadata) == (
        "usage", -37, "render 7", "job_7", '{"frames":"12"}')
    allocations = grants.allocations_of([(entry.id, entry.grant_id, entry.delta)])[entry.id]
    assert [amount for _, amount in allocations] == [-30, -7]  # the promotional grant first
    assert released["status"] == "released" and released["captured_amount"] is None
    account = ledger.get_account(hundred)
    assert (account.balance, account.held, account.available) == (130 - 37, 0, 93)
    assert [e.kind for e in storage.LedgerEntry.select().where(storage.LedgerEntry.account == hundred)] == [
        "purchase", "adjustment", "usage"]
    assert seen == [("hold_placed", {"status": "held", "held": 50, "available": 80}),
                    ("hold_captured", {"status": "captured", "held": 0, "available": 93}),
                    ("hold_placed", {"status": "held", "held": 5, "available": 88}),
                    ("hold_released", {"status": "released", "held": 0, "available": 93})]
    assert_consistent(hundred)


def test_capturing_or_releasing_a_hold_no_longer_held_is_refused(app, hundred, merchant_id):
    hold = holds.place(hundred, 20)
    holds.release(hold["id"], merchant_id)
    for act in (holds.capture, holds.release):
        with pytest.raises(errors.HoldNotActive):
            act(hold["id"], merchant_id)
    with pytest.raises(errors.HoldNotFound):
        holds.capture(hold["id"], "mer_other")
    with pytest.raises(errors.ValidationError):
        holds.capture(holds.place(hundred, 20)["id"], merchant_id, 21)
    assert ledger.balance(hundred) == 100 and ledger.get_account(hundred).held == 20


def test_an_expired_hold_stops_counting_without_any_job(app, hundred, merchant_id, clock):
    hold = holds.place(hundred, 60, expires_in=60)
    assert ledger.get_account(hundred).available == 40
    clock.advance(seconds=60)
    assert holds.get(hold["id"], merchant_id)["status"] == "expired"
    assert ledger.get_account(hundred).available == 100
    with pytest.raises(errors.HoldNotActive):
        holds.capture(hold["id"], merchant_id)


def test_a_deduction_at_the_expiry_instant_counts_the_hold_as_gone(app, hundred, merchant_id, clock):
    holds.place(hundred, 60, expires_in=60)
    clock.advance(seconds=60)
    # Nothing has read the account since: the update's guard makes it tidy first.
    assert ledger.record(hundred, -100, "usage").account.balance == 0
    assert storage.CreditHold.get().status == "expired"
    assert_consistent(hundred)


def test_the_worker_tidies_expired_holds(app, hundred, clock):
    holds.place(hundred, 60, expires_in=60)
    clock.advance(seconds=61)
    assert storage.CreditAccount.get_by_id(hundred).held == 60  # nothing looked yet
    assert worker.run_once() >= 1
    row = storage.CreditAccount.get_by_id(hundred)
    assert (row.held, row.next_hold_expiry_at) == (0, None)
    assert storage.CreditHold.get().status == "expired"


@pytest.mark.parametrize("rival", ["release", "expire"])
def test_capture_racing_release_or_expiry_has_exactly_one_winner(app, hundred, merchant_id, clock, rival):
    for _ in range(5):
        hold = holds.place(hundred, 10, expires_in=30)
        if rival == "expire":
            clock.advance(seconds=30)  # due now: capture and the worker race to it
        outcomes: list[str] = []
        lock = threading.Lock()

        def work(index: int, hold_id=hold["id"], outcomes=outcomes, lock=lock) -> None:
            try:
                if index == 0:
                    holds.capture(hold_id, merchant_id)
                    result = "captured"
                elif rival == "release":
                    holds.release(hold_id, merchant_id)
                    result = "released"
                else:
                    holds.expire_due_accounts()
                    result = "tidied"
            except errors.HoldNotActive:
                result = "refused"
            with lock:
                outcomes.append(result)

        assert run_concurrently(work, 2, app=app) == []
        status = storage.CreditHold.get_by_id(hold["id"]).status
        if rival == "release":
            assert sorted(outcomes) in (["captured", "refused"], ["refused", "released"])
            assert status == ("captured" if "captured" in outcomes else "released")
        else:
            assert "captured" not in outcomes and status == "expired"
        assert_consistent(hundred)
    usage = storage.LedgerEntry.select().where(storage.LedgerEntry.kind == "usage").count()
    assert ledger.balance(hundred) == 100 - 10 * usage


def test_a_capture_is_refused_when_a_void_took_the_held_credits(app, hundred, merchant_id):
    hold = holds.place(hundred, 80)
    grant_id = storage.CreditGrant.get(storage.CreditGrant.account == hundred).id
    grants.void(grant_id, merchant_id)  # a hold does not protect its credits from a void
    assert ledger.get_account(hundred).available == -80
    with pytest.raises(errors.InsufficientCredits):
        holds.capture(hold["id"], merchant_id)
    assert storage.CreditHold.get_by_id(hold["id"]).status == "held"
    ledger.record(hundred, 80, "adjustment")
    assert holds.capture(hold["id"], merchant_id)["status"] == "captured"
    assert_consistent(hundred)


def test_a_hold_that_crosses_the_threshold_buys_a_top_up_once_then_the_capture_succeeds(
        app, auto_account_id, merchant_id, gateway):
    app.config["ADDONS_TOP_UP_MODE"] = "inline"
    hold = holds.place(auto_account_id, 600)  # 1000 - 600 = 400 available, threshold 500
    [top_up] = top_ups(auto_account_id)
    assert top_up.status == "succeeded" and top_up.credits == 200  # the fewest banks above 500
    account = ledger.get_account(auto_account_id)
    assert (account.balance, account.available) == (1200, 600)
    captured = holds.capture(hold["id"], merchant_id)
    assert captured["status"] == "captured"
    account = ledger.get_account(auto_account_id)
    assert (account.balance, account.held, account.available) == (600, 0, 600)
    assert len(top_ups(auto_account_id)) == 1  # the capture spent what was held: no second top-up


def test_in_worker_mode_a_hold_decides_the_top_up_the_worker_charges(app, auto_account_id, merchant_id, gateway):
    hold = holds.place(auto_account_id, 990)  # available 10
    [pending] = top_ups(auto_account_id)
    assert pending.status == "pending"
    worker.run_once()
    assert [t.status for t in top_ups(auto_account_id)] == ["succeeded"]
    assert holds.capture(hold["id"], merchant_id, 990)["status"] == "captured"
    assert ledger.get_account(auto_account_id).available == 10 + pending.credits


def test_place_validates_before_writing(app, hundred):
    for value, expires_in in ((0, 900), (-5, 900), (True, 900), (10, 0), (10, 86401)):
        with pytest.raises(errors.ValidationError):
            holds.place(hundred, value, expires_in=expires_in)
    assert storage.CreditHold.select().count() == 0
    with pytest.raises(errors.AccountNotFound):
        holds.place("acct_missing", 1)


def test_an_expiry_horizon_moves_with_the_soonest_active_hold(app, hundred, merchant_id, clock):
    first = holds.place(hundred, 10, expires_in=60)
    holds.place(hundred, 10, expires_in=600)
    holds.release(first["id"], merchant_id)
    row = storage.CreditAccount.get_by_id(hundred)
    expected = clock.now + timedelta(seconds=600)
    stored = row.next_hold_expiry_at
    stored = stored if not isinstance(stored, str) else __import__("datetime").datetime.fromisoformat(stored)
    assert stored == expected and row.held == 10
