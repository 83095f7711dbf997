"""The buyer-facing routes ``/addons/me/…``: the host's session (``buyer_loader``)
instead of an API key, the buyer's own accounts only, and the CSRF rules."""

from __future__ import annotations

import pytest
import responses

import storage
from addon_plugin import ledger
from addon_plugin.topup import GatewayUnavailable, TestGateway, current_gateway
from tests.helpers import QUIET, create_product, settings_of

ME = "/api/addons/me/accounts"
ON = {"enabled": True, "threshold": 30, "payment_method": "pm_card_visa"}


@pytest.fixture
def signed_in(app, merchant_id):
    """The host's session says bob@example.com is signed in."""
    app.config["ADDONS_PAYMENT_GATEWAY"] = "test"
    who = {"buyer": (merchant_id, "Bob@Example.com")}
    app.extensions["addons"].plugin.buyer_loader(lambda: who["buyer"])
    return who


@pytest.fixture
def bobs(signed_in, merchant_id, product) -> str:
    return ledger.open_account(merchant_id, product.id, "bob@example.com")


def test_without_a_signed_in_buyer_every_route_is_401(client, app, account_id):
    app.extensions["addons"].plugin.buyer_loader(lambda: None)
    assert client.get(ME).status_code == 401
    answer = client.put(f"{ME}/{account_id}/auto-top-up", json=ON)
    assert answer.status_code == 401 and answer.json["error"]["code"] == "unauthorized"


def test_a_buyer_lists_only_their_own_accounts(client, bobs, merchant_id, product):
    other = create_product(merchant_id, name="Other")
    mine_too = ledger.open_account(merchant_id, other.id, "bob@example.com")
    ledger.open_account(merchant_id, product.id, "ann@example.com")
    answer = client.get(ME)
    assert answer.status_code == 200 and answer.json["next_cursor"] is None
    assert [a["id"] for a in answer.json["data"]] == [mine_too, bobs]  # newest first
    assert answer.json["data"][1] == {"id": bobs, "product_id": product.id, "buyer_email": "bob@example.com",
                                      "balance": 0, "available": 0, "held": 0, "threshold": None,
                                      "auto_top_up": {"enabled": False, "payment_method": None, "customer": None,
                                                      **QUIET},
                                      "balances": {"paid": 0, "promotional": 0}, "next_expiry": None, "forecast": None}


def test_a_buyer_switches_auto_top_up_on_and_off(client, bobs):
    answer = client.put(f"{ME}/{bobs}/auto-top-up", json=ON, headers={"Origin": "http://localhost"})
    assert answer.status_code == 200
    assert answer.json["threshold"] == 30 and answer.json["auto_top_up"]["enabled"] is True
    account = ledger.get_account(bobs)
    assert (account.auto_top_up_enabled, account.threshold, account.payment_method) == (True, 30, "pm_card_visa")
    assert settings_of(client.put(f"{ME}/{bobs}/auto-top-up", json={"enabled": False}).json["auto_top_up"]) == {
        "enabled": False, "payment_method": None, "customer": None}


def test_bad_settings_are_refused_per_field(client, bobs):
    answer = client.put(f"{ME}/{bobs}/auto-top-up", json={"enabled": "yes", "threshold": -1})
    assert answer.status_code == 422
    assert set(answer.json["error"]["fields"]) == {"enabled", "threshold"}
    answer = client.put(f"{ME}/{bobs}/auto-top-up", json={"enabled": True})
    assert answer.status_code == 422 and set(answer.json["error"]["fields"]) == {"threshold", "payment_method"}
    assert ledger.get_account(bobs).auto_top_up_enabled is False


def test_another_buyers_account_is_not_found(client, signed_in, merchant_id, product):
    anns = ledger.open_account(merchant_id, product.id, "ann@example.com")
    answer = client.put(f"{ME}/{anns}/auto-top-up", json=ON)
    assert answer.status_code == 404 and ledger.get_account(anns).auto_top_up_enabled is False


