"""``flask addons …`` commands."""

from __future__ import annotations

import json

import pytest

from addon_plugin import ledger, merchants
from addon_plugin.errors import AuthenticationFailed


def invoke(app, *args):
    return app.test_cli_runner().invoke(args=["addons", *args])


def test_init_db_is_safe_to_run_twice(app):
    first = invoke(app, "init-db")
    second = invoke(app, "init-db")
    assert first.exit_code == 0 and second.exit_code == 0
    assert "up to date" in second.output


def test_create_merchant_json_prints_exactly_one_json_object_with_a_working_key(app):
    result = invoke(app, "create-merchant", "Acme", "--json")
    assert result.exit_code == 0
    created = json.loads(result.stdout)
    assert set(created) == {"merchant_id", "api_key"}
    assert merchants.authenticate(created["api_key"])[0] == created["merchant_id"]


def test_create_and_revoke_api_key(app, merchant_id):
    result = invoke(app, "create-api-key", merchant_id)
    assert result.exit_code == 0
    key = next(line.split()[1] for line in result.output.splitlines() if line.startswith("api_key:"))
    key_id = next(line.split()[1] for line in result.output.splitlines() if line.startswith("key_id:"))
    assert merchants.authenticate(key)[0] == merchant_id
    assert invoke(app, "revoke-api-key", key_id).exit_code == 0
    assert invoke(app, "revoke-api-key", "key_missing").exit_code != 0
    with pytest.raises(AuthenticationFailed):
        merchants.authenticate(key)


def test_create_api_key_for_an_unknown_merchant_fails_clearly(app):
    result = invoke(app, "create-api-key", "mer_missing")
    assert result.exit_code != 0 and "merchant_not_found" in result.output


def test_balance_by_id_and_by_buyer(app, merchant_id, product, funded_account_id):
    by_id = json.loads(invoke(app, "balance", funded_account_id).output)
    by_buyer = json.loads(invoke(app, "balance", "--merchant", merchant_id, "--product", product.id,
                                 "--email", "BOB@example.com").output)
    assert by_id == by_buyer and by_id["balance"] == 1000 == ledger.balance(funded_account_id)
    assert invoke(app, "balance", "acct_missing").exit_code != 0


def test_redeliver_queues_another_attempt_of_the_merchants_delivery(app, merchant_id, funded_account_id):
    from webhooks import endpoints

    app.config["ADDONS_WEBHOOK_ALLOW_PRIVATE_URLS"] = True
    endpoint, _ = endpoints.create_endpoint(merchant_id, "http://127.0.0.1:9/hook")
    ledger.record(funded_account_id, -1, "usage")
    [delivery] = endpoints.list_deliveries(merchant_id, endpoint.id).data
    result = invoke(app, "redeliver", delivery.id, "--merchant", merchant_id)
    assert result.exit_code == 0 and delivery.id in result.output
    assert invoke(app, "redeliver", delivery.id, "--merchant", "mer_other").exit_code != 0


def test_prune_reports_both_kinds_of_record(app):
    result = invoke(app, "prune")
    assert result.exit_code == 0
    assert "idempotency record" in result.output and "webhook deliver" in result.output
