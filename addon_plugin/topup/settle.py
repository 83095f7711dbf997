"""Settling top-ups whose outcome the plugin does not know.

``unresolved`` (the gateway never answered the charge) and
``pending_settlement`` (it accepted a charge that had not settled) block new
top-ups, since money may have been taken, until one of these tells:

- the gateway's ``lookup(idempotency_key)``, asked by the worker
  (:func:`look_up_due`, once per run) for each such top-up no more often than
  ``ADDONS_TOP_UP_LOOKUP_INTERVAL``: a charge id settles it as succeeded (and
  credits it), None as failed ``gateway_unavailable`` (no money was taken),
  :class:`Declined` as failed with its code; anything else leaves it as it is;
- the merchant, for an ``unresolved`` one (:func:`resolve_top_up`).

Whichever tells first records the outcome; the other then finds the top-up no
longer in the status it saw, and writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from storage import TOP_UP_TO_LOOK_UP, TopUp, utcnow

from ..errors import TopUpNotFound, TopUpNotUnresolved, ValidationError
from . import execute
from .gateways import Declined, GatewayUnavailable, current_gateway

__all__ = ["OUTCOMES", "look_up_due", "resolve_top_up"]

log = logging.getLogger(__name__)

#: What a merchant may say an unresolved top-up's outcome was.
OUTCOMES = ("succeeded", "failed")


def look_up_due(now: datetime | None = None, *, limit: int = 100) -> int:
    """The worker task (once per run): ask the gateway's lookup about up to
    ``limit`` top-ups whose lookup is due; returns how many were asked."""
    lookup = getattr(current_gateway(), "lookup", None)
    if not callable(lookup):
        return 0
    now = now or utcnow()
    due = (TopUp.select(TopUp.id, TopUp.status)
           .where(TopUp.status.in_(TOP_UP_TO_LOOK_UP) & (TopUp.next_attempt_at <= now))
           .order_by(TopUp.next_attempt_at).limit(limit))
    return sum(_look_up(row.id, row.status, lookup, now) for row in list(due))


def _look_up(top_up_id: str, status: str, lookup: Callable[[str], str | None], now: datetime) -> bool:
    """Take this top-up's turn (the next one is an interval away, whatever the
    answer, and no other worker asks meanwhile), ask, and record what it says."""
    taken = TopUp.update(next_attempt_at=now + execute.lookup_interval(), updated_at=now).where(
        (TopUp.id == top_up_id) & (TopUp.status == status) & (TopUp.next_attempt_at <= now)).execute()
    if not taken:
        return False
    top_up = TopUp.get_by_id(top_up_id)
    hold = execute.in_status(status)
    try:
        charge_id = lookup(execute.charge_key(top_up_id))
    except Declined as decline:
        execute.fail(top_up, hold, decline.code, decline.message, now)
    except Exception as error:  # GatewayUnavailable (it cannot tell yet), or a gateway's bug
        if not isinstance(error, GatewayUnavailable):
            log.exception("payment gateway lookup raised an unexpected error for %s", top_up_id)
        log.info("top-up %s stays %s: %s", top_up_id, status, error)
    else:
        if charge_id is not None:
            execute.succeed(top_up, hold, charge_id, now)
        elif status == "unresolved":
            execute.fail(top_up, hold, "gateway_unavailable",
                         "The payment gateway holds no charge for this top-up: no money was taken.", now)
        else:  # it accepted a charge it now says it does not hold: for the merchant to find out
            execute.leave_unresolved(top_up, hold, f"The gateway no longer knows charge {top_up.charge_id}.", now)
    return True


def resolve_top_up(top_up_id: str, *, merchant_id: str, outcome: str, charge_id: str | None = None,
            now: datetime | None = None) -> TopUp:
    """Settle the merchant's ``unresolved`` top-up as they found it at the gateway.

    ``"succeeded"`` with the gateway's ``charge_id`` credits it; ``"failed"``
    (no money was taken) fails it with ``resolved_as_failed``, counted as a
    failure. Refuses with :class:`ValidationError` (422), :class:`TopUpNotFound`
    (404, also for another merchant's) or :class:`TopUpNotUnresolved` (409).
    """
    if outcome not in OUTCOMES:
        raise ValidationError(fields={"outcome": [f"Must be one of: {', '.join(OUTCOMES)}."]})
    if (outcome == "succeeded") != (charge_id is not None):
        raise ValidationError(fields={"charge_id": ["Required with outcome succeeded, and only with it."]})
    top_up = TopUp.select().where((TopUp.id == top_up_id) & (TopUp.merchant == merchant_id)).first()
    if top_up is None:
        raise TopUpNotFound(top_up_id=top_up_id)
    now = now or utcnow()
    hold = execute.in_status("unresolved")
    if charge_id is not None:  # the outcome is "succeeded"
        settled = execute.succeed(top_up, hold, charge_id, now)
    else:
        settled = execute.fail(top_up, hold, "resolved_as_failed",
                               "The merchant resolved this top-up as failed: no money was taken.", now)
    if not settled:
        status = TopUp.get_by_id(top_up_id).status
        raise TopUpNotUnresolved(f"This top-up is {status}, not unresolved.", top_up_id=top_up_id, status=status)
    return TopUp.get_by_id(top_up_id)
