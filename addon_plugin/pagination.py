"""Cursor pagination for lists: newest first, ``{"data": [...], "next_cursor": str | None}``.

The cursor is opaque to clients: the sort key of the last row served (a
time-ordered id, or a ledger ``sequence``) as JSON in URL-safe base64. A page
reads one row more than ``limit`` to know whether another page follows.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from peewee import Field, IntegerField, ModelSelect

from .errors import ValidationError

__all__ = ["paginate"]

_BAD_CURSOR = {"cursor": ["Not a cursor this list gave."]}


def _encode(value: int | str) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _decode(cursor: str, key: Field) -> int | str:
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, RecursionError):
        raise ValidationError(fields=_BAD_CURSOR) from None
    if isinstance(key, IntegerField):  # BigIntegerField too
        valid = type(value) is int and abs(value) < 2**63
    else:
        valid = isinstance(value, str) and 0 < len(value) <= 64 and value.isascii() and value.isprintable()
    if not valid:
        raise ValidationError(fields=_BAD_CURSOR)
    return value


def paginate(query: ModelSelect[Any], key: Field, present: Callable[[Any], dict], *, limit: int,
             cursor: str | None = None) -> dict:
    """One page of ``query``, ordered by ``key`` descending, each row presented
    by ``present``; ``limit`` and ``cursor`` validated (see ``ListQuerySchema``)."""
    if cursor is not None:
        query = query.where(key < _decode(cursor, key))
    rows = list(query.order_by(key.desc()).limit(limit + 1))
    page = rows[:limit]
    next_cursor = _encode(getattr(page[-1], key.name)) if len(rows) > limit else None
    return {"data": [present(row) for row in page], "next_cursor": next_cursor}
