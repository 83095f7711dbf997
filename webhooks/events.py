"""The event catalogue and the body of each event. Pure.

Every body reads ``{"type", "timestamp", "data"}``. For events about an
account, ``data`` holds ``merchant_id``, ``account_id``, ``buyer_email``,
``product_id``, ``balance`` and, when the event wrote a ledger entry, ``entry``:
the API's entry resource (with its per-account ``sequence``, so receivers can
order events). Some types add fields: ``addon.purchased`` adds ``order_id``,
``quantity``, ``credits``; top-up events add ``top_up`` (the API's top-up
resource) and, on failure, ``failure``; ``auto_top_up.disabled`` adds ``reason``;
``grant.expiring`` adds ``grant`` (the API's grant resource); ``balance.forecast_low``
adds ``forecast`` (``{"credits_per_day", "depletes_at"}``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from addon_plugin.present import entry_body
from storage import isoformat, utcnow

__all__ = ["EVENT_TYPES", "EXTRA_FIELDS", "build_body", "dumps"]

#: Every event type, with the signal kwargs each adds to ``data``.
EXTRA_FIELDS: dict[str, tuple[str, ...]] = {
    "balance.updated": (),
    "balance.low": (),
    "balance.depleted": (),
    "addon.purchased": ("order_id", "quantity", "credits"),
    "top_up.succeeded": ("top_up",),
    "top_up.failed": ("top_up", "failure"),
    "top_up.unresolved": ("top_up",),
    "auto_top_up.disabled": ("reason",),
    "grant.expiring": ("grant",),
    "balance.forecast_low": ("forecast",),
}

#: The event types an endpoint may subscribe to.
EVENT_TYPES: tuple[str, ...] = tuple(EXTRA_FIELDS)


def _plain(value: Any) -> Any:
    """Signal arguments as JSON-ready values (dataclasses and mappings become dicts)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def build_body(event_type: str, account: Any, entry: Any = None,
               extra: Mapping[str, Any] | None = None, *, occurred_at: datetime | None = None) -> dict[str, Any]:
    """The body of one event about ``account`` (a ledger ``Account`` snapshot).

    ``timestamp`` is when the event happened: the entry's time if there is one.
    """
    data: dict[str, Any] = {
        "merchant_id": account.merchant_id,
        "account_id": account.id,
        "buyer_email": account.buyer_email,
        "product_id": account.product_id,
        "balance": account.balance,
    }
    if entry is not None:
        data["entry"] = entry_body(entry)
    for field in EXTRA_FIELDS[event_type]:
        if extra and field in extra:
            data[field] = _plain(extra[field])
    moment = occurred_at or (entry.created_at if entry is not None else utcnow())
    return {"type": event_type, "timestamp": isoformat(moment), "data": data}


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable in a webhook body")


def dumps(body: Mapping[str, Any]) -> str:
    """The body as compact JSON: the exact text every attempt sends and signs."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=_default)
