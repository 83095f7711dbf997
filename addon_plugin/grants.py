"""Credit grants: the lots credits enter an account as, and the order they leave in.

Every positive ledger change creates one grant; every negative one draws on
grants, recorded as allocation rows of its entry. :mod:`addon_plugin.ledger`
calls the row-level functions here (:func:`create`, :func:`draw`, :func:`take`)
inside its transaction, after the account's row is locked by its update, so
grants of one account change one transaction at a time. The operations on
grants that write entries (:func:`expire_due`, :func:`void`, :func:`refund_order`)
go through :func:`addon_plugin.ledger.record`.

Consumption order: ``priority`` ascending, then ``expires_at`` ascending (never
last), then promotional before paid, then oldest (ids are time-ordered).
Invariant: ``max(balance, 0)`` is the sum of ``remaining`` over the spendable
grants (active, not expired), and a balance is negative only when that sum is 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask, current_app

import storage
from storage import db, transaction

from . import signals
from .errors import GrantNotFound, ValidationError
from .state import current_app_object

__all__ = ["CATEGORIES", "STATUSES", "Terms", "create", "draw_first", "draw", "take", "allocations_of", "expire_due",
           "expire_due_accounts", "warn_expiring", "void", "refund_order", "get", "summary", "init_app"]

CATEGORIES = ("paid", "promotional")
STATUSES = ("active", "depleted", "expired", "voided")

_ORDER = "priority, expires_at IS NULL, expires_at, category = 'paid', id"
_SPENDABLE = "account_id = ? AND status = 'active' AND (expires_at IS NULL OR expires_at > ?)"

#: Draw a whole deduction from the first grant in consumption order, if it
#: holds more (``after``/``guard``: the ledger's PostgreSQL statement joins it).
#: Only ``remaining`` changes, a column no index holds, so no index is touched;
#: a draw that empties the grant (its status changes) takes the slow path.
DRAW_FIRST_SQL: str = f"""UPDATE credit_grant SET remaining = remaining - ? {{after}}
 WHERE credit_grant.id = (SELECT id FROM credit_grant WHERE {_SPENDABLE} ORDER BY {_ORDER} LIMIT 1)
   AND credit_grant.remaining > ? {{guard}}
