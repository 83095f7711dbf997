"""Reading top-ups: their money amount, their account, their list.

Their shape is :func:`addon_plugin.present.top_up_body` (the API's top-ups and
the ``top_up`` argument of the top-up signals, so the webhooks too).
"""

from __future__ import annotations

from decimal import Decimal

import storage
from storage import TopUp

from ..errors import AccountNotFound
from ..money import from_minor

__all__ = ["amount", "account_row", "list_top_ups"]


def amount(top_up: TopUp) -> Decimal:
    """What the top-up charges (or charged), in its currency: ``Decimal("19.00")``."""
    return from_minor(top_up.amount_minor, top_up.currency)


def account_row(account_id: str, *, merchant_id: str, buyer_email: str | None = None) -> storage.CreditAccount:
    """The merchant's account (and the buyer's, when given); :class:`AccountNotFound` otherwise."""
    query = storage.CreditAccount.select().where(
        (storage.CreditAccount.id == account_id) & (storage.CreditAccount.merchant == merchant_id))
    if buyer_email is not None:
        query = query.where(storage.CreditAccount.buyer_email == buyer_email.strip().lower())
    row = query.first()
    if row is None:
        raise AccountNotFound(account_id=account_id)
    return row


def list_top_ups(account_id: str, *, merchant_id: str, buyer_email: str | None = None,
                 limit: int = 50, before: str | None = None) -> list[TopUp]:
    """The account's top-ups, newest first; ``before``: only those older than that top-up id."""
    account_row(account_id, merchant_id=merchant_id, buyer_email=buyer_email)
    query = TopUp.select().where(TopUp.account == account_id)
    if before is not None:
        query = query.where(TopUp.id < before)
    return list(query.order_by(TopUp.id.desc()).limit(limit))
