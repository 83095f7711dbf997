"""Daily sums for the pages' charts: credits used and added per account, and
credits used and top-up revenue per merchant, over the last ``days`` UTC days.
Summed by the database (``date(created_at)`` in both dialects), one query each."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

from peewee import fn

import storage

from ..money import from_minor

__all__ = ["Daily", "account_days", "merchant_days", "DAYS"]

#: How many days the charts show.
DAYS = 30


class Daily(NamedTuple):
    """One series per name, each a value per day (oldest first)."""

    days: list[date]
    series: dict[str, list[Any]]


def _days(today: date, days: int) -> list[date]:
    return [today - timedelta(days=n) for n in range(days - 1, -1, -1)]


def _day(value: Any) -> date:
    """``date(created_at)`` as the dialect (and peewee) answers it: a date, a datetime or ISO text."""
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _rows(query: Any) -> list[tuple[Any, ...]]:
    """A grouped query's rows as tuples."""
    return list(query)


def _start(days: int, now: datetime | None) -> tuple[list[date], datetime]:
    now = now or storage.utcnow()
    shown = _days(now.date(), days)
    return shown, datetime.combine(shown[0], datetime.min.time())


def account_days(account_id: str, *, days: int = DAYS, now: datetime | None = None) -> Daily:
    """Credits used, and credits bought or topped up, per day for one account."""
    shown, start = _start(days, now)
    entry = storage.LedgerEntry
    day = fn.date(entry.created_at)
    rows = (entry.select(day.alias("day"), entry.kind, fn.SUM(entry.delta).alias("total"))
            .where((entry.account == account_id) & (entry.created_at >= start)
                   & (entry.kind.in_(("usage", "purchase", "top_up"))))
            .group_by(day, entry.kind).tuples())
    used: dict[date, int] = defaultdict(int)
    added: dict[date, int] = defaultdict(int)
    for when, kind, total in _rows(rows):
        (used if kind == "usage" else added)[_day(when)] += abs(int(total))
    return Daily(shown, {"used": [used[d] for d in shown], "added": [added[d] for d in shown]})


def merchant_days(merchant_id: str, *, days: int = DAYS, now: datetime | None = None) -> tuple[Daily, dict[str, Daily]]:
    """Credits used per day across the merchant's accounts, and the revenue of
    succeeded top-ups per day, one series per currency (Decimal amounts)."""
    shown, start = _start(days, now)
    entry, account = storage.LedgerEntry, storage.CreditAccount
    day = fn.date(entry.created_at)
    used: dict[date, int] = defaultdict(int)
    for when, total in _rows(entry.select(day, fn.SUM(entry.delta)).join(account, on=(entry.account == account.id))
                        .where((account.merchant == merchant_id) & (entry.kind == "usage")
                               & (entry.created_at >= start))
                        .group_by(day).tuples()):
        used[_day(when)] += abs(int(total))
    top_up = storage.TopUp
    top_up_day = fn.date(top_up.created_at)
    revenue: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    for when, currency, total in _rows(top_up.select(top_up_day, top_up.currency, fn.SUM(top_up.amount_minor))
                                  .where((top_up.merchant == merchant_id) & (top_up.status == "succeeded")
                                         & (top_up.created_at >= start))
                                  .group_by(top_up_day, top_up.currency).tuples()):
        revenue[currency][_day(when)] += int(total)
    return (Daily(shown, {"used": [used[d] for d in shown]}),
            {currency: Daily(shown, {"revenue": [from_minor(by_day[d], currency) for d in shown]})
             for currency, by_day in sorted(revenue.items())})
