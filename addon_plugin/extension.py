"""The Flask extension: the one place where the pieces are wired together."""

from __future__ import annotations

import logging
import os
from typing import Any, Iterable, Mapping

from flask import Flask

import storage

from . import topup
from .config import DEFAULTS
from .hooks import HostHooks

__all__ = ["AddonPlugin"]

log = logging.getLogger(__name__)


def _setting(type_: str, label: str, help_text: str) -> dict[str, str]:
    return {"type": type_, "label": label, "help_text": help_text}


class AddonPlugin(HostHooks):
    """Credit add-ons for a Flask storefront, in the Flask-extension shape::

        plugin = AddonPlugin()      # or AddonPlugin(app)
        plugin.init_app(app)

    Configuration precedence: keys the host set in ``app.config`` win over a
    ``configuration`` list given here (Saleor's ``[{"name", "value"}]``), which
    wins over :data:`addon_plugin.config.DEFAULTS`.

    The database is bound process-wide (Peewee models share one proxy): apps in
    one process share ``ADDONS_DATABASE_URL``, while their signals stay apart
    (each subscriber is connected with ``sender=app``).

    The host-facing hooks and loaders come from :class:`~addon_plugin.hooks.HostHooks`.
    """

    PLUGIN_ID = "addons.credits"
    PLUGIN_NAME = "Credit add-ons"
    DEFAULT_ACTIVE = True
    #: Saleor-style settings: every ``ADDONS_*`` key (the source of truth) with its default.
    DEFAULT_CONFIGURATION = [{"name": name, "value": value} for name, value in DEFAULTS.items()]
    #: How a Saleor-style settings page shows each setting ("Secret": write-only, never echoed).
    CONFIG_STRUCTURE = {
        "ADDONS_ACTIVE": _setting("Boolean", "Active", "Off: hooks pass values through, the API answers 503."),
        "ADDONS_DATABASE_URL": _setting("Secret", "Database URL",
                                        "sqlite:///path or postgresql://user:password@host/db (may hold a password)."),
        "ADDONS_DATABASE_POOL_SIZE": _setting("String", "Database pool size", "PostgreSQL connections per process."),
        "ADDONS_URL_PREFIX": _setting("String", "API URL prefix", "Where the API is mounted, e.g. /api."),
        "ADDONS_DEFAULT_CURRENCY": _setting("String", "Default currency", "ISO 4217 code for new products."),
        "ADDONS_MAX_CONTENT_LENGTH": _setting("String", "Largest request body", "Bytes the API reads (413 past it)."),
        "ADDONS_IDEMPOTENCY_TTL": _setting("String", "Idempotency TTL", "Seconds an idempotent result is kept."),
        "ADDONS_PAYMENT_GATEWAY": _setting("String", "Payment gateway", "\"test\", \"stripe\" or a dotted path."),
        "ADDONS_TOP_UP_MODE": _setting("String", "Top-up mode", "inline (before the response) or worker."),
        "ADDONS_TOP_UP_MAX_BANKS": _setting("String", "Most banks per top-up", "Banks one top-up may buy."),
        "ADDONS_TOP_UP_MAX_FAILURES": _setting("String", "Failures before switching off",
                                               "Consecutive failed top-ups that switch auto top-up off."),
        "ADDONS_TOP_UP_RETRY_AFTER": _setting("String", "Retry after failure", "Seconds before trying again."),
        "ADDONS_TOP_UP_DAILY_LIMIT": _setting("String", "Daily top-up limit", "Successful top-ups per account per day."),
        "ADDONS_TOP_UP_LEASE": _setting("String", "Top-up lease (s)",
                                        "Seconds before another worker resumes a top-up whose worker died."),
        "ADDONS_TOP_UP_RETRY_SCHEDULE": _setting("String", "Gateway retry schedule",
                                                 "Seconds between retries of a gateway that did not answer."),
        "ADDONS_TOP_UP_LOOKUP_INTERVAL": _setting("String", "Gateway lookup interval (s)",
                                                  "Seconds between lookups of a top-up whose outcome is unknown."),
        "ADDONS_STRIPE_API_KEY": _setting("Secret", "Stripe secret key", "sk_live_… or sk_test_… for the Stripe gateway."),
        "ADDONS_STRIPE_API_BASE": _setting("String", "Stripe API base URL", "https://api.stripe.com (a mock in tests)."),
        "ADDONS_WEBHOOK_RETRY_SCHEDULE": _setting("String", "Webhook retry schedule",
                                                  "Delay in seconds before each delivery attempt."),
        "ADDONS_WEBHOOK_TIMEOUT": _setting("String", "Webhook timeouts", "(connect, read) seconds."),
        "ADDONS_WEBHOOK_ALLOW_PRIVATE_URLS": _setting("Boolean", "Allow private webhook URLs",
                                                      "Only for development: allows loopback and private hosts."),
        "ADDONS_WEBHOOK_LEASE": _setting("String", "Delivery lease", "Seconds a worker holds a claimed delivery."),
        "ADDONS_WEBHOOK_SECRET_GRACE": _setting("String", "Secret rotation grace",
                                                "Seconds the previous secret keeps signing after a rotation."),
        "ADDONS_WEBHOOK_PRUNE_AFTER": _setting("String", "Keep deliveries for",
                                               "Seconds after which successful deliveries are pruned."),
        "ADDONS_WEBHOOK_PRUNE_INTERVAL": _setting("String", "Prune interval", "Seconds between two prunes."),
    }

    def __init__(self, app: Flask | None = None, *,
                 configuration: Iterable[Mapping[str, Any]] | None = None) -> None:
        self.configuration = {item["name"]: item["value"] for item in configuration or ()}
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Apply config defaults, bind the database, mount the blueprint, add the
        ``flask addons`` commands and connect the plugin's own signal subscribers.

        Reads every ``ADDONS_*`` key in :data:`addon_plugin.config.DEFAULTS`.
        """
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, self.configuration.get(key, value))
        if not app.config["ADDONS_DATABASE_URL"]:
            path = os.path.join(app.instance_path, "addons.sqlite3")
            app.config["ADDONS_DATABASE_URL"] = f"sqlite:///{path}"

        storage.bind(app.config["ADDONS_DATABASE_URL"], pool_size=app.config["ADDONS_DATABASE_POOL_SIZE"])
        app.teardown_appcontext(_close_connection)

        import webhooks  # it depends on the plugin, never the other way round: wired here only

        from .api import create_blueprint, install_error_pages
        from .cli import addons_cli

        app.register_blueprint(create_blueprint(), url_prefix=app.config["ADDONS_URL_PREFIX"])
        install_error_pages(app)
        app.cli.add_command(addons_cli)
        # Features that subscribe to signals or add worker tasks wire themselves here.
        topup.init_app(app)
        webhooks.init_app(app)
        app.extensions["addons"] = self


def _close_connection(exc: BaseException | None) -> None:
    """Give the request's connection back to the pool. A connection the database
    dropped is discarded by the pool, so the next request gets a fresh one."""
    database = storage.db.obj
    if database is None or database.is_closed():
        return
    try:
        database.close()
    except Exception:  # e.g. the server went away mid-request
        log.warning("could not return the database connection cleanly", exc_info=True)
        database.dispose()
