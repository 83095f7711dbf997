"""The merchant's auto top-up routes: PUT the settings, GET the top-ups."""

from __future__ import annotations

import pytest

import storage
from addon_plugin import ledger
from addon_plugin.schemas import TopUpSchema
from tests.helpers import QUIET, create_product, settings_of


def put(client, api_key, account_id, body, **headers):
    return client.put(f"/api/addons/accounts/{account_id}/auto-top-up", json=body,
                      headers={"Authorization": f"Bearer {api_key}", **headers})


def get_top_ups(client, api_key, account_id, **query):
    return client.get(f"/api/addons/accounts/{account_id}/top-ups", query_string=query,
                      headers={"Authorization": f"Bearer {api_key}"})


def test_put_switches_auto_top_up_on_and_answers_the_account(client, api_key, funded_account_id, product, gateway):
    response = put(client, api_key, funded_account_id,
                   {"enabled": True, "threshold": 200, "payment_method": "pm_card_visa", "customer": "cus_9"})
    assert response.status_code == 200
    assert response.get_json() == {
        "id": funded_account_id, "product_id": product.id, "buyer_email": "bob@example.com", "balance": 1000,
        "available": 1000, "held": 0, "threshold": 200,
        "auto_top_up": {"enabled": True, "payment_method": "pm_card_visa", "customer": "cus_9", **QUIET},
        "balances": {"paid": 1000, "promotional": 0}, "next_expiry": None, "forecast": None,
    }


def test_put_without_optional_fields_clears_them(client, api_key, auto_account_id):
    response = put(client, api_key, auto_account_id, {"enabled": False})
    assert response.status_code == 200
    body = response.get_json()
    assert body["threshold"] is None
    assert settings_of(body["auto_top_up"]) == {"enabled": False, "payment_method": None, "customer": None}


@pytest.mark.parametrize(("body", "field"), [
    ({}, "enabled"),
    ({"enabled": "yes"}, "enabled"),
    ({"enabled": True, "payment_method": "pm_card_visa"}, "threshold"),
    ({"enabled": True, "threshold": 10}, "payment_method"),
    ({"enabled": True, "threshold": "10", "payment_method": "pm_card_visa"}, "threshold"),
    ({"enabled": True, "threshold": -1, "payment_method": "pm_card_visa"}, "threshold"),
    ({"enabled": False, "colour": "blue"}, "colour"),
])
def test_put_refuses_invalid_settings_with_422_and_stores_nothing(client, api_key, auto_account_id, body, field):
    response = put(client, api_key, auto_account_id, body, **{"Idempotency-Key": "settings-1"})
    assert response.status_code == 422
    assert field in response.get_json()["error"]["fields"]
    retry = put(client, api_key, auto_account_id, {"enabled": False}, **{"Idempotency-Key": "settings-1"})
    assert retry.status_code == 200  # a validation refusal stored nothing under the key


def test_put_refuses_a_one_time_product_with_409(client, api_key, merchant_id, gateway):
    one_time = create_product(merchant_id, top_up_allowed=False)
    account_id = ledger.open_account(merchant_id, one_time.id, "ann@example.com")
    response = put(client, api_key, account_id, {"enabled": True, "threshold": 5, "payment_method": "pm_card_visa"})
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "top_up_not_allowed"


def test_put_without_a_payment_gateway_is_409(client, api_key, funded_account_id):
    response = put(client, api_key, funded_account_id,
                   {"enabled": True, "threshold": 5, "payment_method": "pm_card_visa"})
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "no_payment_gateway"


def test_another_merchants_account_is_404_and_no_key_is_401(client, api_key, auto_account_id):
    from addon_plugin import merchants

    _, other_key = merchants.create_merchant("Other")
    assert put(client, other_key.key, auto_account_id, {"enabled": False}).status_code == 404
    assert get_top_ups(client, other_key.key, auto_account_id).status_code == 404
    assert put(client, "sk_bogus_key", auto_account_id, {"enabled": False}).status_code == 401
    assert get_top_ups(client, "sk_bogus_key", auto_account_id).status_code == 401
    assert ledger.get_account(auto_account_id).auto_top_up_enabled


def test_a_replayed_put_answers_the_stored_result(client, api_key, auto_account_id):
    body = {"enabled": True, "threshold": 300, "payment_method": "pm_card_visa"}
    first = put(client, api_key, auto_account_id, body, **{"Idempotency-Key": "k1"})
    again = put(client, api_key, auto_account_id, body, **{"Idempotency-Key": "k1"})
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()


def test_in_inline_mode_switching_on_below_the_threshold_charges_and_lists_the_top_up(
        app, client, api_key, funded_account_id, gateway):
    app.config["ADDONS_TOP_UP_MODE"] = "inline"
    response = put(client, api_key, funded_account_id,
                   {"enabled": True, "threshold": 1000, "payment_method": "pm_card_visa"})
    assert response.status_code == 200
    assert ledger.balance(funded_account_id) == 1100

    listed = get_top_ups(client, api_key, funded_account_id)
    assert listed.status_code == 200
    [item] = listed.get_json()["data"]
    assert listed.get_json()["next_cursor"] is None
    assert TopUpSchema().validate(item) == {}
    [charge] = gateway.charges.values()
    assert {k: item[k] for k in ("status", "banks", "credits", "amount", "currency", "charge_id", "failure_code")} \
        == {"status": "succeeded", "banks": 1, "credits": 100, "amount": "19.00", "currency": "USD",
            "charge_id": charge.id, "failure_code": None}
    assert item["created_at"].endswith("Z") and item["completed_at"].endswith("Z")


