"""The depletion forecast (SPEC §12): usage by UTC day, the formula, and
``balance.forecast_low`` once per approach."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

import storage
from addon_plugin import account_extras, forecast, ledger, signals, topup_state, worker
from addon_plugin.topup import set_auto_top_up
from tests.helpers import Clock

START = datetime(2026, 5, 10, 6, 0)


@pytest.fixture
def day_clock(monkeypatch) -> Clock:
    """One clock for the ledger (so the usage days), the forecast and the visible state."""
    clock = Clock()
    clock.now = START
    for module in (ledger, forecast, topup_state, account_extras):
        monkeypatch.setattr(module, "utcnow", clock)
    return clock


@pytest.fixture
def young_account(merchant_id, product, day_clock) -> str:
    """bob's account, opened at START with 1000 credits."""
    account_id = ledger.open_account(merchant_id, product.id, "bob@example.com")
    storage.CreditAccount.update(created_at=START).where(storage.CreditAccount.id == account_id).execute()
    ledger.record(account_id, 1000, "purchase", reference="order_1")
    return account_id


@pytest.fixture
def warnings(app):
    seen: list[dict] = []

    def receiver(sender, **kwargs):
        seen.append(kwargs)

    signals.balance_forecast_low.connect(receiver, sender=app)
    yield seen
    signals.balance_forecast_low.disconnect(receiver, sender=app)


def usage_days(account_id: str) -> list[tuple[int, int]]:
    return [(row.day, row.credits) for row in storage.UsageDay.select().where(storage.UsageDay.account == account_id)
            .order_by(storage.UsageDay.day)]


def test_usage_is_counted_per_utc_day_in_its_own_transaction(young_account, day_clock):
    ledger.record(young_account, -30, "usage")
    ledger.record(young_account, -20, "usage")
    ledger.record(young_account, 5, "adjustment")  # not usage
    day_clock.advance(days=1)
    ledger.record(young_account, -7, "usage")
    first = forecast.day_number(START)
    assert usage_days(young_account) == [(first, 50), (first + 1, 7)]


def test_no_usage_in_the_window_is_no_forecast(young_account, day_clock):
    assert forecast.forecast(ledger.get_account(young_account)) is None
    ledger.record(young_account, -10, "usage")
    day_clock.advance(days=9)  # older than the 7-day window
    assert forecast.forecast(ledger.get_account(young_account)) is None


def test_a_young_account_divides_by_its_age_counted_as_at_least_one_day(young_account, day_clock):
    ledger.record(young_account, -100, "usage")  # 900 left
    day_clock.advance(hours=12)
    assert forecast.forecast(ledger.get_account(young_account)) == {
        "credits_per_day": 100.0, "depletes_at": storage.isoformat(day_clock.now + timedelta(days=9))}
    day_clock.advance(hours=36)  # two days old: 100 credits / 2 days
    assert forecast.forecast(ledger.get_account(young_account)) == {
        "credits_per_day": 50.0, "depletes_at": storage.isoformat(day_clock.now + timedelta(days=18))}


def test_a_synthetic_history_gives_the_expected_rate_and_depletion(young_account, day_clock, client, auth, product):
    # Ten days of 30 credits a day at 18:00: the window (7 days) holds the last seven whole days'
    # usage and, from its oldest day, only the part inside the window.
    for _ in range(10):
        day_clock.advance(hours=12)   # 18:00
        ledger.record(young_account, -30, "usage")
        day_clock.advance(hours=12)   # 06:00 the next day
    now = day_clock.now  # 2026-05-20 06:00; window from 2026-05-13 06:00
    # Day 13: 30 credits seen from 00:00 to 24:00, 18 of its 24 hours inside the window -> 22.5;
    # days 14..19: 6 x 30 = 180. Total 202.5 over 7 days = 28.928... -> 28.93 a day.
    available = 1000 - 300
    rate = (22.5 + 180) / 7
    expected = {"credits_per_day": 28.93, "depletes_at": storage.isoformat(now + timedelta(days=available / rate))}
    assert forecast.forecast(ledger.get_account(young_account)) == expected
    answer = client.post("/api/buyer-addon/usage", json={"product_id": product.id, "buyer_email": "bob@example.com"},
                         headers=auth).json["data"]
    assert answer["forecast"] == expected


def test_the_forecast_low_webhook_is_sent_once_per_approach(app, young_account, day_clock, warnings, client, auth,
                                                            merchant_id):
    app.config["ADDONS_WEBHOOK_ALLOW_PRIVATE_URLS"] = True
    endpoint = client.post("/api/addons/webhook-endpoints", headers=auth,
                           json={"url": "http://127.0.0.1:9/hook", "event_types": ["balance.forecast_low"]})
    assert endpoint.status_code == 201, endpoint.json
    ledger.record(young_account, -100, "usage")  # 900 left at 100 a day: 9 days
    assert forecast.warn_due() == 0 and warnings == []
    day_clock.advance(days=1)
    ledger.record(young_account, -700, "usage")  # 200 left at 800 a day (one day old): a quarter day
    assert forecast.warn_due() == 1
    assert forecast.warn_due() == 0  # once per approach
    [sent] = warnings
    assert sent["forecast"]["credits_per_day"] == 800.0 and sent["account"].id == young_account
    events = list(storage.WebhookEvent.select().where(storage.WebhookEvent.type == "balance.forecast_low"))
    assert len(events) == 1 and '"forecast":{"credits_per_day":800.0' in events[0].payload

    ledger.record(young_account, 5000, "adjustment")  # moves back out
    assert forecast.warn_due() == 1 and len(warnings) == 1  # the mark is cleared, nothing sent
    ledger.record(young_account, -5000, "usage")  # and back in: sent again
    assert forecast.warn_due() == 1 and len(warnings) == 2
    assert forecast.warn_due() == 0


def test_never_while_auto_top_up_is_on_and_the_worker_sends_it_once_off(app, young_account, day_clock, warnings,
                                                                         merchant_id, gateway):
    ledger.record(young_account, -100, "usage")  # 900 left, 100 a day: out of credits in 9 days
    set_auto_top_up(young_account, merchant_id=merchant_id, enabled=True, threshold=0,
                    payment_method="pm_card_visa")
    day_clock.advance(hours=12)
    ledger.record(young_account, -600, "usage")  # 300 left at 700 a day: within 3 days
    assert forecast.warn_due() == 0 and warnings == []  # auto top-up is on
    set_auto_top_up(young_account, merchant_id=merchant_id, enabled=False)
    assert worker.run_once() >= 1 and len(warnings) == 1  # the worker's own run
    assert worker.run_once() == 0 and len(warnings) == 1
