"""The credit ledger: the only code that changes a balance.

Invariant: an account's ``balance`` is the sum of its ledger entries' ``delta``;
it never goes below ``-overdraft_limit`` (nor above 2**53 - 1); its entries'
``sequence`` run 1, 2, 3 … without gaps. Each change is one transaction: a
conditional ``UPDATE … RETURNING`` of the balance (the guard is in its ``WHERE``,
so there is no read-then-write race) and the insert of one ledger row, then the
signals, whose receivers write in the same transaction.

The hot path (:func:`record`) runs SQL prepared once per dialect at import, not
built by the query builder per call: on PostgreSQL the update and the insert are
one statement (a data-modifying CTE), one round trip.

Credits enter and leave as grants (:mod:`addon_plugin.grants`): in the same
transaction a positive change creates one grant (repaying debt first) and a
negative one draws on grants in consumption order, each recorded as the entry's
allocations. The account row keeps the balance, so a read stays one indexed
row; its ``next_expiry_at`` makes a change or read at or after a grant's expiry
write the ``expiry`` entry first, and costs nothing where no grant expires.

Spend holds (:mod:`addon_plugin.holds`) reserve credits: the row's ``held``
is what the account's active holds reserve, so a deduction's guard is
``balance + delta - held >= -overdraft_limit`` on the row its update locks
(no subquery over holds, which PostgreSQL would not re-read after waiting for
the lock). ``next_hold_expiry_at`` works as ``next_expiry_at`` does: a change
or read at or after it marks the expired holds first, so an expired hold never
counts. Expiry, void and refund entries do not count holds (a hold does not
protect its credits from them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, NoReturn

from peewee import IntegrityError

import storage
from storage import Statements, db, dialect, new_id, transaction, utcnow

from . import grants, signals
from .emails import normalise_email
from .errors import (
    AccountNotFound,
    BalanceLimitExceeded,
    IdempotencyKeyReused,
    InsufficientCredits,
    InvalidAmount,
    ProductNotFound,
    ValidationError,
)
from .limits import (
    DESCRIPTION_LENGTH,
    IDEMPOTENCY_KEY_LENGTH,
    MAX_CREDITS,
    METADATA_MESSAGE,
    REFERENCE_LENGTH,
    fits_metadata,
    is_idempotency_key,
)
from .state import current_app_object

__all__ = [
    "MAX_CREDITS",
    "KINDS",
    "API_KEYS",
    "HOOK_KEYS",
    "HOST_KEYS",
    "Account",
    "Allocation",
    "Entry",
    "Change",
    "record",
    "get_account",
    "balance",
    "find_account_id",
    "open_account",
    "check_credits",
    "purchase",
    "order_accounts",
    "refund_unspent",
]

#: Entry kinds and the sign their delta must have (0: either sign).
KINDS: dict[str, int] = {
    "purchase": 1,
    "usage": -1,
    "adjustment": 0,
    "top_up": 1,
    "refund": -1,
    "expiry": -1,
    "void": -1,
}

#: Idempotency key spaces: who issued a key. A key matches only a key of the same
#: space on the same account, so no caller can pre-empt or replay another's change.
#: The merchant's clients, through the HTTP API (the key exactly as they sent it):
API_KEYS = "api"
#: The order hooks (keys they derive from order and line ids):
HOOK_KEYS = "hook"
#: The host's own calls, the default (and the plugin's top-up credits):
HOST_KEYS = "host"
_KEY_SPACES = (API_KEYS, HOOK_KEYS, HOST_KEYS)


@dataclass(frozen=True, slots=True)
class Account:
    """A credit account as it stood right after a change (or a read)."""

    id: str
    merchant_id: str
    product_id: str
    buyer_email: str
    balance: int
    threshold: int | None
    auto_top_up_enabled: bool
    payment_method: str | None
    customer: str | None
    held: int = 0

    @property
    def available(self) -> int:
        """The balance less the credits active holds reserve: what may be spent."""
        return self.balance - self.held


@dataclass(frozen=True, slots=True)
class Allocation:
    """Credits an entry moved to or from one grant (signed like the entry's
    delta); ``grant_id`` None is the part of a deduction no grant covered (debt)."""

    grant_id: str | None
    amount: int


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger entry: a balance change and the balance it left."""

    id: str
    account_id: str
    sequence: int
    delta: int
    balance_after: int
    kind: str
    description: str
    reference: str | None
    metadata: dict[str, str]
    idempotency_key: str | None
    actor: str | None
    created_at: datetime
    allocations: tuple[Allocation, ...] = ()


