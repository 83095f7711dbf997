"""The PayKickstart-style usage endpoints: balance and add/deduct."""

from __future__ import annotations

import threading

import pytest

from addon_plugin import ledger
from tests.helpers import QUIET, create_product, ledger_sum, sequences

USAGE = "/api/buyer-addon/usage"
ADD = "/api/buyer-addon/usage/add"


def test_balance_by_product_and_email(client, auth, product, funded_account_id):
    response = client.post(USAGE, json={"product_id": product.id, "buyer_email": "Bob@Example.com"}, headers=auth)
    assert response.status_code == 200
    assert response.get_json() == {"success": True, "data": {
        "account_id": funded_account_id, "product_id": product.id, "buyer_email": "bob@example.com",
        "balance": 1000, "available": 1000, "held": 0, "threshold": None,
        "auto_top_up": {"enabled": False, "payment_method": None, "customer": None, **QUIET},
        "balances": {"paid": 1000, "promotional": 0}, "next_expiry": None, "forecast": None}}


def test_balance_by_invoice_id(client, auth, funded_account_id):
    response = client.post(USAGE, json={"invoice_id": "order_1"}, headers=auth)
    assert response.status_code == 200
    assert response.get_json()["data"]["account_id"] == funded_account_id


def test_an_invoice_of_several_add_ons_needs_the_product(client, auth, merchant_id, product, funded_account_id):
    other = create_product(merchant_id, name="other")
    other_account = ledger.open_account(merchant_id, other.id, "bob@example.com")
    ledger.record(other_account, 5, "purchase", reference="order_1")
    response = client.post(USAGE, json={"invoice_id": "order_1"}, headers=auth)
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "ambiguous_invoice"
    named = client.post(USAGE, json={"invoice_id": "order_1", "product_id": other.id}, headers=auth)
    assert named.get_json()["data"]["balance"] == 5


def test_balance_with_auth_token_in_a_form(client, api_key, product, funded_account_id):
    response = client.post(USAGE, data={"auth_token": api_key, "product_id": product.id,
                                        "buyer_email": "bob@example.com"})
    assert response.status_code == 200
    assert response.get_json()["data"]["balance"] == 1000


def test_balance_of_an_unknown_buyer_is_404(client, auth, product):
    response = client.post(USAGE, json={"product_id": product.id, "buyer_email": "nobody@example.com"}, headers=auth)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "account_not_found"


def test_balance_needs_a_named_account(client, auth, product):
    response = client.post(USAGE, json={"product_id": product.id}, headers=auth)
    assert response.status_code == 422


def test_deduct_records_usage(client, auth, product, funded_account_id, merchant):
    response = client.post(ADD, json={"product_id": product.id, "buyer_email": "bob@example.com", "value": -30,
                                      "description": "30 renders", "reference": "job-1",
                                      "metadata": {"plan": "pro"}}, headers=auth)
    assert response.status_code == 200
    data = response.get_json()["data"]
    assert data["balance"] == 970
    assert {k: data["entry"][k] for k in ("delta", "balance_after", "kind", "description", "reference",
                                          "metadata", "actor")} == {
        "delta": -30, "balance_after": 970, "kind": "usage", "description": "30 renders", "reference": "job-1",
        "metadata": {"plan": "pro"}, "actor": merchant[1].id}
    assert ledger_sum(funded_account_id) == 970


def test_add_as_a_form_with_bracketed_metadata(client, api_key, product, funded_account_id):
    response = client.post(ADD, data={"auth_token": api_key, "product_id": product.id,
                                      "buyer_email": "bob@example.com", "value": "25", "metadata[source]": "cron"})
    assert response.status_code == 200
    entry = response.get_json()["data"]["entry"]
    assert (entry["delta"], entry["kind"], entry["metadata"]) == (25, "adjustment", {"source": "cron"})


def test_adding_for_a_new_buyer_opens_the_account(client, auth, product):
    response = client.post(ADD, json={"product_id": product.id, "buyer_email": "NEW@example.com", "value": 10},
                           headers=auth)
    assert response.status_code == 200
    data = response.get_json()["data"]
    assert (data["buyer_email"], data["balance"]) == ("new@example.com", 10)
    assert ledger.find_account_id(product.merchant_id, product.id, "new@example.com") == data["account_id"]