def test_a_form_post_is_refused(client, bobs):
    answer = client.put(f"{ME}/{bobs}/auto-top-up", data={"enabled": "true", "threshold": "30"})
    assert answer.status_code == 415 and ledger.get_account(bobs).auto_top_up_enabled is False


@pytest.mark.parametrize("origin", ["https://evil.example", "http://localhost:8080", "null"])
def test_a_write_from_another_origin_is_refused(client, bobs, origin):
    answer = client.put(f"{ME}/{bobs}/auto-top-up", json=ON, headers={"Origin": origin})
    assert answer.status_code == 403 and answer.json["error"]["code"] == "cross_origin_request"
    assert ledger.get_account(bobs).auto_top_up_enabled is False


def test_a_one_time_purchase_cannot_top_up(client, signed_in, merchant_id):
    once = create_product(merchant_id, top_up_allowed=False)
    account_id = ledger.open_account(merchant_id, once.id, "bob@example.com")
    answer = client.put(f"{ME}/{account_id}/auto-top-up", json=ON)
    assert answer.status_code == 409 and answer.json["error"]["code"] == "top_up_not_allowed"


def test_an_inactive_plugin_answers_503(client, app, bobs):
    app.config["ADDONS_ACTIVE"] = False
    assert client.get(ME).json["error"]["code"] == "plugin_inactive"