@dataclass(frozen=True, slots=True)
class Change:
    """What :func:`record` did: the account after it, its entry, and whether it
    was a replay of an earlier change with the same idempotency key (then the
    first change's entry, and the account's balance as that entry left it)."""

    account: Account
    entry: Entry
    previous_balance: int
    replayed: bool = False


# -- prepared SQL ------------------------------------------------------------

_ACCOUNT_COLUMNS = ("id, merchant_id, product_id, buyer_email, balance, threshold, "
                    "auto_top_up_enabled, payment_method, customer, held")
_ENTRY_COLUMNS = ("id, account_id, sequence, delta, balance_after, kind, description, "
                  "reference, metadata, idempotency_key, actor, created_at, grant_id")

_UPDATE = """UPDATE credit_account
   SET balance = balance + ?, last_sequence = last_sequence + 1, updated_at = ?
 WHERE id = ?
   AND (? > 0 OR balance + ? - held * ? >= -(SELECT overdraft_limit FROM addon_product
                                           WHERE addon_product.id = credit_account.product_id))
   AND balance + ? <= {max_credits}
   AND (next_expiry_at IS NULL OR next_expiry_at > ?)
   AND (next_hold_expiry_at IS NULL OR next_hold_expiry_at > ?){guard}
RETURNING {columns}, last_sequence"""

_INSERT_ENTRY = (f"INSERT INTO ledger_entry ({_ENTRY_COLUMNS}, key_space) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")

# The update also refuses a key (of that key space) this account already used
# (the slow path then replays the first result), so a keyed change costs no extra read.
_GUARDED_UPDATE = _UPDATE.format(
    max_credits=MAX_CREDITS, columns=_ACCOUNT_COLUMNS,
    guard=" AND NOT EXISTS (SELECT 1 FROM ledger_entry WHERE account_id = ? AND key_space = ?"
          " AND idempotency_key = ?)")

# PostgreSQL: the update and the entry insert in one round trip.
_UPDATE_AND_INSERT_PG = f"""WITH u AS ({_GUARDED_UPDATE}),
e AS (INSERT INTO ledger_entry ({_ENTRY_COLUMNS}, key_space)
      SELECT ?, u.id, u.last_sequence, ?, u.balance, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM u)
SELECT {_ACCOUNT_COLUMNS}, last_sequence FROM u"""

# A deduction also draws on the first grant in consumption order, when it
# covers it, and names it on the entry. The draw runs only if nothing changed
# the account since this statement's snapshot (its sequence moved by exactly
# this entry), so a change that committed while it waited for the account's
# lock is never missed; otherwise the slow path draws.
_UPDATE_DRAW_AND_INSERT_PG = f"""WITH u AS ({_GUARDED_UPDATE}),
g AS ({grants.DRAW_FIRST_SQL.format(after="FROM u", guard="AND u.last_sequence = "
                                    "(SELECT last_sequence FROM credit_account WHERE id = ?) + 1")}),
e AS (INSERT INTO ledger_entry ({_ENTRY_COLUMNS}, key_space)
      SELECT ?, u.id, u.last_sequence, ?, u.balance, ?, ?, ?, ?, ?, ?, ?, (SELECT id FROM g), ? FROM u)
SELECT {_ACCOUNT_COLUMNS}, last_sequence, (SELECT id FROM g) FROM u"""

_SELECT_ACCOUNT = (f"SELECT {_ACCOUNT_COLUMNS}, next_expiry_at, next_hold_expiry_at "
                   "FROM credit_account WHERE id = ?")
