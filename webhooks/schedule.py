"""The retry policy: when the next attempt of a delivery is due. Pure.

``ADDONS_WEBHOOK_RETRY_SCHEDULE`` lists the delay before each attempt: element
i is the wait before attempt i + 1, so a delivery gets as many attempts as the
list has elements. Each delay is jittered by up to ±10% (so retries of many
deliveries do not arrive in lockstep; 0 stays 0). A ``Retry-After`` from the
receiver postpones the next attempt to at least that long (capped at a day),
never brings it forward, and never adds an attempt.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["JITTER", "MAX_RETRY_AFTER", "jittered", "next_delay", "parse_retry_after"]

#: The largest share of a delay that jitter adds or takes away.
JITTER = 0.10

#: The longest ``Retry-After`` honoured, in seconds (a receiver cannot park a delivery for ever).
MAX_RETRY_AFTER = 24 * 3600.0


def jittered(delay: float, rng: random.Random | None = None) -> float:
    """``delay`` moved by a random amount within ±10% of itself."""
    if delay <= 0:
        return 0.0
    return delay * (1 + (rng or random).uniform(-JITTER, JITTER))


def next_delay(schedule: Sequence[float], attempts_made: int, retry_after: float | None = None,
               rng: random.Random | None = None) -> float | None:
    """Seconds until the next attempt after ``attempts_made`` attempts, or None
    when the schedule is used up (the delivery has failed)."""
    if attempts_made >= len(schedule):
        return None
    delay = jittered(float(schedule[attempts_made]), rng)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date),
    or None when it is absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now.replace(tzinfo=UTC) if now else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())
