"""Signals: sent inside the ledger's transaction, with the documented kwargs;
a receiver that raises leaves nothing applied."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

import storage
from addon_plugin import ledger, on_commit, signals
from addon_plugin.errors import BalanceLimitExceeded, InsufficientCredits
from tests.helpers import ledger_sum, sequences


@contextmanager
def recording(app, *signal_list):
    """Connect a recorder to each signal for ``app``; yields the calls."""
    calls: list[tuple[str, object, dict]] = []
    receivers = []
    for signal in signal_list:
        def receiver(sender, _name=signal.name, **kwargs):
            calls.append((_name, sender, kwargs))
        receivers.append((signal, receiver))
        signal.connect(receiver, sender=app)
    try:
        yield calls
    finally:
        for signal, receiver in receivers:
            signal.disconnect(receiver, sender=app)


def test_balance_changed_carries_the_account_the_entry_and_the_previous_balance(app, funded_account_id):
    with recording(app, signals.balance_changed) as calls:
        change = ledger.record(funded_account_id, -40, "usage")
    [(name, sender, kwargs)] = calls
    assert name == "balance-changed" and sender is app
    assert kwargs == {"account": change.account, "entry": change.entry, "previous_balance": 1000}
    assert kwargs["account"].balance == 960 and kwargs["entry"].sequence == 2


def test_replays_send_no_signal(app, funded_account_id):
    ledger.record(funded_account_id, -40, "usage", idempotency_key="k")
    with recording(app, signals.balance_changed) as calls:
        ledger.record(funded_account_id, -40, "usage", idempotency_key="k")
    assert calls == []


@pytest.mark.parametrize("threshold, delta, low", [
    (100, -900, True),     # 1000 → 100: reaches the threshold
    (100, -950, True),     # 1000 → 50: drops below
    (100, -899, False),    # 1000 → 101: still above
    (None, -999, False),   # no threshold, never low
])
def test_balance_low_fires_only_when_crossing_the_buyers_threshold(app, funded_account_id, threshold, delta, low):
    storage.CreditAccount.update(threshold=threshold).where(storage.CreditAccount.id == funded_account_id).execute()
    with recording(app, signals.balance_low) as calls:
        ledger.record(funded_account_id, delta, "usage")
    assert len(calls) == (1 if low else 0)


def test_balance_low_does_not_fire_again_while_already_below(app, funded_account_id):
    storage.CreditAccount.update(threshold=500).where(storage.CreditAccount.id == funded_account_id).execute()
    ledger.record(funded_account_id, -600, "usage")
    with recording(app, signals.balance_low) as calls:
        ledger.record(funded_account_id, -10, "usage")
    assert calls == []


def test_balance_depleted_fires_when_crossing_zero(app, funded_account_id):
    with recording(app, signals.balance_depleted) as calls:
        ledger.record(funded_account_id, -999, "usage")
        ledger.record(funded_account_id, -1, "usage")
        ledger.record(funded_account_id, 5, "adjustment")
    assert [kwargs["account"].balance for _, _, kwargs in calls] == [0]


def test_signals_are_sent_inside_the_transaction_after_the_entry_is_written(app, funded_account_id):
    seen = []

    def receiver(sender, account, entry, previous_balance):
        seen.append((storage.db.in_transaction(),
                     storage.LedgerEntry.get_or_none(storage.LedgerEntry.id == entry.id) is not None))

    signals.balance_changed.connect(receiver, sender=app)
    try:
        ledger.record(funded_account_id, -1, "usage")
    finally:
        signals.balance_changed.disconnect(receiver, sender=app)
    assert seen == [(True, True)]


def test_a_receiver_that_raises_leaves_no_half_applied_change(app, funded_account_id):
    written = []

    def writer(sender, account, entry, previous_balance):
        written.append(storage.Merchant.create(id=storage.new_id("mer"), name="side effect").id)

    def boom(sender, **kwargs):
        raise RuntimeError("receiver failed")

    signals.balance_changed.connect(writer, sender=app)
    signals.balance_changed.connect(boom, sender=app)
    try:
        with pytest.raises(RuntimeError):
            ledger.record(funded_account_id, -40, "usage")
    finally:
        signals.balance_changed.disconnect(writer, sender=app)
        signals.balance_changed.disconnect(boom, sender=app)
    assert ledger.balance(funded_account_id) == 1000 == ledger_sum(funded_account_id)
    assert sequences(funded_account_id) == [1]
    assert not storage.Merchant.select().where(storage.Merchant.id.in_(written)).exists()
    assert ledger.record(funded_account_id, -40, "usage").entry.sequence == 2


def test_a_receivers_writes_commit_with_the_change(app, funded_account_id):
    def writer(sender, account, entry, previous_balance):
        storage.Merchant.create(id=f"mer_audit_{entry.sequence}", name=str(account.balance))

    signals.balance_changed.connect(writer, sender=app)
    try:
        ledger.record(funded_account_id, -40, "usage")
    finally:
        signals.balance_changed.disconnect(writer, sender=app)
    assert storage.Merchant.get_by_id("mer_audit_2").name == "960"


def test_on_commit_runs_after_commit_and_not_after_rollback(app, funded_account_id):
    ran = []

    def defer(sender, account, entry, previous_balance):
        on_commit(lambda: ran.append((entry.sequence, storage.db.in_transaction())))

    def boom(sender, entry, **kwargs):
        if entry.delta == -2:
            raise RuntimeError("abort this one")

    signals.balance_changed.connect(defer, sender=app)
    signals.balance_changed.connect(boom, sender=app)
    try:
        ledger.record(funded_account_id, -1, "usage")
        with pytest.raises(RuntimeError):
            ledger.record(funded_account_id, -2, "usage")
    finally:
        signals.balance_changed.disconnect(defer, sender=app)
        signals.balance_changed.disconnect(boom, sender=app)
    assert ran == [(2, False)]


def test_an_on_commit_callback_that_raises_does_not_undo_the_change(app, funded_account_id):
    def defer(sender, **kwargs):
        on_commit(lambda: 1 / 0)

    signals.balance_changed.connect(defer, sender=app)
    try:
        change = ledger.record(funded_account_id, -1, "usage")
    finally:
        signals.balance_changed.disconnect(defer, sender=app)
    assert change.account.balance == 999 == ledger.balance(funded_account_id)


def test_another_apps_receivers_hear_nothing(app, tmp_path, funded_account_id, database_url):
    from tests.helpers import make_app

    other = make_app(database_url, str(tmp_path / "other"))
    with recording(other, signals.balance_changed) as calls:
        ledger.record(funded_account_id, -1, "usage")
    assert calls == []


def test_deduction_refused_is_sent_after_the_refused_transaction_ended(app, funded_account_id):
    """Sent once the transaction the deduction was refused in has rolled back:
    the receiver's own transaction commits, the deduction still wrote nothing."""
    seen = []

    def receiver(sender, account, kind, requested):
        seen.append((sender, account, kind, requested, storage.db.in_transaction()))
        with storage.transaction():
            storage.Merchant.create(id="mer_audit_refused", name=str(account.balance))

    signals.deduction_refused.connect(receiver, sender=app)
    try:
        with pytest.raises(InsufficientCredits), storage.transaction():  # a caller's transaction, as the API's
            ledger.record(funded_account_id, -1001, "usage")
            assert seen == []  # not while it is open
        with pytest.raises(BalanceLimitExceeded):
            ledger.record(funded_account_id, ledger.MAX_CREDITS, "adjustment")  # not a deduction
    finally:
        signals.deduction_refused.disconnect(receiver, sender=app)
    [(sender, account, kind, requested, in_transaction)] = seen
    assert (sender, kind, requested, in_transaction) == (app, "usage", 1001, False)
    assert account == ledger.get_account(funded_account_id) and account.balance == 1000
    assert storage.Merchant.get_by_id("mer_audit_refused").name == "1000"
    assert sequences(funded_account_id) == [1] and ledger_sum(funded_account_id) == 1000
