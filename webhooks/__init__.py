"""Webhooks: signed, durable, retried delivery of balance events to merchants.

A subscriber to the plugin like any third party: it listens to the ledger's
signals and adds its routes, worker tasks and commands in :func:`init_app`;
the plugin never imports it but there.

    ledger ──signals──> dispatcher ──writes, in the change's transaction──> outbox tables
                                                                             │ claimed by
    merchant's server <──signed POST── delivery (the worker task) <──────────┘

- :mod:`webhooks.signing` — Standard Webhooks signatures; :func:`verify` for receivers. Pure.
- :mod:`webhooks.events` — the event catalogue and each event's body. Pure.
- :mod:`webhooks.dispatcher` — subscribes to the ledger's signals; writes events and deliveries.
- :mod:`webhooks.schedule` — the retry policy (schedule, jitter, ``Retry-After``). Pure.
- :mod:`webhooks.delivery` — the worker: leases, HTTP attempts, results, pruning. The only HTTP.
- :mod:`webhooks.urls` — the SSRF guard.
- :mod:`webhooks.endpoints` — the endpoints service; :mod:`webhooks.present` — its resources' JSON shapes.
- :mod:`webhooks.api`, :mod:`webhooks.cli` — its HTTP routes and its ``flask addons`` command.
"""

from __future__ import annotations

import time

from flask import Flask, current_app

from addon_plugin.api import mount
from addon_plugin.cli import addons_cli, register_pruner
from addon_plugin.worker import register_task

from . import api, cli, delivery, dispatcher, endpoints
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


def _prune() -> int:
    """Delete successful deliveries older than ``ADDONS_WEBHOOK_PRUNE_AFTER``."""
    return delivery.prune(float(current_app.config["ADDONS_WEBHOOK_PRUNE_AFTER"]))


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
        return _prune()


def init_app(app: Flask) -> None:
    """Wire webhooks into an app: the outbox's signal subscriptions
    (``sender=app``), the endpoints API under ``ADDONS_URL_PREFIX``, the
    worker's tasks and the ``redeliver`` and ``prune`` commands.

    Reads the ``ADDONS_WEBHOOK_*`` keys (defaults in ``addon_plugin.config``).
    """
    _check_config(app)
    dispatcher.connect(app)
    mount(app, api.blueprint)
    register_task(app, "webhooks.deliver", delivery.deliver_due)
    register_task(app, "webhooks.prune", _PruneWhenDue())
    register_pruner(app, "webhook delivery(ies)", _prune)
    addons_cli.add_command(cli.redeliver)