RETURNING credit_grant.id"""

# The ledger's statements embed DRAW_FIRST_SQL: import it once that is defined,
# so either module may be imported first.
from . import ledger  # noqa: E402

_SQL = storage.Statements(
    draw_first=DRAW_FIRST_SQL.format(after="", guard=""),
    spendable=f"SELECT id, remaining FROM credit_grant WHERE {_SPENDABLE} ORDER BY {_ORDER}",
    take=("UPDATE credit_grant SET remaining = remaining - ?, "
          "status = CASE WHEN remaining = ? THEN ? ELSE status END WHERE id = ? AND remaining >= ? "
          "RETURNING id"),
    insert=("INSERT INTO credit_grant (id, account_id, category, amount, remaining, priority, expires_at, "
            "status, source, reference, description, metadata, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
    allocation="INSERT INTO grant_allocation (entry_id, position, grant_id, amount) VALUES (?, ?, ?, ?)",
    expiry_days="SELECT credit_expiry_days FROM addon_product WHERE id = ?",
    sooner_expiry=("UPDATE credit_account SET next_expiry_at = ? WHERE id = ? "
                   "AND (next_expiry_at IS NULL OR next_expiry_at > ?)"),
    refresh_expiry=("UPDATE credit_account SET next_expiry_at = (SELECT MIN(expires_at) FROM credit_grant "
                    "WHERE account_id = ? AND status = 'active' AND expires_at IS NOT NULL) WHERE id = ?"),
    due=("SELECT id, remaining FROM credit_grant WHERE account_id = ? AND status = 'active' "
         "AND expires_at <= ? ORDER BY expires_at, id"),
    due_accounts="SELECT id FROM credit_account WHERE next_expiry_at <= ? ORDER BY next_expiry_at LIMIT 100",
    to_warn=("SELECT id FROM credit_grant WHERE status = 'active' AND expires_at IS NOT NULL "
             "AND expiry_warned_at IS NULL AND expires_at <= ? ORDER BY expires_at LIMIT 100"),
    claim_warning=("UPDATE credit_grant SET expiry_warned_at = ? WHERE id = ? AND expiry_warned_at IS NULL "
                   "AND status = 'active' AND expires_at > ? RETURNING account_id"),
    of_order=("SELECT id, remaining FROM credit_grant WHERE account_id = ? AND reference = ? "
              "AND source = 'purchase' AND status = 'active' ORDER BY id"),
    summary=f"SELECT category, remaining, expires_at FROM credit_grant WHERE {_SPENDABLE}",
)


def _run(name: str, params: tuple) -> Any:
    return db.execute_sql(_SQL[name], params)


def _as_datetime(value: datetime | str | None) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class Terms:
    """How a positive change's grant is made. None: the kind's default
    (``adjustment``: promotional, no expiry; ``purchase``/``top_up``: paid,
    expiring after the product's ``credit_expiry_days`` if it sets them)."""

    category: str | None = None
    expires_at: datetime | None = None
    priority: int = 50
    source: str | None = None

    def check(self, now: datetime) -> None:
        """:class:`ValidationError` for a category, priority or expiry no grant may have."""
        problems = {}
        if self.category is not None and self.category not in CATEGORIES:
            problems["category"] = [f"Must be one of {', '.join(CATEGORIES)}."]
        if type(self.priority) is not int or not 0 <= self.priority <= 100:
            problems["priority"] = ["Must be an integer from 0 to 100."]
        if self.expires_at is not None and _naive_utc(self.expires_at) <= now:
            problems["expires_at"] = ["Must be in the future."]
        if problems:
            raise ValidationError(fields=problems)


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


# -- inside the ledger's transaction ------------------------------------------------

def _insert_allocations(entry_id: str, allocations: list[tuple[str | None, int]]) -> None:
    for position, (grant_id, amount) in enumerate(allocations):
        _run("allocation", (entry_id, position, grant_id, amount))


def create(grant_id: str, account: Any, delta: int, previous_balance: int, terms: Terms, kind: str,
           description: str, reference: str | None, metadata_json: str, now: datetime) -> datetime | None:
    """The grant of a positive entry (which names it): debt is repaid first, so
    it starts with ``delta`` less what the balance owed. Returns when it
    expires, if it expires while still holding credits."""
    remaining = delta - min(delta, max(0, -previous_balance))
    category = terms.category or ("promotional" if kind == "adjustment" else "paid")
    expires_at = _naive_utc(terms.expires_at) if terms.expires_at else None
    if expires_at is None and kind in ("purchase", "top_up"):
        days = _run("expiry_days", (account.product_id,)).fetchone()[0]
        expires_at = now + timedelta(days=days) if days else None
    _run("insert", (grant_id, account.id, category, delta, remaining, terms.priority, expires_at,
                    "active" if remaining else "depleted", terms.source or kind, reference, description,
                    metadata_json, now))
    if expires_at is None or not remaining:
        return None
    _run("sooner_expiry", (expires_at, account.id, expires_at))
    return expires_at


def draw_first(account_id: str, credits: int, now: datetime) -> str | None:
    """The fast path: the id of the first grant in consumption order, if it held
    more than ``credits`` and they were drawn from it; else None (nothing done)."""
    row = _run("draw_first", (credits, account_id, now, credits)).fetchone()
    return None if row is None else row[0]


def draw(account_id: str, entry_id: str, credits: int, now: datetime) -> tuple[tuple[str | None, int], ...]:
    """Draw ``credits`` from the spendable grants in consumption order; what
    they do not cover is debt (``grant_id`` None). Returns the allocations,
    written as the entry's allocation rows."""
    allocations: list[tuple[str | None, int]] = []
    need = credits
    for grant_id, remaining in _run("spendable", (account_id, now)).fetchall():
        if need == 0:
            break
        amount = min(need, remaining)
        _run("take", (amount, amount, "depleted", grant_id, amount))
        allocations.append((grant_id, -amount))
        need -= amount
    if need:
        allocations.append((None, -need))
    _insert_allocations(entry_id, allocations)
    return tuple(allocations)


def take(entry_id: str, grants: tuple[tuple[str, int], ...], status: str) -> tuple[tuple[str | None, int], ...]:
    """Take exactly these credits from these grants (expiry, void, refund); a
    grant left with none gets ``status``. Returns the allocations (written as
    rows when there are several; one is named on the entry)."""
    for grant_id, amount in grants:
        if _run("take", (amount, amount, status, grant_id, amount)).fetchone() is None:
            raise AssertionError(f"grant {grant_id} does not hold {amount} credits")
    allocations: list[tuple[str | None, int]] = [(grant_id, -amount) for grant_id, amount in grants]
    if len(allocations) > 1:
        _insert_allocations(entry_id, allocations)
    return tuple(allocations)


def allocations_of(entries: list[tuple[str, str | None, int]]) -> dict[str, list[tuple[str | None, int]]]:
    """The allocations of each ``(entry id, its grant_id, delta)``, in order:
    its allocation rows, else its one grant, else none (an entry written before
    grants existed). One read for a page of entries."""
    found: dict[str, list[tuple[str | None, int]]] = {entry_id: [] for entry_id, _, _ in entries}
    if not entries:
        return found
    allocation = storage.GrantAllocation
    rows = db.execute_sql(*allocation.select(allocation.entry, allocation.grant, allocation.amount)
                          .where(allocation.entry.in_(list(found)))
                          .order_by(allocation.entry, allocation.position).sql()).fetchall()
    for row_entry, row_grant, amount in rows:
        found[row_entry].append((row_grant, amount))
    for entry_id, grant_id, delta in entries:
        if not found[entry_id] and grant_id is not None:
            found[entry_id] = [(grant_id, delta)]
    return found


def announce_created(change: Any, expires_at: datetime) -> None:
    """A grant created inside the warning window is warned of at once."""
    window = _warning_window()
    now = ledger.utcnow()
    if window is not None and expires_at <= now + window:
        _warn(change.entry.allocations[0].grant_id, now, account=change.account)


# -- expiry ------------------------------------------------------------------------

def expire_due(account_id: str) -> int:
    """Write the ``expiry`` entry of each of the account's grants whose
    ``expires_at`` has come (oldest first); returns how many."""
    with transaction():
        ledger._lock(account_id)
        due = _run("due", (account_id, ledger.utcnow())).fetchall()
        for grant_id, remaining in due:
            ledger.record(account_id, -remaining, "expiry", description="Credits expired", reference=grant_id,
                          take=[(grant_id, remaining)], taken_status="expired", actor="expiry")
        _run("refresh_expiry", (account_id, account_id))
        return len(due)


def expire_due_accounts() -> int:
    """The worker's task: expire what is due on up to 100 accounts; returns how
    many accounts it looked at (each then has nothing due)."""
    account_ids = [row[0] for row in _run("due_accounts", (ledger.utcnow(),)).fetchall()]
    for account_id in account_ids:
        expire_due(account_id)
    return len(account_ids)


def _warning_window() -> timedelta | None:
    seconds = current_app.config["ADDONS_GRANT_EXPIRY_WARNING"]
    return None if seconds is None else timedelta(seconds=float(seconds))


def _warn(grant_id: str, now: datetime, account: Any = None) -> bool:
    """Send ``grant_expiring`` once for the grant if it expires within the window."""
    window = _warning_window()
    if window is None:
        return False
    with transaction():
        grant = storage.CreditGrant.get_by_id(grant_id)
        expires_at = _as_datetime(grant.expires_at)
        if expires_at is None or expires_at > now + window:
            return False
        claimed = _run("claim_warning", (now, grant_id, now)).fetchone()
        if claimed is None:
            return False
        grant = storage.CreditGrant.get_by_id(grant_id)
        if account is None:
            account = ledger.get_account(claimed[0])
        signals.grant_expiring.send(current_app_object(), account=account, grant=grant_body(grant))
        return True


def warn_expiring() -> int:
    """The worker's task: send ``grant_expiring`` for grants entering the window."""
    window = _warning_window()
    if window is None:
        return 0
    now = ledger.utcnow()
    return sum(_warn(row[0], now) for row in _run("to_warn", (now + window,)).fetchall())


# -- reads -------------------------------------------------------------------------

def get(grant_id: str, merchant_id: str) -> storage.CreditGrant:
    """The merchant's grant (its expiry written first, if due), or :class:`GrantNotFound`."""
    grant = (storage.CreditGrant.select(storage.CreditGrant).join(storage.CreditAccount)
             .where((storage.CreditGrant.id == grant_id) & (storage.CreditAccount.merchant == merchant_id))
             .first())
    if grant is None:
        raise GrantNotFound(grant_id=grant_id)
    expires_at = _as_datetime(grant.expires_at)
    if grant.status == "active" and expires_at is not None and expires_at <= ledger.utcnow():
        ledger.get_account(grant.account_id)  # writes the due expiry
        grant = storage.CreditGrant.get_by_id(grant_id)
    return grant


def summary(account_id: str) -> dict[str, Any]:
    """``balances`` (remaining by category) and ``next_expiry`` of an account."""
    now = ledger.utcnow()
    balances = {"paid": 0, "promotional": 0}
    soonest: datetime | None = None
    credits = 0
    for category, remaining, expires_at in _run("summary", (account_id, now)).fetchall():
        balances[category] += remaining
        expires_at = _as_datetime(expires_at)
        if expires_at is not None:
            if soonest is None or expires_at < soonest:
                soonest, credits = expires_at, remaining
            elif expires_at == soonest:
                credits += remaining
    next_expiry = None if soonest is None else {"at": storage.isoformat(soonest), "credits": credits}
    return {"balances": balances, "next_expiry": next_expiry}


def grant_body(grant: storage.CreditGrant) -> dict[str, Any]:
    """A grant resource."""
    return {
        "id": grant.id,
        "account_id": grant.account_id,
        "category": grant.category,
        "amount": grant.amount,
        "remaining": grant.remaining,
        "priority": grant.priority,
        "expires_at": storage.isoformat(grant.expires_at),
        "status": grant.status,
        "source": grant.source,
        "reference": grant.reference,
        "description": grant.description,
        "metadata": json.loads(grant.metadata),
        "created_at": storage.isoformat(grant.created_at),
    }


# -- voids and refunds -------------------------------------------------------------

def void(grant_id: str, merchant_id: str, *, description: str = "", actor: str | None = None,
         idempotency_key: str | None = None, key_space: str | None = None) -> storage.CreditGrant:
    """Take the grant's remaining credits out (one ``void`` entry, ``reference``
    = the grant id) and mark it ``voided``; a depleted grant is just marked.
    An expired or voided grant stays as it is. ``key_space``: the ledger's
    (default: the host's)."""
    with transaction():
        account_id = get(grant_id, merchant_id).account_id
        ledger._lock(account_id)
        grant = storage.CreditGrant.get_by_id(grant_id)  # after the lock: what is current
        if grant.status == "active":
            ledger.record(account_id, -grant.remaining, "void", description=description or "Grant voided",
                          reference=grant_id, take=[(grant_id, grant.remaining)], taken_status="voided",
                          actor=actor, idempotency_key=idempotency_key, key_space=key_space or ledger.HOST_KEYS)
            _run("refresh_expiry", (account_id, account_id))
        elif grant.status == "depleted":
            storage.CreditGrant.update(status="voided").where(storage.CreditGrant.id == grant_id).execute()
        return storage.CreditGrant.get_by_id(grant_id)


def refund_order(account_id: str, order_id: str, **record_kwargs: Any) -> Any:
    """Take back what the order's ``purchase`` grants on this account still hold
    (one ``refund`` entry); None when they hold nothing. Call it with the
    account locked."""
    expire_due(account_id)
    held = [(grant_id, remaining) for grant_id, remaining in _run("of_order", (account_id, order_id)).fetchall()]
    if not held:
        return None
    change = ledger.record(account_id, -sum(n for _, n in held), "refund", reference=order_id, take=held,
                           **record_kwargs)
    _run("refresh_expiry", (account_id, account_id))
    return change


def init_app(app: Flask) -> None:
    """Register the worker's expiry and warning tasks."""
    from .worker import register_task

    register_task(app, "grant_expiry", expire_due_accounts)
    register_task(app, "grant_expiry_warnings", warn_expiring)
