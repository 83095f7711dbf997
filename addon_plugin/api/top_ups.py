"""Auto top-up for merchants: an account's settings, its top-ups to reconcile
against the payment gateway, and resolving one whose outcome the gateway never
told. Thin: parse, call :mod:`addon_plugin.accounts` (which hosts call too)."""

from __future__ import annotations

from flask import Response

from .. import accounts
from ..schemas import (
    AccountSchema,
    AutoTopUpSettingsSchema,
    ConsentSchema,
    ListQuerySchema,
    TopUpResolveSchema,
    TopUpSchema,
)
from . import blueprint
from .http import actor, authenticate, client, load, load_query, respond, write
from .openapi import operation

_settings_schema = AutoTopUpSettingsSchema()
_list_schema = ListQuerySchema()
_resolve_schema = TopUpResolveSchema()


@blueprint.put("/addons/accounts/<account_id>/auto-top-up")
@operation(summary="Set an account's auto top-up", tag="top-ups", body=AutoTopUpSettingsSchema,
           response=AccountSchema, errors=(404, 409))
def put_auto_top_up(account_id: str) -> Response:
    """Replaces the settings: ``enabled`` is required, ``threshold`` and
    ``payment_method`` too when enabling; omitted optional fields are cleared.
    409 ``top_up_not_allowed`` for a one-time product, 409 ``no_payment_gateway``
    when none is configured. A change at or below the threshold decides a
    top-up at once (within the retry block and the decline budget). Optional
    ``monthly_limit`` caps what top-ups charge in a UTC month. Switching on, off,
    or changing what it may charge appends a consent record (``…/consents``)."""
    merchant_id = authenticate()
    data = load(_settings_schema)
    ip, user_agent = client()
    return write(merchant_id, data, lambda: (accounts.set_auto_top_up(
        merchant_id, account_id, enabled=data["enabled"], threshold=data["threshold"],
        payment_method=data["payment_method"], customer=data["customer"], monthly_limit=data["monthly_limit"],
        actor=actor() or "host", ip=ip, user_agent=user_agent), 200))


@blueprint.get("/addons/accounts/<account_id>/consents")
@operation(summary="List an account's auto top-up consent records", tag="top-ups", query=ListQuerySchema,
           response=ConsentSchema, many=True, errors=(404,))
def list_consents(account_id: str) -> Response:
    """What the buyer agreed to, newest first: each switch on or off of auto
    top-up and each change of what it may charge, with the exact terms text,
    who made it (API key id, ``buyer``, ``hook:order_paid``), IP, user agent
    and time. Records are never changed or deleted: evidence for a dispute."""
    merchant_id = authenticate()
    return respond(accounts.list_consents(merchant_id, account_id, **load_query(_list_schema)))


@blueprint.get("/addons/accounts/<account_id>/top-ups")
@operation(summary="List an account's top-ups", tag="top-ups", query=ListQuerySchema, response=TopUpSchema,
           many=True, errors=(404,))
def list_top_ups(account_id: str) -> Response:
    """The account's automatic top-ups, newest first: status, banks, credits,
    amount, currency, the gateway's charge id, failure code and times."""
    merchant_id = authenticate()
    return respond(accounts.list_top_ups(merchant_id, account_id, **load_query(_list_schema)))


@blueprint.post("/addons/top-ups/<top_up_id>/resolve")
@operation(summary="Resolve an unresolved top-up", tag="top-ups", body=TopUpResolveSchema, response=TopUpSchema,
           errors=(404, 409))
def resolve_top_up(top_up_id: str) -> Response:
    """Settles a top-up whose outcome the gateway never told (status
    ``unresolved``) as you found it at the gateway: ``{"outcome": "succeeded",
    "charge_id": "…"}`` credits it, ``{"outcome": "failed"}`` (no money was
    taken) fails it. Answers the top-up; 409 ``top_up_not_unresolved`` for any
    other status."""
    merchant_id = authenticate()
    data = load(_resolve_schema)
    return write(merchant_id, data, lambda: accounts.apply_resolve_top_up(merchant_id, top_up_id, data))