def test_an_idempotency_key_replays_only_to_the_same_buyer(client, signed_in, bobs, merchant_id, product):
    headers = {"Idempotency-Key": "switch-on-1"}
    first = client.put(f"{ME}/{bobs}/auto-top-up", json=ON, headers=headers)
    again = client.put(f"{ME}/{bobs}/auto-top-up", json=ON, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers.get("Idempotent-Replayed") == "true" and again.json == first.json
    anns = ledger.open_account(merchant_id, product.id, "ann@example.com")
    signed_in["buyer"] = (merchant_id, "ann@example.com")
    hers = client.put(f"{ME}/{anns}/auto-top-up", json=ON, headers=headers)
    assert hers.status_code == 200 and "Idempotent-Replayed" not in hers.headers
    assert hers.json["id"] == anns and ledger.get_account(anns).auto_top_up_enabled


# -- who names the card ----------------------------------------------------------------

def test_the_buyers_route_refuses_a_customer_from_the_browser(client, bobs):
    answer = client.put(f"{ME}/{bobs}/auto-top-up", json={**ON, "customer": "cus_someone_else"})
    assert answer.status_code == 422 and set(answer.json["error"]["fields"]) == {"customer"}
    account = ledger.get_account(bobs)
    assert (account.auto_top_up_enabled, account.payment_method, account.customer) == (False, None, None)


def test_the_customer_comes_from_the_buyer_loader(client, app, signed_in, bobs, merchant_id):
    signed_in["buyer"] = (merchant_id, "bob@example.com", "cus_bob")
    answer = client.put(f"{ME}/{bobs}/auto-top-up", json=ON)
    assert answer.status_code == 200 and answer.json["auto_top_up"]["customer"] == "cus_bob"
    signed_in["buyer"] = (merchant_id, "bob@example.com")  # a 2-tuple loader names no customer
    answer = client.put(f"{ME}/{bobs}/auto-top-up", json={**ON, "threshold": 31})
    assert answer.status_code == 200 and answer.json["auto_top_up"]["customer"] is None


def test_a_payment_method_the_gateway_does_not_confirm_is_refused(client, bobs):
    answer = client.put(f"{ME}/{bobs}/auto-top-up", json={**ON, "payment_method": "pm_1OtherBuyersCard"})
    assert answer.status_code == 422 and answer.json["error"]["code"] == "invalid_payment_method"
    assert set(answer.json["error"]["fields"]) == {"payment_method"}
    assert ledger.get_account(bobs).payment_method is None


class OwnerlessGateway:
    """A gateway that cannot say who owns a payment method (no ``owns``)."""

    requires_customer = False

    def charge(self, **kwargs) -> str:
        raise AssertionError("never charged here")


class UnreachableOwner(TestGateway):
    def owns(self, customer, payment_method) -> bool:
        raise GatewayUnavailable("HTTP 503")


def test_without_owns_the_buyer_cannot_name_a_payment_method_but_the_merchant_can(
        client, app, bobs, api_key):
    app.config["ADDONS_PAYMENT_GATEWAY"] = OwnerlessGateway()
    answer = client.put(f"{ME}/{bobs}/auto-top-up", json=ON)
    assert answer.status_code == 422 and answer.json["error"]["code"] == "invalid_payment_method"
    assert client.put(f"{ME}/{bobs}/auto-top-up", json={"enabled": False}).status_code == 200
    merchant = client.put(f"/api/addons/accounts/{bobs}/auto-top-up", json={**ON, "customer": "cus_9"},
                          headers={"Authorization": f"Bearer {api_key}"})
    assert merchant.status_code == 200 and merchant.json["auto_top_up"]["customer"] == "cus_9"


def test_a_gateway_that_cannot_tell_the_owner_is_503_and_stores_nothing(client, app, bobs):
    app.config["ADDONS_PAYMENT_GATEWAY"] = UnreachableOwner()
    answer = client.put(f"{ME}/{bobs}/auto-top-up", json=ON, headers={"Idempotency-Key": "owner-1"})
    assert answer.status_code == 503 and answer.json["error"]["code"] == "payment_gateway_unavailable"
    assert ledger.get_account(bobs).auto_top_up_enabled is False
    app.config["ADDONS_PAYMENT_GATEWAY"] = "test"
    again = client.put(f"{ME}/{bobs}/auto-top-up", json=ON, headers={"Idempotency-Key": "owner-1"})
    assert again.status_code == 200 and "Idempotent-Replayed" not in again.headers


STRIPE = "https://stripe.test"


@responses.activate
def test_with_stripe_a_buyer_cannot_put_top_ups_on_another_customers_card(client, app, signed_in, bobs,
                                                                           merchant_id):
    app.config.update(ADDONS_PAYMENT_GATEWAY="stripe", ADDONS_STRIPE_API_KEY="sk_test_abc",
                      ADDONS_STRIPE_API_BASE=STRIPE)
    signed_in["buyer"] = (merchant_id, "bob@example.com", "cus_bob")
    responses.get(f"{STRIPE}/v1/payment_methods/pm_eve", json={"id": "pm_eve", "customer": "cus_eve"})
    responses.get(f"{STRIPE}/v1/payment_methods/pm_bob", json={"id": "pm_bob", "customer": "cus_bob"})

    theirs = client.put(f"{ME}/{bobs}/auto-top-up", json={**ON, "payment_method": "pm_eve"})
    assert theirs.status_code == 422 and theirs.json["error"]["code"] == "invalid_payment_method"
    assert ledger.get_account(bobs).payment_method is None

    mine = client.put(f"{ME}/{bobs}/auto-top-up", json={**ON, "payment_method": "pm_bob"})
    assert mine.status_code == 200
    assert settings_of(mine.json["auto_top_up"]) == {"enabled": True, "payment_method": "pm_bob", "customer": "cus_bob"}


# -- the decline budget ------------------------------------------------------------------

def test_twenty_changes_on_a_declining_card_make_at_most_max_failures_charges(client, app, bobs, received):
    app.config["ADDONS_TOP_UP_MODE"] = "inline"
    cards = ("pm_card_chargeDeclined", "pm_card_authenticationRequired")
    for change in range(20):  # bob's balance is 0: every change is at or below the threshold
        body = {"enabled": True, "threshold": 30 + change, "payment_method": cards[change % 2]}
        assert client.put(f"{ME}/{bobs}/auto-top-up", json=body).status_code == 200
    assert current_gateway().calls == 3 == app.config["ADDONS_TOP_UP_MAX_FAILURES"]
    assert [t.status for t in storage.TopUp.select().where(storage.TopUp.account == bobs)] == ["failed"] * 3
    # The third consecutive decline switched it off; switching it on again did not lift the budget.
    assert [d["reason"] for d in received["auto_top_up_disabled"]] == ["max_failures"]
