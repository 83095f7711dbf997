"""The limits' one home: its checks at their edges (the schemas, the ledger, the
HTTP layer, the hooks and the top-up settings all use them)."""

from __future__ import annotations

import pytest

from addon_plugin import limits


@pytest.mark.parametrize(("value", "ok"), [(0, True), (limits.MAX_CREDITS, True), (-1, False),
                                           (limits.MAX_CREDITS + 1, False), (True, False), (1.0, False),
                                           ("5", False), (None, False)])
def test_a_threshold_is_an_integer_from_zero_to_max_credits(value, ok):
    assert limits.is_threshold(value) is ok


@pytest.mark.parametrize(("value", "ok"), [("k", True), ("k" * limits.IDEMPOTENCY_KEY_LENGTH, True), ("", False),
                                           ("k" * (limits.IDEMPOTENCY_KEY_LENGTH + 1), False), (5, False)])
def test_an_idempotency_key_is_1_to_255_characters(value, ok):
    assert limits.is_idempotency_key(value) is ok


def test_metadata_limits():
    at_limits = {f"k{n:0{limits.METADATA_KEY_LENGTH - 1}}": "v" * 160 for n in range(limits.METADATA_KEYS)}
    assert limits.fits_metadata({}) and limits.fits_metadata({"k" * 40: "v" * 500})
    assert not limits.fits_metadata(at_limits)  # 50 keys of 40 chars with 160-char values: past 8 KB
    assert not limits.fits_metadata({str(n): "" for n in range(limits.METADATA_KEYS + 1)})
    assert not limits.fits_metadata({"k" * 41: ""}) and not limits.fits_metadata({"": ""})
    assert not limits.fits_metadata({"k": "v" * 501}) and not limits.fits_metadata({"k": 1})
