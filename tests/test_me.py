"""The buyer-facing routes ``/addons/me/…``: the host's session (``buyer_loader``)
instead of an API key, the buyer's own accounts only, and the CSRF rules."""

from __future__ import annotations

import pytest

from addon_plugin import ledger

from conftest import create_product

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
                                      "balance": 0, "threshold": None,
                                      "auto_top_up": {"enabled": False, "payment_method": None, "customer": None}}


def test_a_buyer_switches_auto_top_up_on_and_off(client, bobs):
    answer = client.put(f"{ME}/{bobs}/auto-top-up", json=ON, headers={"Origin": "http://localhost"})
    assert answer.status_code == 200
    assert answer.json["threshold"] == 30 and answer.json["auto_top_up"]["enabled"] is True
    account = ledger.get_account(bobs)
    assert (account.auto_top_up_enabled, account.threshold, account.payment_method) == (True, 30, "pm_card_visa")
    assert client.put(f"{ME}/{bobs}/auto-top-up", json={"enabled": False}).json["auto_top_up"] == {
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
