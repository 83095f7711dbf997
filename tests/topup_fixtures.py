"""Fixtures shared by the auto top-up tests (imported by each ``test_topup_*`` module).

They chain on conftest's: ``funded_account_id`` (1000 credits, product of 100
credits for 19.00 USD) → ``auto_account_id`` (auto top-up on, threshold 500,
``pm_card_visa``, the :class:`TestGateway` in ``gateway``). ``clock`` is the
top-up code's clock, moved by the test; :class:`LostAnswersGateway` takes the
money and loses the answer, as a gateway that times out after charging does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

import storage
from addon_plugin import signals
from addon_plugin.topup import (
    Declined,
    GatewayUnavailable,
    TestGateway,
    decide,
    execute,
    set_auto_top_up,
    settings,
    settle,
)

THRESHOLD = 500


@pytest.fixture
def gateway(app) -> TestGateway:
    """The app's payment gateway: a fresh :class:`TestGateway` to inspect."""
    gateway = TestGateway()
    app.config["ADDONS_PAYMENT_GATEWAY"] = gateway
    return gateway


@pytest.fixture
def auto_account_id(funded_account_id, merchant_id, gateway) -> str:
    """bob's account: 1000 credits, auto top-up on at threshold 500 with a good card."""
    set_auto_top_up(funded_account_id, merchant_id=merchant_id, enabled=True, threshold=THRESHOLD,
                    payment_method="pm_card_visa")
    return funded_account_id


@pytest.fixture
def received(app) -> Iterator[dict[str, list[dict]]]:
    """The kwargs of every top-up signal the app sends, by signal name."""
    seen: dict[str, list[dict]] = defaultdict(list)
    receivers = {}
    for name in ("top_up_succeeded", "top_up_failed", "top_up_unresolved", "auto_top_up_disabled"):
        def receiver(sender, _name=name, **kwargs):
            assert sender is app
            seen[_name].append(kwargs)
        receivers[name] = receiver
        getattr(signals, name).connect(receiver, sender=app)
    yield seen
    for name, receiver in receivers.items():
        getattr(signals, name).disconnect(receiver, sender=app)


class Clock:
    """A clock a test moves: ``clock()`` is the time, ``clock.advance(seconds)`` moves it on."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    """The clock top-ups are decided, charged, retried and looked up by (the
    worker's too): it stands still until the test advances it."""
    clock = Clock(storage.utcnow())
    for module in (decide, settings, execute, settle):
        monkeypatch.setattr(module, "utcnow", clock)
    return clock


class LostAnswersGateway(TestGateway):
    """A :class:`TestGateway` whose first ``lose`` charge answers are lost: the
    charge (or the decline) is made and recorded, then the call times out."""

    def __init__(self, lose: int = 1_000_000) -> None:
        super().__init__()
        self.lose = lose

    def charge(self, **kwargs) -> str:
        try:
            charge_id = super().charge(**kwargs)
        except Declined:
            if self.calls > self.lose:
                raise
        else:
            if self.calls > self.lose:
                return charge_id
        raise GatewayUnavailable("Read timed out.")


def top_ups(account_id: str) -> list[storage.TopUp]:
    """The account's top-ups, oldest first."""
    return list(storage.TopUp.select().where(storage.TopUp.account == account_id).order_by(
        storage.TopUp.created_at, storage.TopUp.id))


def top_up_entries(account_id: str) -> list[storage.LedgerEntry]:
    """The account's ``top_up`` ledger entries."""
    return list(storage.LedgerEntry.select().where(
        (storage.LedgerEntry.account == account_id) & (storage.LedgerEntry.kind == "top_up")))


def account_row(account_id: str) -> storage.CreditAccount:
    return storage.CreditAccount.get_by_id(account_id)
