"""Executing a decided top-up: claim it, charge it, record what happened.

States::

    pending ──claim──> charging ──charged──> succeeded   (credit + status in one transaction)
       ^                 │ │ └───declined──> failed      (counts toward ADDONS_TOP_UP_MAX_FAILURES)
       │                 │ └──processing───> pending_settlement ──lookup──────────────> succeeded | failed
       └──gateway down───┘  (ADDONS_TOP_UP_RETRY_SCHEDULE runs out) ──> unresolved ──lookup or merchant──┘
    pending ──claim, before the first attempt──> canceled (auto top-up off) | failed (credit would be refused)

An unknown outcome is never a failure: money may have been taken, so an
``unresolved`` top-up blocks new ones until :mod:`.settle` learns the outcome.

Exactly once, even if a process dies anywhere:

- claiming is a conditional ``UPDATE`` that sets a fresh ``lease`` token and
  leases the top-up until ``next_attempt_at``; a worker that dies leaves it
  ``charging`` and, once the lease runs out, another worker claims it again;
- the first claim fixes the charge: the account's payment method and customer
  at that moment are stored on the top-up (or it is dropped if auto top-up is
  off by then, or failed if its credit would be refused), so every attempt
  sends the gateway the same charge with the same idempotency key (derived from
  the top-up id) and a repeat returns the first charge instead of making a second;
- a top-up is sent at most once plus once per ``ADDONS_TOP_UP_RETRY_SCHEDULE``
  element: a claim beyond that (its workers kept dying) leaves it ``unresolved``;
- the credit is a ledger entry whose idempotency key also derives from the
  top-up id, written in the same transaction as ``succeeded``, and only while
  the caller still holds the top-up (its lease, or the status it saw).

Every write takes the account's row lock first, as a balance change does. No
transaction is open while the gateway is called.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from flask import current_app
from peewee import Expression

from storage import TOP_UP_TO_CHARGE, CreditAccount, TopUp, new_id, transaction, utcnow

from .. import ledger, signals
from ..limits import MAX_CREDITS
from ..present import top_up_body
from ..state import current_app_object
from . import monthly
from .gateways import TOP_UP_KEY_PREFIX, ChargePending, Declined, GatewayUnavailable, current_gateway
from .records import amount

__all__ = [
    "lease_duration",
    "lookup_interval",
    "charge_key",
    "credit_key",
    "leased_to",
    "in_status",
    "run",
    "run_due",
    "succeed",
    "fail",
    "leave_unresolved",
]

log = logging.getLogger(__name__)


def lease_duration() -> timedelta:
    """How long a worker may hold a top-up before another may resume it
    (``ADDONS_TOP_UP_LEASE``): far longer than a gateway call may take."""
    return timedelta(seconds=current_app.config["ADDONS_TOP_UP_LEASE"])


def lookup_interval() -> timedelta:
    """The least time between two lookups of one top-up (``ADDONS_TOP_UP_LOOKUP_INTERVAL``)."""
    return timedelta(seconds=current_app.config["ADDONS_TOP_UP_LOOKUP_INTERVAL"])


def charge_key(top_up_id: str) -> str:
    """The gateway idempotency key of a top-up: the same on every attempt."""
    return f"{TOP_UP_KEY_PREFIX}{top_up_id}"


def credit_key(top_up_id: str) -> str:
    """The ledger idempotency key of a top-up's credit."""
    return f"top-up:{top_up_id}"


def leased_to(lease: str) -> Expression:
    """Holding a top-up by its lease: the worker charging it."""
    return (TopUp.status == "charging") & (TopUp.lease == lease)


def in_status(status: str) -> Expression:
    """Holding a top-up by the status it was seen in: whoever settles an outcome first."""
    return TopUp.status == status


def run_due(now: datetime | None = None, *, limit: int = 100) -> int:
    """The worker task: run up to ``limit`` top-ups that are due; returns how many were charged or settled."""
    due = (TopUp.select(TopUp.id)
           .where(TopUp.status.in_(TOP_UP_TO_CHARGE) & (TopUp.next_attempt_at <= (now or utcnow())))
           .order_by(TopUp.next_attempt_at).limit(limit))
    # Each run reads the clock itself (unless a test fixes it): a lease starts when it is taken.
    return sum(run(row.id, now=now) for row in list(due))


