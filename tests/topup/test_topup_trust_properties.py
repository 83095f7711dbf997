"""A state machine over usage, the clock (across UTC months), monthly-limit and
card changes, switching off and on, and the worker, checking after every step
that no UTC month's succeeded top-ups pass the limits in force in it, that a
``monthly_limit_reached`` top-up never reached the gateway, and that consent
records are append-only and back every top-up (both databases)."""

from __future__ import annotations

import contextlib
import itertools
from datetime import datetime
from decimal import Decimal

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

import storage
from addon_plugin import errors, ledger
from addon_plugin.topup import decide, execute, set_auto_top_up
from addon_plugin.topup.gateways import TOP_UP_KEY_PREFIX
from tests.helpers import THRESHOLD

_machines = itertools.count()
LIMITS = [None, "19.00", "40.00", "95.00"]
CARDS = ["pm_card_visa", "pm_card_mastercard"]


def _month(moment: datetime | str) -> tuple[int, int]:
    moment = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    return moment.year, moment.month


def test_monthly_limits_and_consents_hold_whatever_happens(app, merchant_id, product, gateway, clock, monkeypatch):
    monkeypatch.setattr(ledger, "utcnow", clock)
    app.config["ADDONS_TOP_UP_MODE"] = "worker"
    app.config["ADDONS_TOP_UP_DAILY_LIMIT"] = 1000  # the monthly limit is what is under test

    class Trust(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            clock.now = datetime(2026, 1, 28, 12, 0)
            self.account_id = ledger.open_account(merchant_id, product.id, f"m{next(_machines)}@example.com")
            ledger.record(self.account_id, 1000, "purchase")
            self.settings = {"enabled": True, "threshold": THRESHOLD, "payment_method": CARDS[0],
                             "monthly_limit": LIMITS[1]}
            self.limits_in_month: dict[tuple[int, int], list[str | None]] = {}
            self.seen: dict[str, tuple] = {}
            self.expected_records = 0
            self.apply(dict(self.settings))

        def apply(self, new: dict) -> None:
            row = storage.CreditAccount.get_by_id(self.account_id)
            limit_minor = None if new["monthly_limit"] is None else int(Decimal(new["monthly_limit"]) * 100)
            before = (row.auto_top_up_enabled, row.threshold, row.payment_method, row.customer,
                      row.monthly_limit_minor)
            after = (new["enabled"], new["threshold"], new["payment_method"], None, limit_minor)
            if before != after and (before[0] or after[0]):
                self.expected_records += 1
            set_auto_top_up(self.account_id, merchant_id=merchant_id, **new)
            self.settings = new
            self.limits_in_month.setdefault(_month(clock.now), []).append(new["monthly_limit"])

        @rule(credits=st.integers(1, 400))
        def use(self, credits: int) -> None:
            with contextlib.suppress(errors.InsufficientCredits):
                ledger.record(self.account_id, -credits, "usage")

        @rule(hours=st.integers(1, 24 * 4))
        def advance(self, hours: int) -> None:
            clock.advance(hours * 3600)
            self.limits_in_month.setdefault(_month(clock.now), []).append(self.settings["monthly_limit"])

        @rule(limit=st.sampled_from(LIMITS))
        def change_limit(self, limit: str | None) -> None:
            self.apply({**self.settings, "monthly_limit": limit})

        @rule(card=st.sampled_from(CARDS))
        def change_card(self, card: str) -> None:
            self.apply({**self.settings, "payment_method": card})

        @rule(on=st.booleans())
        def switch(self, on: bool) -> None:
            self.apply({**self.settings, "enabled": on})

        @rule()
        def worker(self) -> None:
            decide.retry_due()
            execute.run_due()

        @invariant()
        def months_stay_within_their_limits(self) -> None:
            spent: dict[tuple[int, int], int] = {}
            for top_up in storage.TopUp.select().where(storage.TopUp.account == self.account_id):
                if top_up.status == "succeeded":
                    month = _month(top_up.completed_at)
                    spent[month] = spent.get(month, 0) + top_up.amount_minor
                if top_up.failure_code == "monthly_limit_reached":
                    assert top_up.attempts == 0 and TOP_UP_KEY_PREFIX + top_up.id not in gateway.charges
                assert top_up.consent_id is not None
                record = storage.AutoTopUpConsent.get_by_id(top_up.consent_id)
                assert record.account_id == self.account_id and record.enabled
                assert record.created_at <= top_up.created_at
            for month, total in spent.items():
                limits = self.limits_in_month.get(month, [self.settings["monthly_limit"]])
                if None not in limits:
                    assert total <= max(int(Decimal(limit) * 100) for limit in limits if limit), (month, total)

        @invariant()
        def consent_records_are_append_only(self) -> None:
            records = list(storage.AutoTopUpConsent.select().where(
                storage.AutoTopUpConsent.account_id == self.account_id))
            assert len(records) == self.expected_records
            for record in records:
                snapshot = tuple(record.__data__.values())
                assert self.seen.setdefault(record.id, snapshot) == snapshot

    run_state_machine_as_test(Trust, settings=settings(
        max_examples=20, stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]))
