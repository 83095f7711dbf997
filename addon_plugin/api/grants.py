"""Credit grants: give one by hand, list an account's, read one, void one.
Thin: parse, call :mod:`addon_plugin.ledger` / :mod:`addon_plugin.grants`, present."""

from __future__ import annotations

from typing import Any

from flask import Response

import storage

from .. import accounts, grants, ledger
from ..idempotency import Outcome
from ..present import grant_body, grant_created_body
from ..schemas import (
    GrantCreatedSchema,
    GrantCreateSchema,
    GrantListQuerySchema,
    GrantSchema,
    GrantVoidSchema,
)
from . import blueprint
from .http import actor, authenticate, idempotency_key, load, load_query, respond, write
from .openapi import operation

_create_schema = GrantCreateSchema()
_list_schema = GrantListQuerySchema()
_void_schema = GrantVoidSchema()


@blueprint.post("/addons/accounts/<account_id>/grants")
@operation(summary="Give credits as a grant", tag="grants", body=GrantCreateSchema, response=GrantCreatedSchema,
           status=201, errors=(404, 409))
def create_grant(account_id: str) -> Response:
    """``amount`` credits as one grant (``category`` default promotional,
    optional future ``expires_at``, ``priority`` 0-100, lower drawn first),
    written as a positive ``adjustment`` entry; debt is repaid first."""
    merchant_id = authenticate()
    data = load(_create_schema)

    def apply() -> Outcome:
        ledger.get_account(account_id, merchant_id)
        change = ledger.record(
            account_id, data["amount"], "adjustment", description=data["description"],
            reference=data["reference"], metadata=data["metadata"], idempotency_key=idempotency_key(data),
            key_space=ledger.API_KEYS, actor=actor(),
            grant=grants.Terms(category=data["category"], expires_at=data["expires_at"], priority=data["priority"],
                               source="grant"))
        grant = storage.CreditGrant.get_by_id(change.entry.allocations[0].grant_id)
        return Outcome(201, grant_created_body(grant, change), replayed=change.replayed)

    return write(merchant_id, data, apply)


@blueprint.get("/addons/accounts/<account_id>/grants")
@operation(summary="List an account's grants", tag="grants", query=GrantListQuerySchema, response=GrantSchema,
           many=True, errors=(404,))
def list_grants(account_id: str) -> Response:
    """The account's grants, newest first; filter by ``status`` and/or ``category``."""
    merchant_id = authenticate()
    return respond(accounts.list_grants(merchant_id, account_id, **load_query(_list_schema)))


@blueprint.get("/addons/grants/<grant_id>")
@operation(summary="Read a grant", tag="grants", response=GrantSchema, errors=(404,))
def get_grant(grant_id: str) -> Response:
    """One grant; 404 ``grant_not_found`` (also for another merchant's)."""
    merchant_id = authenticate()
    return respond(grant_body(grants.get(grant_id, merchant_id)))


@blueprint.post("/addons/grants/<grant_id>/void")
@operation(summary="Void a grant", tag="grants", body=GrantVoidSchema, response=GrantSchema,
           errors=(404, 409))
def void_grant(grant_id: str) -> Response:
    """Takes the grant's remaining credits out as one ``void`` entry and marks
    it ``voided`` (a grant with nothing remaining is just marked); an expired
    or voided grant is answered as it is."""
    merchant_id = authenticate()
    data = load(_void_schema)

    def apply() -> tuple[dict[str, Any], int]:
        grant = grants.void(grant_id, merchant_id, description=data["description"], actor=actor(),
                            idempotency_key=idempotency_key(data), key_space=ledger.API_KEYS)
        return grant_body(grant), 200

    return write(merchant_id, data, apply)
