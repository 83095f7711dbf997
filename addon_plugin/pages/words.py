"""The ledger and top-ups in plain words, for a buyer: no internal kinds, ids or
actors (``topup_01…``, ``hook:order_paid``), only what happened and what to do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["activity", "top_up_status", "top_up_notice", "failure_reason", "forecast", "limit_message"]

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
    "daily_limit_reached": "the day's limit of automatic top-ups was reached",
    "monthly_limit_reached": "it would have passed your monthly limit",
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


def top_up_notice(auto_top_up: dict[str, Any], *, when: Callable[..., str]) -> dict[str, str] | None:
    """A notice from the account's visible auto top-up state (``auto_top_up`` of
    the account resource) when its latest top-up needs the buyer's attention:
    ``{"tone", "title", "text", "todo"}``, or None. ``when`` formats a time."""
    latest = auto_top_up.get("last_top_up")
    if latest is None:
        return None
    amount = f"{latest['amount']} {latest['currency']}"
    retry_at = auto_top_up.get("retry_at")
    if latest["status"] in ("unresolved", "pending_settlement"):
        return {"tone": "warning", "title": "A top-up is being checked",
                "text": f"We are waiting for the payment provider to confirm the charge of {amount} for "
                        f"{latest['credits']} credits.",
                "todo": "Nothing to do: you will not be charged twice, and the credits arrive once it is confirmed."}
    if latest["status"] != "failed":
        return None
    failure = auto_top_up.get("last_failure") or {}
    if failure.get("code") == "monthly_limit_reached":
        again = f" on {when(retry_at)}" if retry_at else " next month"
        return {"tone": "warning", "title": "Your monthly limit stopped an automatic top-up",
                "text": f"Buying {latest['credits']} credits for {amount} would have taken this month's automatic "
                        f"top-ups past your limit of {auto_top_up.get('monthly_limit')} {latest['currency']}, so "
                        "we did not charge it. No money was taken.",
                "todo": f"Raise or remove the monthly limit below, or buy credits from the shop. Otherwise "
                        f"automatic top-ups start again{again}."}
    reason = failure_reason(failure.get("code"))
    if not auto_top_up.get("enabled"):
        todo = ("Auto top-up is now off. Choose a card that works below and switch it on again, "
                "or buy credits from the shop.")
    else:
        todo = "Choose another card below and save, or buy credits again from the shop."
        if retry_at:
            todo += f" Otherwise we try this card again on {when(retry_at)}."
    return {"tone": "error", "title": "Your last automatic top-up failed",
            "text": f"We tried to charge {amount} for {latest['credits']} credits, but {reason}. "
                    "No money was taken.", "todo": todo}


def forecast(account: dict[str, Any], *, when: Callable[..., str]) -> str | None:
    """The depletion forecast in words ("at this rate …"), or None without one."""
    found = account.get("forecast")
    if not found:
        return None
    rate = f"about {found['credits_per_day']:g} credits a day"
    if account["available"] <= 0:
        return f"You use {rate}, and none of your credits are left to spend."
    return f"At this rate ({rate}) your credits last until {when(found['depletes_at'], '%d %b %Y')}."


def limit_message(currency: str, digits: int) -> str:
    """What a monthly limit field wants, in the product's currency."""
    example = "50." + "0" * digits if digits else "50"
    return (f"Enter the most automatic top-ups may charge in a month, in {currency}, above 0 with at most "
            f"{digits} decimal places, like {example}; or leave it empty for no limit.")
