"""What an account answer adds to the balance: the visible auto top-up state
(:mod:`.topup_state`) and the depletion forecast (:mod:`.forecast`), read in one
prepared statement by primary key, so every usage answer pays one round trip
for both."""

from __future__ import annotations

from typing import Any

from storage import Statements, db, utcnow

from . import forecast, topup_state
from .ledger import Account

__all__ = ["read"]

_SQL = Statements(read=f"""SELECT {topup_state.COLUMNS}, {forecast.COLUMNS}
FROM credit_account a {topup_state.JOINS} WHERE a.id = ?""")


def read(account: Account) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(the auto top-up state, the forecast or None)`` of the account."""
    now = utcnow()
    first = forecast.first_day(now)
    row = db.execute_sql(_SQL["read"], (first, first, account.id)).fetchone()
    state = topup_state.from_row(None if row is None else row[:13], now)
    if row is None:
        return state, None
    return state, forecast.from_columns(account, row[13], first, row[14], row[15], now)
