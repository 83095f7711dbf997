"""``flask addons prune``: expired idempotent results go, fresh ones stay."""

from __future__ import annotations

from datetime import timedelta

import storage


def test_prune_deletes_only_expired_records(app, merchant_id):
    now = storage.utcnow()
    for key, age in (("old", timedelta(hours=25)), ("fresh", timedelta(hours=23))):
        storage.IdempotencyRecord.create(merchant=merchant_id, key_space="api", key=key, request_hash="h",
                                         response_status=200, response_body="{}", created_at=now - age)
    result = app.test_cli_runner().invoke(args=["addons", "prune"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "pruned 1 idempotency record(s)"
    assert [r.key for r in storage.IdempotencyRecord.select()] == ["fresh"]
