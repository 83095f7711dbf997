"""Auto top-up: when a buyer's balance drops to the threshold they chose, their
payment method on file is charged for new banks of credits.

Decide, then act: :mod:`.decide` subscribes to ``balance_changed`` and
``deduction_refused`` and records a pending top-up in the transaction of what
decides it; :mod:`.execute` charges it
after the commit (``ADDONS_TOP_UP_MODE="inline"``) or from the worker
(``"worker"``; the worker also resumes retries and crashed attempts in both
modes); :mod:`.settle` learns the outcome of a charge the gateway never
answered (or has not settled) from its lookup or the merchant. :mod:`.settings`
is the service behind the auto top-up routes and hooks, :mod:`.consent` keeps
what the buyer agreed to, :mod:`.monthly` the buyer's monthly limit;
:mod:`.gateways` the payment interface. The ledger knows none of this.
"""

from __future__ import annotations

from flask import Flask

from .. import signals, worker
from ..present import top_up_body as as_resource  # the top-up presenter, by its former name
from . import consent, decide, execute, settings, settle
from .consent import list_consents
from .gateways import (
    ChargePending,
    Declined,
    Gateway,
    GatewayError,
    GatewayUnavailable,
    StripeGateway,
    TestGateway,
    current_gateway,
    resolve_gateway,
)
from .records import list_top_ups
from .settings import check_owner, disable_for_product, set_auto_top_up
from .settle import resolve_top_up

__all__ = [
    "ChargePending",
    "Declined",
    "Gateway",
    "GatewayError",
    "GatewayUnavailable",
    "StripeGateway",
    "TestGateway",
    "as_resource",
    "check_owner",
    "current_gateway",
    "disable_for_product",
    "init_app",
    "list_consents",
    "list_top_ups",
    "resolve_gateway",
    "resolve_top_up",
    "set_auto_top_up",
]

_MODES = ("inline", "worker")


def init_app(app: Flask) -> None:
    """Connect the top-up subscribers (``sender=app``) and register the worker tasks.

    Reads ``ADDONS_TOP_UP_MODE`` and ``ADDONS_PAYMENT_GATEWAY`` (resolved now, so
    a bad value fails at start-up rather than at the first top-up).
    """
    if app.config["ADDONS_TOP_UP_MODE"] not in _MODES:
        raise ValueError(f"ADDONS_TOP_UP_MODE must be one of {_MODES}, not {app.config['ADDONS_TOP_UP_MODE']!r}.")
    current_gateway(app)
    consent.check_terms(app)
    signals.balance_changed.connect(decide.on_balance_changed, sender=app)
    signals.deduction_refused.connect(decide.on_deduction_refused, sender=app)
    signals.hold_placed.connect(decide.on_hold_placed, sender=app)
    signals.product_saved.connect(settings.on_product_saved, sender=app)
    worker.register_task(app, "top_ups", execute.run_due)
    worker.register_task(app, "top_up_retries", decide.retry_due)
    worker.register_task(app, "top_ups.look_up", settle.look_up_due, once_per_run=True)
