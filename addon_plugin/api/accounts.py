"""``/addons/accounts``: buyers' credit accounts, their ledgers, and manual
adjustments. Every balance change goes through :func:`addon_plugin.ledger.record`."""

from __future__ import annotations

from flask import Response

import storage

from .. import ledger
from ..present import account_body, adjustment_body, entry_body
from ..idempotency import Outcome
from ..schemas import (
    AccountListQuerySchema,
    AccountSchema,
    AdjustmentCreateSchema,
    AdjustmentSchema,
    EntrySchema,
    ListQuerySchema,
)
from . import blueprint
from .http import actor, authenticate, idempotency_key, load, load_query, respond, write
from .openapi import operation
from .pagination import paginate

_list_schema = AccountListQuerySchema()
_ledger_schema = ListQuerySchema()
_adjustment_schema = AdjustmentCreateSchema()


@blueprint.get("/addons/accounts")
@operation(summary="Find credit accounts", tag="accounts", query=AccountListQuerySchema,
           response=AccountSchema, many=True)
def list_accounts() -> Response:
    """The merchant's accounts, newest first; filter by ``buyer_email`` and/or ``product_id``."""
    merchant_id = authenticate()
    args = load_query(_list_schema)
    query = storage.CreditAccount.select().where(storage.CreditAccount.merchant == merchant_id)
    if "buyer_email" in args:
        query = query.where(storage.CreditAccount.buyer_email == args["buyer_email"])
    if "product_id" in args:
        query = query.where(storage.CreditAccount.product == args["product_id"])
    return respond(paginate(query, storage.CreditAccount.id, args, account_body))


@blueprint.get("/addons/accounts/<account_id>")
@operation(summary="Read a credit account", tag="accounts", response=AccountSchema, errors=(404,))
def get_account(account_id: str) -> Response:
    """One account; 404 ``account_not_found`` (also for another merchant's)."""
    merchant_id = authenticate()
    return respond(account_body(ledger.get_account(account_id, merchant_id)))


@blueprint.get("/addons/accounts/<account_id>/ledger")
@operation(summary="Read an account's ledger", tag="accounts", query=ListQuerySchema,
           response=EntrySchema, many=True, errors=(404,))
def account_ledger(account_id: str) -> Response:
    """The account's entries, newest (highest ``sequence``) first."""
    merchant_id = authenticate()
    args = load_query(_ledger_schema)
    ledger.get_account(account_id, merchant_id)
    query = storage.LedgerEntry.select().where(storage.LedgerEntry.account == account_id)
    return respond(paginate(query, storage.LedgerEntry.sequence, args, entry_body))


@blueprint.post("/addons/accounts/<account_id>/adjustments")
@operation(summary="Adjust a balance by hand", tag="accounts", body=AdjustmentCreateSchema,
           response=AdjustmentSchema, status=201, errors=(402, 404, 409))
def create_adjustment(account_id: str) -> Response:
    """Add (``value`` > 0) or take away (< 0) credits, with the reason in
    ``description``; a ledger entry of kind ``adjustment``. 402
    ``insufficient_credits`` if it would pass the overdraft limit."""
    merchant_id = authenticate()
    data = load(_adjustment_schema)

    def apply() -> Outcome:
        ledger.get_account(account_id, merchant_id)
        change = ledger.record(
            account_id, data["value"], "adjustment", description=data["description"],
            reference=data["reference"], metadata=data["metadata"],
            idempotency_key=idempotency_key(data), key_space=ledger.API_KEYS, actor=actor(),
        )
        return Outcome(201, adjustment_body(change), replayed=change.replayed)

    return write(merchant_id, data, apply)