def test_deducting_from_a_new_buyer_is_404_and_opens_nothing(client, auth, product):
    response = client.post(ADD, json={"product_id": product.id, "buyer_email": "new@example.com", "value": -1},
                           headers=auth)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "account_not_found"
    assert ledger.find_account_id(product.merchant_id, product.id, "new@example.com") is None


def test_adding_to_an_unknown_product_is_404(client, auth):
    response = client.post(ADD, json={"product_id": "prod_nope", "buyer_email": "a@example.com", "value": 1},
                           headers=auth)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "product_not_found"


def test_overdraw_is_402_and_changes_nothing(client, auth, product, funded_account_id):
    response = client.post(ADD, json={"product_id": product.id, "buyer_email": "bob@example.com", "value": -1001},
                           headers=auth)
    assert response.status_code == 402
    assert response.get_json()["error"]["code"] == "insufficient_credits"
    assert ledger.balance(funded_account_id) == 1000 and sequences(funded_account_id) == [1]


def test_the_overdraft_limit_allows_going_below_zero(client, auth, merchant_id):
    product = create_product(merchant_id, overdraft_limit=50)
    ledger.open_account(merchant_id, product.id, "bob@example.com")
    body = {"product_id": product.id, "buyer_email": "bob@example.com", "value": -50}
    assert client.post(ADD, json=body, headers=auth).get_json()["data"]["balance"] == -50
    assert client.post(ADD, json={**body, "value": -1}, headers=auth).status_code == 402


def test_a_body_without_a_key_is_401_whatever_it_holds(client, product, funded_account_id):
    for body in ({"product_id": product.id, "buyer_email": "bob@example.com", "value": -5}, {"value": "junk"}):
        response = client.post(ADD, json=body)
        assert response.status_code == 401
    assert client.post(ADD, data=b"{not json", content_type="application/json").status_code == 401
    assert ledger.balance(funded_account_id) == 1000


def test_concurrent_deductions_never_overdraw(app, api_key, product, funded_account_id):
    """Eight threads, each with its own client, deduct 15 credits ten times each
    from 1000: 66 succeed (990 credits), the other 14 are 402, the balance is 10."""
    outcomes: list[tuple[int, str | None]] = []
    lock = threading.Lock()
    body = {"product_id": product.id, "buyer_email": "bob@example.com", "value": -15}

    def spend() -> None:
        client = app.test_client()
        for _ in range(10):
            response = client.post(ADD, json=body, headers={"Authorization": f"Bearer {api_key}"})
            code = response.get_json().get("error", {}).get("code")
            with lock:
                outcomes.append((response.status_code, code))

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    succeeded = [o for o in outcomes if o[0] == 200]
    refused = [o for o in outcomes if o[0] != 200]
    assert len(succeeded) == 66
    assert set(refused) == {(402, "insufficient_credits")} and len(refused) == 14
    assert ledger.balance(funded_account_id) == 10 == ledger_sum(funded_account_id)
    assert sequences(funded_account_id) == list(range(1, 68))


@pytest.mark.parametrize("text", ["plain", "ünïcödé ☃ 🚀 \u200b zero-width", "line\nbreak\ttab",
                                  "  leading and trailing  ", "\\ \" ' <script>", "\u202eRTL override", "e\u0301"])
def test_stored_strings_come_back_byte_for_byte(client, auth, product, funded_account_id, text):
    body = {"product_id": product.id, "buyer_email": "bob@example.com", "value": -1, "description": text,
            "reference": text, "metadata": {"note": text, text[:40] or "k": "v"}}
    entry = client.post(ADD, json=body, headers=auth).get_json()["data"]["entry"]
    assert (entry["description"], entry["reference"], entry["metadata"]) == (text, text, body["metadata"])
    listed = client.get(f"/api/addons/accounts/{funded_account_id}/ledger", query_string={"limit": 1},
                        headers=auth).get_json()["data"][0]
    assert (listed["description"], listed["reference"], listed["metadata"]) == (text, text, body["metadata"])
