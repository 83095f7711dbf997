"""The grants API: give, list, read and void grants; category and expiry on
positive usage and adjustments; allocations on entries; balances and
next_expiry on accounts; the grant.expiring webhook."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

import storage
from addon_plugin import ledger, worker
from tests.helpers import ledger_sum
from webhooks import endpoints

ACCOUNTS = "/api/addons/accounts"
GRANTS = "/api/addons/grants"
USAGE_ADD = "/api/buyer-addon/usage/add"


def iso(moment) -> str:
    return storage.isoformat(moment)


def test_a_promotional_grant_is_given_read_listed_and_drawn_first(client, auth, funded_account_id, clock):
    expires_at = clock.now + timedelta(days=30)
    answer = client.post(f"{ACCOUNTS}/{funded_account_id}/grants", headers=auth, json={
        "amount": 100, "expires_at": iso(expires_at), "description": "Welcome offer",
        "metadata": {"campaign": "spring"}})
    assert answer.status_code == 201
    body = answer.get_json()
    grant = body["grant"]
    assert grant == {"id": grant["id"], "account_id": funded_account_id, "category": "promotional", "amount": 100,
                     "remaining": 100, "priority": 50, "expires_at": iso(expires_at), "status": "active",
                     "source": "grant", "reference": None, "description": "Welcome offer",
                     "metadata": {"campaign": "spring"}, "created_at": grant["created_at"]}
    assert body["balance"] == 1100 and body["entry"]["kind"] == "adjustment"
    assert body["entry"]["allocations"] == [{"grant_id": grant["id"], "amount": 100}]
    assert client.get(f"{GRANTS}/{grant['id']}", headers=auth).get_json() == grant

    account = client.get(f"{ACCOUNTS}/{funded_account_id}", headers=auth).get_json()
    assert account["balances"] == {"paid": 1000, "promotional": 100}
    assert account["next_expiry"] == {"at": iso(expires_at), "credits": 100}

    used = client.post(USAGE_ADD, headers=auth, json={"invoice_id": "order_1", "value": -150}).get_json()["data"]
    assert [a["amount"] for a in used["entry"]["allocations"]] == [-100, -50]
    assert used["entry"]["allocations"][0]["grant_id"] == grant["id"]
    assert used["balances"] == {"paid": 950, "promotional": 0} and used["next_expiry"] is None

    listed = client.get(f"{ACCOUNTS}/{funded_account_id}/grants?status=depleted", headers=auth).get_json()
    assert [g["id"] for g in listed["data"]] == [grant["id"]]
    paid = client.get(f"{ACCOUNTS}/{funded_account_id}/grants?category=paid", headers=auth).get_json()["data"]
    assert [(g["source"], g["remaining"]) for g in paid] == [("purchase", 950)]
    ledger_page = client.get(f"{ACCOUNTS}/{funded_account_id}/ledger", headers=auth).get_json()["data"]
    assert [sum(a["amount"] for a in e["allocations"]) for e in ledger_page] == [e["delta"] for e in ledger_page]


def test_giving_a_grant_is_idempotent(client, auth, account_id, clock):
    headers = {**auth, "Idempotency-Key": "promo-1"}
    first = client.post(f"{ACCOUNTS}/{account_id}/grants", headers=headers, json={"amount": 10})
    again = client.post(f"{ACCOUNTS}/{account_id}/grants", headers=headers, json={"amount": 10})
    assert again.headers.get("Idempotent-Replayed") == "true" and again.get_json() == first.get_json()
    assert storage.CreditGrant.select().count() == 1 and ledger.balance(account_id) == 10


@pytest.mark.parametrize("body, field", [
    ({"amount": 0}, "amount"), ({"amount": 5, "category": "free"}, "category"),
    ({"amount": 5, "priority": 101}, "priority"), ({"amount": 5, "expires_at": "2000-01-01T00:00:00Z"}, "expires_at"),
    ({"amount": 5, "expires_at": "soon"}, "expires_at"),
])
def test_a_bad_grant_is_refused_and_nothing_recorded(client, auth, account_id, clock, body, field):
    answer = client.post(f"{ACCOUNTS}/{account_id}/grants", headers=auth, json=body)
    assert answer.status_code == 422 and field in answer.get_json()["error"]["fields"]
    assert storage.LedgerEntry.select().count() == 0 == storage.CreditGrant.select().count()


def test_another_merchants_grants_are_not_found(client, auth, other_auth, funded_account_id):
    [grant] = storage.CreditGrant.select()
    assert client.get(f"{GRANTS}/{grant.id}", headers=other_auth).status_code == 404
    assert client.post(f"{GRANTS}/{grant.id}/void", headers=other_auth, json={}).get_json()["error"]["code"] == \
        "grant_not_found"
    assert client.post(f"{ACCOUNTS}/{funded_account_id}/grants", headers=other_auth,
                       json={"amount": 5}).status_code == 404
    assert ledger.balance(funded_account_id) == 1000


def test_voiding_a_grant_takes_its_remaining_credits_out(client, auth, funded_account_id):
    [grant] = storage.CreditGrant.select()
    answer = client.post(f"{GRANTS}/{grant.id}/void", headers=auth, json={"description": "chargeback"})
    assert answer.status_code == 200
    assert (answer.get_json()["status"], answer.get_json()["remaining"]) == ("voided", 0)
    [entry] = client.get(f"{ACCOUNTS}/{funded_account_id}/ledger?limit=1", headers=auth).get_json()["data"]
    assert (entry["kind"], entry["delta"], entry["reference"], entry["description"]) == (
        "void", -1000, grant.id, "chargeback")
    assert entry["allocations"] == [{"grant_id": grant.id, "amount": -1000}]
    assert ledger.balance(funded_account_id) == 0 == ledger_sum(funded_account_id)


def test_positive_usage_and_adjustments_take_a_category_and_an_expiry(client, auth, product, account_id, clock):
    expires_at = iso(clock.now + timedelta(hours=2))
    added = client.post(USAGE_ADD, headers=auth, data={
        "product_id": product.id, "buyer_email": "bob@example.com", "value": "30", "category": "paid",
        "expires_at": expires_at})
    assert added.status_code == 200, added.get_json()
    grant = storage.CreditGrant.get_by_id(added.get_json()["data"]["entry"]["allocations"][0]["grant_id"])
    assert (grant.category, iso(grant.expires_at)) == ("paid", expires_at)
    adjusted = client.post(f"{ACCOUNTS}/{account_id}/adjustments", headers=auth, json={
        "value": 20, "description": "goodwill", "expires_at": expires_at})
    assert adjusted.status_code == 201
    assert adjusted.get_json()["entry"]["allocations"][0]["amount"] == 20
    refused = client.post(USAGE_ADD, headers=auth, json={
        "product_id": product.id, "buyer_email": "bob@example.com", "value": -5, "category": "paid"})
    assert refused.status_code == 422 and "category" in refused.get_json()["error"]["fields"]
    clock.advance(hours=2)
    answer = client.post("/api/buyer-addon/usage", headers=auth,
                         json={"product_id": product.id, "buyer_email": "bob@example.com"}).get_json()["data"]
    assert answer["balance"] == 0 == ledger_sum(account_id)
    assert answer["balances"] == {"paid": 0, "promotional": 0}


def test_products_take_credit_expiry_days(client, auth, clock):
    answer = client.post("/api/addons/products", headers=auth, json={
        "price": "19.00", "credit_amount": 100, "credit_expiry_days": 30})
    assert answer.status_code == 201 and answer.get_json()["credit_expiry_days"] == 30
    product_id = answer.get_json()["id"]
    assert client.patch(f"/api/addons/products/{product_id}", headers=auth,
                        json={"credit_expiry_days": 0}).status_code == 422
    assert client.patch(f"/api/addons/products/{product_id}", headers=auth,
                        json={"credit_expiry_days": None}).get_json()["credit_expiry_days"] is None


def test_grant_expiring_is_delivered_once_with_the_grant(app, client, auth, merchant_id, account_id, clock):
    app.config["ADDONS_WEBHOOK_ALLOW_PRIVATE_URLS"] = True
    endpoints.create_endpoint(merchant_id, "https://merchant.example/hook", event_types=["grant.expiring"])
    grant_id = client.post(f"{ACCOUNTS}/{account_id}/grants", headers=auth, json={
        "amount": 10, "expires_at": iso(clock.now + timedelta(days=5))}).get_json()["grant"]["id"]
    assert storage.WebhookEvent.select().count() == 0
    clock.advance(days=2, seconds=1)  # now inside the 3-day window
    worker.run_once()
    worker.run_once()
    [event] = storage.WebhookEvent.select()
    body = json.loads(event.payload)
    assert body["type"] == "grant.expiring"
    assert body["data"]["account_id"] == account_id and body["data"]["balance"] == 10
    assert body["data"]["grant"]["id"] == grant_id and body["data"]["grant"]["remaining"] == 10


def test_no_warning_when_the_window_is_none(app, account_id, clock):
    app.config["ADDONS_GRANT_EXPIRY_WARNING"] = None
    from addon_plugin import grants

    ledger.record(account_id, 10, "adjustment", grant=grants.Terms(expires_at=clock.now + timedelta(hours=1)))
    worker.run_once()
    assert storage.CreditGrant.get().expiry_warned_at is None


def test_entries_written_before_grants_existed_have_no_allocations(client, auth, funded_account_id):
    storage.LedgerEntry.update(grant_id=None).execute()
    [entry] = client.get(f"{ACCOUNTS}/{funded_account_id}/ledger", headers=auth).get_json()["data"]
    assert entry["allocations"] == []


def test_an_account_listed_after_its_grant_expired_shows_the_expiry(client, auth, merchant_id, account_id, clock):
    client.post(f"{ACCOUNTS}/{account_id}/grants", headers=auth, json={
        "amount": 10, "expires_at": iso(clock.now + timedelta(minutes=1))})
    clock.advance(minutes=1)
    [listed] = client.get(ACCOUNTS, headers=auth).get_json()["data"]
    assert listed["balance"] == 0 == ledger_sum(account_id)
    assert storage.LedgerEntry.select().where(storage.LedgerEntry.kind == "expiry").count() == 1

