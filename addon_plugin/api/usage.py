"""The PayKickstart-style usage endpoints: the merchant's SaaS records usage
and reads balances. The hot path: no work here that could be done at start-up.

The account is named by ``product_id`` + ``buyer_email``, or by ``invoice_id``
(the order that bought it; with ``product_id`` too when that order bought several).
"""

from __future__ import annotations

from typing import Any

from flask import Response

from .. import ledger
from ..errors import AccountNotFound, AmbiguousInvoice
from ..present import usage_body
from ..idempotency import Outcome
from ..schemas import UsageAddSchema, UsageBalanceSchema, UsageResponseSchema
from . import blueprint
from .http import actor, authenticate, idempotency_key, load, respond, write
from .openapi import operation

_balance_schema = UsageBalanceSchema()
_add_schema = UsageAddSchema()


def _account_id(merchant_id: str, data: dict[str, Any], *, create: bool = False) -> str:
    """The account the request names; created for a new buyer when ``create``."""
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


@blueprint.post("/buyer-addon/usage")
@operation(summary="Read a buyer's balance", tag="usage", body=UsageBalanceSchema, body_required=True,
           response=UsageResponseSchema, errors=(404,), form=True, idempotent=False)
def usage_balance() -> Response:
    """The buyer's balance for the add-on; 404 ``account_not_found`` for an unknown buyer."""
    merchant_id = authenticate()
    data = load(_balance_schema)
    return respond(usage_body(ledger.get_account(_account_id(merchant_id, data))))


@blueprint.post("/buyer-addon/usage/add")
@operation(summary="Add or deduct credits", tag="usage", body=UsageAddSchema,
           response=UsageResponseSchema, errors=(402, 404, 409), form=True)
def usage_add() -> Response:
    """``value`` < 0 deducts (kind ``usage``; 402 ``insufficient_credits`` past the
    overdraft limit), > 0 adds (kind ``adjustment``; creates the account for a new
    buyer). ``balance`` in the answer is the balance right after this entry;
    a key the ledger already holds (its stored answer expired) answers that
    first entry again, as a replay."""
    merchant_id = authenticate()
    data = load(_add_schema)
    value = data["value"]

    def apply() -> Outcome:
        change = ledger.record(
            _account_id(merchant_id, data, create=value > 0), value,
            "usage" if value < 0 else "adjustment",
            description=data["description"], reference=data["reference"], metadata=data["metadata"],
            idempotency_key=idempotency_key(data), key_space=ledger.API_KEYS, actor=actor(),
        )
        return Outcome(200, usage_body(change.account, change.entry), replayed=change.replayed)

    return write(merchant_id, data, apply)
