"""``/addons/accounts``: buyers' credit accounts, their ledgers, and manual
adjustments, served by :mod:`addon_plugin.accounts` (which hosts call too)."""

from __future__ import annotations

from flask import Response

from .. import accounts
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

_list_schema = AccountListQuerySchema()
_ledger_schema = ListQuerySchema()
_adjustment_schema = AdjustmentCreateSchema()


@blueprint.get("/addons/accounts")
@operation(summary="Find credit accounts", tag="accounts", query=AccountListQuerySchema,
           response=AccountSchema, many=True)
def list_accounts() -> Response:
    """The merchant's accounts, newest first; filter by ``buyer_email`` and/or ``product_id``."""
    merchant_id = authenticate()
    return respond(accounts.list_accounts(merchant_id, **load_query(_list_schema)))


@blueprint.get("/addons/accounts/<account_id>")
@operation(summary="Read a credit account", tag="accounts", response=AccountSchema, errors=(404,))
def get_account(account_id: str) -> Response:
    """One account; 404 ``account_not_found`` (also for another merchant's)."""
    merchant_id = authenticate()
    return respond(accounts.get_account(merchant_id, account_id))


@blueprint.get("/addons/accounts/<account_id>/ledger")
@operation(summary="Read an account's ledger", tag="accounts", query=ListQuerySchema,
           response=EntrySchema, many=True, errors=(404,))
def account_ledger(account_id: str) -> Response:
    """The account's entries, newest (highest ``sequence``) first."""
    merchant_id = authenticate()
    return respond(accounts.list_entries(merchant_id, account_id, **load_query(_ledger_schema)))


@blueprint.post("/addons/accounts/<account_id>/adjustments")
@operation(summary="Adjust a balance by hand", tag="accounts", body=AdjustmentCreateSchema,
           response=AdjustmentSchema, status=201, errors=(402, 404, 409))
def create_adjustment(account_id: str) -> Response:
    """Add (``value`` > 0) or take away (< 0) credits, with the reason in
    ``description``; a ledger entry of kind ``adjustment``. Added credits are
    a grant (``category``, default promotional; optional future ``expires_at``).
    402 ``insufficient_credits`` if it would pass the overdraft limit."""
    merchant_id = authenticate()
    data = load(_adjustment_schema)
    return write(merchant_id, data, lambda: accounts.apply_adjustment(
        merchant_id, account_id, data, idempotency_key(data), actor()))
