"""The orders the host's hooks reported: when each was paid, when refunded.

A host may report an order's payment and its refund in either order, more than
once, and at the same time. Each order hook first reports its event here, in
the transaction that acts on it: the order's row is created if new and locked
until that transaction ends, so the hooks of one order run one after another
and each learns what came before it (a repeated payment, a refund that came
first). What an order granted is the ledger's business: its ``purchase``
entries, ``reference`` = the order id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from storage import Statements, db, utcnow

__all__ = ["Event", "Seen", "report"]

#: What a hook reports of an order.
Event = Literal["paid", "refunded"]

_SQL = Statements(
    # Create the row, or lock the existing one (a no-op update), and read it.
    claim=("INSERT INTO addon_order (merchant_id, order_id, created_at) VALUES (?, ?, ?) "
           "ON CONFLICT (merchant_id, order_id) DO UPDATE SET created_at = addon_order.created_at "
           "RETURNING paid_at, refunded_at"),
    paid="UPDATE addon_order SET paid_at = ? WHERE merchant_id = ? AND order_id = ?",
    refunded="UPDATE addon_order SET refunded_at = ? WHERE merchant_id = ? AND order_id = ?",
)


@dataclass(frozen=True)
class Seen:
    """What was known of an order before the event being reported."""

    paid: bool
    refunded: bool


def report(merchant_id: str, order_id: str, event: Event) -> Seen:
    """Record that the order was ``paid`` or ``refunded`` (the time of the first
    report is kept) and return what was known of it before. The order stays
    locked until the caller's transaction ends: call it inside the transaction
    that acts on the order, before anything else."""
    assert db.in_transaction(), "the order's lock lasts only as long as the caller's transaction"
    now = utcnow()
    paid_at, refunded_at = db.execute_sql(_SQL["claim"], (merchant_id, order_id, now)).fetchone()
    seen = Seen(paid=paid_at is not None, refunded=refunded_at is not None)
    if not getattr(seen, event):
        db.execute_sql(_SQL[event], (now, merchant_id, order_id))
    return seen
