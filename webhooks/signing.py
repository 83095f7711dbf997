"""Standard Webhooks signing: bytes in, headers out. Pure, no I/O.

A delivery carries three headers::

    webhook-id:         msg_...            (the event's id; the same on every retry)
    webhook-timestamp:  1714000000         (unix seconds at signing, i.e. at each attempt)
    webhook-signature:  v1,<base64>        (HMAC-SHA256 of "{id}.{timestamp}.{body}")

During a secret rotation the signature header lists one ``v1,…`` per live
secret, separated by spaces; a receiver accepts the message if any matches.
A secret reads ``whsec_`` + standard base64 of its key bytes; the HMAC key is
the decoded bytes. :func:`verify` is what a receiver calls.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets as _random
import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "SECRET_PREFIX",
    "WebhookVerificationError",
    "generate_secret",
    "sign",
    "signature_headers",
    "verify",
]

#: Every webhook secret starts with this.
SECRET_PREFIX = "whsec_"

_KEY_BYTES = 32  # >= 24 as Standard Webhooks asks


class WebhookVerificationError(ValueError):
    """The message is not authentic: a header is missing, the timestamp is
    outside the tolerance, or no signature matches."""


def generate_secret() -> str:
    """A new secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(_KEY_BYTES)).decode()


def _key(secret: str) -> bytes:
    """The HMAC key inside a ``whsec_`` secret."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("A webhook secret is 'whsec_' followed by standard base64.") from None
    if not key:
        raise ValueError("A webhook secret may not be empty.")
    return key


def _as_bytes(payload: bytes | str) -> bytes:
    return payload.encode() if isinstance(payload, str) else payload


def sign(secret: str, msg_id: str, timestamp: int, payload: bytes | str) -> str:
    """The ``v1,<base64>`` signature of one message under one secret."""
    signed = f"{msg_id}.{timestamp}.".encode() + _as_bytes(payload)
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(msg_id: str, timestamp: int, payload: bytes | str,
                      secrets: Sequence[str]) -> dict[str, str]:
    """The three ``webhook-*`` headers, signed with every secret given (newest first)."""
    if not secrets:
        raise ValueError("At least one secret is needed to sign.")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(secret, msg_id, timestamp, payload) for secret in secrets),
    }


def verify(payload: bytes | str, headers: Mapping[str, str], secret: str | Sequence[str],
           tolerance: int = 300, *, now: float | None = None) -> Any:
    """Check a received webhook and return its parsed JSON body.

    ``payload`` is the raw request body, ``headers`` the request headers (any
    case), ``secret`` the endpoint's ``whsec_`` secret (or several, while you
    rotate). Raises :class:`WebhookVerificationError` when a header is missing,
    the timestamp is more than ``tolerance`` seconds from ``now``, or no
    signature matches. Signatures are compared in constant time.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    timestamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (msg_id and timestamp and signatures):
        raise WebhookVerificationError("Missing webhook-id, webhook-timestamp or webhook-signature.")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not unix seconds.") from None
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance:
        raise WebhookVerificationError("webhook-timestamp is outside the tolerance.")

    body = _as_bytes(payload)
    candidates = [secret] if isinstance(secret, str) else list(secret)
    expected = [sign(each, msg_id, sent_at, body).encode() for each in candidates]
    matched = False
    for given in signatures.split(" "):
        for wanted in expected:
            # Compare every pair, so timing says nothing about which one matched.
            matched |= hmac.compare_digest(given.encode(), wanted)
    if not matched:
        raise WebhookVerificationError("No matching signature.")
    return json.loads(body)