def test_top_ups_are_listed_newest_first_a_page_at_a_time(client, api_key, auto_account_id):
    account = storage.CreditAccount.get_by_id(auto_account_id)
    made = []
    for _ in range(3):
        made.append(storage.TopUp.create(
            id=storage.new_id("topup"), account=auto_account_id, merchant=account.merchant_id, status="failed",
            banks=1, credits=100, amount_minor=1900, currency="USD", payment_method="pm_card_visa").id)
    newest_first = sorted(made, reverse=True)

    first = get_top_ups(client, api_key, auto_account_id, limit=2).get_json()
    assert [item["id"] for item in first["data"]] == newest_first[:2]
    assert first["next_cursor"]
    second = get_top_ups(client, api_key, auto_account_id, limit=2, cursor=first["next_cursor"]).get_json()
    assert [item["id"] for item in second["data"]] == newest_first[2:]
    assert second["next_cursor"] is None
    assert get_top_ups(client, api_key, auto_account_id, limit=0).status_code == 422


# -- resolving a top-up whose outcome is unknown ---------------------------------------

def resolve(client, api_key, top_up_id, body, **headers):
    return client.post(f"/api/addons/top-ups/{top_up_id}/resolve", json=body,
                       headers={"Authorization": f"Bearer {api_key}", **headers})


@pytest.fixture
def unresolved_top_up_id(app, auto_account_id) -> str:
    """bob's top-up, charged at a gateway that never answered (no retries configured)."""
    from addon_plugin import worker
    from addon_plugin.topup import GatewayUnavailable, TestGateway

    class Silent(TestGateway):
        def charge(self, **kwargs):
            super().charge(**kwargs)
            raise GatewayUnavailable("Read timed out.")

    app.config.update(ADDONS_PAYMENT_GATEWAY=Silent(), ADDONS_TOP_UP_RETRY_SCHEDULE=[])
    ledger.record(auto_account_id, -510, "usage")
    worker.run_once()
    [top_up] = storage.TopUp.select().where(storage.TopUp.account == auto_account_id)
    assert top_up.status == "unresolved"
    return top_up.id


def test_an_unresolved_top_up_is_listed_and_resolved_as_succeeded_over_http(
        client, api_key, auto_account_id, unresolved_top_up_id):
    [listed] = get_top_ups(client, api_key, auto_account_id).get_json()["data"]
    assert listed["status"] == "unresolved" and listed["next_attempt_at"] and TopUpSchema().validate(listed) == {}

    response = resolve(client, api_key, unresolved_top_up_id, {"outcome": "succeeded", "charge_id": "ch_test_000001"},
                       **{"Idempotency-Key": "resolve-1"})
    assert response.status_code == 200
    body = response.get_json()
    assert TopUpSchema().validate(body) == {}
    assert (body["id"], body["status"], body["charge_id"], body["next_attempt_at"]) == (
        unresolved_top_up_id, "succeeded", "ch_test_000001", None)
    assert ledger.balance(auto_account_id) == 590

    again = resolve(client, api_key, unresolved_top_up_id, {"outcome": "succeeded", "charge_id": "ch_test_000001"},
                    **{"Idempotency-Key": "resolve-1"})
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == body
    twice = resolve(client, api_key, unresolved_top_up_id, {"outcome": "failed"})
    assert twice.status_code == 409 and twice.get_json()["error"]["code"] == "top_up_not_unresolved"
    assert ledger.balance(auto_account_id) == 590


def test_an_unresolved_top_up_resolved_as_failed_grants_nothing(client, api_key, auto_account_id,
                                                                unresolved_top_up_id):
    response = resolve(client, api_key, unresolved_top_up_id, {"outcome": "failed"})
    assert response.status_code == 200
    assert (response.get_json()["status"], response.get_json()["failure_code"]) == ("failed", "resolved_as_failed")
    assert ledger.balance(auto_account_id) == 490


@pytest.mark.parametrize(("body", "field"), [
    ({}, "outcome"),
    ({"outcome": "refunded"}, "outcome"),
    ({"outcome": "succeeded"}, "charge_id"),
    ({"outcome": "succeeded", "charge_id": ""}, "charge_id"),
    ({"outcome": "failed", "charge_id": "ch_1"}, "charge_id"),
    ({"outcome": "failed", "reason": "x"}, "reason"),
])
def test_resolve_refuses_a_bad_body_with_422_and_records_nothing(client, api_key, unresolved_top_up_id, body, field):
    response = resolve(client, api_key, unresolved_top_up_id, body, **{"Idempotency-Key": "resolve-2"})
    assert response.status_code == 422
    assert field in response.get_json()["error"]["fields"]
    assert storage.TopUp.get_by_id(unresolved_top_up_id).status == "unresolved"
    retry = resolve(client, api_key, unresolved_top_up_id, {"outcome": "failed"}, **{"Idempotency-Key": "resolve-2"})
    assert retry.status_code == 200  # the refusal stored nothing under the key


def test_resolve_is_409_for_a_top_up_that_is_not_unresolved_and_404_for_another_merchants(
        client, api_key, auto_account_id):
    from addon_plugin import merchants

    ledger.record(auto_account_id, -510, "usage")
    [top_up] = storage.TopUp.select().where(storage.TopUp.account == auto_account_id)
    response = resolve(client, api_key, top_up.id, {"outcome": "succeeded", "charge_id": "ch_1"})
    assert response.status_code == 409 and response.get_json()["error"]["code"] == "top_up_not_unresolved"

    _, other_key = merchants.create_merchant("Other")
    response = resolve(client, other_key.key, top_up.id, {"outcome": "failed"})
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "top_up_not_found"
    assert resolve(client, api_key, "topup_missing", {"outcome": "failed"}).status_code == 404
    assert resolve(client, "sk_bogus_key", top_up.id, {"outcome": "failed"}).status_code == 401
    assert storage.TopUp.get_by_id(top_up.id).status == "pending"
