"""Spend holds: reserve credits before work whose cost is known only at its end,
then capture what it cost (one ``usage`` entry) or release them.

Design. What the account's active holds reserve is kept **on the account row**
(``held``), changed in the same transaction as each hold's status, so:

- ``available`` = ``balance - held`` is one indexed row, like the balance;
- a hold's guard (``balance - held - value >= -overdraft_limit``) and every
  deduction's (:mod:`addon_plugin.ledger`: ``balance + delta - held``) sit in
  the ``WHERE`` of the conditional ``UPDATE`` of the very row they lock. On
  PostgreSQL (READ COMMITTED) an update that waited for that lock re-checks its
  ``WHERE`` against the row as the other transaction left it; a subquery
  summing the hold table would be re-read from the old snapshot instead, and
  two parallel holds could both pass. No read-then-write anywhere.

Expiry needs no job: ``next_hold_expiry_at`` is the soonest expiry of an active
hold, and a change or read of the account at or after it first marks its
expired holds ``expired`` and takes them off ``held`` (:func:`expire_due`), as
the ledger does for grants with ``next_expiry_at``. The worker only tidies.

Every function that changes a hold takes the account's row lock first (placing
one does so with its update), so writers of one account's holds queue in one
order and cannot deadlock. Invariant: ``held`` is the sum of the ``amount`` of
the account's holds whose status is ``held``; none of those is past
``expires_at`` once a read or change has looked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, NoReturn

from flask import Flask

import storage
from storage import Statements, db, new_id, transaction

from . import ledger, signals
from .errors import HoldNotActive, HoldNotFound, ValidationError
from .pagination import paginate
from .state import current_app_object

__all__ = ["STATUSES", "DEFAULT_EXPIRES_IN", "MAX_EXPIRES_IN", "place", "capture", "release", "get", "list_holds",
           "expire_due", "expire_due_accounts", "init_app"]

STATUSES = ("held", "captured", "released", "expired")
#: Seconds a hold lasts unless told otherwise, and the longest it may.
DEFAULT_EXPIRES_IN = 900
MAX_EXPIRES_IN = 86400

_COLUMNS = ("id, account_id, amount, status, captured_amount, entry_id, expires_at, description, reference, "
            "metadata, created_at")
_NAMES = _COLUMNS.split(", ")
_ACCOUNT = ledger._ACCOUNT_COLUMNS
_SQL = Statements(
    place=f"""UPDATE credit_account SET held = held + ?, updated_at = ?,
    next_hold_expiry_at = CASE WHEN next_hold_expiry_at IS NULL OR next_hold_expiry_at > ? THEN ?
                               ELSE next_hold_expiry_at END
 WHERE id = ?
   AND balance - held - ? >= -(SELECT overdraft_limit FROM addon_product
                               WHERE addon_product.id = credit_account.product_id)
   AND (next_expiry_at IS NULL OR next_expiry_at > ?)
   AND (next_hold_expiry_at IS NULL OR next_hold_expiry_at > ?)
