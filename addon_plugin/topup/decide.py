"""Deciding a top-up: when one is due, and what it buys.

Decide, then act. A top-up is decided **in the transaction of what decides it**
(so a decision commits with its cause, or neither does), when the balance is at
or below the buyer's threshold, nothing is in flight, the account is not
blocked after a failure and the decline budget is not spent. Charging is
:mod:`.execute`'s job, after the commit. What decides one:

- among balance changes, only the buyer's consumption (:data:`CONSUMPTION`):
  a refund, an expiry or a merchant's adjustment never charges the card;
- a deduction refused for insufficient credits (it stays refused; the top-up
  serves the next one), in a transaction of its own;
- a change of the settings (:mod:`.settings`);
- the worker, once an account's retry block has passed (:func:`retry_due`).

**Decline budget**: within any ``ADDONS_TOP_UP_RETRY_AFTER`` window an account
makes at most ``ADDONS_TOP_UP_MAX_FAILURES`` declined charge attempts, whatever
changed in between (new cards included). While it is spent nothing is decided;
the account is blocked until it frees, so the worker decides then.

At most one top-up per account is in flight: the decision holds the account's
row lock, and a unique partial index (``top_up_one_in_flight``) backs that up in
the database itself. A top-up's own credit never decides another.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import Flask, current_app

from storage import TOP_UP_IN_FLIGHT, CreditAccount, Statements, TopUp, db, new_id, on_commit, transaction, utcnow

from .. import ledger, signals
from ..ledger import Account
from ..present import top_up_body
from ..state import current_app_object
from . import execute, monthly

__all__ = ["CONSUMPTION", "NOT_DECLINES", "wants_top_up", "banks_needed", "decide", "decide_for_account",
           "retry_due", "on_balance_changed", "on_deduction_refused", "on_hold_placed"]

#: Entry kinds that are the buyer's consumption: the only balance changes (and
#: refused deductions; ``"hold"``: a refused spend hold) that decide a top-up.
CONSUMPTION = frozenset({"usage", "hold"})

#: Failure codes of top-ups the gateway did not decline: not counted by the decline budget.
NOT_DECLINES = ("gateway_unavailable", "daily_limit_reached", "balance_limit_exceeded", "monthly_limit_reached")

# Everything a decision needs, in one read, only for an account with nothing in
# flight and not blocked (the hot path pays for it only at or below the
# threshold): the product's bank, and the completion time of the account's
# MAX_FAILURES-th latest decline: within the window, the budget is spent.
_GATE = """SELECT p.price_minor, p.currency, p.credit_amount, a.monthly_limit_minor, a.consent_id,
  (SELECT d.completed_at FROM top_up d
    WHERE d.account_id = a.id AND d.status = 'failed' AND d.completed_at IS NOT NULL
      AND d.failure_code NOT IN ({not_declines})
    ORDER BY d.completed_at DESC LIMIT 1 OFFSET ?)
FROM credit_account a JOIN addon_product p ON p.id = a.product_id
WHERE a.id = ? AND p.top_up_allowed
  AND (a.top_up_blocked_until IS NULL OR a.top_up_blocked_until <= ?)
  AND NOT EXISTS (SELECT 1 FROM top_up t WHERE t.account_id = a.id AND t.status IN ({in_flight}))""".format(
    not_declines=", ".join(f"'{code}'" for code in NOT_DECLINES),
    in_flight=", ".join(f"'{status}'" for status in TOP_UP_IN_FLIGHT))
_SQL = Statements(gate=_GATE)


def wants_top_up(account: Account) -> bool:
    """Auto top-up is on and available credits (the balance less active holds,
    §11) are at or below the buyer's threshold."""
    return (account.auto_top_up_enabled and account.threshold is not None
            and account.payment_method is not None and account.available <= account.threshold)