def run(top_up_id: str, *, now: datetime | None = None) -> bool:
    """Claim the top-up if it is due, charge it and record the outcome.

    Returns False if it was not due (or another worker holds it). ``now`` is for
    tests; by default the clock is read at each step.
    """
    lease = new_id("lease")
    top_up = _claim(top_up_id, lease, now or utcnow())
    if top_up is None:
        return False
    if top_up.status != "charging":  # dropped, failed or left unresolved at the claim: not sent
        return True
    hold = leased_to(lease)
    try:
        gateway = current_gateway()
        if gateway is None:
            raise GatewayUnavailable("No payment gateway is configured (ADDONS_PAYMENT_GATEWAY).")
        charge_id = gateway.charge(
            amount=amount(top_up), currency=top_up.currency, customer=top_up.customer,
            payment_method=top_up.payment_method, idempotency_key=charge_key(top_up.id),
            description=f"Automatic top-up: {top_up.credits} credits",
            metadata={"top_up_id": top_up.id, "account_id": top_up.account_id, "merchant_id": top_up.merchant_id,
                      **({"consent_id": top_up.consent_id} if top_up.consent_id else {})},
        )
    except Declined as decline:
        fail(top_up, hold, decline.code, decline.message, now or utcnow())
    except ChargePending as pending:
        _await_settlement(top_up, hold, pending.charge_id, now or utcnow())
    except Exception as error:  # GatewayUnavailable, or a gateway's bug: the outcome is unknown
        if not isinstance(error, GatewayUnavailable):
            log.exception("payment gateway raised an unexpected error for %s", top_up.id)
        _retry_or_leave_unresolved(top_up, lease, str(error), now or utcnow())
    else:
        succeed(top_up, hold, charge_id, now or utcnow())
    return True


def _claim(top_up_id: str, lease: str, now: datetime) -> TopUp | None:
    """Lease a due top-up to this worker, and decide whether it may be sent now."""
    account_id = TopUp.select(TopUp.account).where(TopUp.id == top_up_id).scalar()
    if account_id is None:
        return None
    with transaction():
        _lock_account(account_id)
        claimed = TopUp.update(
            status="charging", lease=lease, attempts=TopUp.attempts + 1,
            next_attempt_at=now + lease_duration(), updated_at=now,
        ).where((TopUp.id == top_up_id) & TopUp.status.in_(TOP_UP_TO_CHARGE)
                & (TopUp.next_attempt_at <= now)).execute()
        if not claimed:
            return None
        top_up = TopUp.get_by_id(top_up_id)
        hold = leased_to(lease)
        sends = 1 + len(current_app.config["ADDONS_TOP_UP_RETRY_SCHEDULE"])
        if top_up.attempts == 1:
            _fix_the_charge(top_up, hold, now)
        elif top_up.attempts > sends:
            leave_unresolved(top_up, hold, f"Claimed {top_up.attempts} times without a recorded outcome.", now)
        elif ledger.balance(account_id) + top_up.credits > MAX_CREDITS:
            # It may have been charged already; sending it again could make a charge nobody can credit.
            leave_unresolved(top_up, hold, "Its credit would now pass the balance limit; not sent again.", now)
        return TopUp.get_by_id(top_up_id)


def _fix_the_charge(top_up: TopUp, hold: Expression, now: datetime) -> None:
    """Before the first attempt: charge the account's card and customer as they
    are now, drop the top-up if auto top-up is off, and fail it (uncharged) if
    its credit would be refused."""
    account = CreditAccount.get_by_id(top_up.account_id)
    if not (account.auto_top_up_enabled and account.payment_method and account.product.top_up_allowed):
        _update(top_up.id, hold, now, status="canceled", lease=None, next_attempt_at=None, completed_at=now,
                attempts=0, failure_code="auto_top_up_disabled",
                failure_message="Auto top-up was switched off before the charge.")
    elif monthly.exceeds(account.id, account.monthly_limit_minor, top_up.amount_minor, now):
        # The limit was lowered (or the month's charges grew) since the decision.
        fail(top_up, hold, monthly.CODE, monthly.message(top_up.amount_minor, account.monthly_limit_minor or 0,
                                                         top_up.currency), now, counted=False, attempts=0)
        CreditAccount.update(top_up_blocked_until=monthly.next_month(now)).where(
            CreditAccount.id == account.id).execute()
    elif account.balance + top_up.credits > MAX_CREDITS:
        fail(top_up, hold, "balance_limit_exceeded",
             f"Crediting {top_up.credits} credits would take the balance past {MAX_CREDITS}; nothing was charged.",
             now, counted=False, attempts=0)
    else:
        _update(top_up.id, hold, now, payment_method=account.payment_method, customer=account.customer)


def _lock_account(account_id: str) -> None:
    """Take the account's row lock first, as a ledger change does, so top-up
    transactions and balance changes always lock in the same order."""
    CreditAccount.update(updated_at=CreditAccount.updated_at).where(CreditAccount.id == account_id).execute()


def _update(top_up_id: str, hold: Expression, now: datetime, /, **fields: object) -> bool:
    """Update the top-up if the caller still holds it."""
    return bool(TopUp.update(updated_at=now, **fields).where((TopUp.id == top_up_id) & hold).execute())


