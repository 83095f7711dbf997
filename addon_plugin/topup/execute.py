"""Executing a decided top-up: claim it, charge it, record what happened.

States::

    pending ──claim──> charging ──charged──> succeeded   (credit + status in one transaction)
       ^                  │  └──declined──> failed       (counts toward ADDONS_TOP_UP_MAX_FAILURES)
       └──gateway down────┘      (backoff from ADDONS_TOP_UP_RETRY_SCHEDULE; when it runs out:
                                  failed with ``gateway_unavailable``)
    pending ──claim, auto top-up off, never sent──> canceled

Exactly once, even if a process dies anywhere:

- claiming is a conditional ``UPDATE`` that sets a fresh ``lease`` token and
  leases the top-up until ``next_attempt_at``; a worker that dies leaves it
  ``charging`` and, once the lease runs out, another worker claims it again;
- every attempt sends the gateway the same idempotency key (derived from the
  top-up id), so a repeat returns the first charge instead of making a second;
- the credit is a ledger entry whose idempotency key also derives from the
  top-up id, written in the same transaction as ``succeeded``, and only by the
  holder of the current lease.

No transaction is open while the gateway is called.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from flask import current_app

from storage import TOP_UP_IN_FLIGHT, CreditAccount, TopUp, new_id, transaction, utcnow

from .. import ledger, signals
from .gateways import Declined, GatewayUnavailable, current_gateway
from .records import amount, as_resource

__all__ = ["lease_duration", "charge_key", "credit_key", "run", "run_due"]

log = logging.getLogger(__name__)

def lease_duration() -> timedelta:
    """How long a worker may hold a top-up before another may resume it
    (``ADDONS_TOP_UP_LEASE``): far longer than a gateway call may take."""
    return timedelta(seconds=current_app.config["ADDONS_TOP_UP_LEASE"])


def charge_key(top_up_id: str) -> str:
    """The gateway idempotency key of a top-up: the same on every attempt."""
    return f"addons-top-up-{top_up_id}"


def credit_key(top_up_id: str) -> str:
    """The ledger idempotency key of a top-up's credit."""
    return f"top-up:{top_up_id}"


