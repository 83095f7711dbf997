"""Depletion forecast: how fast an account uses credits and when it runs out.

``credits_per_day`` is the credits of ``usage`` entries in the last
``ADDONS_FORECAST_WINDOW`` seconds divided by the window's length in days (or
by the account's age when it is younger, counted as at least one day), rounded
to 2 decimals; ``depletes_at`` = now + max(available, 0) / credits_per_day
days (from the unrounded rate). ``forecast`` is None without usage in the window.

Kept off the usage hot path's cost: usage is counted per account per UTC day in
``usage_day``, upserted by one prepared statement in the usage entry's own
transaction (a ``balance_changed`` receiver, as any subscriber), and the
forecast reads a primary-key range of at most window-days + 1 rows, never an
aggregate over ledger entries (the account answer reads it in the same
statement as the visible auto top-up state: :mod:`.account_extras`). The oldest day is only partly inside the
window: its usage counts in proportion to the part of it inside the window
(usage is taken as even over that day, from the account's creation at the
earliest); every other day counts whole.

``balance.forecast_low`` (signal :data:`~addon_plugin.signals.balance_forecast_low`)
is sent when auto top-up is off and ``depletes_at`` comes within
``ADDONS_FORECAST_WARNING`` seconds: once per approach (``forecast_warned_at``
marks it), again only after the forecast has moved back out. The worker checks
every account with usage in the window (or a warning standing) on every run,
so time passing alone can send it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import Flask, current_app

from storage import CreditAccount, Statements, db, isoformat, transaction, utcnow

from . import ledger, signals, worker
from .ledger import Account
from .state import current_app_object

__all__ = ["COLUMNS", "available_credits", "day_number", "first_day", "bump", "compute", "from_columns",
           "forecast", "warn_due", "prune_days", "on_balance_changed", "init_app"]

_EPOCH = datetime(1970, 1, 1)

#: The forecast's inputs (3 columns of ``credit_account a``; parameters: the window's first day, twice):
#: the account's creation time, the first day's usage, the later days' (primary-key probes and a range).
COLUMNS = """a.created_at,
  (SELECT u.credits FROM usage_day u WHERE u.account_id = a.id AND u.day = ?),
  (SELECT SUM(u.credits) FROM usage_day u WHERE u.account_id = a.id AND u.day > ?)"""

_SQL = Statements(
    bump={
        "sqlite": "INSERT INTO usage_day (account_id, day, credits) VALUES (?, ?, ?) "
                  "ON CONFLICT (account_id, day) DO UPDATE SET credits = credits + excluded.credits",
        "postgresql": "INSERT INTO usage_day (account_id, day, credits) VALUES (?, ?, ?) "
                      "ON CONFLICT (account_id, day) DO UPDATE SET credits = usage_day.credits + excluded.credits",
    },
    window=f"SELECT {COLUMNS} FROM credit_account a WHERE a.id = ?",
    prune="DELETE FROM usage_day WHERE day < ?",
    # Who the worker checks, with what it needs to: accounts with auto top-up off and usage in the
    # window, or a warning standing. Parameters: the window's first day, three times.
    candidates=f"""SELECT a.id, a.merchant_id, a.product_id, a.buyer_email, a.balance, a.threshold,
  a.auto_top_up_enabled, a.payment_method, a.customer, a.forecast_warned_at, {COLUMNS}
