"""The webhook endpoints API: a merchant registers URLs, rotates their secrets,
reads deliveries with their attempts and asks for a redelivery.

Mounted by :func:`webhooks.init_app` on a blueprint of its own under
``ADDONS_URL_PREFIX``, answering like the plugin's API. Views are thin: no HTTP
attempt is made here; a redelivery is queued for the worker.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app
from marshmallow import Schema, fields, validate

from addon_plugin.api import api_blueprint
from addon_plugin.api.http import authenticate, load, load_query, respond, write
from addon_plugin.api.openapi import operation
from addon_plugin.schemas import IdempotencyKey, ListQuerySchema

from . import endpoints as service
from .events import EVENT_TYPES
from .present import delivery_body, endpoint_body
from .urls import MAX_URL_LENGTH, check_url

__all__ = [
    "EndpointSchema",
    "EndpointWithSecretSchema",
    "EndpointCreateSchema",
    "EndpointUpdateSchema",
    "AttemptSchema",
    "DeliverySchema",
    "DeliveryQuerySchema",
    "blueprint",
]

blueprint = api_blueprint("addons_webhooks", __name__)


class _Strict(Schema):
    class Meta:
        ordered = True


def _event_types(**kwargs: Any) -> fields.List:
    return fields.List(
        fields.String(validate=validate.OneOf(EVENT_TYPES)), allow_none=True,
        metadata={"description": "Event types to receive; omitted, null or empty = all.",
                  "example": ["balance.low", "balance.depleted"]}, **kwargs)


class EndpointCreateSchema(_Strict):
    """A new webhook endpoint."""

    url = fields.String(required=True, validate=validate.Length(1, MAX_URL_LENGTH),
                        metadata={"example": "https://example.com/webhooks/credits"})
    event_types = _event_types(load_default=None)
    description = fields.String(validate=validate.Length(max=service.MAX_DESCRIPTION), load_default="")
    idempotency_key = IdempotencyKey(load_only=True)


class EndpointUpdateSchema(_Strict):
    """Fields a merchant may change; every one optional. ``enabled: true``
    re-enables an endpoint the plugin disabled (its pending deliveries resume)."""

    url = fields.String(validate=validate.Length(1, MAX_URL_LENGTH))
    event_types = _event_types()
    description = fields.String(validate=validate.Length(max=service.MAX_DESCRIPTION))
    enabled = fields.Boolean(truthy={True}, falsy={False})
    idempotency_key = IdempotencyKey(load_only=True)


class EndpointSchema(_Strict):
    """A webhook endpoint as the API shows it (never with its secret)."""

    id = fields.String(metadata={"example": "ep_01jd3k5q8w2n7x4m6r9t0v1b2c"})
    url = fields.String()
    description = fields.String()
    event_types = fields.List(fields.String())
    enabled = fields.Boolean()
    disabled_reason = fields.String(allow_none=True, metadata={"description": "gone (the URL answered 410) "
                                                               "or disabled_by_merchant"})
    created_at = fields.String(metadata={"format": "date-time"})
    updated_at = fields.String(metadata={"format": "date-time"})


class EndpointWithSecretSchema(EndpointSchema):
    """The endpoint with its signing secret: only from creation and rotation
    (their idempotent replays leave it out)."""

    secret = fields.String(metadata={"example": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})


class AttemptSchema(_Strict):
    """One HTTP attempt of a delivery."""

    id = fields.String()
    number = fields.Integer()
    status_code = fields.Integer(allow_none=True)
    duration_ms = fields.Integer()
    error = fields.String(allow_none=True)
    response_excerpt = fields.String(allow_none=True)
    created_at = fields.String(metadata={"format": "date-time"})


class DeliverySchema(_Strict):
    """One event owed to one endpoint, with its attempts (oldest first)."""

    id = fields.String(metadata={"example": "dlv_01jd3k5q8w2n7x4m6r9t0v1b2c"})
    endpoint_id = fields.String()
    event_id = fields.String(metadata={"description": "The webhook-id header of every attempt."})
    event_type = fields.String()
    status = fields.String(metadata={"enum": ["pending", "succeeded", "failed"]})
    attempt_count = fields.Integer()
    next_attempt_at = fields.String(allow_none=True, metadata={"format": "date-time"})
    last_attempt_at = fields.String(allow_none=True, metadata={"format": "date-time"})
    completed_at = fields.String(allow_none=True, metadata={"format": "date-time"})
    created_at = fields.String(metadata={"format": "date-time"})
    attempts = fields.List(fields.Nested(AttemptSchema))


class DeliveryQuerySchema(ListQuerySchema):
    """``limit``, ``cursor`` and optionally one ``status``."""

    status = fields.String(validate=validate.OneOf(["pending", "succeeded", "failed"]))


class _KeyOnlySchema(_Strict):
    """The body of a write that takes no fields: at most an idempotency key."""

    idempotency_key = IdempotencyKey(load_only=True)


class _DeletedSchema(_Strict):
    id = fields.String()
    deleted = fields.Boolean()


_create_schema = EndpointCreateSchema()
_update_schema = EndpointUpdateSchema()
_key_only = _KeyOnlySchema()
_list_query = ListQuerySchema()
_delivery_query = DeliveryQuerySchema()


def _without_secret(body: dict[str, Any]) -> dict[str, Any]:
    """What an idempotent replay may show: the endpoint, never its secret (which
    would otherwise be kept in the idempotency record too)."""
    return {name: value for name, value in body.items() if name != "secret"}


def _vet_url(data: dict[str, Any]) -> None:
    """The SSRF guard, at validation time: refused URLs are 422 ``invalid_url``."""
    if "url" in data:
        check_url(data["url"], allow_private=bool(current_app.config["ADDONS_WEBHOOK_ALLOW_PRIVATE_URLS"]))


@blueprint.post("/addons/webhook-endpoints")
@operation(summary="Register a webhook endpoint", tag="webhooks", body=EndpointCreateSchema,
           response=EndpointWithSecretSchema, status=201)
def create_webhook_endpoint() -> Response:
    """Answers the endpoint with its ``secret`` (``whsec_…``): the only time it is
    shown, with rotation. An idempotent replay answers the same endpoint without it."""
    merchant_id = authenticate()
    data = load(_create_schema)
    _vet_url(data)

    def apply() -> tuple[dict[str, Any], int]:
        endpoint, secret = service.create_endpoint(merchant_id, data["url"], data["event_types"],
                                                   data["description"])
        return endpoint_body(endpoint, secret), 201

    return write(merchant_id, data, apply, redact=_without_secret)


@blueprint.get("/addons/webhook-endpoints")
@operation(summary="List webhook endpoints", tag="webhooks", query=ListQuerySchema, response=EndpointSchema,
           many=True)
def list_webhook_endpoints() -> Response:
    """The merchant's endpoints, newest first."""
    merchant_id = authenticate()
    query = load_query(_list_query)
    page = service.list_endpoints(merchant_id, limit=query["limit"], cursor=query.get("cursor"))
    return respond({"data": [endpoint_body(e) for e in page.data], "next_cursor": page.next_cursor})


