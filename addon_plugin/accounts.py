"""Buyers' credit accounts: the reads and writes behind ``/addons/accounts``,
``/addons/me/accounts`` and the usage endpoints, for the API's views and a
host's own code alike.

Answers are the API's resources (plain dicts, the shapes its OpenAPI document
describes). A host's write takes what the API's body would hold (a form or a
dict; other fields are ignored), is validated by the same schema (a buyer's
e-mail normalised) and runs under the same idempotency rules: with an
``idempotency_key``, a repeat answers what the first call answered for
``ADDONS_IDEMPOTENCY_TTL``, a refusal included (raised again); after that, a
usage or adjustment key the ledger still holds answers its first entry again.
A merchant's writes share the merchant's key space with its API clients; a
signed-in buyer's have a key space of their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import storage

from . import grants, holds, idempotency, ledger, topup
from .errors import AccountNotFound, AddonError, AmbiguousInvoice
from .idempotency import Outcome
from .pagination import paginate
from .present import account_body, adjustment_body, entry_body, grant_body, top_up_body, usage_body
from .products import get_product
from .schemas import (
    AccountListQuerySchema,
    AdjustmentCreateSchema,
    BuyerAutoTopUpSettingsSchema,
    GrantListQuerySchema,
    HoldCaptureSchema,
    HoldCreateSchema,
    HoldListQuerySchema,
    ListQuerySchema,
    TopUpResolveSchema,
    UsageAddSchema,
    WriteSchema,
    load_fields,
)
from .topup import consent

if TYPE_CHECKING:
    from .hooks import SignedInBuyer

__all__ = ["get_account", "list_accounts", "list_entries", "list_grants", "list_top_ups", "list_consents",
           "auto_top_up_terms", "adjust",
           "record_usage", "set_auto_top_up", "set_buyer_auto_top_up", "resolve_top_up", "get_hold", "list_holds",
           "place_hold", "capture_hold", "release_hold"]

_list_schema = AccountListQuerySchema()
_page_schema = ListQuerySchema()
_grant_list_schema = GrantListQuerySchema()
_adjustment_schema = AdjustmentCreateSchema()
_usage_schema = UsageAddSchema()
_buyer_settings_schema = BuyerAutoTopUpSettingsSchema()
_resolve_schema = TopUpResolveSchema()
_hold_schema = HoldCreateSchema()
_hold_list_schema = HoldListQuerySchema()
_capture_schema = HoldCaptureSchema()
_release_schema = WriteSchema()


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
    args = load_fields(_page_schema, _given(limit=limit, cursor=cursor))
    ledger.get_account(account_id, merchant_id)
    query = storage.LedgerEntry.select().where(storage.LedgerEntry.account == account_id)
    page = paginate(query, storage.LedgerEntry.sequence, lambda row: row, limit=args["limit"],
                    cursor=args.get("cursor"))
    allocations = grants.allocations_of([(row.id, row.grant_id, row.delta) for row in page["data"]])
    page["data"] = [entry_body(row, allocations[row.id]) for row in page["data"]]
    return page


def list_grants(merchant_id: str, account_id: str, *, status: str | None = None, category: str | None = None,
                limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
    """A page of the account's credit grants, newest first, of one ``status``
    and/or ``category`` when given (expired grants' entries written first)."""
    args = load_fields(_grant_list_schema, _given(status=status, category=category, limit=limit, cursor=cursor))
    ledger.get_account(account_id, merchant_id)  # also writes any due expiry first
    grant = storage.CreditGrant
    query = grant.select().where(grant.account == account_id)
    if "status" in args:
        query = query.where(grant.status == args["status"])
    if "category" in args:
        query = query.where(grant.category == args["category"])
    return paginate(query, grant.id, grant_body, limit=args["limit"], cursor=args.get("cursor"))


def list_top_ups(merchant_id: str, account_id: str, *, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
    """A page of the account's automatic top-ups, newest first: status, banks,
    credits, amount, the gateway's charge id, failure code and times. An
    ``unresolved`` one waits for the gateway's lookup or :func:`resolve_top_up`."""
    args = load_fields(_page_schema, _given(limit=limit, cursor=cursor))
    rows = topup.list_top_ups(account_id, merchant_id=merchant_id, limit=args["limit"] + 1, before=args.get("cursor"))
    page = rows[:args["limit"]]
    return {"data": [top_up_body(row) for row in page],
            "next_cursor": page[-1].id if len(rows) > args["limit"] else None}


# -- writes ------------------------------------------------------------------

def adjust(merchant_id: str, account_id: str, data: Mapping[str, Any], *, actor: str | None = None) -> dict[str, Any]:
    """A manual adjustment, as ``POST /addons/accounts/<id>/adjustments``: ``data``
    holds ``value`` (credits, either sign), ``description`` (the reason) and
    optionally ``reference``, ``metadata``, ``idempotency_key`` and, for added
    credits (a grant), ``category`` (default promotional) and a future
    ``expires_at``. Returns
    ``{"entry", "balance"}``; refusals raise (``InsufficientCredits``, …)."""
    loaded = load_fields(_adjustment_schema, data)
    return _run(merchant_id, ("adjust", account_id), loaded,
                lambda: apply_adjustment(merchant_id, account_id, loaded, loaded.get("idempotency_key"), actor))


def record_usage(merchant_id: str, data: Mapping[str, Any], *, actor: str | None = None) -> dict[str, Any]:
    """Usage, as ``POST /buyer-addon/usage/add``: ``data`` names the account
    (``product_id`` + ``buyer_email``, or ``invoice_id``) and holds ``value``
    (< 0 deducts, > 0 adds) and optionally ``description``, ``reference``,
    ``metadata``, ``idempotency_key`` (and ``category``, ``expires_at`` as for
    :func:`adjust` when adding). Returns the usage answer
    (``{"success": true, "data": {...}}``); refusals raise."""
    loaded = load_fields(_usage_schema, data)
    return _run(merchant_id, ("usage",), loaded,
                lambda: apply_usage(merchant_id, loaded, loaded.get("idempotency_key"), actor))


def set_auto_top_up(merchant_id: str, account_id: str, *, enabled: bool, threshold: int | None = None,
                    payment_method: str | None = None, customer: str | None = None,
                    buyer_email: str | None = None, monthly_limit: str | None = None, actor: str = "host",
                    ip: str | None = None, user_agent: str | None = None) -> dict[str, Any]:
    """Replace the account's auto top-up settings, as the merchant's ``PUT
    …/auto-top-up`` (idempotent by itself; the merchant and the host are trusted
    to name the card); ``buyer_email`` limits it to that buyer's account. A
    change the buyer must agree to is recorded as a consent record naming
    ``actor`` (an API key id, or ``host``), ``ip`` and ``user_agent``.
    Returns the account resource."""
    return account_body(topup.set_auto_top_up(
        account_id, merchant_id=merchant_id, enabled=enabled, threshold=threshold,
        payment_method=payment_method, customer=customer, buyer_email=buyer_email, monthly_limit=monthly_limit,
        actor=actor, ip=ip, user_agent=user_agent))


def list_consents(merchant_id: str, account_id: str, *, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
    """A page of the account's auto top-up consent records, newest first: what
    the buyer agreed to (the exact terms), who changed it and from where."""
    args = load_fields(_page_schema, _given(limit=limit, cursor=cursor))
    return topup.list_consents(account_id, merchant_id=merchant_id, limit=args["limit"], cursor=args.get("cursor"))


def auto_top_up_terms(merchant_id: str, product_id: str, *, threshold: int, monthly_limit: str | None = None) -> str:
    """The exact terms a buyer agrees to by switching auto top-up on for the
    product at ``threshold`` (``monthly_limit``: a decimal string, or None): what
    to show beside the switch, a checkout's opt-in included. The consent record
    keeps this text word for word (while the product's price stays the same)."""
    return consent.terms_for(get_product(merchant_id, product_id), threshold=threshold, monthly_limit=monthly_limit)


def set_buyer_auto_top_up(buyer: SignedInBuyer, account_id: str, data: Mapping[str, Any], *,
                          ip: str | None = None, user_agent: str | None = None) -> dict[str, Any]:
    """The signed-in buyer's own change, as ``PUT /addons/me/accounts/<id>/auto-top-up``:
    ``buyer`` is :meth:`AddonPlugin.current_buyer` (the host's session) and
    ``data`` what the buyer sent: ``enabled``, ``threshold``, ``payment_method``,
    optionally ``idempotency_key``. The card's customer is the host's
    (``buyer.customer``), never ``data``'s; a payment method is checked with the
    gateway as that customer's first (:class:`InvalidPaymentMethod`). Only the
    buyer's own account (else :class:`AccountNotFound`); keys in the buyer's own
    key space. Returns the account resource."""
    loaded = load_fields(_buyer_settings_schema, data)
    topup.check_owner(loaded["payment_method"], customer=buyer.customer)  # a gateway call: no transaction
    return _run(buyer.merchant_id, ("buyer_auto_top_up", account_id), loaded,
                lambda: apply_buyer_auto_top_up(buyer, account_id, loaded, ip=ip, user_agent=user_agent),
                key_space=idempotency.buyer_key_space(buyer.buyer_email))


def resolve_top_up(merchant_id: str, top_up_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """Settle the merchant's ``unresolved`` top-up (the gateway never told its
    outcome) as found at the gateway, as ``POST /addons/top-ups/<id>/resolve``:
    ``data`` holds ``outcome`` (``"succeeded"`` with the gateway's
    ``charge_id``: credited; ``"failed"``: no money was taken) and optionally
    ``idempotency_key``. Returns the top-up resource; :class:`TopUpNotFound`,
    :class:`TopUpNotUnresolved` for any other status."""
    loaded = load_fields(_resolve_schema, data)
    return _run(merchant_id, ("resolve_top_up", top_up_id), loaded,
                lambda: apply_resolve_top_up(merchant_id, top_up_id, loaded))


# -- spend holds --------------------------------------------------------------

def get_hold(merchant_id: str, hold_id: str) -> dict[str, Any]:
    """The hold resource; :class:`HoldNotFound` (also for another merchant's)."""
    return holds.get(hold_id, merchant_id)


def list_holds(merchant_id: str, account_id: str, *, status: str | None = None, limit: int = 50,
               cursor: str | None = None) -> dict[str, Any]:
    """A page of the account's spend holds, newest first, of one ``status`` when given."""
    args = load_fields(_hold_list_schema, _given(status=status, limit=limit, cursor=cursor))
    return holds.list_holds(merchant_id, account_id, status=args.get("status"), limit=args["limit"],
                            cursor=args.get("cursor"))


def place_hold(merchant_id: str, account_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """Reserve credits, as ``POST /addons/accounts/<id>/holds``: ``data`` holds
    ``value`` and optionally ``expires_in`` (seconds), ``description``,
    ``reference``, ``metadata``, ``idempotency_key``. Returns the hold;
    :class:`InsufficientCredits` when the available credits do not cover it."""
    loaded = load_fields(_hold_schema, data)

    def apply() -> tuple[dict[str, Any], int]:
        ledger.get_account(account_id, merchant_id)
        return holds.place(account_id, loaded["value"], expires_in=loaded["expires_in"],
                           description=loaded["description"], reference=loaded["reference"],
                           metadata=loaded["metadata"]), 201

    return _run(merchant_id, ("place_hold", account_id), loaded, apply)


def capture_hold(merchant_id: str, hold_id: str, data: Mapping[str, Any] | None = None, *,
                 actor: str | None = None) -> dict[str, Any]:
    """Spend what the work cost, as ``POST /addons/holds/<id>/capture``: ``data``
    optionally holds ``value`` (default the whole hold) and ``idempotency_key``;
    the rest is released. Returns the hold; :class:`HoldNotActive` if it is no
    longer held."""
    loaded = load_fields(_capture_schema, data or {})
    return _run(merchant_id, ("capture_hold", hold_id), loaded,
                lambda: (holds.capture(hold_id, merchant_id, loaded.get("value"), actor=actor), 200))


def release_hold(merchant_id: str, hold_id: str, data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Give a hold's credits back, as ``POST /addons/holds/<id>/release``
    (``data``: optionally ``idempotency_key``). Returns the hold."""
    loaded = load_fields(_release_schema, data or {})
    return _run(merchant_id, ("release_hold", hold_id), loaded, lambda: (holds.release(hold_id, merchant_id), 200))


# -- shared with the API's views ---------------------------------------------

def apply_adjustment(merchant_id: str, account_id: str, data: dict[str, Any], key: str | None,
                     actor: str | None) -> Outcome:
    """An adjustment of loaded ``data``: the answer, 201; a replay if the ledger
    already holds the merchant's ``key`` on this account (its stored answer expired)."""
    ledger.get_account(account_id, merchant_id)
    change = ledger.record(account_id, data["value"], "adjustment", description=data["description"],
                           reference=data["reference"], metadata=data["metadata"], idempotency_key=key,
                           key_space=ledger.API_KEYS, actor=actor, grant=grant_terms(data))
    return Outcome(201, adjustment_body(change), replayed=change.replayed)


def apply_usage(merchant_id: str, data: dict[str, Any], key: str | None, actor: str | None) -> Outcome:
    """A usage record of loaded ``data``: the usage answer, 200; a replay as for
    :func:`apply_adjustment`."""
    value = data["value"]
    change = ledger.record(named_account_id(merchant_id, data, create=value > 0), value,
                           "usage" if value < 0 else "adjustment", description=data["description"],
                           reference=data["reference"], metadata=data["metadata"], idempotency_key=key,
                           key_space=ledger.API_KEYS, actor=actor, grant=grant_terms(data))
    return Outcome(200, usage_body(change.account, change.entry), replayed=change.replayed)


def apply_buyer_auto_top_up(buyer: SignedInBuyer, account_id: str, data: dict[str, Any], *,
                            ip: str | None = None, user_agent: str | None = None) -> tuple[dict[str, Any], int]:
    """The buyer's settings of loaded ``data``, their payment method already
    checked: ``(the account, 200)``, with the host's customer; a consent record
    names the actor ``buyer``."""
    account = topup.set_auto_top_up(account_id, merchant_id=buyer.merchant_id, buyer_email=buyer.buyer_email,
                                    enabled=data["enabled"], threshold=data["threshold"],
                                    payment_method=data["payment_method"], customer=buyer.customer,
                                    monthly_limit=data.get("monthly_limit"), actor="buyer", ip=ip,
                                    user_agent=user_agent)
    return account_body(account), 200


def apply_resolve_top_up(merchant_id: str, top_up_id: str, data: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The resolution of loaded ``data``: ``(the top-up, 200)``."""
    top_up = topup.resolve_top_up(top_up_id, merchant_id=merchant_id, outcome=data["outcome"],
                                  charge_id=data.get("charge_id"))
    return top_up_body(top_up), 200


def grant_terms(data: Mapping[str, Any]) -> grants.Terms | None:
    """The grant a positive ``value`` of loaded ``data`` creates, as it describes it."""
    if data.get("value", 1) < 0:
        return None
    return grants.Terms(category=data.get("category"), expires_at=data.get("expires_at"),
                        priority=data.get("priority", 50))


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
    name = (storage.db.obj, merchant_id, data["product_id"], data["buyer_email"])
    account_id = _account_ids.get(name) or ledger.find_account_id(*name[1:])
    if account_id is None:
        if not create:
            raise AccountNotFound()
        account_id = ledger.open_account(*name[1:])
    if len(_account_ids) >= _ACCOUNT_IDS_KEPT:
        _account_ids.clear()
    _account_ids[name] = account_id
    return account_id


#: Which account a (database, merchant, product, buyer) names, as found: an
#: account, once opened, keeps its id, merchant, product and buyer for good
#: (no account is ever deleted or moved), so a found id stays right in every
#: process and needs no invalidation; a miss is never kept (another process
#: may open the account next). Saves the usage path one read per request.
_account_ids: dict[tuple[Any, str, str, str], str] = {}
_ACCOUNT_IDS_KEPT = 100_000


def _given(**args: Any) -> dict[str, Any]:
    return {name: value for name, value in args.items() if value is not None}


def _run(merchant_id: str, operation: tuple[str, ...], loaded: dict[str, Any], action: idempotency.Action, *,
         key_space: str = idempotency.MERCHANT_KEYS) -> dict[str, Any]:
    """Run a host's write under the API's idempotency rules, in ``key_space``;
    a refusal, first or replayed, is raised."""
    request = {name: value for name, value in loaded.items() if name != "idempotency_key"}
    outcome = idempotency.run(merchant_id, loaded.get("idempotency_key"),
                              idempotency.fingerprint("host", *operation, request), action, key_space=key_space)
    if outcome.status >= 400:
        raise AddonError.from_dict(outcome.body, outcome.status)
    return outcome.body
