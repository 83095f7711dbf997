"""``/addons/accounts``: find, read, ledger, adjustments."""

from __future__ import annotations

import pytest

import storage
from addon_plugin import ledger
from tests.helpers import QUIET, create_product, ledger_sum, sequences

ACCOUNTS = "/api/addons/accounts"


def test_list_filters_by_buyer_email_case_insensitively(client, auth, merchant_id, product, account_id):
    ledger.open_account(merchant_id, product.id, "carol@example.com")
    response = client.get(ACCOUNTS, query_string={"buyer_email": "BOB@Example.com"}, headers=auth)
    assert response.status_code == 200
    assert [a["id"] for a in response.get_json()["data"]] == [account_id]


def test_list_filters_by_product(client, auth, merchant_id, product, account_id):
    other = create_product(merchant_id, name="other")
    other_account = ledger.open_account(merchant_id, other.id, "bob@example.com")
    response = client.get(ACCOUNTS, query_string={"product_id": other.id}, headers=auth)
    assert [a["id"] for a in response.get_json()["data"]] == [other_account]
    both = client.get(ACCOUNTS, headers=auth).get_json()["data"]
    assert [a["id"] for a in both] == [other_account, account_id]


def test_list_refuses_a_bad_email_filter(client, auth):
    response = client.get(ACCOUNTS, query_string={"buyer_email": "not-an-email"}, headers=auth)
    assert response.status_code == 422
    assert "buyer_email" in response.get_json()["error"]["fields"]


def test_get_answers_the_account(client, auth, funded_account_id, product):
    response = client.get(f"{ACCOUNTS}/{funded_account_id}", headers=auth)
    assert response.status_code == 200
    assert response.get_json() == {
        "id": funded_account_id, "product_id": product.id, "buyer_email": "bob@example.com", "balance": 1000,
        "available": 1000, "held": 0,
        "threshold": None, "auto_top_up": {"enabled": False, "payment_method": None, "customer": None, **QUIET},
        "balances": {"paid": 1000, "promotional": 0}, "next_expiry": None, "forecast": None,
    }


def test_get_unknown_account_is_404(client, auth):
    response = client.get(f"{ACCOUNTS}/acct_nope", headers=auth)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "account_not_found"


def test_ledger_is_newest_first_and_pages_by_sequence(client, auth, funded_account_id):
    for n in range(4):
        ledger.record(funded_account_id, -(n + 1), "usage", description=f"job {n}")
    seen, cursor = [], None
    while True:
        query = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get(f"{ACCOUNTS}/{funded_account_id}/ledger", query_string=query, headers=auth).get_json()
        seen.extend(entry["sequence"] for entry in page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [5, 4, 3, 2, 1]


def test_ledger_entries_show_every_field(client, auth, funded_account_id, api_key):
    ledger.record(funded_account_id, -7, "usage", description="render", reference="job-1",
                  metadata={"k": "v"}, idempotency_key="idem-1", actor="key_x")
    entry = client.get(f"{ACCOUNTS}/{funded_account_id}/ledger", query_string={"limit": 1},
                       headers=auth).get_json()["data"][0]
    assert {k: entry[k] for k in ("sequence", "delta", "balance_after", "kind", "description", "reference",
                                  "metadata", "idempotency_key", "actor")} == {
        "sequence": 2, "delta": -7, "balance_after": 993, "kind": "usage", "description": "render",
        "reference": "job-1", "metadata": {"k": "v"}, "idempotency_key": "idem-1", "actor": "key_x"}
    assert entry["id"].startswith("entry_") and entry["created_at"].endswith("Z")


def test_ledger_of_unknown_account_is_404(client, auth):
    response = client.get(f"{ACCOUNTS}/acct_nope/ledger", headers=auth)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "account_not_found"


def test_adjustment_answers_201_with_entry_and_balance(client, auth, funded_account_id, merchant):
    response = client.post(f"{ACCOUNTS}/{funded_account_id}/adjustments",
                           json={"value": -150, "description": "Goodwill correction", "reference": "T-9",
                                 "metadata": {"ticket": "9"}}, headers=auth)
    assert response.status_code == 201
    body = response.get_json()
    assert body["balance"] == 850
    entry = body["entry"]
    assert (entry["delta"], entry["balance_after"], entry["kind"], entry["sequence"]) == (-150, 850, "adjustment", 2)
    assert (entry["description"], entry["reference"], entry["metadata"]) == ("Goodwill correction", "T-9",
                                                                              {"ticket": "9"})
    assert entry["actor"] == merchant[1].id
    assert ledger.balance(funded_account_id) == 850 == ledger_sum(funded_account_id)


def test_adjustment_may_add_credits(client, auth, account_id):
    response = client.post(f"{ACCOUNTS}/{account_id}/adjustments", json={"value": 40, "description": "Bonus"},
                           headers=auth)
    assert response.status_code == 201
    assert response.get_json()["balance"] == 40


def test_adjustment_below_the_overdraft_limit_is_402(client, auth, funded_account_id):
    response = client.post(f"{ACCOUNTS}/{funded_account_id}/adjustments",
                           json={"value": -1001, "description": "too much"}, headers=auth)
    assert response.status_code == 402
    assert response.get_json()["error"]["code"] == "insufficient_credits"
    assert ledger.balance(funded_account_id) == 1000 and sequences(funded_account_id) == [1]


@pytest.mark.parametrize("body, field", [
    ({"value": 5}, "description"),
    ({"value": 5, "description": ""}, "description"),
    ({"value": 5, "description": "   "}, "description"),
    ({"description": "why"}, "value"),
    ({"value": 0, "description": "why"}, "value"),
    ({"value": 5, "description": "why", "kind": "purchase"}, "kind"),
])
def test_adjustment_refuses_invalid_fields(client, auth, funded_account_id, body, field):
    response = client.post(f"{ACCOUNTS}/{funded_account_id}/adjustments", json=body, headers=auth)
    assert response.status_code == 422
    assert field in response.get_json()["error"]["fields"]
    assert sequences(funded_account_id) == [1]


def test_adjustment_of_unknown_account_is_404(client, auth):
    response = client.post(f"{ACCOUNTS}/acct_nope/adjustments", json={"value": 5, "description": "x"},
                           headers=auth)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "account_not_found"
    assert storage.LedgerEntry.select().count() == 0