@blueprint.get("/addons/webhook-endpoints/<endpoint_id>")
@operation(summary="Read a webhook endpoint", tag="webhooks", response=EndpointSchema, errors=(404,))
def get_webhook_endpoint(endpoint_id: str) -> Response:
    """One endpoint (never its secret)."""
    merchant_id = authenticate()
    return respond(endpoint_body(service.get_endpoint(merchant_id, endpoint_id)))


@blueprint.patch("/addons/webhook-endpoints/<endpoint_id>")
@operation(summary="Change a webhook endpoint", tag="webhooks", body=EndpointUpdateSchema,
           response=EndpointSchema, errors=(404,))
def update_webhook_endpoint(endpoint_id: str) -> Response:
    """Changes the fields given; the others stay."""
    merchant_id = authenticate()
    data = load(_update_schema)
    _vet_url(data)
    changes = {key: value for key, value in data.items() if key != "idempotency_key"}

    def apply() -> tuple[dict[str, Any], int]:
        return endpoint_body(service.update_endpoint(merchant_id, endpoint_id, **changes)), 200

    return write(merchant_id, data, apply)


@blueprint.delete("/addons/webhook-endpoints/<endpoint_id>")
@operation(summary="Delete a webhook endpoint", tag="webhooks", response=_DeletedSchema, errors=(404,))
def delete_webhook_endpoint(endpoint_id: str) -> Response:
    """Deletes the endpoint with its deliveries; nothing more is sent to it."""
    merchant_id = authenticate()

    def apply() -> tuple[dict[str, Any], int]:
        service.delete_endpoint(merchant_id, endpoint_id)
        return {"id": endpoint_id, "deleted": True}, 200

    return write(merchant_id, load(_key_only), apply)


@blueprint.post("/addons/webhook-endpoints/<endpoint_id>/rotate-secret")
@operation(summary="Rotate a webhook endpoint's secret", tag="webhooks", response=EndpointWithSecretSchema,
           errors=(404,))
def rotate_webhook_secret(endpoint_id: str) -> Response:
    """Answers the new ``secret`` (an idempotent replay: the endpoint without it).
    The old one keeps signing too (both signatures are sent) for
    ``ADDONS_WEBHOOK_SECRET_GRACE`` seconds (24 h)."""
    merchant_id = authenticate()

    def apply() -> tuple[dict[str, Any], int]:
        endpoint, secret = service.rotate_secret(merchant_id, endpoint_id)
        return endpoint_body(endpoint, secret), 200

    return write(merchant_id, load(_key_only), apply, redact=_without_secret)


@blueprint.get("/addons/webhook-endpoints/<endpoint_id>/deliveries")
@operation(summary="List an endpoint's deliveries with their attempts", tag="webhooks",
           query=DeliveryQuerySchema, response=DeliverySchema, many=True, errors=(404,))
def list_webhook_deliveries(endpoint_id: str) -> Response:
    """Newest first; each with every attempt (status code, duration, error, response excerpt)."""
    merchant_id = authenticate()
    query = load_query(_delivery_query)
    page = service.list_deliveries(merchant_id, endpoint_id, limit=query["limit"], cursor=query.get("cursor"),
                                   status=query.get("status"))
    return respond({"data": [delivery_body(d) for d in page.data], "next_cursor": page.next_cursor})


@blueprint.post("/addons/deliveries/<delivery_id>/redeliver")
@operation(summary="Redeliver a webhook", tag="webhooks", response=DeliverySchema, errors=(404, 409))
def redeliver_webhook(delivery_id: str) -> Response:
    """Queues one more attempt, due now, with the same ``webhook-id``; the worker
    makes it. 409 ``endpoint_disabled`` if the endpoint is disabled."""
    merchant_id = authenticate()

    def apply() -> tuple[dict[str, Any], int]:
        return delivery_body(service.redeliver(merchant_id, delivery_id)), 200

    return write(merchant_id, load(_key_only), apply)
