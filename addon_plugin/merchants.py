"""Merchants and their API keys.

A key reads ``sk_<key id>_<secret>``; only SHA-256 of the secret is stored and
it is compared in constant time. Keys are shown once, at creation.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import storage
from storage import Statements, db, new_id, transaction, utcnow

from .errors import ApiKeyNotFound, AuthenticationFailed, MerchantNotFound
from .pagination import paginate
from .present import api_key_body
from .schemas import ListQuerySchema, load_fields

__all__ = ["NewKey", "create_merchant", "create_api_key", "revoke_api_key", "list_api_keys", "authenticate"]

_list_schema = ListQuerySchema()

_SQL = Statements(lookup="SELECT merchant_id, secret_hash FROM api_key WHERE id = ? AND revoked_at IS NULL")

#: ``sk_<26-char key id>_<secret>``: anything else is refused before any lookup.
_KEY_FORMAT = re.compile(r"sk_([0-9a-z]{26})_([A-Za-z0-9_-]{20,100})")


@dataclass(frozen=True)
class NewKey:
    """A key just created: the only time ``key`` (the secret) is known."""

    id: str
    merchant_id: str
    key: str
    created_at: datetime


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_merchant(name: str) -> tuple[storage.Merchant, NewKey]:
    """A new merchant and its first API key."""
    with transaction():
        merchant = storage.Merchant.create(id=new_id("mer"), name=name)
        return merchant, create_api_key(merchant.id)


def create_api_key(merchant_id: str) -> NewKey:
    """A new API key for the merchant; the returned ``key`` is never stored."""
    with transaction():
        if not storage.Merchant.select().where(storage.Merchant.id == merchant_id).exists():
            raise MerchantNotFound(merchant_id=merchant_id)
        key_id = new_id("key")
        secret = secrets.token_urlsafe(32)
        row = storage.ApiKey.create(id=key_id, merchant=merchant_id, secret_hash=_hash(secret))
    return NewKey(key_id, merchant_id, f"sk_{key_id.removeprefix('key_')}_{secret}", row.created_at)


def revoke_api_key(key_id: str, merchant_id: str | None = None) -> storage.ApiKey:
    """Revoke a key at once (revoking it again changes nothing); with
    ``merchant_id``, only that merchant's key. Returns the key's row."""
    query = storage.ApiKey.update(revoked_at=utcnow()).where(
        (storage.ApiKey.id == key_id) & storage.ApiKey.revoked_at.is_null()
    )
    if merchant_id is not None:
        query = query.where(storage.ApiKey.merchant == merchant_id)
    if query.execute() == 0 and not storage.ApiKey.select().where(
        (storage.ApiKey.id == key_id)
        & ((storage.ApiKey.merchant == merchant_id) if merchant_id else True)
    ).exists():
        raise ApiKeyNotFound(key_id=key_id)
    return storage.ApiKey.get_by_id(key_id)


def list_api_keys(merchant_id: str, *, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
    """A page of the merchant's keys (``{"data", "next_cursor"}``), revoked ones
    included, newest first: each ``{"id", "created_at", "revoked_at"}``, never a secret."""
    args = load_fields(_list_schema, {"limit": limit, **({"cursor": cursor} if cursor is not None else {})})
    query = storage.ApiKey.select().where(storage.ApiKey.merchant == merchant_id)
    return paginate(query, storage.ApiKey.id, api_key_body, limit=args["limit"], cursor=args.get("cursor"))


def authenticate(key: str | None) -> tuple[str, str]:
    """``(merchant_id, key_id)`` for a valid, unrevoked key, else :class:`AuthenticationFailed`."""
    match = _KEY_FORMAT.fullmatch(key or "")
    if match is None:
        raise AuthenticationFailed()
    key_id = "key_" + match.group(1)
    row = db.execute_sql(_SQL["lookup"], (key_id,)).fetchone()
    if row is None or not hmac.compare_digest(row[1], _hash(match.group(2))):
        raise AuthenticationFailed()
    return row[0], key_id
