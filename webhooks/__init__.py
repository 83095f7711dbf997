"""Webhooks: signed, durable, retried delivery of balance events to merchants.

How the pieces fit (SPEC §5, §8)::

    ledger ──signals──> dispatcher ──writes, in the change's transaction──> outbox tables
                                                                             │ claimed by
    merchant's server <──signed POST── delivery (the worker task) <──────────┘

- :mod:`webhooks.signing` — Standard Webhooks signatures; :func:`verify` for receivers. Pure.
- :mod:`webhooks.events` — the event catalogue and each event's body. Pure.
- :mod:`webhooks.dispatcher` — subscribes to the ledger's signals; writes events and deliveries.
- :mod:`webhooks.schedule` — the retry policy (schedule, jitter, ``Retry-After``). Pure.
- :mod:`webhooks.delivery` — the worker: leases, HTTP attempts, results, pruning. The only HTTP.
- :mod:`webhooks.urls` — the SSRF guard.
- :mod:`webhooks.endpoints` — the endpoints service the API calls.
"""

from __future__ import annotations

import time

from flask import Flask, current_app

from addon_plugin.worker import register_task

from . import delivery, dispatcher, endpoints
from .errors import DeliveryNotFound, EndpointDisabled, EndpointNotFound, InvalidUrl
from .events import EVENT_TYPES
from .signing import WebhookVerificationError, generate_secret, sign, signature_headers, verify

__all__ = [
    "EVENT_TYPES",
    "DeliveryNotFound",
    "EndpointDisabled",
    "EndpointNotFound",
    "InvalidUrl",
    "WebhookVerificationError",
    "endpoints",
    "generate_secret",
    "init_app",
    "sign",
    "signature_headers",
    "verify",
]

def _check_config(app: Flask) -> None:
    retry = app.config["ADDONS_WEBHOOK_RETRY_SCHEDULE"]
    if not retry or any(not isinstance(delay, (int, float)) or delay < 0 for delay in retry):
        raise ValueError("ADDONS_WEBHOOK_RETRY_SCHEDULE must be a non-empty list of delays >= 0 (seconds).")
    timeout = app.config["ADDONS_WEBHOOK_TIMEOUT"]
    if len(timeout) != 2 or sum(timeout) >= app.config["ADDONS_WEBHOOK_LEASE"]:
        raise ValueError("ADDONS_WEBHOOK_TIMEOUT must be (connect, read) seconds, "
                         "together shorter than ADDONS_WEBHOOK_LEASE.")


class _PruneWhenDue:
    """The worker's pruning task (one per app): at most once per
    ``ADDONS_WEBHOOK_PRUNE_INTERVAL`` per process."""

    def __init__(self) -> None:
        self.pruned_at: float | None = None

    def __call__(self) -> int:
        now = time.monotonic()
        interval = current_app.config["ADDONS_WEBHOOK_PRUNE_INTERVAL"]
        if self.pruned_at is not None and now - self.pruned_at < interval:
            return 0
        self.pruned_at = now
        return delivery.prune(float(current_app.config["ADDONS_WEBHOOK_PRUNE_AFTER"]))


def init_app(app: Flask) -> None:
    """Wire webhooks into an app: config defaults, the outbox's signal
    subscriptions (``sender=app``) and the worker's tasks.

    Reads the ``ADDONS_WEBHOOK_*`` keys (defaults in ``addon_plugin.config``).
    """
    _check_config(app)
    dispatcher.connect(app)
    register_task(app, "webhooks.deliver", delivery.deliver_due)
    register_task(app, "webhooks.prune", _PruneWhenDue())
