"""The buyer's monthly limit on automatic top-ups.

A top-up whose whole amount would take the account's succeeded top-up charges
in the current UTC month above ``monthly_limit`` is recorded as failed with
code ``monthly_limit_reached``, without charging (never a partial top-up), and
said (``top_up_failed``, so ``top_up.failed``); it is not a decline, so it
counts toward neither the maximum failures nor the decline budget. The account
is then blocked until the next UTC month; a change of the limit lifts that
block (and only that: a new card does not).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from storage import CreditAccount, Statements, TopUp, db

from .. import signals
from ..ledger import Account
from ..money import from_minor
from ..present import top_up_body
from ..state import current_app_object

__all__ = ["CODE", "month_start", "next_month", "spent", "exceeds", "message", "refuse", "blocked_by_limit"]

#: The failure code of a top-up refused for the monthly limit.
CODE = "monthly_limit_reached"

_SQL = Statements(
    spent="SELECT COALESCE(SUM(amount_minor), 0) FROM top_up "
          "WHERE account_id = ? AND status = 'succeeded' AND completed_at >= ?",
    latest="SELECT failure_code FROM top_up WHERE account_id = ? ORDER BY id DESC LIMIT 1",
)


def month_start(now: datetime) -> datetime:
    """Midnight UTC on the first of ``now``'s month."""
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(now: datetime) -> datetime:
    """Midnight UTC on the first of the month after ``now``'s."""
    start = month_start(now)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


def spent(account_id: str, now: datetime) -> int:
    """Minor units of the account's top-ups that succeeded this UTC month."""
    return int(db.execute_sql(_SQL["spent"], (account_id, month_start(now))).fetchone()[0])


def exceeds(account_id: str, limit_minor: int | None, amount_minor: int, now: datetime) -> bool:
    """Whether charging ``amount_minor`` now would pass the monthly limit."""
    return limit_minor is not None and spent(account_id, now) + amount_minor > limit_minor


def message(amount_minor: int, limit_minor: int, currency: str) -> str:
    """What the refusal says, for a person."""
    amount: Decimal = from_minor(amount_minor, currency)
    limit: Decimal = from_minor(limit_minor, currency)
    return (f"This automatic top-up of {amount} {currency} would take this month's automatic top-ups past "
            f"the monthly limit of {limit} {currency}; nothing was charged. Auto top-up resumes next month "
            f"(UTC) or when the limit changes.")


def refuse(account: Account, values: dict[str, Any], limit_minor: int, now: datetime) -> None:
    """Record the decided top-up as failed without charging, block the account
    until the next UTC month, and say so (in the deciding transaction)."""
    text = message(values["amount_minor"], limit_minor, values["currency"])
    top_up = TopUp.create(status="failed", failure_code=CODE, failure_message=text, completed_at=now, **values)
    CreditAccount.update(top_up_blocked_until=next_month(now), updated_at=now).where(
        CreditAccount.id == account.id).execute()
    signals.top_up_failed.send(current_app_object(), account=account, top_up=top_up_body(top_up),
                               failure={"code": CODE, "message": text})


def blocked_by_limit(row: CreditAccount, now: datetime) -> bool:
    """Whether the account's retry block is the monthly limit's (its latest
    top-up was refused for it and the block has not passed)."""
    if row.top_up_blocked_until is None or row.top_up_blocked_until <= now:
        return False
    latest = db.execute_sql(_SQL["latest"], (row.id,)).fetchone()
    return latest is not None and latest[0] == CODE
