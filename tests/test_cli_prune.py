"""``flask addons prune``: expired idempotent results go, fresh ones stay."""

from __future__ import annotations

from datetime import timedelta

import storage
from addon_plugin import forecast, ledger


def test_prune_deletes_only_expired_records(app, merchant_id):
    now = storage.utcnow()
    for key, age in (("old", timedelta(hours=25)), ("fresh", timedelta(hours=23))):
        storage.IdempotencyRecord.create(merchant=merchant_id, key_space="api", key=key, request_hash="h",
                                         response_status=200, response_body="{}", created_at=now - age)
    result = app.test_cli_runner().invoke(args=["addons", "prune"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "pruned 1 idempotency record(s)"
    assert [r.key for r in storage.IdempotencyRecord.select()] == ["fresh"]



def test_prune_deletes_usage_days_before_the_forecast_window_only(app, funded_account_id):
    now = storage.utcnow()
    first = forecast.first_day(now)
    for day in (first - 2, first - 1, first, first + 1):
        storage.UsageDay.create(account_id=funded_account_id, day=day, credits=10)
    before = forecast.forecast(ledger.get_account(funded_account_id), now)
    assert before is not None
    result = app.test_cli_runner().invoke(args=["addons", "prune"])
    assert result.exit_code == 0, result.output
    assert "pruned 2 usage day(s)" in result.output.splitlines()
    assert sorted(row.day for row in storage.UsageDay.select()) == [first, first + 1]
    assert forecast.forecast(ledger.get_account(funded_account_id), now) == before