RETURNING {_ACCOUNT}""",
    insert=f"INSERT INTO credit_hold ({_COLUMNS}, updated_at) VALUES (?, ?, ?, 'held', NULL, NULL, ?, ?, ?, ?, ?, ?)",
    select=f"SELECT {_COLUMNS} FROM credit_hold WHERE id = ?",
    of_merchant=(f"SELECT {', '.join('h.' + c for c in _COLUMNS.split(', '))}, a.next_hold_expiry_at "
                 "FROM credit_hold h JOIN credit_account a ON a.id = h.account_id "
                 "WHERE h.id = ? AND a.merchant_id = ?"),
    settle=("UPDATE credit_hold SET status = ?, captured_amount = ?, updated_at = ? "
            "WHERE id = ? AND status = 'held'"),
    name_entry="UPDATE credit_hold SET entry_id = ? WHERE id = ?",
    unhold=f"""UPDATE credit_account SET held = held - ?, next_hold_expiry_at =
    (SELECT MIN(expires_at) FROM credit_hold WHERE account_id = ? AND status = 'held')
 WHERE id = ? RETURNING {_ACCOUNT}""",
    expire=("UPDATE credit_hold SET status = 'expired', updated_at = ? "
            "WHERE account_id = ? AND status = 'held' AND expires_at <= ? RETURNING amount"),
    due_accounts=("SELECT id FROM credit_account WHERE next_hold_expiry_at <= ? "
                  "ORDER BY next_hold_expiry_at LIMIT 100"),
)


def _run(name: str, params: tuple) -> Any:
    return db.execute_sql(_SQL[name], params)


def _as_datetime(value: datetime | str) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _body(hold_id: str) -> dict[str, Any]:
    """The hold resource, as it is now (presented by :mod:`addon_plugin.present`)."""
    from .present import hold_body  # present imports the ledger, which imports this module

    row = _run("select", (hold_id,)).fetchone()
    return hold_body(storage.CreditHold(**dict(zip(_NAMES, row, strict=True))))


# -- writes --------------------------------------------------------------------------

def place(account_id: str, value: int, *, expires_in: int = DEFAULT_EXPIRES_IN, description: str = "",
          reference: str | None = None, metadata: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Reserve ``value`` credits of the account for ``expires_in`` seconds; returns
    the hold resource. :class:`InsufficientCredits` when it would take available
    credits (balance less active holds) below ``-overdraft_limit`` (nothing is
    written; ``deduction_refused`` is sent with kind ``"hold"``). Sends
    :data:`~addon_plugin.signals.hold_placed` inside the transaction."""
    ledger.check_credits(value)
    if value < 0:
        raise ValidationError(fields={"value": ["Must be greater than 0."]})
    if type(expires_in) is not int or not 1 <= expires_in <= MAX_EXPIRES_IN:
        raise ValidationError(fields={"expires_in": [f"Must be an integer from 1 to {MAX_EXPIRES_IN}."]})
    meta = ledger._check_details("usage", -value, description, reference, metadata, None, ledger.HOST_KEYS)
    with transaction():
        now = ledger.utcnow()
        expires_at = now + timedelta(seconds=expires_in)
        row = None
        for attempt in (1, 2):
            row = _run("place", (value, now, expires_at, expires_at, account_id, value, now, now)).fetchone()
            if row is not None or attempt == 2:
                break
            ledger._tidy_refusal(account_id, now)  # an expiry was due (or it is a refusal): try once more
        if row is None:
            _refuse(account_id, value)
        hold_id = new_id("hold")
        _run("insert", (hold_id, account_id, value, expires_at, description, reference,
                        json.dumps(meta, ensure_ascii=False, separators=(",", ":")), now, now))
        hold = _body(hold_id)
        signals.hold_placed.send(current_app_object(), hold=hold, account=ledger._account_from_row(row))
        return hold


def _refuse(account_id: str, value: int) -> NoReturn:
    row = ledger._fetchone("refusal", (account_id,))
    if row is None:
        raise ledger.AccountNotFound(account_id=account_id)
    account = ledger._account_from_row(row)
    ledger._announce_refusal(account, "hold", value)
    raise ledger.insufficient(account, row[-1], value)


def _locked(hold_id: str, merchant_id: str) -> tuple:
    """The merchant's ``held`` hold, read once its account is locked (expired
    holds of the account marked first); :class:`HoldNotFound`, or
    :class:`HoldNotActive` if it is no longer held."""
    row = _run("of_merchant", (hold_id, merchant_id)).fetchone()
    if row is None:
        raise HoldNotFound(hold_id=hold_id)
    ledger._lock(row[1])
    # Due stays due, and no change sets a horizon that is already due: read before
    # the lock, "not due" still holds after it.
    if ledger._due(row[-1], ledger.utcnow()):
        expire_due(row[1])
    hold = _run("select", (hold_id,)).fetchone()
    if hold[3] != "held" or ledger._due(hold[6], ledger.utcnow()):
        raise HoldNotActive(hold_id=hold_id, status="expired" if hold[3] == "held" else hold[3])
    return hold


