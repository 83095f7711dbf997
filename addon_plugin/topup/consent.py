"""Consent records: what the buyer agreed to when auto top-up was switched on or
what it may charge changed, kept so a merchant can answer a dispute.

A record holds the settings, the bank (credits, price, currency), the exact
terms text shown for them (rendered from ``ADDONS_AUTO_TOP_UP_TERMS``), who made
the change (an API key id, ``buyer``, ``hook:order_paid`` or ``host``) and from
where (IP, user agent). Records are append-only: nothing here updates or
deletes one, and the database refuses to (triggers, migration 10). Each top-up
names the record it relied on (``consent_id``).

A record is written in the transaction of the settings change, when the change
switches auto top-up on, changes what it may charge while it stays on
(threshold, payment method, customer, monthly limit), or switches it off (a
record with ``enabled`` false: the withdrawal). While auto top-up stays off,
changes write none.
"""

from __future__ import annotations

import string
from datetime import datetime
from typing import Any

from flask import Flask, current_app

import storage
from storage import AutoTopUpConsent, new_id

from ..money import from_minor, parse_price, to_minor
from ..pagination import paginate
from .records import account_row

__all__ = ["DEFAULT_TERMS", "DEFAULT_TERMS_WITH_LIMIT", "WITHDRAWAL_TERMS", "PLACEHOLDERS", "check_terms",
           "render_terms", "terms_for", "changes_consent", "record", "consent_body", "list_consents"]

#: The names a terms format string may use.
PLACEHOLDERS = frozenset({"merchant", "credits", "price", "currency", "threshold", "monthly_limit"})

#: The terms when ``ADDONS_AUTO_TOP_UP_TERMS`` is None and no monthly limit is set.
DEFAULT_TERMS = (
    "You allow {merchant} to charge your saved payment method automatically. Whenever your balance is "
    "{threshold} credits or less, {merchant} adds {credits} credits for {price} {currency}, as many times "
    "over as it takes to bring your balance back above {threshold} credits, and charges you for them. "
    "There is no monthly limit on these charges. You can switch automatic top-ups off at any time."
)

#: The default terms when a monthly limit is set.
DEFAULT_TERMS_WITH_LIMIT = (
    "You allow {merchant} to charge your saved payment method automatically. Whenever your balance is "
    "{threshold} credits or less, {merchant} adds {credits} credits for {price} {currency}, as many times "
    "over as it takes to bring your balance back above {threshold} credits, and charges you for them. "
    "Automatic charges will not exceed {monthly_limit} {currency} in any calendar month (UTC). "
    "You can switch automatic top-ups off at any time."
)

#: The text of a record that switches auto top-up off.
WITHDRAWAL_TERMS = "Automatic top-ups switched off: {merchant} makes no further automatic charges."

_USER_AGENT_LENGTH = 1000
_IP_LENGTH = 64


def check_terms(app: Flask) -> None:
    """Fail at start-up, precisely, on a terms format string that names anything
    but :data:`PLACEHOLDERS` (or is not a format string)."""
    terms = app.config["ADDONS_AUTO_TOP_UP_TERMS"]
    if terms is None:
        return
    if not isinstance(terms, str) or not terms.strip():
        raise ValueError("ADDONS_AUTO_TOP_UP_TERMS must be a non-empty format string (or None for the default).")
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(terms) if name is not None}
    except ValueError as error:
        raise ValueError(f"ADDONS_AUTO_TOP_UP_TERMS is not a valid format string: {error}") from None
    unknown = names - PLACEHOLDERS
    if unknown:
        raise ValueError(f"ADDONS_AUTO_TOP_UP_TERMS names unknown placeholders {sorted(unknown)}; "
                         f"it may use {sorted(PLACEHOLDERS)}.")


def render_terms(*, merchant: str, credits: int, price_minor: int, currency: str, threshold: int | None,
                 monthly_limit_minor: int | None, template: str | None = None) -> str:
    """The terms text for these settings: ``template`` (default: the setting, else
    the plain-English default). ``{monthly_limit}`` is a decimal string, or
    ``none`` when no limit is set."""
    if template is None:
        template = current_app.config["ADDONS_AUTO_TOP_UP_TERMS"]
    if template is None:
        template = DEFAULT_TERMS if monthly_limit_minor is None else DEFAULT_TERMS_WITH_LIMIT
    limit = "none" if monthly_limit_minor is None else str(from_minor(monthly_limit_minor, currency))
    return template.format(merchant=merchant, credits=credits, price=from_minor(price_minor, currency),
                           currency=currency, threshold=threshold, monthly_limit=limit)


