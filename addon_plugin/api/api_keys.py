"""``/addons/api-keys``: the merchant's API keys. A key's secret is shown once,
in the answer that creates it; revoking one refuses it at once."""

from __future__ import annotations

from typing import Any

from flask import Response

from .. import merchants
from ..present import api_key_body, new_api_key_body
from ..schemas import ApiKeyCreatedSchema, ApiKeySchema, ListQuerySchema, WriteSchema
from . import blueprint
from .http import authenticate, load, load_query, respond, write
from .openapi import operation

_write_schema = WriteSchema()
_list_schema = ListQuerySchema()


def _without_secret(body: dict[str, Any]) -> dict[str, Any]:
    """What an idempotent replay may show: never the key itself."""
    return {name: value for name, value in body.items() if name != "key"}


@blueprint.post("/addons/api-keys")
@operation(summary="Create an API key", tag="api-keys", body=WriteSchema, response=ApiKeyCreatedSchema,
           status=201)
def create_api_key() -> Response:
    """A new key for this merchant. ``key`` appears in this answer only: an
    idempotent replay answers the same ``id`` without it."""
    merchant_id = authenticate()
    data = load(_write_schema)
    return write(merchant_id, data, lambda: (new_api_key_body(merchants.create_api_key(merchant_id)), 201),
                 redact=_without_secret)


@blueprint.get("/addons/api-keys")
@operation(summary="List API keys", tag="api-keys", query=ListQuerySchema, response=ApiKeySchema, many=True)
def list_api_keys() -> Response:
    """The merchant's keys, revoked ones included, newest first; never a secret."""
    merchant_id = authenticate()
    return respond(merchants.list_api_keys(merchant_id, **load_query(_list_schema)))


@blueprint.delete("/addons/api-keys/<key_id>")
@operation(summary="Revoke an API key", tag="api-keys", response=ApiKeySchema, errors=(404,))
def revoke_api_key(key_id: str) -> Response:
    """Revoke the key: every later request with it is 401 (a key may revoke
    itself). Revoking a revoked key changes nothing."""
    merchant_id = authenticate()
    data = load(_write_schema)
    return write(merchant_id, data, lambda: (api_key_body(merchants.revoke_api_key(key_id, merchant_id)), 200))