def run_due(now: datetime | None = None, *, limit: int = 100) -> int:
    """The worker task: run up to ``limit`` top-ups that are due; returns how many were charged or settled."""
    due = (TopUp.select(TopUp.id)
           .where(TopUp.status.in_(TOP_UP_IN_FLIGHT) & (TopUp.next_attempt_at <= (now or utcnow())))
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
    if top_up.status == "canceled":
        return True
    try:
        gateway = current_gateway()
        if gateway is None:
            raise GatewayUnavailable("No payment gateway is configured (ADDONS_PAYMENT_GATEWAY).")
        charge_id = gateway.charge(
            amount=amount(top_up), currency=top_up.currency, customer=top_up.customer,
            payment_method=top_up.payment_method, idempotency_key=charge_key(top_up.id),
            description=f"Automatic top-up: {top_up.credits} credits",
            metadata={"top_up_id": top_up.id, "account_id": top_up.account_id, "merchant_id": top_up.merchant_id},
        )
    except Declined as decline:
        _fail(top_up, lease, decline.code, decline.message, now or utcnow())
    except Exception as error:  # GatewayUnavailable, or a gateway's bug: the outcome is unknown
        if not isinstance(error, GatewayUnavailable):
            log.exception("payment gateway raised an unexpected error for %s", top_up.id)
        _retry_or_fail(top_up, lease, str(error), now or utcnow())
    else:
        _succeed(top_up, lease, charge_id, now or utcnow())
    return True


def _claim(top_up_id: str, lease: str, now: datetime) -> TopUp | None:
    """Lease a due top-up to this worker (or cancel it if it must not be charged)."""
    with transaction():
        claimed = TopUp.update(
            status="charging", lease=lease, attempts=TopUp.attempts + 1,
            next_attempt_at=now + lease_duration(), updated_at=now,
        ).where((TopUp.id == top_up_id) & TopUp.status.in_(TOP_UP_IN_FLIGHT)
                & (TopUp.next_attempt_at <= now)).execute()
        if not claimed:
            return None
        top_up = TopUp.get_by_id(top_up_id)
        if top_up.attempts == 1 and not _still_wanted(top_up):
            # Never sent to the gateway, and the buyer or merchant switched auto
            # top-up off since: nothing to charge. (After a first attempt the
            # outcome may be a charge, so it is always seen through.)
            TopUp.update(status="canceled", lease=None, next_attempt_at=None, completed_at=now,
                         updated_at=now, failure_code="auto_top_up_disabled",
                         failure_message="Auto top-up was switched off before the charge.").where(
                TopUp.id == top_up_id).execute()
            top_up.status = "canceled"
        return top_up


def _still_wanted(top_up: TopUp) -> bool:
    account = CreditAccount.get_by_id(top_up.account_id)
    return account.auto_top_up_enabled and account.product.top_up_allowed


def _lock_account(account_id: str) -> None:
    """Take the account's row lock first, as a ledger change does, so top-up
    transactions and balance changes always lock in the same order."""
    CreditAccount.update(updated_at=CreditAccount.updated_at).where(CreditAccount.id == account_id).execute()


def _settle(top_up: TopUp, lease: str, now: datetime, /, **fields: object) -> bool:
    """Update the top-up if this worker still holds its lease."""
    return bool(TopUp.update(updated_at=now, **fields).where(
        (TopUp.id == top_up.id) & (TopUp.status == "charging") & (TopUp.lease == lease)).execute())


def _succeed(top_up: TopUp, lease: str, charge_id: str, now: datetime) -> None:
    """Credit the top-up and mark it succeeded, in one transaction."""
    with transaction():
        _lock_account(top_up.account_id)
        if not _settle(top_up, lease, now, charge_id=charge_id):
            log.info("top-up %s: lease lost after the charge; its new holder records it", top_up.id)
            return
        change = ledger.record(
            top_up.account_id, top_up.credits, "top_up",
            description=f"Automatic top-up: {top_up.banks} bank(s)", reference=top_up.id,
            metadata={"charge_id": charge_id}, idempotency_key=credit_key(top_up.id), actor="top_up",
        )
        _settle(top_up, lease, now, status="succeeded", lease=None, next_attempt_at=None, completed_at=now)
        CreditAccount.update(top_up_failures=0, top_up_blocked_until=None).where(
            CreditAccount.id == top_up.account_id).execute()
        signals.top_up_succeeded.send(current_app._get_current_object(), account=change.account,
                                      entry=change.entry, top_up=as_resource(TopUp.get_by_id(top_up.id)))


def _retry_or_fail(top_up: TopUp, lease: str, message: str, now: datetime) -> None:
    """Schedule another attempt with the same key, or fail once the schedule is used up."""
    schedule = current_app.config["ADDONS_TOP_UP_RETRY_SCHEDULE"]
    if top_up.attempts > len(schedule):
        _fail(top_up, lease, "gateway_unavailable",
              f"The payment gateway was unavailable after {top_up.attempts} attempts ({message}).", now)
        return
    delay = timedelta(seconds=schedule[top_up.attempts - 1])
    with transaction():
        if _settle(top_up, lease, now, status="pending", lease=None, next_attempt_at=now + delay):
            log.warning("top-up %s: gateway unavailable (%s); retrying in %s", top_up.id, message, delay)


def _fail(top_up: TopUp, lease: str, code: str, message: str, now: datetime) -> None:
    """Fail the top-up, count the failure, block retries for a while, and switch
    auto top-up off after ``ADDONS_TOP_UP_MAX_FAILURES`` consecutive failures."""
    config = current_app.config
    app = current_app._get_current_object()
    with transaction():
        _lock_account(top_up.account_id)
        if not _settle(top_up, lease, now, status="failed", lease=None, next_attempt_at=None, completed_at=now,
                       failure_code=code, failure_message=message):
            return
        CreditAccount.update(
            top_up_failures=CreditAccount.top_up_failures + 1, updated_at=now,
            top_up_blocked_until=now + timedelta(seconds=config["ADDONS_TOP_UP_RETRY_AFTER"]),
        ).where(CreditAccount.id == top_up.account_id).execute()
        row = CreditAccount.get_by_id(top_up.account_id)
        disable = row.auto_top_up_enabled and row.top_up_failures >= config["ADDONS_TOP_UP_MAX_FAILURES"]
        if disable:
            CreditAccount.update(auto_top_up_enabled=False).where(CreditAccount.id == row.id).execute()
        account = ledger.get_account(top_up.account_id)
        signals.top_up_failed.send(app, account=account, top_up=as_resource(TopUp.get_by_id(top_up.id)),
                                   failure={"code": code, "message": message})
        if disable:
            signals.auto_top_up_disabled.send(app, account=account, reason="max_failures")
