"""Opaque, time-ordered ids: ``<prefix>_<26 chars>``.

Like a ULID: 48 bits of milliseconds then 80 random bits, in Crockford's base32
(lower case), so ids sort by creation time and ``ORDER BY id DESC`` is newest first.
Within a process they are strictly increasing (as ULID's monotonic mode: an id
made in the same millisecond as the last one is that one plus one), so even ids
made in one millisecond keep their order.
"""

from __future__ import annotations

import secrets
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # every 10-bit value as two digits
_SHIFTS = range(120, -1, -10)
_lock = threading.Lock()
_last = 0


def new_id(prefix: str) -> str:
    """A new id such as ``acct_01jd3k5...``; unique, opaque, sortable by time."""
    global _last
    with _lock:
        value = _last = max((time.time_ns() // 1_000_000) << 80 | secrets.randbits(80), _last + 1)
    # The 128 bits as 26 base32 digits, two at a time (13 lookups of 10 bits, not 26 of 5).
    return prefix + "_" + "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])