_SELECT_ENTRY_BY_KEY = (f"SELECT {_ENTRY_COLUMNS} FROM ledger_entry "
                        "WHERE account_id = ? AND key_space = ? AND idempotency_key = ?")
_SELECT_REFUSAL = f"""SELECT {", ".join("a." + c for c in _ACCOUNT_COLUMNS.split(", "))}, a.next_expiry_at,
 a.next_hold_expiry_at, p.overdraft_limit
 FROM credit_account a JOIN addon_product p ON p.id = a.product_id WHERE a.id = ?"""
_SELECT_BALANCE = "SELECT balance, next_expiry_at FROM credit_account WHERE id = ?"
_FIND_ACCOUNT = "SELECT id FROM credit_account WHERE product_id = ? AND buyer_email = ? AND merchant_id = ?"
_SQL = Statements(
    update=_GUARDED_UPDATE,
    insert_entry=_INSERT_ENTRY,
    update_and_insert={"postgresql": _UPDATE_AND_INSERT_PG},
    update_draw_and_insert={"postgresql": _UPDATE_DRAW_AND_INSERT_PG},
    select_account=_SELECT_ACCOUNT,
    entry_by_key=_SELECT_ENTRY_BY_KEY,
    refusal=_SELECT_REFUSAL,
    balance=_SELECT_BALANCE,
    find_account=_FIND_ACCOUNT,
    lock_account={"sqlite": "SELECT balance FROM credit_account WHERE id = ?",  # BEGIN IMMEDIATE holds the lock
                  "postgresql": "SELECT balance FROM credit_account WHERE id = ? FOR UPDATE"},
)


# Holds build their statements on the account columns above: import them once
# those are defined, so either module may be imported first.
from . import holds  # noqa: E402


def _fetchone(name: str, params: tuple) -> tuple | None:
    return db.execute_sql(_SQL[name], params).fetchone()


def _account_from_row(row: tuple) -> Account:
    return Account(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]), row[7], row[8], row[9])


def _entry_from_row(row: tuple) -> Entry:
    created = row[11]
    if isinstance(created, str):
        created = datetime.fromisoformat(created)
    return Entry(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
                 json.loads(row[8]), row[9], row[10], created,
                 tuple(Allocation(g, n) for g, n in grants.allocations_of([(row[0], row[12], row[3])])[row[0]]))


def _due(next_expiry_at: datetime | str | None, now: datetime) -> bool:
    """True when a grant of the account has expired without its entry yet."""
    if next_expiry_at is None:
        return False
    if isinstance(next_expiry_at, str):
        next_expiry_at = datetime.fromisoformat(next_expiry_at)
    return next_expiry_at <= now


def _tidy_due(account_id: str, next_expiry_at: datetime | str | None,
              next_hold_expiry_at: datetime | str | None, now: datetime) -> bool:
    """Write what expired since the last change (grants' ``expiry`` entries, then
    expired holds' status); True if anything was due."""
    grants_due, holds_due = _due(next_expiry_at, now), _due(next_hold_expiry_at, now)
    if grants_due or holds_due:
        with transaction():
            if holds_due:
                holds.expire_due(account_id)
            if grants_due:
                grants.expire_due(account_id)
    return grants_due or holds_due


# -- validation --------------------------------------------------------------

def check_credits(value: Any, *, field: str = "value", allow_zero: bool = False) -> int:
    """``value`` as a credit integer, or :class:`InvalidAmount` (bools, floats,
    strings, zero unless allowed, and anything beyond ±(2**53 - 1) are refused)."""
    if type(value) is not int or abs(value) > MAX_CREDITS or (value == 0 and not allow_zero):
        raise InvalidAmount(fields={field: [InvalidAmount.default_message]})
    return value


