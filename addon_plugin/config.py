"""Every ``ADDONS_*`` setting, declared once: its default, the field type a
Saleor-style settings page shows, a label and help.

``init_app`` applies the defaults with ``app.config.setdefault`` (keys the host
set win); ``DEFAULTS``, ``DEFAULT_CONFIGURATION`` and ``CONFIG_STRUCTURE`` are
derived from :data:`SETTINGS`, so they cannot disagree.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

__all__ = ["Setting", "SETTINGS", "DEFAULTS", "DEFAULT_CONFIGURATION", "CONFIG_STRUCTURE", "from_environ"]

# Field types of a settings page (Saleor's names; "Secret" is write-only, never echoed).
BOOLEAN, INTEGER, STRING, SECRET, LIST = "Boolean", "Integer", "String", "Secret", "List"


class Setting(NamedTuple):
    """One ``ADDONS_*`` setting."""

    default: Any
    type: str
    label: str
    help: str


#: Every setting, one entry per key. ``ADDONS_DATABASE_URL`` = None means an SQLite
#: file in the app's instance folder (worked out in ``init_app``).
SETTINGS: dict[str, Setting] = {
    "ADDONS_ACTIVE": Setting(
        True, BOOLEAN, "Active",
        "False: hooks pass previous_value through and the API answers 503."),
    "ADDONS_DATABASE_URL": Setting(
        None, SECRET, "Database URL",
        "sqlite:///path or postgresql://user:password@host/db; None = instance/addons.sqlite3."),
    "ADDONS_DATABASE_POOL_SIZE": Setting(
        20, INTEGER, "Database pool size",
        "Connections each process keeps open (pooled, SQLite and PostgreSQL alike)."),
    "ADDONS_DATABASE_PREPARE": Setting(
        True, BOOLEAN, "Prepared statements",
        "PostgreSQL: run the plugin's statements as server-side prepared statements (planned once per "
        "connection). False behind a pooler that shares sessions between clients (PgBouncer in transaction mode)."),
    "ADDONS_URL_PREFIX": Setting(
        "/api", STRING, "API URL prefix",
        "Where the blueprint's routes are mounted."),
    "ADDONS_DEFAULT_CURRENCY": Setting(
        "USD", STRING, "Default currency",
        "Currency of a product created without one (ISO 4217)."),
    "ADDONS_MAX_CONTENT_LENGTH": Setting(
        64 * 1024, INTEGER, "Largest request body",
        "Largest request body the API reads, in bytes (larger: 413)."),
    "ADDONS_BATCH_MAX_CONTENT_LENGTH": Setting(
        1024 * 1024, INTEGER, "Largest batch body",
        "Largest body of POST /addons/usage-records, in bytes (larger: 413)."),
    "ADDONS_IDEMPOTENCY_TTL": Setting(
        24 * 3600, INTEGER, "Idempotency TTL",
        "Seconds an idempotent result is kept for replays (Stripe keeps 24 h)."),
    "ADDONS_PAYMENT_GATEWAY": Setting(
        None, STRING, "Payment gateway",
        "A gateway object, a dotted path to one, or a short name (\"test\", \"stripe\")."),
    "ADDONS_TOP_UP_MODE": Setting(
        "worker", STRING, "Top-up mode",
        "\"inline\": run a decided top-up right after the commit; \"worker\": leave it to the worker."),
    "ADDONS_TOP_UP_MAX_BANKS": Setting(
        10, INTEGER, "Most banks per top-up",
        "Most banks one top-up may buy."),
    "ADDONS_TOP_UP_MAX_FAILURES": Setting(
        3, INTEGER, "Failures before switching off",
        "Consecutive failed top-ups after which auto top-up switches off."),
    "ADDONS_TOP_UP_RETRY_AFTER": Setting(
        3600, INTEGER, "Retry after failure",
        "Seconds after a failed top-up before another is tried for that account."),
    "ADDONS_TOP_UP_LEASE": Setting(
        300, INTEGER, "Top-up lease",
        "Seconds a worker holds a top-up it is charging; after that (the worker died) another resumes it."),
    "ADDONS_TOP_UP_DAILY_LIMIT": Setting(
        10, INTEGER, "Daily top-up limit",
        "Successful top-ups per account per UTC day; the next is recorded as failed."),
    "ADDONS_TOP_UP_RETRY_SCHEDULE": Setting(
        [30, 120, 600], LIST, "Gateway retry schedule",
        "Seconds before each retry of a top-up the gateway could not take (network, 5xx); when they are used up "
        "the top-up is unresolved (outcome unknown)."),
    "ADDONS_TOP_UP_LOOKUP_INTERVAL": Setting(
        300, INTEGER, "Gateway lookup interval",
        "Seconds between two lookups at the gateway of an unresolved or pending-settlement top-up."),
    "ADDONS_STRIPE_API_KEY": Setting(
        None, SECRET, "Stripe secret key",
        "Secret API key of the \"stripe\" gateway (sk_live_… / sk_test_…)."),
    "ADDONS_STRIPE_API_BASE": Setting(
        "https://api.stripe.com", STRING, "Stripe API base URL",
        "Base URL of Stripe's API (a mock's URL in tests)."),
    "ADDONS_WEBHOOK_RETRY_SCHEDULE": Setting(
        [0, 5, 300, 1800, 7200, 18000, 36000, 36000], LIST, "Webhook retry schedule",
        "Delay in seconds before each delivery attempt (as many attempts as elements)."),
    "ADDONS_WEBHOOK_TIMEOUT": Setting(
        (3, 15), LIST, "Webhook timeouts",
        "(connect, read) timeouts in seconds for a delivery attempt."),
    "ADDONS_WEBHOOK_ALLOW_PRIVATE_URLS": Setting(
        False, BOOLEAN, "Allow private webhook URLs",
        "True lets webhook URLs point at private, loopback or link-local addresses (development only)."),
    "ADDONS_WEBHOOK_LEASE": Setting(
        120, INTEGER, "Delivery lease",
        "Seconds a worker holds a claimed delivery; after that (the worker died) another may take it."),
    "ADDONS_WEBHOOK_SECRET_GRACE": Setting(
        24 * 3600, INTEGER, "Secret rotation grace",
        "Seconds the previous secret keeps signing after a rotation."),
    "ADDONS_WEBHOOK_PRUNE_AFTER": Setting(
        30 * 24 * 3600, INTEGER, "Keep deliveries for",
        "Seconds after which successful deliveries (and their attempts) are pruned."),
    "ADDONS_WEBHOOK_PRUNE_INTERVAL": Setting(
        3600, INTEGER, "Prune interval",
        "Seconds between two prunes by one worker process."),
    "ADDONS_GRANT_EXPIRY_WARNING": Setting(
        3 * 24 * 3600, INTEGER, "Grant expiry warning",
        "Seconds before a grant's expiry that grant.expiring is sent (None: never)."),
    "ADDONS_PORTAL_PREFIX": Setting(
        "/credits", STRING, "Buyer portal URL prefix",
        "Where the buyer's credit pages are mounted (None: not mounted)."),
    "ADDONS_CONSOLE_PREFIX": Setting(
        "/credits/console", STRING, "Merchant console URL prefix",
        "Where the merchant's credit pages are mounted (None: not mounted)."),
    "ADDONS_SIGN_IN_URL": Setting(
        None, STRING, "Sign-in URL",
        "Where the portal and console send a visitor nobody signed in (None: they answer 401)."),
    "ADDONS_AUTO_TOP_UP_TERMS": Setting(
        None, STRING, "Auto top-up terms",
        "What a buyer agrees to when auto top-up is switched on: a format string with {merchant}, {credits}, "
        "{price}, {currency}, {threshold}, {monthly_limit}; None: the plain-English default."),
    "ADDONS_FORECAST_WINDOW": Setting(
        7 * 24 * 3600, INTEGER, "Forecast window",
        "Seconds of past usage the depletion forecast averages."),
    "ADDONS_FORECAST_WARNING": Setting(
        3 * 24 * 3600, INTEGER, "Forecast warning",
        "balance.forecast_low is sent when credits would run out within this many seconds (auto top-up off)."),
}

#: Each key's default.
DEFAULTS: dict[str, Any] = {name: setting.default for name, setting in SETTINGS.items()}

#: Saleor's form of the defaults: ``[{"name", "value"}]``, for hosts that manage
#: plugin settings that way (pass a changed copy as ``AddonPlugin(configuration=...)``).
DEFAULT_CONFIGURATION: list[dict[str, Any]] = [{"name": name, "value": value} for name, value in DEFAULTS.items()]

#: How a Saleor-style settings page shows each setting.
CONFIG_STRUCTURE: dict[str, dict[str, str]] = {
    name: {"type": setting.type, "label": setting.label, "help_text": setting.help}
    for name, setting in SETTINGS.items()
}


def from_environ(config: dict[str, Any], environ: Mapping[str, str] | None = None) -> None:
    """Copy every ``ADDONS_*`` environment variable into ``config``, parsing
    JSON values (``true``, ``5``, ``[0, 5]``) and keeping other text as is."""
    for name, value in (os.environ if environ is None else environ).items():
        if name.startswith("ADDONS_"):
            try:
                config[name] = json.loads(value)
            except ValueError:
                config[name] = value