def succeed(top_up: TopUp, hold: Expression, charge_id: str, now: datetime) -> bool:
    """Credit the top-up charged as ``charge_id`` and mark it succeeded, in one
    transaction; False (nothing written) if the caller no longer holds it."""
    with transaction():
        _lock_account(top_up.account_id)
        if not _update(top_up.id, hold, now, charge_id=charge_id):
            log.info("top-up %s: no longer held after the charge; its new holder records it", top_up.id)
            return False
        if ledger.balance(top_up.account_id) + top_up.credits > MAX_CREDITS:
            # Checked before the charge: only a balance that grew while the charge was out gets here.
            log.error("top-up %s: charged as %s but its credit would pass the balance limit", top_up.id, charge_id)
            return fail(top_up, hold, "balance_limit_exceeded",
                        f"Charged as {charge_id}, but crediting {top_up.credits} credits would take the balance "
                        f"past {MAX_CREDITS}: refund that charge.", now, counted=False)
        change = ledger.record(
            top_up.account_id, top_up.credits, "top_up",
            description=f"Automatic top-up: {top_up.banks} bank(s)", reference=top_up.id,
            metadata={"charge_id": charge_id}, idempotency_key=credit_key(top_up.id), actor="top_up",
        )
        _update(top_up.id, hold, now, status="succeeded", lease=None, next_attempt_at=None, completed_at=now)
        CreditAccount.update(top_up_failures=0, top_up_blocked_until=None).where(
            CreditAccount.id == top_up.account_id).execute()
        signals.top_up_succeeded.send(current_app_object(), account=change.account,
                                      entry=change.entry, top_up=top_up_body(TopUp.get_by_id(top_up.id)))
        return True


def fail(top_up: TopUp, hold: Expression, code: str, message: str, now: datetime, *, counted: bool = True,
         **fields: object) -> bool:
    """Fail the top-up and block new ones for ``ADDONS_TOP_UP_RETRY_AFTER``; a
    ``counted`` failure also counts toward ``ADDONS_TOP_UP_MAX_FAILURES``
    consecutive ones, which switch auto top-up off. False if no longer held."""
    config = current_app.config
    app = current_app_object()
    with transaction():
        _lock_account(top_up.account_id)
        if not _update(top_up.id, hold, now, status="failed", lease=None, next_attempt_at=None, completed_at=now,
                       failure_code=code, failure_message=message, **fields):
            return False
        CreditAccount.update(
            top_up_failures=CreditAccount.top_up_failures + (1 if counted else 0), updated_at=now,
            top_up_blocked_until=now + timedelta(seconds=config["ADDONS_TOP_UP_RETRY_AFTER"]),
        ).where(CreditAccount.id == top_up.account_id).execute()
        row = CreditAccount.get_by_id(top_up.account_id)
        disable = counted and row.auto_top_up_enabled and row.top_up_failures >= config["ADDONS_TOP_UP_MAX_FAILURES"]
        if disable:
            CreditAccount.update(auto_top_up_enabled=False).where(CreditAccount.id == row.id).execute()
        account = ledger.get_account(top_up.account_id)
        signals.top_up_failed.send(app, account=account, top_up=top_up_body(TopUp.get_by_id(top_up.id)),
                                   failure={"code": code, "message": message})
        if disable:
            signals.auto_top_up_disabled.send(app, account=account, reason="max_failures")
        return True


def leave_unresolved(top_up: TopUp, hold: Expression, reason: str, now: datetime, **fields: object) -> bool:
    """Mark the top-up ``unresolved`` (its outcome is unknown), due for a lookup
    after the interval, and say so; False if no longer held."""
    with transaction():
        _lock_account(top_up.account_id)
        if not _update(top_up.id, hold, now, status="unresolved", lease=None,
                       next_attempt_at=now + lookup_interval(), **fields):
            return False
        log.warning("top-up %s is unresolved: %s", top_up.id, reason)
        signals.top_up_unresolved.send(current_app_object(), account=ledger.get_account(top_up.account_id),
                                       top_up=top_up_body(TopUp.get_by_id(top_up.id)))
        return True


def _await_settlement(top_up: TopUp, hold: Expression, charge_id: str, now: datetime) -> None:
    """The gateway accepted ``charge_id`` but it has not settled: wait for its
    lookup (or, with a gateway that has none, for the merchant)."""
    if not callable(getattr(current_gateway(), "lookup", None)):
        leave_unresolved(top_up, hold, f"Charge {charge_id} has not settled and the gateway has no lookup.", now,
                         charge_id=charge_id)
        return
    with transaction():
        _lock_account(top_up.account_id)
        _update(top_up.id, hold, now, status="pending_settlement", charge_id=charge_id, lease=None,
                next_attempt_at=now + lookup_interval())


def _retry_or_leave_unresolved(top_up: TopUp, lease: str, message: str, now: datetime) -> None:
    """Schedule another attempt with the same key, or, once the schedule is used
    up, leave the top-up unresolved: the charge may have been made."""
    schedule = current_app.config["ADDONS_TOP_UP_RETRY_SCHEDULE"]
    if top_up.attempts > len(schedule):
        leave_unresolved(top_up, leased_to(lease),
                         f"The payment gateway gave no answer in {top_up.attempts} attempts ({message}).", now)
        return
    delay = timedelta(seconds=schedule[top_up.attempts - 1])
    with transaction():
        if _update(top_up.id, leased_to(lease), now, status="pending", lease=None, next_attempt_at=now + delay):
            log.warning("top-up %s: gateway unavailable (%s); retrying in %s", top_up.id, message, delay)
