"""Messages for people: what each form field wants, in words a merchant or a
buyer reads, in place of a library's defaults ("Missing data for required
field.", "Must be greater than or equal to 1 and less than or equal to
9007199254740991.").

The JSON API keeps its own messages and codes; the pricing form hooks and the
drop-in pages pass their field errors through :func:`plain`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["FIELD_MESSAGES", "plain"]

#: Field name → what to enter, said once for every way the field can be wrong.
FIELD_MESSAGES: dict[str, str] = {
    "price": "Enter a price above 0, like 19.00.",
    "currency": "Enter a three-letter currency code, like USD or EUR.",
    "credit_amount": "Enter a whole number of credits above 0, like 100.",
    "top_up_allowed": "Choose one-time purchase or top-ups allowed.",
    "overdraft_limit": "Enter a whole number of credits, 0 or more (0 means no overdraft).",
    "credit_expiry_days": "Enter a whole number of days from 1 to 36500, or leave it empty for never.",
    "name": "Enter a name of up to 200 characters, or leave it empty.",
    "value": "Enter a whole number of credits other than 0, like 50 to add or -20 to take away.",
    "amount": "Enter a whole number of credits above 0, like 50.",
    "description": "Enter a short reason, up to 1000 characters.",
    "threshold": "Enter a whole number of credits, 0 or more, like 20.",
    "payment_method": "Choose a card.",
    "expires_in_days": "Enter a whole number of days from 1 to 3650, or leave it empty for never.",
    "event_types": "Tick events from the list, or none for all of them.",
}


def _flat(value: Any) -> list[str]:
    if isinstance(value, Mapping):
        return [m for inner in value.values() for m in _flat(inner)]
    if isinstance(value, (list, tuple)):
        return [m for inner in value for m in _flat(inner)]
    return [] if value is None else [str(value)]


_DIGITS = re.compile(r"At most (\d+) decimal places for (\w+)\.")


def _field_message(name: str, messages: list[str]) -> str:
    """The plain message of a known field; a price keeps the currency's decimal places."""
    if name == "price":
        for message in messages:
            digits = _DIGITS.fullmatch(message)
            if digits:
                return (f"Enter a price above 0 with at most {digits[1]} decimal places for {digits[2]}, "
                        f"like {'19.' + '0' * int(digits[1]) if int(digits[1]) else '1900'}.")
            if message == "Too large.":
                return "Enter a price below 1,000,000,000,000,000."
    return FIELD_MESSAGES[name]


def plain(messages: Mapping[str, Any], *, keep: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Field → messages for a person: a known field gets its one plain message
    (fields in ``keep`` keep theirs: a service's own sentence, say); any other
    keeps what it had, flattened to a list."""
    return {name: [_field_message(name, _flat(value))] if name in FIELD_MESSAGES and name not in keep
            else _flat(value) for name, value in messages.items()}
