"""The accounts service a host calls: the API's resources, and writes under the
API's schemas and idempotency rules (a refusal replayed is raised again)."""

from __future__ import annotations

import pytest

import storage
from addon_plugin import accounts, merchants
from addon_plugin.errors import (
    AccountNotFound,
    AddonError,
    IdempotencyKeyReused,
    InsufficientCredits,
    ValidationError,
)

ACCOUNTS = "/api/addons/accounts"


def entries(account_id: str) -> list[storage.LedgerEntry]:
    return list(storage.LedgerEntry.select().where(storage.LedgerEntry.account == account_id))


def test_reads_answer_what_the_api_answers(client, auth, merchant_id, funded_account_id):
    assert accounts.get_account(merchant_id, funded_account_id) == client.get(
        f"{ACCOUNTS}/{funded_account_id}", headers=auth).get_json()
    assert accounts.list_accounts(merchant_id, buyer_email="BOB@example.com") == client.get(
        ACCOUNTS, headers=auth).get_json()
    assert accounts.list_entries(merchant_id, funded_account_id, limit=1) == client.get(
        f"{ACCOUNTS}/{funded_account_id}/ledger", query_string={"limit": 1}, headers=auth).get_json()
    assert merchants.list_api_keys(merchant_id) == client.get("/api/addons/api-keys", headers=auth).get_json()


def test_reads_refuse_what_the_api_refuses(merchant_id, account_id):
    other = merchants.create_merchant("Other")[0].id
    with pytest.raises(AccountNotFound):
        accounts.get_account(other, account_id)
    with pytest.raises(AccountNotFound):
        accounts.list_entries(other, account_id)
    with pytest.raises(ValidationError) as caught:
        accounts.list_accounts(merchant_id, limit=501, cursor="not a cursor")
    assert set(caught.value.messages) == {"limit"}


def test_an_adjustment_from_a_form_is_validated_by_the_apis_schema_and_stores_nothing(merchant_id, account_id):
    with pytest.raises(ValidationError) as caught:
        accounts.adjust(merchant_id, account_id, {"value": "1.5", "description": " ", "idempotency_key": "k1"})
    assert set(caught.value.messages) == {"value", "description"}
    change = accounts.adjust(merchant_id, account_id, {"value": "50", "description": "Goodwill",
                                                       "idempotency_key": "k1", "csrf_token": "the host's own"},
                             actor="host:admin")
    assert change["balance"] == 50 and change["entry"]["delta"] == 50 and change["entry"]["actor"] == "host:admin"


def test_an_adjustment_with_a_key_is_applied_once(merchant_id, account_id):
    data = {"value": 50, "description": "Goodwill", "idempotency_key": "adj-1"}
    first = accounts.adjust(merchant_id, account_id, data)
    assert accounts.adjust(merchant_id, account_id, data) == first
    assert len(entries(account_id)) == 1
    with pytest.raises(IdempotencyKeyReused):
        accounts.adjust(merchant_id, account_id, {**data, "value": 60})


def test_a_refusal_is_stored_and_raised_again_on_a_replay(merchant_id, account_id):
    data = {"value": -10, "description": "Too much", "idempotency_key": "adj-2"}
    with pytest.raises(InsufficientCredits) as first:
        accounts.adjust(merchant_id, account_id, data)
    accounts.adjust(merchant_id, account_id, {"value": 100, "description": "Top it up"})
    with pytest.raises(InsufficientCredits) as replayed:            # the stored refusal, not a new attempt
        accounts.adjust(merchant_id, account_id, data)
    assert (replayed.value.status, replayed.value.message) == (402, first.value.message)
    assert [entry.delta for entry in entries(account_id)] == [100]


def test_the_api_and_the_host_share_the_merchants_key_space(client, auth, merchant_id, account_id):
    accounts.adjust(merchant_id, account_id, {"value": 5, "description": "Host", "idempotency_key": "shared"})
    answer = client.post(f"{ACCOUNTS}/{account_id}/adjustments", headers=auth,
                         json={"value": 5, "description": "Host", "idempotency_key": "shared"})
    assert answer.status_code == 422 and answer.get_json()["error"]["code"] == "idempotency_key_reused"


def test_usage_deducts_as_the_usage_api_does(merchant_id, product, funded_account_id):
    data = {"product_id": product.id, "buyer_email": "Bob@Example.com", "value": -25,
            "description": "One render", "idempotency_key": "job-1"}
    answer = accounts.record_usage(merchant_id, data, actor="host")
    assert answer["success"] is True and answer["data"]["balance"] == 975
    assert answer["data"]["entry"]["kind"] == "usage" and answer["data"]["account_id"] == funded_account_id
    assert accounts.record_usage(merchant_id, data) == answer      # once per key
    with pytest.raises(InsufficientCredits):
        accounts.record_usage(merchant_id, {**data, "value": -5000, "idempotency_key": "job-2"})
    with pytest.raises(AccountNotFound):
        accounts.record_usage(merchant_id, {**data, "buyer_email": "nobody@example.com", "idempotency_key": "j3"})


def test_auto_top_up_settings_answer_the_account(app, merchant_id, account_id):
    app.config["ADDONS_PAYMENT_GATEWAY"] = "test"
    answer = accounts.set_auto_top_up(merchant_id, account_id, enabled=True, threshold=10,
                                      payment_method="pm_card_visa")
    assert answer["id"] == account_id and answer["threshold"] == 10
    assert answer["auto_top_up"] == {"enabled": True, "payment_method": "pm_card_visa", "customer": None}


def test_an_error_body_gives_back_its_error():
    error = AddonError.from_dict(InsufficientCredits("The balance is 3.").to_dict(), 402)
    assert isinstance(error, InsufficientCredits) and (error.status, error.message) == (402, "The balance is 3.")
    invalid_url = AddonError.from_dict({"error": {"code": "invalid_url", "message": "m", "fields": {}}}, 422)
    assert type(invalid_url).__name__ == "InvalidUrl" and isinstance(invalid_url, ValidationError)
    unknown = AddonError.from_dict({"error": {"code": "brand_new", "message": "m", "fields": {"a": ["b"]}}}, 409)
    assert (type(unknown), unknown.code, unknown.status, unknown.fields) == (AddonError, "brand_new", 409, {"a": ["b"]})
