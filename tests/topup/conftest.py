"""Fixtures of the auto top-up tests. The top-up fixtures other areas use too
(``gateway``, ``auto_account_id``, ``received``) are in the root conftest."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

import storage
from addon_plugin.topup import decide, execute, settings, settle


class Clock:
    """A clock a test moves: ``clock()`` is the time, ``clock.advance(seconds)`` moves it on."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    """The clock top-ups are decided, charged, retried and looked up by (the
    worker's too): it stands still until the test advances it."""
    clock = Clock(storage.utcnow())
    for module in (decide, settings, execute, settle):
        monkeypatch.setattr(module, "utcnow", clock)
    return clock
