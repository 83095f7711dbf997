"""Fixtures shared by the auto top-up tests (imported by each ``test_topup_*`` module).

They chain on conftest's: ``funded_account_id`` (1000 credits, product of 100
credits for 19.00 USD) → ``auto_account_id`` (auto top-up on, threshold 500,
``pm_card_visa``, the :class:`TestGateway` in ``gateway``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import pytest

import storage
from addon_plugin import signals
from addon_plugin.topup import TestGateway, set_auto_top_up

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
    for name in ("top_up_succeeded", "top_up_failed", "auto_top_up_disabled"):
        def receiver(sender, _name=name, **kwargs):
            assert sender is app
            seen[_name].append(kwargs)
        receivers[name] = receiver
        getattr(signals, name).connect(receiver, sender=app)
    yield seen
    for name, receiver in receivers.items():
        getattr(signals, name).disconnect(receiver, sender=app)


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
