"""Webhooks' own resources → their JSON shapes: endpoints, deliveries, attempts.

The one representation of each, used by the API's views; the schemas in
:mod:`webhooks.api` document each shape, and a test checks that every presenter's
output is exactly its schema's fields.
"""

from __future__ import annotations

from typing import Any

from storage import isoformat

from .endpoints import Attempt, Delivery, Endpoint

__all__ = ["endpoint_body", "delivery_body", "attempt_body"]


def endpoint_body(endpoint: Endpoint, secret: str | None = None) -> dict[str, Any]:
    """An endpoint; with ``secret`` only as creation and rotation answer it."""
    body = {
        "id": endpoint.id,
        "url": endpoint.url,
        "description": endpoint.description,
        "event_types": endpoint.event_types,
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "created_at": isoformat(endpoint.created_at),
        "updated_at": isoformat(endpoint.updated_at),
    }
    if secret is not None:
        body["secret"] = secret
    return body


def attempt_body(attempt: Attempt) -> dict[str, Any]:
    """One HTTP attempt of a delivery."""
    return {
        "id": attempt.id,
        "number": attempt.number,
        "status_code": attempt.status_code,
        "duration_ms": attempt.duration_ms,
        "error": attempt.error,
        "response_excerpt": attempt.response_excerpt,
        "created_at": isoformat(attempt.created_at),
    }


def delivery_body(delivery: Delivery) -> dict[str, Any]:
    """A delivery with its attempts, oldest first."""
    return {
        "id": delivery.id,
        "endpoint_id": delivery.endpoint_id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "status": delivery.status,
        "attempt_count": delivery.attempt_count,
        "next_attempt_at": isoformat(delivery.next_attempt_at),
        "last_attempt_at": isoformat(delivery.last_attempt_at),
        "completed_at": isoformat(delivery.completed_at),
        "created_at": isoformat(delivery.created_at),
        "attempts": [attempt_body(attempt) for attempt in delivery.attempts],
    }