def banks_needed(balance: int, threshold: int, credit_amount: int, max_banks: int) -> int:
    """The fewest banks that lift ``balance`` above ``threshold``, from 1 to ``max_banks``."""
    shortfall = threshold - balance  # >= 0 when a top-up is wanted
    return max(1, min(max_banks, shortfall // credit_amount + 1))


def decide(account: Account, *, now: datetime | None = None) -> str | None:
    """Decide a top-up for ``account`` (a snapshot taken inside the caller's
    transaction, after the change); returns the new pending top-up's id, or None."""
    if not wants_top_up(account) or account.threshold is None:
        return None
    now = now or utcnow()
    config = current_app.config
    budget = max(1, config["ADDONS_TOP_UP_MAX_FAILURES"])
    row = db.execute_sql(_SQL["gate"], (budget - 1, account.id, now)).fetchone()
    if row is None:
        return None
    price_minor, currency, credit_amount, monthly_limit_minor, consent_id, oldest_counted = row
    if oldest_counted is not None and _block_while_budget_spent(account, _as_datetime(oldest_counted), now):
        return None
    banks = banks_needed(account.available, account.threshold, credit_amount, config["ADDONS_TOP_UP_MAX_BANKS"])
    values = dict(
        id=new_id("topup"), account=account.id, merchant=account.merchant_id, banks=banks,
        credits=banks * credit_amount, amount_minor=banks * price_minor, currency=currency,
        payment_method=account.payment_method, customer=account.customer, created_at=now, updated_at=now,
        consent_id=consent_id,
    )
    if _succeeded_today(account.id, now) >= config["ADDONS_TOP_UP_DAILY_LIMIT"]:
        _refuse_over_daily_limit(account, values, now)
        return None
    if monthly.exceeds(account.id, monthly_limit_minor, values["amount_minor"], now):
        monthly.refuse(account, values, monthly_limit_minor, now)
        return None
    inserted = (TopUp.insert(status="pending", next_attempt_at=now, **values)
                .on_conflict_ignore().as_rowcount().execute())
    if not inserted:  # another transaction's top-up is in flight (the unique index said so)
        return None
    if config["ADDONS_TOP_UP_MODE"] == "inline":
        top_up_id = values["id"]
        on_commit(lambda: execute.run(top_up_id))
    return values["id"]


def _as_datetime(value: datetime | str) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value  # SQLite answers text


def _block_while_budget_spent(account: Account, oldest_counted: datetime, now: datetime) -> bool:
    """True if the decline budget is spent: the budget-th latest decline is still
    within the window. The account is then blocked until it leaves the window,
    so the worker decides again the moment the budget allows one more attempt."""
    frees_at = oldest_counted + timedelta(seconds=current_app.config["ADDONS_TOP_UP_RETRY_AFTER"])
    if frees_at <= now:
        return False
    CreditAccount.update(top_up_blocked_until=frees_at).where(CreditAccount.id == account.id).execute()
    return True


def _midnight(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def _succeeded_today(account_id: str, now: datetime) -> int:
    return (TopUp.select().where((TopUp.account == account_id) & (TopUp.status == "succeeded")
                                 & (TopUp.completed_at >= _midnight(now))).count())


def _refuse_over_daily_limit(account: Account, values: dict[str, Any], now: datetime) -> None:
    """Record the decided top-up as failed without charging, say so, and hold off
    until the next UTC day (or a new card) so the refusal is said once."""
    limit = current_app.config["ADDONS_TOP_UP_DAILY_LIMIT"]
    message = f"{limit} top-ups already succeeded today (UTC); auto top-up resumes tomorrow."
    top_up = TopUp.create(status="failed", failure_code="daily_limit_reached", failure_message=message,
                          completed_at=now, **values)
    CreditAccount.update(top_up_blocked_until=_midnight(now) + timedelta(days=1), updated_at=now).where(
        CreditAccount.id == account.id).execute()
    signals.top_up_failed.send(current_app_object(), account=account, top_up=top_up_body(top_up),
                               failure={"code": "daily_limit_reached", "message": message})


def decide_for_account(account_id: str, *, now: datetime | None = None) -> str | None:
    """Decide for an account outside any balance change, in a transaction of its
    own that first takes the account's row lock (as a ledger change does)."""
    with transaction():
        CreditAccount.update(updated_at=CreditAccount.updated_at).where(CreditAccount.id == account_id).execute()
        return decide(ledger.get_account(account_id), now=now)


def retry_due(now: datetime | None = None, *, limit: int = 100) -> int:
    """The worker task: end every retry block that has passed, deciding the next
    top-up of each account still at or below its threshold with auto top-up on
    (so a buyer at the floor, whose deductions all fail, is never stuck).
    Returns how many blocks it ended."""
    now = now or utcnow()
    passed = (CreditAccount.top_up_blocked_until.is_null(False)) & (CreditAccount.top_up_blocked_until <= now)
    due = [row.id for row in CreditAccount.select(CreditAccount.id).where(passed).limit(limit)]
    ended = 0
    for account_id in due:
        with transaction():  # the update takes the row lock; another worker's run finds nothing
            if CreditAccount.update(top_up_blocked_until=None).where(
                    (CreditAccount.id == account_id) & passed).execute():
                ended += 1
                decide(ledger.get_account(account_id), now=now)
    return ended


def on_balance_changed(sender: Flask, *, account: Account, entry: ledger.Entry, **kwargs: Any) -> None:
    """``balance_changed`` receiver: the buyer's consumption may decide a top-up."""
    if entry.kind in CONSUMPTION and wants_top_up(account):  # pure checks first: most changes cost nothing
        decide(account)


def on_hold_placed(sender: Flask, *, account: Account, **kwargs: Any) -> None:
    """``hold_placed`` receiver: a hold that takes available credits to or below
    the threshold decides a top-up, so the work it reserves for can be settled."""
    if wants_top_up(account):
        decide(account)


def on_deduction_refused(sender: Flask, *, account: Account, kind: str, **kwargs: Any) -> None:
    """``deduction_refused`` receiver (outside the refused change's rolled-back
    transaction): the buyer's refused consumption may decide a top-up."""
    if kind in CONSUMPTION and wants_top_up(account):
        decide_for_account(account.id)
