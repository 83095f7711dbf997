"""Ids are the 128-bit value in lower-case Crockford base32, 26 digits: the
two-digits-at-a-time encoder agrees with the plain one, digit by digit."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from storage import ids


def plain(value: int) -> str:
    digits = []
    for _ in range(26):
        digits.append(ids._ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(digits))


@given(st.one_of(st.integers(0, 2**128 - 1), st.sampled_from([0, 1, 2**80, 2**128 - 1])))
def test_the_fast_encoding_is_the_plain_one(value):
    assert "".join([ids._PAIRS[(value >> shift) & 1023] for shift in ids._SHIFTS]) == plain(value)


def test_an_id_is_its_prefix_and_26_digits():
    made = ids.new_id("acct")
    assert made.startswith("acct_") and len(made) == 31 and set(made[5:]) <= set(ids._ALPHABET)
