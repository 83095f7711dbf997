"""Buyers' credit accounts: the reads and writes behind ``/addons/accounts`` and
the usage endpoints, for the API's views and a host's own code alike.

Answers are the API's resources (plain dicts, the shapes its OpenAPI document
describes). A host's write takes what the API's body would hold (a form or a
dict; other fields are ignored), is validated by the same schema and runs under
the same idempotency rules: with an ``idempotency_key``, a repeat answers what
the first call answered for ``ADDONS_IDEMPOTENCY_TTL``, a refusal included
(raised again), in the merchant's one key space.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import storage

from . import idempotency, ledger
from .api.present import account_body, adjustment_body, entry_body, usage_body
from .errors import AccountNotFound, AddonError, AmbiguousInvoice
from .pagination import paginate
from .schemas import AccountListQuerySchema, AdjustmentCreateSchema, ListQuerySchema, UsageAddSchema, load_fields
from .topup import settings

__all__ = ["get_account", "list_accounts", "list_entries", "adjust", "record_usage", "set_auto_top_up"]

_list_schema = AccountListQuerySchema()
_entries_schema = ListQuerySchema()
_adjustment_schema = AdjustmentCreateSchema()
_usage_schema = UsageAddSchema()


# -- reads -------------------------------------------------------------------

def get_account(merchant_id: str, account_id: str) -> dict[str, Any]:
    """The account resource; :class:`AccountNotFound` (also for another merchant's)."""
    return account_body(ledger.get_account(account_id, merchant_id))


def list_accounts(merchant_id: str, *, buyer_email: str | None = None, product_id: str | None = None,
                  limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
    """A page of the merchant's accounts, newest first (``{"data", "next_cursor"}``),
    of one buyer and/or one product when given."""
    args = load_fields(_list_schema, _given(buyer_email=buyer_email, product_id=product_id, limit=limit,
                                            cursor=cursor))
    query = storage.CreditAccount.select().where(storage.CreditAccount.merchant == merchant_id)
    if "buyer_email" in args:
        query = query.where(storage.CreditAccount.buyer_email == args["buyer_email"])
    if "product_id" in args:
        query = query.where(storage.CreditAccount.product == args["product_id"])
    return paginate(query, storage.CreditAccount.id, account_body, limit=args["limit"], cursor=args.get("cursor"))


def list_entries(merchant_id: str, account_id: str, *, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
    """A page of the account's ledger entries, newest (highest ``sequence``) first."""
    args = load_fields(_entries_schema, _given(limit=limit, cursor=cursor))
    ledger.get_account(account_id, merchant_id)
    query = storage.LedgerEntry.select().where(storage.LedgerEntry.account == account_id)
    return paginate(query, storage.LedgerEntry.sequence, entry_body, limit=args["limit"], cursor=args.get("cursor"))


# -- writes ------------------------------------------------------------------

def adjust(merchant_id: str, account_id: str, data: Mapping[str, Any], *, actor: str | None = None) -> dict[str, Any]:
    """A manual adjustment, as ``POST /addons/accounts/<id>/adjustments``: ``data``
    holds ``value`` (credits, either sign), ``description`` (the reason) and
    optionally ``reference``, ``metadata``, ``idempotency_key``. Returns
    ``{"entry", "balance"}``; refusals raise (``InsufficientCredits``, …)."""
    loaded = load_fields(_adjustment_schema, data)
    return _run(merchant_id, ("adjust", account_id), loaded,
                lambda: apply_adjustment(merchant_id, account_id, loaded, loaded.get("idempotency_key"), actor))


def record_usage(merchant_id: str, data: Mapping[str, Any], *, actor: str | None = None) -> dict[str, Any]:
    """Usage, as ``POST /buyer-addon/usage/add``: ``data`` names the account
    (``product_id`` + ``buyer_email``, or ``invoice_id``) and holds ``value``
    (< 0 deducts, > 0 adds) and optionally ``description``, ``reference``,
    ``metadata``, ``idempotency_key``. Returns the usage answer
    (``{"success": true, "data": {...}}``); refusals raise."""
    loaded = load_fields(_usage_schema, data)
    return _run(merchant_id, ("usage",), loaded,
                lambda: apply_usage(merchant_id, loaded, loaded.get("idempotency_key"), actor))


def set_auto_top_up(merchant_id: str, account_id: str, *, enabled: bool, threshold: int | None = None,
                    payment_method: str | None = None, customer: str | None = None,
                    buyer_email: str | None = None) -> dict[str, Any]:
    """Replace the account's auto top-up settings, as ``PUT …/auto-top-up``
    (idempotent by itself); ``buyer_email`` limits it to that buyer's account.
    Returns the account resource."""
    return account_body(settings.set_auto_top_up(
        account_id, merchant_id=merchant_id, enabled=enabled, threshold=threshold,
        payment_method=payment_method, customer=customer, buyer_email=buyer_email))


# -- shared with the API's views ---------------------------------------------

def apply_adjustment(merchant_id: str, account_id: str, data: dict[str, Any], key: str | None,
                     actor: str | None) -> tuple[dict[str, Any], int]:
    """An adjustment of loaded ``data``: ``(the answer, 201)``."""
    ledger.get_account(account_id, merchant_id)
    change = ledger.record(account_id, data["value"], "adjustment", description=data["description"],
                           reference=data["reference"], metadata=data["metadata"], idempotency_key=key,
                           actor=actor)
    return adjustment_body(change), 201


def apply_usage(merchant_id: str, data: dict[str, Any], key: str | None,
                actor: str | None) -> tuple[dict[str, Any], int]:
    """A usage record of loaded ``data``: ``(the usage answer, 200)``."""
    value = data["value"]
    change = ledger.record(named_account_id(merchant_id, data, create=value > 0), value,
                           "usage" if value < 0 else "adjustment", description=data["description"],
                           reference=data["reference"], metadata=data["metadata"], idempotency_key=key,
                           actor=actor)
    return usage_body(change.account, change.entry), 200


def named_account_id(merchant_id: str, data: Mapping[str, Any], *, create: bool = False) -> str:
    """The account ``data`` names (``product_id`` + ``buyer_email``, or
    ``invoice_id``); opened for a new buyer when ``create``."""
    if "invoice_id" in data:
        found = ledger.order_accounts(merchant_id, data["invoice_id"], data.get("product_id"))
        if len(found) > 1:
            raise AmbiguousInvoice(fields={"product_id": ["Required: that invoice bought several add-ons."]})
        if not found:
            raise AccountNotFound("No add-on was bought with that invoice_id.")
        return found[0]
    account_id = ledger.find_account_id(merchant_id, data["product_id"], data["buyer_email"])
    if account_id is None:
        if not create:
            raise AccountNotFound()
        account_id = ledger.open_account(merchant_id, data["product_id"], data["buyer_email"])
    return account_id


def _given(**args: Any) -> dict[str, Any]:
    return {name: value for name, value in args.items() if value is not None}


def _run(merchant_id: str, operation: tuple[str, ...], loaded: dict[str, Any],
         action: Callable[[], tuple[dict[str, Any], int]]) -> dict[str, Any]:
    """Run a host's write under the API's idempotency rules; a refusal, first
    or replayed, is raised."""
    request = {name: value for name, value in loaded.items() if name != "idempotency_key"}
    outcome = idempotency.run(merchant_id, loaded.get("idempotency_key"),
                              idempotency.fingerprint("host", *operation, request), action)
    if outcome.status >= 400:
        raise AddonError.from_dict(outcome.body, outcome.status)
    return outcome.body
