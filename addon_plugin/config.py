"""Configuration defaults. ``init_app`` applies each with ``app.config.setdefault``,
so keys the host set in ``app.config`` always win."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

#: Defaults for every ``ADDONS_*`` key. ``ADDONS_DATABASE_URL`` defaults to an
#: SQLite file in the app's instance folder (worked out in ``init_app``).
DEFAULTS: dict[str, Any] = {
    #: False: hooks pass ``previous_value`` through and the API answers 503.
    "ADDONS_ACTIVE": True,
    #: ``sqlite:///path`` or ``postgresql://user@host/db``; None = instance/addons.sqlite3.
    "ADDONS_DATABASE_URL": None,
    #: Connections each process keeps open (pooled, SQLite and PostgreSQL alike).
    "ADDONS_DATABASE_POOL_SIZE": 20,
    #: Where the blueprint's routes are mounted.
    "ADDONS_URL_PREFIX": "/api",
    #: Currency of a product created without one (ISO 4217).
    "ADDONS_DEFAULT_CURRENCY": "USD",
    #: Largest request body the API reads, in bytes (larger: 413).
    "ADDONS_MAX_CONTENT_LENGTH": 64 * 1024,
    #: Seconds an idempotent result is kept for replays (Stripe keeps 24 h).
    "ADDONS_IDEMPOTENCY_TTL": 24 * 3600,
    #: A gateway object, a dotted path to one, or a short name ("test", "stripe").
    "ADDONS_PAYMENT_GATEWAY": None,
    #: "inline": run a decided top-up right after the commit; "worker": leave it to the worker.
    "ADDONS_TOP_UP_MODE": "worker",
    #: Most banks one top-up may buy.
    "ADDONS_TOP_UP_MAX_BANKS": 10,
    #: Consecutive failed top-ups after which auto top-up switches off.
    "ADDONS_TOP_UP_MAX_FAILURES": 3,
    #: Seconds after a failed top-up before another is tried for that account.
    "ADDONS_TOP_UP_RETRY_AFTER": 3600,
    #: Seconds a worker holds a top-up it is charging; after that (the worker died) another resumes it.
    "ADDONS_TOP_UP_LEASE": 300,
    #: Successful top-ups per account per UTC day; the next is recorded as failed.
    "ADDONS_TOP_UP_DAILY_LIMIT": 10,
    #: Seconds before each retry of a top-up the gateway could not take (network,
    #: 5xx); when they are used up the top-up is ``unresolved`` (outcome unknown).
    "ADDONS_TOP_UP_RETRY_SCHEDULE": [30, 120, 600],
    #: Seconds between two lookups at the gateway of an unresolved or pending-settlement top-up.
    "ADDONS_TOP_UP_LOOKUP_INTERVAL": 300,
    #: Secret API key of the "stripe" gateway (``sk_live_…`` / ``sk_test_…``).
    "ADDONS_STRIPE_API_KEY": None,
    #: Base URL of Stripe's API (a mock's URL in tests).
    "ADDONS_STRIPE_API_BASE": "https://api.stripe.com",
    #: Delay in seconds before each delivery attempt (as many attempts as elements).
    "ADDONS_WEBHOOK_RETRY_SCHEDULE": [0, 5, 300, 1800, 7200, 18000, 36000, 36000],
    #: (connect, read) timeouts in seconds for a delivery attempt.
    "ADDONS_WEBHOOK_TIMEOUT": (3, 15),
    #: True lets webhook URLs point at private, loopback or link-local addresses.
    "ADDONS_WEBHOOK_ALLOW_PRIVATE_URLS": False,
    #: Seconds a worker holds a claimed delivery; after that (the worker died) another may take it.
    "ADDONS_WEBHOOK_LEASE": 120,
    #: Seconds the previous secret keeps signing after a rotation.
    "ADDONS_WEBHOOK_SECRET_GRACE": 24 * 3600,
    #: Seconds after which successful deliveries (and their attempts) are pruned.
    "ADDONS_WEBHOOK_PRUNE_AFTER": 30 * 24 * 3600,
    #: Seconds between two prunes by one worker process.
    "ADDONS_WEBHOOK_PRUNE_INTERVAL": 3600,
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