def terms_for(product: storage.Product, *, threshold: int, monthly_limit: str | None = None) -> str:
    """The terms a buyer would agree to by switching auto top-up on for
    ``product`` at ``threshold`` (and ``monthly_limit``, a decimal string): what
    to show beside the switch, word for word as the consent record will keep it."""
    limit_minor = None if monthly_limit is None else to_minor(parse_price(monthly_limit, product.currency),
                                                              product.currency)
    merchant = product.merchant.name
    return render_terms(merchant=merchant, credits=product.credit_amount, price_minor=product.price_minor,
                        currency=product.currency, threshold=threshold, monthly_limit_minor=limit_minor)


#: The settings whose change, while auto top-up is on, changes what it may charge.
_CHARGE_TERMS = ("threshold", "payment_method", "customer", "monthly_limit_minor")


def changes_consent(row: storage.CreditAccount, new: dict[str, Any]) -> bool:
    """Whether replacing ``row``'s settings with ``new`` needs a consent record:
    switching on or off, or changing what auto top-up may charge while it is on."""
    was_on, is_on = row.auto_top_up_enabled, new["auto_top_up_enabled"]
    if was_on != is_on:
        return True
    return is_on and any(getattr(row, name) != new[name] for name in _CHARGE_TERMS)


def record(row: storage.CreditAccount, new: dict[str, Any], *, actor: str, ip: str | None,
           user_agent: str | None, now: datetime) -> str:
    """Append the consent record of ``new`` settings on ``row``'s account (in
    the caller's transaction); returns its id."""
    product = row.product
    merchant = storage.Merchant.get_by_id(row.merchant_id).name
    enabled = new["auto_top_up_enabled"]
    if enabled:
        terms = render_terms(merchant=merchant, credits=product.credit_amount, price_minor=product.price_minor,
                             currency=product.currency, threshold=new["threshold"],
                             monthly_limit_minor=new["monthly_limit_minor"])
    else:
        terms = WITHDRAWAL_TERMS.format(merchant=merchant)
    consent_id = new_id("consent")
    AutoTopUpConsent.insert(
        id=consent_id, account_id=row.id, merchant_id=row.merchant_id, enabled=enabled,
        threshold=new["threshold"], payment_method=new["payment_method"], customer=new["customer"],
        monthly_limit_minor=new["monthly_limit_minor"], bank_credits=product.credit_amount,
        bank_price_minor=product.price_minor, currency=product.currency, terms=terms, actor=actor,
        ip=ip[:_IP_LENGTH] if ip else None, user_agent=user_agent[:_USER_AGENT_LENGTH] if user_agent else None,
        created_at=now,
    ).execute()
    return consent_id


def consent_body(consent: AutoTopUpConsent) -> dict[str, Any]:
    """A consent record resource (money as decimal strings)."""
    limit = consent.monthly_limit_minor
    return {
        "id": consent.id,
        "account_id": consent.account_id,
        "enabled": consent.enabled,
        "threshold": consent.threshold,
        "payment_method": consent.payment_method,
        "customer": consent.customer,
        "monthly_limit": None if limit is None else str(from_minor(limit, consent.currency)),
        "bank": {"credits": consent.bank_credits,
                 "price": str(from_minor(consent.bank_price_minor, consent.currency)),
                 "currency": consent.currency},
        "terms": consent.terms,
        "actor": consent.actor,
        "ip": consent.ip,
        "user_agent": consent.user_agent,
        "created_at": storage.isoformat(consent.created_at),
    }


def list_consents(account_id: str, *, merchant_id: str, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
    """A page of the account's consent records, newest first (``{"data", "next_cursor"}``)."""
    account_row(account_id, merchant_id=merchant_id)
    query = AutoTopUpConsent.select().where(AutoTopUpConsent.account_id == account_id)
    return paginate(query, AutoTopUpConsent.id, consent_body, limit=limit, cursor=cursor)