FROM credit_account a
WHERE (NOT a.auto_top_up_enabled AND a.id IN (SELECT u.account_id FROM usage_day u WHERE u.day >= ?))
   OR a.forecast_warned_at IS NOT NULL""",
)


def available_credits(account: Account) -> int:
    """The credits the forecast runs down: the balance less active holds."""
    return account.available


def day_number(moment: datetime) -> int:
    """The UTC day of ``moment`` as days since 1970-01-01."""
    return (moment - _EPOCH).days


def bump(account_id: str, credits: int, at: datetime) -> None:
    """Count ``credits`` of usage on ``at``'s UTC day (in the caller's transaction)."""
    db.execute_sql(_SQL["bump"], (account_id, day_number(at), credits))


def on_balance_changed(sender: Flask, *, account: Account, entry: ledger.Entry, **kwargs: Any) -> None:
    """``balance_changed`` receiver: a usage entry counts toward its day."""
    if entry.kind == "usage":
        bump(account.id, -entry.delta, entry.created_at)


def _as_datetime(value: datetime | str) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value  # SQLite answers text


def compute(created_at: datetime, days: list[tuple[int, int]], available: int, now: datetime,
            window_seconds: int) -> dict[str, Any] | None:
    """The forecast from an account's creation time and its ``(day, credits)``
    usage buckets from the window's first day on; None without usage in it.
    Times as seconds since 1970 (a rate, not money: floats are fine here)."""
    now_s = (now - _EPOCH).total_seconds()
    created_s = (created_at - _EPOCH).total_seconds()
    window_start = now_s - window_seconds
    length_days = max((now_s - max(window_start, created_s)) / 86400, 1.0)
    used = 0.0
    for day, credits in days:
        day_start = day * 86400
        day_end = min(day_start + 86400, now_s)
        seen_from = max(day_start, created_s)
        if seen_from >= window_start or day_end <= seen_from:
            used += credits
        elif day_end > window_start:  # the oldest day: the part of it inside the window
            used += credits * (day_end - window_start) / (day_end - seen_from)
    if used <= 0:
        return None
    rate = used / length_days
    try:
        depletes_at = isoformat(now + timedelta(days=max(available, 0) / rate))
    except OverflowError:  # later than a date can be: never, in practice
        depletes_at = None
    return {"credits_per_day": round(rate, 2), "depletes_at": depletes_at}


def first_day(now: datetime) -> int:
    """The UTC day the forecast window starts in."""
    return day_number(now - timedelta(seconds=current_app.config["ADDONS_FORECAST_WINDOW"]))


def from_columns(account: Account, created_at: datetime | str, first: int, first_credits: int | None,
                 later_credits: int | None, now: datetime) -> dict[str, Any] | None:
    """The forecast from a row's :data:`COLUMNS`, read with window start day ``first``."""
    days = [(day, int(credits)) for day, credits in ((first, first_credits), (first + 1, later_credits))
            if credits]  # the later days all lie wholly inside the window: one bucket for them
    if not days:
        return None
    return compute(_as_datetime(created_at), days, available_credits(account), now,
                   current_app.config["ADDONS_FORECAST_WINDOW"])


def forecast(account: Account, now: datetime | None = None) -> dict[str, Any] | None:
    """The account's forecast ``{"credits_per_day", "depletes_at"}``, or None."""
    now = now or utcnow()
    first = first_day(now)
    row = db.execute_sql(_SQL["window"], (first, first, account.id)).fetchone()
    return None if row is None else from_columns(account, row[0], first, row[1], row[2], now)


def _within_warning(result: dict[str, Any] | None, now: datetime) -> bool:
    if result is None or result["depletes_at"] is None:
        return False
    depletes_at = datetime.fromisoformat(result["depletes_at"].rstrip("Z"))
    return depletes_at <= now + timedelta(seconds=current_app.config["ADDONS_FORECAST_WARNING"])


def _check(account: Account, result: dict[str, Any] | None, warned: bool, now: datetime) -> bool | None:
    """True: send the warning; False: clear the mark (moved back out); None: nothing to do."""
    within = not account.auto_top_up_enabled and _within_warning(result, now)
    if within and not warned:
        return True
    if not within and warned and not account.auto_top_up_enabled:
        return False
    return None


def warn_due(now: datetime | None = None) -> int:
    """The worker task: send ``balance_forecast_low`` for each account with auto
    top-up off whose forecast came within the warning (once per approach), and
    clear the mark of those that moved back out. Returns how many it sent or cleared.

    One read finds every candidate with its forecast's inputs; only an account
    whose mark must change is locked and looked at again, in a transaction."""
    now = now or utcnow()
    first = first_day(now)
    handled = 0
    for row in db.execute_sql(_SQL["candidates"], (first, first, first)).fetchall():
        account = Account(*row[:9])
        if _check(account, from_columns(account, row[10], first, row[11], row[12], now), row[9] is not None,
                  now) is None:
            continue
        with transaction():
            # The row lock first, as a balance change takes it: what is read below stays true.
            CreditAccount.update(forecast_warned_at=CreditAccount.forecast_warned_at).where(
                CreditAccount.id == account.id).execute()
            warned = CreditAccount.select(CreditAccount.forecast_warned_at).where(
                CreditAccount.id == account.id).scalar() is not None
            account = ledger.get_account(account.id)
            result = forecast(account, now)
            action = _check(account, result, warned, now)
            if action is True:
                CreditAccount.update(forecast_warned_at=now).where(CreditAccount.id == account.id).execute()
                signals.balance_forecast_low.send(current_app_object(), account=account, forecast=result)
            elif action is False:
                CreditAccount.update(forecast_warned_at=None).where(CreditAccount.id == account.id).execute()
            handled += action is not None
    return handled


def prune_days(now: datetime | None = None) -> int:
    """Delete the usage days wholly before the window (``flask addons prune``);
    returns how many. No forecast reads them."""
    with transaction():
        return db.execute_sql(_SQL["prune"], (first_day(now or utcnow()),)).rowcount


def init_app(app: Flask) -> None:
    """Count usage by day (``sender=app``), register the worker's forecast check
    and the pruning of old usage days."""
    from .cli import register_pruner

    signals.balance_changed.connect(on_balance_changed, sender=app)
    worker.register_task(app, "forecasts", warn_due, once_per_run=True)
    register_pruner(app, "usage day(s)", prune_days)
