"""webhooks.schedule: the retry policy (jitter bounds, Retry-After, exhaustion)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

from webhooks.schedule import MAX_RETRY_AFTER, jittered, next_delay, parse_retry_after

SCHEDULE = [0, 5, 300, 1800]


def test_jitter_stays_within_ten_percent():
    rng = random.Random(7)
    values = [jittered(300, rng) for _ in range(2000)]
    assert all(270 <= value <= 330 for value in values)
    assert min(values) < 285 and max(values) > 315  # it does move, both ways


def test_a_zero_delay_stays_zero():
    assert all(jittered(0) == 0 for _ in range(100))
    assert next_delay(SCHEDULE, 0) == 0


def test_element_i_is_the_delay_before_attempt_i_plus_1():
    assert 4.5 <= next_delay(SCHEDULE, 1) <= 5.5
    assert 1620 <= next_delay(SCHEDULE, 3) <= 1980


def test_as_many_attempts_as_elements():
    assert next_delay(SCHEDULE, len(SCHEDULE)) is None
    assert next_delay(SCHEDULE, len(SCHEDULE) + 3, retry_after=10) is None


def test_retry_after_postpones_but_never_brings_forward():
    assert next_delay(SCHEDULE, 1, retry_after=120) == 120
    assert 270 <= next_delay(SCHEDULE, 2, retry_after=1) <= 330


def test_retry_after_is_capped():
    assert next_delay(SCHEDULE, 1, retry_after=10**9) == MAX_RETRY_AFTER


@pytest.mark.parametrize("value, expected", [("120", 120.0), (" 7 ", 7.0), (None, None), ("", None),
                                             ("soon", None), ("-5", None)])
def test_parse_retry_after_seconds(value, expected):
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date():
    now = datetime(2025, 1, 31, 12, 0, 0)
    assert parse_retry_after("Fri, 31 Jan 2025 12:02:00 GMT", now) == 120.0
    assert parse_retry_after("Fri, 31 Jan 2025 11:00:00 GMT", now) == 0.0
    assert parse_retry_after((now + timedelta(hours=1)).strftime("%a, %d %b %Y %H:%M:%S GMT"), now) == 3600.0
