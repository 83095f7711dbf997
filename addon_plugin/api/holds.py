"""Spend holds: reserve credits, then capture what the work cost or release
them. Thin: parse, call :mod:`addon_plugin.holds`, present."""

from __future__ import annotations

from typing import Any

from flask import Response

from .. import accounts, holds, ledger
from ..schemas import (
    HoldCaptureSchema,
    HoldCreateSchema,
    HoldListQuerySchema,
    HoldSchema,
    UsageHoldResponseSchema,
    UsageHoldSchema,
    WriteSchema,
)
from . import blueprint
from .http import actor, authenticate, load, load_query, respond, write
from .openapi import operation

_create_schema = HoldCreateSchema()
_usage_schema = UsageHoldSchema()
_capture_schema = HoldCaptureSchema()
_release_schema = WriteSchema()
_list_schema = HoldListQuerySchema()


def _place(account_id: str, data: dict[str, Any]) -> dict[str, Any]:
    return holds.place(account_id, data["value"], expires_in=data["expires_in"], description=data["description"],
                       reference=data["reference"], metadata=data["metadata"])


@blueprint.post("/addons/accounts/<account_id>/holds")
@operation(summary="Reserve credits (a spend hold)", tag="holds", body=HoldCreateSchema, response=HoldSchema,
           status=201, errors=(402, 404, 409))
def create_hold(account_id: str) -> Response:
    """Reserve ``value`` credits for ``expires_in`` seconds (default 900): they
    stop counting as available until captured, released or expired.
    402 ``insufficient_credits`` if available credits do not cover it."""
    merchant_id = authenticate()
    data = load(_create_schema)

    def apply() -> tuple[dict[str, Any], int]:
        ledger.get_account(account_id, merchant_id)
        return _place(account_id, data), 201

    return write(merchant_id, data, apply)


@blueprint.post("/buyer-addon/usage/hold")
@operation(summary="Reserve a buyer's credits", tag="usage", body=UsageHoldSchema,
           response=UsageHoldResponseSchema, status=201, errors=(402, 404, 409), form=True)
def usage_hold() -> Response:
    """A spend hold on the account named as on the usage endpoints
    (``product_id`` + ``buyer_email``, or ``invoice_id``); answers
    ``{"success": true, "data": <the hold>}``."""
    merchant_id = authenticate()
    data = load(_usage_schema)
    return write(merchant_id, data, lambda: (
        {"success": True, "data": _place(accounts.named_account_id(merchant_id, data), data)}, 201))


@blueprint.get("/addons/holds/<hold_id>")
@operation(summary="Read a hold", tag="holds", response=HoldSchema, errors=(404,))
def get_hold(hold_id: str) -> Response:
    """One hold; 404 ``hold_not_found`` (also for another merchant's)."""
    merchant_id = authenticate()
    return respond(holds.get(hold_id, merchant_id))


@blueprint.get("/addons/accounts/<account_id>/holds")
@operation(summary="List an account's holds", tag="holds", query=HoldListQuerySchema, response=HoldSchema,
           many=True, errors=(404,))
def list_holds(account_id: str) -> Response:
    """The account's holds, newest first; filter by ``status``."""
    merchant_id = authenticate()
    return respond(holds.list_holds(merchant_id, account_id, **load_query(_list_schema)))


@blueprint.post("/addons/holds/<hold_id>/capture")
@operation(summary="Capture a hold", tag="holds", body=HoldCaptureSchema, response=HoldSchema,
           errors=(402, 404, 409))
def capture_hold(hold_id: str) -> Response:
    """Spend ``value`` credits of the hold (default all) as one ``usage`` entry
    and release the rest. 409 ``hold_not_active`` if it was already captured,
    released, or has expired; 402 if a void, expiry or refund took its credits."""
    merchant_id = authenticate()
    data = load(_capture_schema)
    return write(merchant_id, data, lambda: (
        holds.capture(hold_id, merchant_id, data.get("value"), actor=actor()), 200))


@blueprint.post("/addons/holds/<hold_id>/release")
@operation(summary="Release a hold", tag="holds", body=WriteSchema, response=HoldSchema, errors=(404, 409))
def release_hold(hold_id: str) -> Response:
    """Give the hold's credits back to available. 409 ``hold_not_active`` if it
    was already captured, released, or has expired."""
    merchant_id = authenticate()
    data = load(_release_schema)
    return write(merchant_id, data, lambda: (holds.release(hold_id, merchant_id), 200))
