"""An account's auto top-up settings: set by the merchant or the buyer, switched
off by the plugin when the product stops allowing top-ups.

The settings are replaced as a whole (PUT semantics): ``enabled`` is required,
``threshold`` and ``payment_method`` too when enabling, and an omitted optional
field is cleared. Setting the same values twice changes nothing. A change at or
below the threshold decides a top-up, within the decline budget (:mod:`.decide`).
Switching on starts the consecutive-failure count afresh; a new card (payment
method or customer) lifts the retry block. Neither lifts the decline budget, so
no sequence of changes can hammer a card.

A payment method the buyer's browser names is checked with the gateway
(:func:`check_owner`) before it is stored; ``customer`` never comes from the browser.

``monthly_limit`` (a decimal string in the product's currency, or None) caps the
succeeded top-up charges of a UTC month (:mod:`.monthly`); changing it lifts a
block the limit set, and a new card does not lift that block. A change that
switches auto top-up on or off, or changes what it may charge while on, appends
a consent record (:mod:`.consent`) naming ``actor``, ``ip`` and ``user_agent``;
top-ups decided after it carry its id.
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal
from typing import Any

from flask import Flask

import storage
from storage import CreditAccount, transaction, utcnow

from .. import ledger, signals
from ..errors import (
    InvalidPaymentMethod,
    NoPaymentGateway,
    PaymentGatewayUnavailable,
    TopUpNotAllowed,
    ValidationError,
)
from ..ledger import Account
from ..limits import EXTERNAL_ID_LENGTH, THRESHOLD_MESSAGE, is_threshold
from ..money import parse_price, to_minor
from ..state import current_app_object
from . import consent, decide, monthly
from .gateways import current_gateway
from .records import account_row

__all__ = ["set_auto_top_up", "check_owner", "disable_for_product", "on_product_saved"]

log = logging.getLogger(__name__)

_REQUIRED_WHEN_ENABLED = "Required when enabled is true."


_LIMIT_MESSAGE = "Must be a decimal string greater than 0 (the most charged in a UTC month), or null."


def _check(enabled: Any, threshold: Any, payment_method: Any, customer: Any, monthly_limit: Any = None) -> None:
    problems: dict[str, list[str]] = {}
    if monthly_limit is not None and not isinstance(monthly_limit, (str, Decimal)):
        problems["monthly_limit"] = [_LIMIT_MESSAGE]
    if type(enabled) is not bool:
        problems["enabled"] = ["Must be true or false."]
    if threshold is not None and not is_threshold(threshold):
        problems["threshold"] = [THRESHOLD_MESSAGE]
    for name, value in (("payment_method", payment_method), ("customer", customer)):
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= EXTERNAL_ID_LENGTH):
            problems[name] = [f"Must be a string of 1 to {EXTERNAL_ID_LENGTH} characters."]
    if enabled is True:
        if threshold is None:
            problems.setdefault("threshold", [_REQUIRED_WHEN_ENABLED])
        if payment_method is None:
            problems.setdefault("payment_method", [_REQUIRED_WHEN_ENABLED])
    if problems:
        raise ValidationError(fields=problems)


def _limit_minor(monthly_limit: str | Decimal | None, currency: str) -> int | None:
    """The monthly limit in the product currency's minor units; a ValidationError if it is not one."""
    if monthly_limit is None:
        return None
    try:
        return to_minor(parse_price(str(monthly_limit), currency), currency)
    except ValueError as error:
        raise ValidationError(fields={"monthly_limit": [f"{error} {_LIMIT_MESSAGE}"]}) from None


