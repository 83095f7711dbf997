"""The ledger and top-ups in plain words, for a buyer: no internal kinds, ids or
actors (``topup_01…``, ``hook:order_paid``), only what happened and what to do."""

from __future__ import annotations

from typing import Any

__all__ = ["activity", "top_up_status", "top_up_notice", "failure_reason"]

_ACTIVITY = {
    "purchase": "Bought credits",
    "top_up": "Automatic top-up",
    "refund": "Credits returned with a refund",
    "expiry": "Credits expired",
    "void": "Credits withdrawn by the shop",
}

_FAILURES = {
    "card_declined": "your bank declined the card",
    "insufficient_funds": "the card has insufficient funds",
    "expired_card": "the card has expired",
    "authentication_required": "your bank asked you to confirm the payment, which cannot happen automatically",
    "invalid_payment_method": "the card on file can no longer be used",
    "daily_limit": "the day's limit of automatic top-ups was reached",
}


def activity(entry: dict[str, Any]) -> str:
    """What a ledger entry means to the buyer."""
    kind, delta, text = entry["kind"], entry["delta"], (entry.get("description") or "").strip()
    if kind in _ACTIVITY:
        return _ACTIVITY[kind]
    if kind == "usage":
        return text or "Used credits"
    label = "Added by the shop" if delta > 0 else "Taken away by the shop"
    return f"{label}: {text}" if text else label


def failure_reason(code: str | None) -> str:
    """Why a charge failed, in words."""
    return _FAILURES.get(code or "", "the payment did not go through")


def top_up_status(top_up: dict[str, Any]) -> str:
    """A top-up's state in words."""
    status = top_up["status"]
    if status == "succeeded":
        return "Paid"
    if status == "failed":
        return "Not paid: " + failure_reason(top_up.get("failure_code"))
    if status in ("unresolved", "pending_settlement"):
        return "Being checked with the payment provider"
    return "In progress"


def top_up_notice(latest: dict[str, Any] | None, *, auto_on: bool) -> dict[str, str] | None:
    """A notice about the latest top-up when it needs the buyer's attention:
    ``{"tone", "title", "text", "todo"}``, or None."""
    if latest is None:
        return None
    amount = f"{latest['amount']} {latest['currency']}"
    if latest["status"] == "failed":
        reason = failure_reason(latest.get("failure_code"))
        todo = ("Choose another card below and save, or buy credits again from the shop."
                if auto_on else "Auto top-up is now off. Choose a card that works below and switch it on again, "
                                "or buy credits from the shop.")
        return {"tone": "error", "title": "Your last automatic top-up failed",
                "text": f"We tried to charge {amount} for {latest['credits']} credits, but {reason}. "
                        "No money was taken.", "todo": todo}
    if latest["status"] in ("unresolved", "pending_settlement"):
        return {"tone": "warning", "title": "A top-up is being checked",
                "text": f"We are waiting for the payment provider to confirm the charge of {amount} for "
                        f"{latest['credits']} credits.",
                "todo": "Nothing to do: you will not be charged twice, and the credits arrive once it is confirmed."}
    return None