def _check_details(kind: str, delta: int, description: str, reference: str | None,
                   metadata: Mapping[str, str] | None, idempotency_key: str | None,
                   key_space: str) -> dict[str, str]:
    check_credits(delta, field="delta")
    sign = KINDS.get(kind)
    if sign is None:
        raise ValidationError(fields={"kind": [f"Must be one of {sorted(KINDS)}."]})
    if sign * delta < 0:
        raise InvalidAmount(f"A {kind} entry must have a {'positive' if sign > 0 else 'negative'} delta.",
                            fields={"delta": ["Wrong sign for this kind."]})
    problems: dict[str, list[str]] = {}
    if not isinstance(description, str) or len(description) > DESCRIPTION_LENGTH:
        problems["description"] = [f"Must be a string of at most {DESCRIPTION_LENGTH} characters."]
    if reference is not None and (not isinstance(reference, str) or len(reference) > REFERENCE_LENGTH):
        problems["reference"] = [f"Must be a string of at most {REFERENCE_LENGTH} characters."]
    if idempotency_key is not None and not is_idempotency_key(idempotency_key):
        problems["idempotency_key"] = [f"Must be 1 to {IDEMPOTENCY_KEY_LENGTH} characters."]
    if key_space not in _KEY_SPACES:
        problems["key_space"] = [f"Must be one of {list(_KEY_SPACES)}."]
    meta = dict(metadata or {})
    if meta and not fits_metadata(meta):
        problems["metadata"] = [METADATA_MESSAGE]
    for name, text in (("description", description), ("reference", reference),
                       ("metadata", json.dumps(meta) if meta else None)):
        if isinstance(text, str) and ("\x00" in text or "\\u0000" in text) and name not in problems:
            problems[name] = ["Must not contain NUL characters."]
    if problems:
        raise ValidationError(fields=problems)
    return meta


# -- reads -------------------------------------------------------------------

def get_account(account_id: str, merchant_id: str | None = None) -> Account:
    """The account's current state; :class:`AccountNotFound` if there is none
    (or, with ``merchant_id``, if it is another merchant's)."""
    row = _fetchone("select_account", (account_id,))
    if row is not None and _tidy_due(account_id, row[10], row[11], utcnow()):
        row = _fetchone("select_account", (account_id,))
    if row is None or (merchant_id is not None and row[1] != merchant_id):
        raise AccountNotFound(account_id=account_id)
    return _account_from_row(row)


def balance(account_id: str) -> int:
    """The account's balance: one indexed read, never a sum over the ledger
    (and first the expiry entries of grants that expired since the last change)."""
    row = _fetchone("balance", (account_id,))
    if row is not None and _due(row[1], utcnow()):
        grants.expire_due(account_id)
        row = _fetchone("balance", (account_id,))
    if row is None:
        raise AccountNotFound(account_id=account_id)
    return row[0]


def find_account_id(merchant_id: str, product_id: str, buyer_email: str) -> str | None:
    """The id of the buyer's account for that product, if the merchant has one."""
    row = _fetchone("find_account", (product_id, normalise_email(buyer_email), merchant_id))
    return row[0] if row else None


def open_account(merchant_id: str, product_id: str, buyer_email: str, *,
                 host_customer_id: str | None = None) -> str:
    """The buyer's account for that product, created (with the buyer) if new."""
    email = normalise_email(buyer_email)
    existing = find_account_id(merchant_id, product_id, email)
    if existing:
        return existing
    with transaction():
        if not storage.Product.select().where(
            (storage.Product.id == product_id) & (storage.Product.merchant == merchant_id)
        ).exists():
            raise ProductNotFound(product_id=product_id)
        now = utcnow()
        storage.Buyer.insert(
            id=new_id("buyer"), merchant=merchant_id, email=email,
            host_customer_id=host_customer_id, created_at=now,
        ).on_conflict_ignore().execute()
        buyer = storage.Buyer.get((storage.Buyer.merchant == merchant_id) & (storage.Buyer.email == email))
        storage.CreditAccount.insert(
            id=new_id("acct"), merchant=merchant_id, product=product_id, buyer=buyer.id,
            buyer_email=email, created_at=now, updated_at=now,
        ).on_conflict_ignore().execute()
    account_id = find_account_id(merchant_id, product_id, email)
    assert account_id is not None
    return account_id


