"""The limits on what the plugin accepts and stores: one home for each.

The schemas (so the API, the host's forms and the accounts service), the HTTP
layer, the hooks, the top-up settings and the ledger all read them from here,
so no two places can disagree. Pure: no I/O, no Flask.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MAX_CREDITS",
    "ID_LENGTH",
    "IDEMPOTENCY_KEY_LENGTH",
    "DESCRIPTION_LENGTH",
    "REFERENCE_LENGTH",
    "EXTERNAL_ID_LENGTH",
    "METADATA_KEYS",
    "METADATA_KEY_LENGTH",
    "METADATA_VALUE_LENGTH",
    "METADATA_BYTES",
    "METADATA_MESSAGE",
    "MAX_PAGE_SIZE",
    "BATCH_RECORDS",
    "THRESHOLD_MESSAGE",
    "is_idempotency_key",
    "fits_metadata",
    "is_threshold",
]

#: The largest credit amount, balance or threshold: the JSON-safe integer range.
MAX_CREDITS = 2**53 - 1

#: The longest id of the plugin's own objects (``prod_…``, ``acct_…``).
ID_LENGTH = 40

#: An idempotency key: 1 to this many characters (the API's, the ledger's, the hooks' derived ones).
IDEMPOTENCY_KEY_LENGTH = 255

#: A ledger entry's ``description``: at most this many characters.
DESCRIPTION_LENGTH = 1000

#: A ledger entry's ``reference`` (an order id, for purchases and refunds): at most this many characters.
REFERENCE_LENGTH = 255

#: Ids others give us: a gateway's payment method, customer and charge, a host's product id.
EXTERNAL_ID_LENGTH = 255

#: A ledger entry's ``metadata``: at most this many string keys of at most this
#: many characters, string values of at most this many, this many bytes as JSON.
METADATA_KEYS = 50
METADATA_KEY_LENGTH = 40
METADATA_VALUE_LENGTH = 500
METADATA_BYTES = 8192
METADATA_MESSAGE = (f"At most {METADATA_KEYS} string keys (<= {METADATA_KEY_LENGTH} chars) with string values "
                    f"(<= {METADATA_VALUE_LENGTH} chars), {METADATA_BYTES // 1024} KB.")

#: The most items one page of a list holds.
MAX_PAGE_SIZE = 500

#: The most usage records one ``POST /addons/usage-records`` carries.
BATCH_RECORDS = 1000

THRESHOLD_MESSAGE = f"Must be an integer from 0 to {MAX_CREDITS}."


def is_idempotency_key(value: Any) -> bool:
    """A string of 1 to :data:`IDEMPOTENCY_KEY_LENGTH` characters."""
    return isinstance(value, str) and 0 < len(value) <= IDEMPOTENCY_KEY_LENGTH


def fits_metadata(metadata: Mapping[Any, Any]) -> bool:
    """Within the metadata limits: string keys and values, counts and sizes."""
    return (
        len(metadata) <= METADATA_KEYS
        and all(isinstance(key, str) and 0 < len(key) <= METADATA_KEY_LENGTH for key in metadata)
        and all(isinstance(value, str) and len(value) <= METADATA_VALUE_LENGTH for value in metadata.values())
        and len(json.dumps(metadata).encode()) <= METADATA_BYTES
    )


def is_threshold(value: Any) -> bool:
    """An auto top-up threshold: an integer (not a bool) from 0 to :data:`MAX_CREDITS`."""
    return type(value) is int and 0 <= value <= MAX_CREDITS
