"""The account's visible auto top-up state: its monthly limit, its consecutive
failures, its last failure, when a top-up may next be tried, its last top-up.

Part of every account answer (so of every usage answer): a declined card shows
on the very next one. Read by primary key with two index probes (an account's
latest top-up, its latest failed one), in the same statement as the depletion
forecast's inputs (:mod:`addon_plugin.account_extras`), so the usage path pays
one cheap read for both.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from storage import Statements, db, isoformat, utcnow

from .money import from_minor

__all__ = ["COLUMNS", "JOINS", "state", "from_row"]

#: The state's columns (13), from ``credit_account a`` joined as :data:`JOINS` says.
COLUMNS = """a.monthly_limit_minor, a.top_up_failures, a.top_up_blocked_until, p.currency,
  l.id, l.status, l.credits, l.amount_minor, l.currency, COALESCE(l.completed_at, l.created_at),
  f.failure_code, f.failure_message, f.completed_at"""
JOINS = """JOIN addon_product p ON p.id = a.product_id
LEFT JOIN top_up l ON l.id = (SELECT t.id FROM top_up t WHERE t.account_id = a.id ORDER BY t.id DESC LIMIT 1)
LEFT JOIN top_up f ON f.id = (SELECT t.id FROM top_up t WHERE t.account_id = a.id AND t.status = 'failed'
                              ORDER BY t.id DESC LIMIT 1)"""
_SQL = Statements(state=f"SELECT {COLUMNS} FROM credit_account a {JOINS} WHERE a.id = ?")


def _as_datetime(value: datetime | str | None) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value  # SQLite answers text


def state(account_id: str, *, now: datetime | None = None) -> dict[str, Any]:
    """``monthly_limit``, ``consecutive_failures``, ``last_failure``, ``retry_at``
    and ``last_top_up`` of the account (added to its ``auto_top_up``)."""
    return from_row(db.execute_sql(_SQL["state"], (account_id,)).fetchone(), now or utcnow())


def from_row(row: tuple | None, now: datetime) -> dict[str, Any]:
    """The state from a row of :data:`COLUMNS` (None: no such account)."""
    if row is None:
        return {"monthly_limit": None, "consecutive_failures": 0, "last_failure": None, "retry_at": None,
                "last_top_up": None}
    (limit, failures, blocked_until, currency, top_up_id, status, credits, amount_minor, top_up_currency, at,
     failure_code, failure_message, failed_at) = row
    blocked_until = _as_datetime(blocked_until)
    retry_at = blocked_until if blocked_until is not None and blocked_until > now else None
    return {
        "monthly_limit": None if limit is None else str(from_minor(limit, currency)),
        "consecutive_failures": failures,
        "last_failure": None if failure_code is None else {
            "code": failure_code, "message": failure_message, "at": isoformat(_as_datetime(failed_at))},
        "retry_at": isoformat(retry_at),
        "last_top_up": None if top_up_id is None else {
            "id": top_up_id, "status": status, "credits": credits,
            "amount": str(from_minor(amount_minor, top_up_currency)), "currency": top_up_currency,
            "at": isoformat(_as_datetime(at))},
    }