# -- the one write -----------------------------------------------------------

def record(account_id: str, delta: int, kind: str, *, description: str = "",
           reference: str | None = None, metadata: Mapping[str, str] | None = None,
           idempotency_key: str | None = None, key_space: str = HOST_KEYS, actor: str | None = None,
           grant: grants.Terms | None = None, take: Sequence[tuple[str, int]] = (),
           taken_status: str = "depleted") -> Change:
    """Apply ``delta`` credits to the account as one ledger entry of ``kind``.

    A positive delta creates one grant on ``grant`` terms (default: the kind's);
    a negative one draws on the spendable grants in consumption order, or, with
    ``take`` (``(grant_id, credits)`` pairs summing to ``-delta``), from exactly
    those grants, which then get ``taken_status`` (expiry, void and refunds).

    Joins the caller's transaction or opens its own. Refusals
    (:class:`InsufficientCredits`, :class:`BalanceLimitExceeded`,
    :class:`AccountNotFound`, :class:`IdempotencyKeyReused`) are raised before
    anything is written; a refused deduction also sends ``deduction_refused``
    once the transaction it was refused in has ended. With an ``idempotency_key``
    already used on this account in the same ``key_space``, the same request
    returns the first result (``replayed=True``, no signal) and a different one
    raises :class:`IdempotencyKeyReused`.
    """
    meta = _check_details(kind, delta, description, reference, metadata, idempotency_key, key_space)
    key = None if idempotency_key is None else (key_space, idempotency_key)
    if delta > 0:
        grant = grant or grants.Terms()
        grant.check(utcnow())
    for attempt in (1, 2):
        try:
            with transaction():
                return _apply(account_id, delta, kind, description, reference, meta, key, actor,
                              grant, tuple(take), taken_status)
        except _Replayed as replayed:  # nothing was written
            return replayed.change
        except IntegrityError:
            # Two transactions raced on one new idempotency key (PostgreSQL): the
            # loser retries once and finds the winner's entry.
            if idempotency_key is None or attempt == 2 or db.in_transaction():
                raise
    raise AssertionError("unreachable")


# Explicit takes (expiry, void, refund) pass this as the expiry horizons: the
# guards that make other changes write due expiries first do not stop them.
_ANY_TIME = datetime(1, 1, 1)


