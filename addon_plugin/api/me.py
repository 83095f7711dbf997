"""``/addons/me/…``: the signed-in buyer's own accounts, for the host's pages.

Authenticated by the host's session through the plugin's ``buyer_loader``, not
by an API key: the buyer only ever sees and changes their own accounts (another
buyer's account is 404). CSRF: a write must be ``application/json`` (a
cross-site form cannot send that without a CORS preflight) and, when the
browser sends ``Origin``, come from the host's own origin. ``Idempotency-Key``
is honoured in a key space of the buyer's own.

Who names the card: ``customer`` comes from the host (``buyer_loader``), never
from the request; a payment method the browser names is checked with the gateway
as belonging to that customer before it is stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Response, request

from .. import accounts
from ..errors import AuthenticationFailed, CrossOriginRequest
from ..idempotency import buyer_key_space
from ..schemas import AccountSchema, BuyerAutoTopUpSettingsSchema, ListQuerySchema
from ..state import get_state
from ..topup import check_owner
from . import blueprint
from .http import UnsupportedMediaType, client, load, load_query, respond, write
from .openapi import operation

if TYPE_CHECKING:
    from ..hooks import SignedInBuyer

_list_schema = ListQuerySchema()
_settings_schema = BuyerAutoTopUpSettingsSchema()


def _buyer() -> SignedInBuyer:
    """``(merchant_id, buyer_email, customer)`` of the host's signed-in buyer, else 401."""
    buyer = get_state().plugin.current_buyer()
    if buyer is None:
        raise AuthenticationFailed("Sign in to the shop first.")
    return buyer


def _check_same_origin_json() -> None:
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("Send application/json.")
    origin = request.headers.get("Origin")
    if origin is not None and origin != request.host_url.rstrip("/"):
        raise CrossOriginRequest()


@blueprint.get("/addons/me/accounts")
@operation(summary="The signed-in buyer's accounts", tag="me", query=ListQuerySchema, response=AccountSchema,
           many=True, session=True)
def me_accounts() -> Response:
    """The buyer's credit accounts with this merchant, newest first (host session, no API key)."""
    merchant_id, email, _ = _buyer()
    return respond(accounts.list_accounts(merchant_id, buyer_email=email, **load_query(_list_schema)))


@blueprint.put("/addons/me/accounts/<account_id>/auto-top-up")
@operation(summary="Set the signed-in buyer's auto top-up", tag="me", body=BuyerAutoTopUpSettingsSchema,
           response=AccountSchema, session=True, errors=(403, 404, 409))
def me_auto_top_up(account_id: str) -> Response:
    """Replace the auto top-up settings of one of the buyer's accounts (as the
    merchant's ``PUT /addons/accounts/<id>/auto-top-up`` does), without
    ``customer``: the host's session names it. A payment method must belong to
    that customer at the gateway (422 ``invalid_payment_method``). JSON only; with
    an ``Origin`` header, only from the host's own origin (403 ``cross_origin_request``)."""
    buyer = _buyer()
    _check_same_origin_json()
    data = load(_settings_schema)
    check_owner(data["payment_method"], customer=buyer.customer)  # a gateway call: before the transaction
    ip, user_agent = client()
    return write(buyer.merchant_id, data,
                 lambda: accounts.apply_buyer_auto_top_up(buyer, account_id, data, ip=ip, user_agent=user_agent),
                 key_space=buyer_key_space(buyer.buyer_email))