def capture(hold_id: str, merchant_id: str, value: int | None = None, *,
            actor: str | None = None) -> dict[str, Any]:
    """Spend ``value`` credits (1..amount; default the whole amount) of a
    ``held`` hold as one ``usage`` entry (the hold's description, reference and
    metadata; allocations as every deduction's) and release the rest; returns
    the hold, ``captured``. :class:`HoldNotActive` if it is no longer held
    (captured, released or expired); :class:`InsufficientCredits` if the entry
    would take the balance below ``-overdraft_limit`` counting the other active
    holds (a void, expiry or refund took the credits): the hold stays held.
    Sends :data:`~addon_plugin.signals.hold_captured`."""
    if value is not None:
        ledger.check_credits(value)
    with transaction():
        row = _locked(hold_id, merchant_id)
        account_id, amount = row[1], row[2]
        value = amount if value is None else value
        if not 1 <= value <= amount:
            raise ValidationError(fields={"value": [f"Must be from 1 to the hold's amount, {amount}."]})
        now = ledger.utcnow()
        _run("settle", ("captured", value, now, hold_id))
        _run("unhold", (amount, account_id, account_id))
        change = ledger.record(account_id, -value, "usage", description=row[7], reference=row[8],
                               metadata=json.loads(row[9]), actor=actor)
        _run("name_entry", (change.entry.id, hold_id))
        hold = _body(hold_id)
        signals.hold_captured.send(current_app_object(), hold=hold, account=change.account)
        return hold


def release(hold_id: str, merchant_id: str) -> dict[str, Any]:
    """Give a ``held`` hold's credits back to available; returns the hold,
    ``released``. :class:`HoldNotActive` if it is no longer held. Sends
    :data:`~addon_plugin.signals.hold_released`."""
    with transaction():
        row = _locked(hold_id, merchant_id)
        _run("settle", ("released", None, ledger.utcnow(), hold_id))
        account = ledger._account_from_row(_run("unhold", (row[2], row[1], row[1])).fetchone())
        hold = _body(hold_id)
        signals.hold_released.send(current_app_object(), hold=hold, account=account)
        return hold


def expire_due(account_id: str) -> int:
    """Mark the account's holds past ``expires_at`` ``expired`` and take them off
    ``held`` (in the caller's transaction, or one of its own); returns how many."""
    with transaction():
        ledger._lock(account_id)
        amounts = [amount for (amount,) in _run("expire", (ledger.utcnow(), account_id, ledger.utcnow())).fetchall()]
        _run("unhold", (sum(amounts), account_id, account_id))
        return len(amounts)


def expire_due_accounts() -> int:
    """The worker's task: tidy the expired holds of up to 100 accounts; returns
    how many accounts it looked at (each then has nothing due). Correctness never
    waits for it: reads and changes tidy first."""
    account_ids = [row[0] for row in _run("due_accounts", (ledger.utcnow(),)).fetchall()]
    for account_id in account_ids:
        expire_due(account_id)
    return len(account_ids)


# -- reads ---------------------------------------------------------------------------

def get(hold_id: str, merchant_id: str) -> dict[str, Any]:
    """The merchant's hold (``expired`` from ``expires_at`` on), or :class:`HoldNotFound`."""
    row = _run("of_merchant", (hold_id, merchant_id)).fetchone()
    if row is None:
        raise HoldNotFound(hold_id=hold_id)
    if row[3] == "held" and _as_datetime(row[6]) <= ledger.utcnow():
        ledger.get_account(row[1])  # marks the expired holds first
    return _body(hold_id)


def list_holds(merchant_id: str, account_id: str, *, status: str | None = None, limit: int = 50,
               cursor: str | None = None) -> dict[str, Any]:
    """A page of the account's holds, newest first, of one ``status`` when given
    (expired holds marked first)."""
    from .present import hold_body

    ledger.get_account(account_id, merchant_id)
    hold = storage.CreditHold
    query = hold.select().where(hold.account == account_id)
    if status is not None:
        query = query.where(hold.status == status)
    return paginate(query, hold.id, hold_body, limit=limit, cursor=cursor)


def init_app(app: Flask) -> None:
    """Register the worker's task that tidies expired holds."""
    from .worker import register_task

    register_task(app, "hold_expiry", expire_due_accounts)
