"""Merchants' webhook endpoints, their deliveries and attempts: the service the API calls.

Every function takes the merchant's id and only ever sees that merchant's
objects: another merchant's id is "not found". Secrets leave this module only
from :func:`create_endpoint` and :func:`rotate_secret`, once each.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app

from addon_plugin.errors import ValidationError
from addon_plugin.limits import MAX_PAGE_SIZE
from storage import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent, new_id, transaction, utcnow

from .dispatcher import forget_endpoints
from .errors import DeliveryNotFound, EndpointDisabled, EndpointNotFound
from .events import EVENT_TYPES
from .signing import generate_secret
from .urls import check_url

__all__ = [
    "MAX_DESCRIPTION",
    "Endpoint",
    "Attempt",
    "Delivery",
    "Page",
    "UNSET",
    "create_endpoint",
    "list_endpoints",
    "get_endpoint",
    "update_endpoint",
    "delete_endpoint",
    "rotate_secret",
    "list_deliveries",
    "get_delivery",
    "redeliver",
]

#: The longest endpoint description.
MAX_DESCRIPTION = 1000

#: Marks an argument of :func:`update_endpoint` that is not being changed.
UNSET: Any = object()


@dataclass(frozen=True)
class Endpoint:
    """A webhook endpoint as the API shows it (never with its secret)."""

    id: str
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Attempt:
    """One HTTP attempt of a delivery."""

    id: str
    number: int
    status_code: int | None
    duration_ms: int
    error: str | None
    response_excerpt: str | None
    created_at: datetime


@dataclass(frozen=True)
class Delivery:
    """One event owed to one endpoint, with its attempts (oldest first)."""

    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    status: str
    attempt_count: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    completed_at: datetime | None
    created_at: datetime
    attempts: list[Attempt]


@dataclass(frozen=True)
class Page:
    """One page of a list, newest first; ``next_cursor`` fetches the next (None: no more)."""

    data: list[Any]
    next_cursor: str | None


def _endpoint(row: WebhookEndpoint) -> Endpoint:
    return Endpoint(row.id, row.url, row.description, json.loads(row.event_types), bool(row.enabled),
                    row.disabled_reason, row.created_at, row.updated_at)


def _check_url(url: Any) -> str:
    return check_url(url, allow_private=bool(current_app.config["ADDONS_WEBHOOK_ALLOW_PRIVATE_URLS"]))


def _check_event_types(event_types: Iterable[str] | None) -> str:
    """The event types as stored (a JSON list, [] meaning all), or a ValidationError."""
    if event_types is None:
        return "[]"
    if isinstance(event_types, str) or not all(isinstance(item, str) for item in event_types):
        raise ValidationError(fields={"event_types": ["Must be a list of event types."]})
    chosen = list(dict.fromkeys(event_types))
    unknown = [item for item in chosen if item not in EVENT_TYPES]
    if unknown:
        raise ValidationError(fields={"event_types": [
            f"Unknown event type(s) {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}."]})
    return json.dumps(chosen)


def _check_description(description: Any) -> str:
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise ValidationError(fields={"description": [f"Must be a string of at most {MAX_DESCRIPTION} characters."]})
    return description


def _own_endpoint(merchant_id: str, endpoint_id: str) -> WebhookEndpoint:
    row = WebhookEndpoint.get_or_none((WebhookEndpoint.id == endpoint_id) & (WebhookEndpoint.merchant == merchant_id))
    if row is None:
        raise EndpointNotFound(endpoint_id=endpoint_id)
    return row


def _check_limit(limit: int) -> int:
    if type(limit) is not int or not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValidationError(fields={"limit": [f"Must be an integer from 1 to {MAX_PAGE_SIZE}."]})
    return limit


def create_endpoint(merchant_id: str, url: str, event_types: Iterable[str] | None = None,
                    description: str = "") -> tuple[Endpoint, str]:
    """A new endpoint and its secret (the only time the secret is returned, with rotation).

    ``event_types`` None or empty means every type. The URL must pass the SSRF guard.
    """
    fields = dict(url=_check_url(url), event_types=_check_event_types(event_types),
                  description=_check_description(description))
    secret = generate_secret()
    now = utcnow()
    row = WebhookEndpoint.create(id=new_id("ep"), merchant=merchant_id, secret=secret,
                                 created_at=now, updated_at=now, **fields)
    forget_endpoints(merchant_id)
    return _endpoint(row), secret


def list_endpoints(merchant_id: str, *, limit: int = 50, cursor: str | None = None) -> Page:
    """The merchant's endpoints, newest first."""
    query = WebhookEndpoint.select().where(WebhookEndpoint.merchant == merchant_id)
    if cursor:
        query = query.where(WebhookEndpoint.id < cursor)
    rows = list(query.order_by(WebhookEndpoint.id.desc()).limit(_check_limit(limit) + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page([_endpoint(row) for row in rows], rows[-1].id if more else None)


def get_endpoint(merchant_id: str, endpoint_id: str) -> Endpoint:
    """One of the merchant's endpoints, or :class:`EndpointNotFound`."""
    return _endpoint(_own_endpoint(merchant_id, endpoint_id))


def update_endpoint(merchant_id: str, endpoint_id: str, *, url: Any = UNSET, event_types: Any = UNSET,
                    description: Any = UNSET, enabled: Any = UNSET) -> Endpoint:
    """Change the fields given (others stay). Enabling clears ``disabled_reason``
    and lets its pending deliveries go out again."""
    changes: dict[str, Any] = {}
    if url is not UNSET:
        changes["url"] = _check_url(url)
    if event_types is not UNSET:
        changes["event_types"] = _check_event_types(event_types)
    if description is not UNSET:
        changes["description"] = _check_description(description)
    if enabled is not UNSET:
        if not isinstance(enabled, bool):
            raise ValidationError(fields={"enabled": ["Must be true or false."]})
        changes["enabled"] = enabled
        changes["disabled_reason"] = None if enabled else "disabled_by_merchant"
    with transaction():
        row = _own_endpoint(merchant_id, endpoint_id)
        if changes:
            changes["updated_at"] = utcnow()
            WebhookEndpoint.update(**changes).where(WebhookEndpoint.id == row.id).execute()
            forget_endpoints(merchant_id)
            row = WebhookEndpoint.get_by_id(row.id)
    return _endpoint(row)


def delete_endpoint(merchant_id: str, endpoint_id: str) -> None:
    """Delete the endpoint, its deliveries and their attempts; nothing more is sent to it."""
    with transaction():
        row = _own_endpoint(merchant_id, endpoint_id)
        deliveries = WebhookDelivery.select(WebhookDelivery.id).where(WebhookDelivery.endpoint == row.id)
        WebhookAttempt.delete().where(WebhookAttempt.delivery.in_(deliveries)).execute()
        WebhookDelivery.delete().where(WebhookDelivery.endpoint == row.id).execute()
        row.delete_instance()
        forget_endpoints(merchant_id)


def rotate_secret(merchant_id: str, endpoint_id: str) -> tuple[Endpoint, str]:
    """A new secret for the endpoint; the old one also signs until the grace period ends.

    Both signatures go in ``webhook-signature`` for ``ADDONS_WEBHOOK_SECRET_GRACE``
    seconds, so a receiver can switch secrets without dropping a message; a second
    rotation within the grace period retires the oldest secret at once."""
    secret = generate_secret()
    now = utcnow()
    grace = timedelta(seconds=float(current_app.config["ADDONS_WEBHOOK_SECRET_GRACE"]))
    with transaction():
        row = _own_endpoint(merchant_id, endpoint_id)
        WebhookEndpoint.update(secret=secret, previous_secret=row.secret, previous_secret_expires_at=now + grace,
                               updated_at=now).where(WebhookEndpoint.id == row.id).execute()
        row = WebhookEndpoint.get_by_id(row.id)
    return _endpoint(row), secret


def _deliveries(rows: list[WebhookDelivery]) -> list[Delivery]:
    attempts: dict[str, list[Attempt]] = {row.id: [] for row in rows}
    if rows:
        for attempt in (WebhookAttempt.select().where(WebhookAttempt.delivery.in_(list(attempts)))
                        .order_by(WebhookAttempt.number, WebhookAttempt.id)):
            attempts[attempt.delivery_id].append(Attempt(
                attempt.id, attempt.number, attempt.status_code, attempt.duration_ms, attempt.error,
                attempt.response_excerpt, attempt.created_at))
    return [Delivery(row.id, row.endpoint_id, row.event_id, row.event.type, row.status, row.attempt_count,
                     row.next_attempt_at, row.last_attempt_at, row.completed_at, row.created_at, attempts[row.id])
            for row in rows]


def list_deliveries(merchant_id: str, endpoint_id: str, *, limit: int = 50, cursor: str | None = None,
                    status: str | None = None) -> Page:
    """The endpoint's deliveries with their attempts, newest first; optionally one ``status``."""
    endpoint = _own_endpoint(merchant_id, endpoint_id)
    query = (WebhookDelivery.select(WebhookDelivery, WebhookEvent).join(WebhookEvent)
             .where(WebhookDelivery.endpoint == endpoint.id))
    if status is not None:
        if status not in ("pending", "succeeded", "failed"):
            raise ValidationError(fields={"status": ["Must be pending, succeeded or failed."]})
        query = query.where(WebhookDelivery.status == status)
    if cursor:
        query = query.where(WebhookDelivery.id < cursor)
    rows = list(query.order_by(WebhookDelivery.id.desc()).limit(_check_limit(limit) + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(_deliveries(rows), rows[-1].id if more else None)


def _own_delivery(merchant_id: str, delivery_id: str) -> WebhookDelivery:
    row = (WebhookDelivery.select(WebhookDelivery, WebhookEvent, WebhookEndpoint)
           .join_from(WebhookDelivery, WebhookEvent).join_from(WebhookDelivery, WebhookEndpoint)
           .where((WebhookDelivery.id == delivery_id) & (WebhookEndpoint.merchant == merchant_id))
           .get_or_none())
    if row is None:
        raise DeliveryNotFound(delivery_id=delivery_id)
    return row


def get_delivery(merchant_id: str, delivery_id: str) -> Delivery:
    """One of the merchant's deliveries with its attempts, or :class:`DeliveryNotFound`."""
    return _deliveries([_own_delivery(merchant_id, delivery_id)])[0]


def redeliver(merchant_id: str, delivery_id: str) -> Delivery:
    """Queue one more attempt of the delivery, due now, with the same ``webhook-id``.

    Works on any delivery (succeeded, failed or pending); the worker makes the
    attempt. A failed delivery gets that one attempt, no new retry schedule.
    """
    with transaction():
        row = _own_delivery(merchant_id, delivery_id)
        if not row.endpoint.enabled:
            raise EndpointDisabled(endpoint_id=row.endpoint_id)
        WebhookDelivery.update(status="pending", next_attempt_at=utcnow(), completed_at=None).where(
            WebhookDelivery.id == row.id).execute()
    return get_delivery(merchant_id, delivery_id)