def set_auto_top_up(account_id: str, *, merchant_id: str, enabled: bool, threshold: int | None = None,
                    payment_method: str | None = None, customer: str | None = None,
                    buyer_email: str | None = None, now: datetime | None = None,
                    monthly_limit: str | Decimal | None = None, actor: str = "host",
                    ip: str | None = None, user_agent: str | None = None) -> Account:
    """Replace the account's auto top-up settings and return the account.

    ``buyer_email`` limits it to that buyer's account (the buyer-facing route).
    Refuses with :class:`ValidationError` (422), :class:`AccountNotFound` (404),
    :class:`TopUpNotAllowed` or :class:`NoPaymentGateway` (409). A change with
    the balance at or below the threshold decides a top-up at once (within the
    retry block and the decline budget). The buyer's route checks a payment
    method with :func:`check_owner` first; the merchant and the hooks are trusted.
    """
    _check(enabled, threshold, payment_method, customer, monthly_limit)
    now = now or utcnow()
    with transaction():
        # Lock the row first (as a ledger change does) so the comparison below is stable.
        CreditAccount.update(updated_at=now).where(CreditAccount.id == account_id).execute()
        row = account_row(account_id, merchant_id=merchant_id, buyer_email=buyer_email)
        if enabled:
            if not row.product.top_up_allowed:
                raise TopUpNotAllowed(account_id=account_id, product_id=row.product_id)
            gateway = current_gateway()
            if gateway is None:
                raise NoPaymentGateway()
            if customer is None and getattr(gateway, "requires_customer", False):
                raise ValidationError(fields={"customer": ["Required by the payment gateway."]})
        new: dict[str, Any] = dict(
            auto_top_up_enabled=enabled, threshold=threshold, payment_method=payment_method, customer=customer,
            monthly_limit_minor=_limit_minor(monthly_limit, row.product.currency))
        if all(getattr(row, name) == value for name, value in new.items()):
            return ledger.get_account(account_id)
        if consent.changes_consent(row, new):
            new["consent_id"] = consent.record(row, new, actor=actor, ip=ip, user_agent=user_agent, now=now)
        if enabled and not row.auto_top_up_enabled:  # switching on: the failure count starts afresh
            new["top_up_failures"] = 0
        limit_block = monthly.blocked_by_limit(row, now)
        if limit_block and new["monthly_limit_minor"] != row.monthly_limit_minor:  # a new limit: no limit block
            new["top_up_blocked_until"] = None
        elif not limit_block and (payment_method, customer) != (row.payment_method, row.customer):
            new["top_up_blocked_until"] = None  # a new card: no retry block
        CreditAccount.update(**new).where(CreditAccount.id == account_id).execute()
        account = ledger.get_account(account_id)
        decide.decide(account, now=now)
        return account


def check_owner(payment_method: str | None, *, customer: str | None) -> None:
    """Check with the gateway that a payment method the buyer's browser named
    belongs to ``customer`` (the host's, never the browser's).

    Asks the gateway: call it outside any transaction. Raises
    :class:`InvalidPaymentMethod` (422) when it does not, or when the gateway has
    no ``owns`` to tell; :class:`PaymentGatewayUnavailable` (503) when the gateway
    did not answer; :class:`NoPaymentGateway` (409) without a gateway.
    """
    if payment_method is None:
        return
    gateway = current_gateway()
    if gateway is None:
        raise NoPaymentGateway()
    owns = getattr(gateway, "owns", None)
    if not callable(owns):
        raise InvalidPaymentMethod("This shop takes payment methods at checkout only.",
                                   fields={"payment_method": ["Cannot be set from here."]})
    try:
        owned = owns(customer, payment_method)
    except Exception as error:  # GatewayUnavailable, or a gateway's bug: it could not tell
        log.warning("payment gateway could not check a payment method's owner: %r", error)
        raise PaymentGatewayUnavailable() from error
    if owned is not True:
        raise InvalidPaymentMethod(fields={"payment_method": ["Not a payment method of yours."]})


def disable_for_product(product_id: str, *, reason: str = "product_changed") -> int:
    """Switch auto top-up off on every account of the product, each with an
    ``auto_top_up_disabled`` signal; returns how many were switched off."""
    app = current_app_object()
    with transaction():
        ids = [row.id for row in CreditAccount.select(CreditAccount.id).where(
            (CreditAccount.product == product_id) & CreditAccount.auto_top_up_enabled)]
        if not ids:
            return 0
        CreditAccount.update(auto_top_up_enabled=False, updated_at=utcnow()).where(
            CreditAccount.id.in_(ids)).execute()
        for account_id in ids:
            signals.auto_top_up_disabled.send(app, account=ledger.get_account(account_id), reason=reason)
    return len(ids)


def on_product_saved(sender: Flask, *, product: storage.Product, **kwargs: Any) -> None:
    """``product_saved`` receiver: a product that no longer allows top-ups switches them off."""
    if not product.top_up_allowed:
        disable_for_product(product.id)
