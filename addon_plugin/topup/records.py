"""Reading top-ups: their money amount and the shape merchants reconcile against.

:func:`as_resource` is the one representation of a top-up: the top-ups list in
the API, and the ``top_up`` argument of the top-up signals (so webhooks too).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import storage
from storage import TopUp, isoformat

from ..errors import AccountNotFound
from ..money import from_minor

__all__ = ["amount", "as_resource", "account_row", "list_top_ups"]


def amount(top_up: TopUp) -> Decimal:
    """What the top-up charges (or charged), in its currency: ``Decimal("19.00")``."""
    return from_minor(top_up.amount_minor, top_up.currency)


def as_resource(top_up: TopUp) -> dict[str, Any]:
    """The top-up as the API and the webhooks show it (JSON-ready; amount a decimal string)."""
    return {
        "id": top_up.id,
        "account_id": top_up.account_id,
        "status": top_up.status,
        "banks": top_up.banks,
        "credits": top_up.credits,
        "amount": str(amount(top_up)),
        "currency": top_up.currency,
        "payment_method": top_up.payment_method,
        "customer": top_up.customer,
        "charge_id": top_up.charge_id,
        "failure_code": top_up.failure_code,
        "failure_message": top_up.failure_message,
        "attempts": top_up.attempts,
        "next_attempt_at": isoformat(top_up.next_attempt_at) if top_up.status in storage.TOP_UP_IN_FLIGHT else None,
        "created_at": isoformat(top_up.created_at),
        "updated_at": isoformat(top_up.updated_at),
        "completed_at": isoformat(top_up.completed_at),
    }


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
