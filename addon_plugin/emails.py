"""Buyer e-mails: one normal form wherever an address enters (the usage API,
the hooks, the host's buyer loader, the CLI), so a buyer always reaches the
same account however the address was spelled.

Unicode NFC first, so a decomposed "é" (e + U+0301) and a composed one are one
address; then trimmed and lower-cased, since addresses are compared
case-insensitively. NFC again at the end: lower-casing may leave a string that
is not in NFC, and the normal form must be a fixed point.
"""

from __future__ import annotations

from unicodedata import normalize

__all__ = ["normalise_email"]


def normalise_email(email: str) -> str:
    """The one form in which a buyer's e-mail is stored, compared and returned."""
    return normalize("NFC", normalize("NFC", email).strip().lower())