def _apply(account_id: str, delta: int, kind: str, description: str, reference: str | None,
           metadata: dict[str, str], key: tuple[str, str] | None, actor: str | None,
           grant: grants.Terms | None, take: tuple[tuple[str, int], ...], taken_status: str,
           expired_first: bool = False) -> Change:
    now = utcnow()
    entry_id = new_id("entry")
    metadata_json = json.dumps(metadata, ensure_ascii=False, separators=(",", ":")) if metadata else "{}"
    key_space, idempotency_key = key or (None, None)
    # Explicit takes (expiry, void, refund) do not count holds; every other deduction does.
    horizon = _ANY_TIME if take else now
    update_params = (delta, now, account_id, delta, delta, 0 if take else 1, delta, horizon, horizon,
                     account_id, key_space, idempotency_key)
    entry_params = (entry_id, delta, kind, description, reference, metadata_json, idempotency_key, actor, now)
    # The entry's one grant (created, drawn on or taken from) is named on its
    # row; only entries that touch several grants, or debt, get allocation rows.
    grant_id = new_id("grant") if delta > 0 else take[0][0] if len(take) == 1 else None
    draws = delta < 0 and not take
    if dialect() == "postgresql":
        if draws:
            row = _fetchone("update_draw_and_insert", update_params + (-delta, account_id, now, -delta, account_id)
                            + entry_params + (key_space,))
            grant_id = row[11] if row else None
        else:
            row = _fetchone("update_and_insert", update_params + entry_params + (grant_id, key_space))
    else:
        row = _fetchone("update", update_params)
        if row is not None:
            if draws:
                grant_id = grants.draw_first(account_id, -delta, now)
            db.execute_sql(_SQL["insert_entry"], (
                entry_id, account_id, row[10], delta, row[4], kind, description, reference,
                metadata_json, idempotency_key, actor, now, grant_id, key_space))
    if row is None:  # nothing was written: a replay, a due expiry, or a refusal
        if key is not None:
            _replay_if_used(account_id, key, delta, kind, description, reference, metadata)
        if not expired_first:
            # A due expiry (of a grant or a hold) stopped it: write it, then try again.
            # Try again also when another transaction wrote that expiry between our
            # update and this read (PostgreSQL reads committed rows per statement),
            # or it is a false 402.
            _tidy_refusal(account_id, now)
            return _apply(account_id, delta, kind, description, reference, metadata, key, actor,
                          grant, take, taken_status, expired_first=True)
        _raise_refusal(account_id, delta, kind)

    account = _account_from_row(row)
    previous = account.balance - delta
    expires_at = None
    if delta > 0:
        assert grant is not None and grant_id is not None
        expires_at = grants.create(grant_id, account, delta, previous, grant, kind, description, reference,
                                   metadata_json, now)
        allocations: tuple[tuple[str | None, int], ...] = ((grant_id, delta),)
    elif take:
        allocations = grants.take(entry_id, take, taken_status)
    elif grant_id is not None:
        allocations = ((grant_id, delta),)
    else:
        allocations = grants.draw(account_id, entry_id, -delta, now)
    entry = Entry(entry_id, account_id, row[10], delta, account.balance, kind, description, reference,
                  metadata, idempotency_key, actor, now, tuple(Allocation(g, n) for g, n in allocations))
    change = Change(account, entry, previous)
    _announce(change)
    if expires_at is not None:
        grants.announce_created(change, expires_at)
    return change


def _tidy_refusal(account_id: str, now: datetime) -> None:
    row = _fetchone("refusal", (account_id,))
    if row is not None:
        _tidy_due(account_id, row[10], row[11], now)


class _Replayed(Exception):
    """Carries the first result of a reused idempotency key out of :func:`_apply`."""

    def __init__(self, change: Change):
        self.change = change


def _replay_if_used(account_id: str, key: tuple[str, str], delta: int, kind: str, description: str,
                    reference: str | None, metadata: dict[str, str]) -> None:
    row = _fetchone("entry_by_key", (account_id, *key))
    if row is not None:
        entry = _entry_from_row(row)
        if (entry.delta, entry.kind, entry.description, entry.reference, entry.metadata) != (
            delta, kind, description, reference, metadata
        ):
            raise IdempotencyKeyReused(account_id=entry.account_id, entry_id=entry.id)
        raise _Replayed(_replay(entry))


def _replay(entry: Entry) -> Change:
    """The first result again: its entry, and the account as that entry left its
    balance (the settings are today's), so ``account.balance == entry.balance_after``
    however the balance moved since."""
    account = replace(get_account(entry.account_id), balance=entry.balance_after)
    return Change(account, entry, entry.balance_after - entry.delta, replayed=True)


def _raise_refusal(account_id: str, delta: int, kind: str) -> NoReturn:
    row = _fetchone("refusal", (account_id,))
    if row is None:
        raise AccountNotFound(account_id=account_id)
    account, overdraft_limit = _account_from_row(row), row[-1]
    current = account.balance
    if delta > 0:
        raise BalanceLimitExceeded(account_id=account_id, balance=current)
    _announce_refusal(account, kind, -delta)
    raise insufficient(account, overdraft_limit, -delta)


def insufficient(account: Account, overdraft_limit: int, requested: int) -> InsufficientCredits:
    """The 402 for a deduction (or hold) of ``requested`` credits the account cannot cover."""
    have = (f"The balance is {account.balance}" if not account.held else
            f"Available credits are {account.available} (balance {account.balance}, {account.held} held)")
    return InsufficientCredits(
        f"{have} and this deduction needs {requested}"
        + (f" (overdraft limit {overdraft_limit})." if overdraft_limit else "."),
        account_id=account.id, balance=account.balance, available=account.available,
        overdraft_limit=overdraft_limit, requested=requested,
    )


