"""The PayKickstart-style usage endpoints: the merchant's SaaS records usage
and reads balances. The hot path: no work here that could be done at start-up.

The account is named by ``product_id`` + ``buyer_email``, or by ``invoice_id``
(the order that bought it; with ``product_id`` too when that order bought several).
"""

from __future__ import annotations

from flask import Response

from .. import accounts, ledger
from ..present import usage_body
from ..schemas import UsageAddSchema, UsageBalanceSchema, UsageResponseSchema
from . import blueprint
from .http import actor, authenticate, idempotency_key, load, respond, write
from .openapi import operation

_balance_schema = UsageBalanceSchema()
_add_schema = UsageAddSchema()


@blueprint.post("/buyer-addon/usage")
@operation(summary="Read a buyer's balance", tag="usage", body=UsageBalanceSchema, body_required=True,
           response=UsageResponseSchema, errors=(404,), form=True, idempotent=False)
def usage_balance() -> Response:
    """The buyer's balance for the add-on; 404 ``account_not_found`` for an unknown buyer."""
    merchant_id = authenticate()
    data = load(_balance_schema)
    return respond(usage_body(ledger.get_account(accounts.named_account_id(merchant_id, data))))


@blueprint.post("/buyer-addon/usage/add")
@operation(summary="Add or deduct credits", tag="usage", body=UsageAddSchema,
           response=UsageResponseSchema, errors=(402, 404, 409), form=True)
def usage_add() -> Response:
    """``value`` < 0 deducts (kind ``usage``; 402 ``insufficient_credits`` past the
    overdraft limit), > 0 adds (kind ``adjustment``, a grant: ``category`` default
    promotional, optional future ``expires_at``; creates the account for a new
    buyer). ``balance`` in the answer is the balance right after this entry;
    a key the ledger already holds (its stored answer expired) answers that
    first entry again, as a replay."""
    merchant_id = authenticate()
    data = load(_add_schema)
    return write(merchant_id, data, lambda: accounts.apply_usage(merchant_id, data, idempotency_key(data), actor()))
