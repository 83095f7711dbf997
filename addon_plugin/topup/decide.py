"""Deciding a top-up: the ``balance_changed`` subscriber.

Decide, then act. A change that leaves the balance at or below the buyer's
threshold inserts a ``pending`` top-up **in the same transaction** (so a
decision commits with its change, or neither does) unless one is in flight, the
account is blocked after a failure, or the daily limit is reached. Charging is
:mod:`.execute`'s job, after the commit.

At most one top-up per account is in flight: the change that decides holds the
account's row lock (the ledger has just updated it), and a unique partial index
(``top_up_one_in_flight``) backs that up in the database itself.

A top-up's own credit never decides another (its top-up is still in flight when
the credit is recorded): if ``ADDONS_TOP_UP_MAX_BANKS`` banks leave the balance
at or below the threshold, the next change decides again.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import Flask, current_app

from storage import TOP_UP_IN_FLIGHT, CreditAccount, Statements, TopUp, db, new_id, on_commit, utcnow

from .. import signals
from ..ledger import Account
from . import execute
from .records import as_resource

__all__ = ["wants_top_up", "banks_needed", "decide", "on_balance_changed"]

# Everything a decision needs, in one read, only for an account with nothing in
# flight and not blocked: the hot path pays for it only at or below the threshold.
_GATE = """SELECT p.price_minor, p.currency, p.credit_amount
FROM credit_account a JOIN addon_product p ON p.id = a.product_id
WHERE a.id = ? AND p.top_up_allowed
  AND (a.top_up_blocked_until IS NULL OR a.top_up_blocked_until <= ?)
  AND NOT EXISTS (SELECT 1 FROM top_up t WHERE t.account_id = a.id AND t.status IN (%s))""" % ", ".join(
    f"'{status}'" for status in TOP_UP_IN_FLIGHT)
_SQL = Statements(gate=_GATE)


def wants_top_up(account: Account) -> bool:
    """Auto top-up is on and the balance is at or below the buyer's threshold."""
    return (account.auto_top_up_enabled and account.threshold is not None
            and account.payment_method is not None and account.balance <= account.threshold)


def banks_needed(balance: int, threshold: int, credit_amount: int, max_banks: int) -> int:
    """The fewest banks that lift ``balance`` above ``threshold``, from 1 to ``max_banks``."""
    shortfall = threshold - balance  # >= 0 when a top-up is wanted
    return max(1, min(max_banks, shortfall // credit_amount + 1))


def decide(account: Account, *, now: datetime | None = None) -> str | None:
    """Decide a top-up for ``account`` (a snapshot taken inside the caller's
    transaction, after the change); returns the new pending top-up's id, or None."""
    if not wants_top_up(account):
        return None
    now = now or utcnow()
    row = db.execute_sql(_SQL["gate"], (account.id, now)).fetchone()
    if row is None:
        return None
    price_minor, currency, credit_amount = row
    config = current_app.config
    banks = banks_needed(account.balance, account.threshold, credit_amount, config["ADDONS_TOP_UP_MAX_BANKS"])
    values = dict(
        id=new_id("topup"), account=account.id, merchant=account.merchant_id, banks=banks,
        credits=banks * credit_amount, amount_minor=banks * price_minor, currency=currency,
        payment_method=account.payment_method, customer=account.customer, created_at=now, updated_at=now,
    )
    if _succeeded_today(account.id, now) >= config["ADDONS_TOP_UP_DAILY_LIMIT"]:
        _refuse_over_daily_limit(account, values, now)
        return None
    inserted = (TopUp.insert(status="pending", next_attempt_at=now, **values)
                .on_conflict_ignore().as_rowcount().execute())
    if not inserted:  # another transaction's top-up is in flight (the unique index said so)
        return None
    if config["ADDONS_TOP_UP_MODE"] == "inline":
        top_up_id = values["id"]
        on_commit(lambda: execute.run(top_up_id))
    return values["id"]


def _midnight(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def _succeeded_today(account_id: str, now: datetime) -> int:
    return (TopUp.select().where((TopUp.account == account_id) & (TopUp.status == "succeeded")
                                 & (TopUp.completed_at >= _midnight(now))).count())


def _refuse_over_daily_limit(account: Account, values: dict[str, Any], now: datetime) -> None:
    """Record the decided top-up as failed without charging, say so, and hold off
    until the next UTC day (or a settings change) so the refusal is said once."""
    limit = current_app.config["ADDONS_TOP_UP_DAILY_LIMIT"]
    message = f"{limit} top-ups already succeeded today (UTC); auto top-up resumes tomorrow."
    top_up = TopUp.create(status="failed", failure_code="daily_limit_reached", failure_message=message,
                          completed_at=now, **values)
    CreditAccount.update(top_up_blocked_until=_midnight(now) + timedelta(days=1), updated_at=now).where(
        CreditAccount.id == account.id).execute()
    signals.top_up_failed.send(current_app._get_current_object(), account=account, top_up=as_resource(top_up),
                               failure={"code": "daily_limit_reached", "message": message})


def on_balance_changed(sender: Flask, *, account: Account, **kwargs: Any) -> None:
    """``balance_changed`` receiver: decide a top-up if this change calls for one."""
    if wants_top_up(account):  # pure check first: most changes cost nothing here
        decide(account)