def _announce_refusal(account: Account, kind: str, requested: int) -> None:
    """Send :data:`~addon_plugin.signals.deduction_refused` once the refused
    change's transaction has ended (it wrote nothing; receivers write in their own)."""
    app = current_app_object()
    if signals.deduction_refused.has_receivers_for(app):
        storage.after_transaction(lambda: signals.deduction_refused.send(
            app, account=account, kind=kind, requested=requested))


def _announce(change: Change) -> None:
    """Send the balance signals, inside the transaction (receivers may abort it)."""
    app = current_app_object()
    before, after = change.previous_balance, change.account.balance
    kwargs: dict[str, Any] = {"account": change.account, "entry": change.entry, "previous_balance": before}
    signals.balance_changed.send(app, **kwargs)
    threshold = change.account.threshold
    if threshold is not None and before > threshold >= after:
        signals.balance_low.send(app, **kwargs)
    if before > 0 >= after:
        signals.balance_depleted.send(app, **kwargs)


# -- orders: purchases and refunds -------------------------------------------

def _lock(account_id: str) -> int:
    """Hold the account's row lock until the transaction ends; returns its balance.

    Inside the lock every change committed before it is visible, so an
    idempotency key checked after it cannot race another transaction.
    """
    row = _fetchone("lock_account", (account_id,))
    if row is None:
        raise AccountNotFound(account_id=account_id)
    return row[0]


def purchase(account_id: str, credits: int, *, order_id: str, quantity: int, idempotency_key: str,
             key_space: str = HOST_KEYS, description: str = "", actor: str | None = None) -> Change:
    """Grant ``credits`` an order line bought (kind ``purchase``, ``reference`` =
    the order id) and send :data:`~addon_plugin.signals.addon_purchased` in the
    same transaction. Exactly once per ``idempotency_key`` (in ``key_space``), even
    concurrently: a repeat returns the first change (``replayed=True``) and sends nothing."""
    with transaction():
        _lock(account_id)
        change = record(account_id, credits, "purchase", description=description, reference=order_id,
                        idempotency_key=idempotency_key, key_space=key_space, actor=actor)
        if not change.replayed:
            signals.addon_purchased.send(current_app_object(), account=change.account,
                                         entry=change.entry, order_id=order_id, quantity=quantity,
                                         credits=credits)
        return change


def order_accounts(merchant_id: str, order_id: str, product_id: str | None = None) -> list[str]:
    """Ids of the merchant's accounts (of one product, if given) that an order's
    ``purchase`` entries credited: the accounts an invoice id names. In product
    order, the order in which :func:`purchase` calls of one order lock them."""
    entry, account = storage.LedgerEntry, storage.CreditAccount
    purchased = entry.select(entry.account).where((entry.reference == order_id) & (entry.kind == "purchase"))
    query = account.select(account.id).where((account.merchant == merchant_id) & account.id.in_(purchased))
    if product_id is not None:
        query = query.where(account.product == product_id)
    return [row.id for row in query.order_by(account.product)]


def refund_unspent(account_id: str, order_id: str, *, idempotency_key: str, key_space: str = HOST_KEYS,
                   description: str = "", actor: str | None = None) -> Change | None:
    """Take back exactly what the grants that the order's ``purchase`` entries
    created on this account still hold (one ``refund`` entry naming them),
    exactly once per ``idempotency_key`` (in ``key_space``). None when they hold nothing (spent,
    expired or voided), so refunding orders in any order takes only each
    order's own credits."""
    with transaction():
        _lock(account_id)
        row = _fetchone("entry_by_key", (account_id, key_space, idempotency_key))
        if row is not None:
            return _replay(_entry_from_row(row))
        return grants.refund_order(account_id, order_id, description=description,
                                   idempotency_key=idempotency_key, key_space=key_space, actor=actor)
