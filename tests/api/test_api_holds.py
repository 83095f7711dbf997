"""The holds API: reserve (resource and PayKickstart-style routes, JSON and
form), read, list, capture, release; available and held on accounts and usage
answers; deductions checked against available; replays by key; 409
hold_not_active; another merchant's holds are 404."""

from __future__ import annotations

from datetime import timedelta

import storage
from addon_plugin import ledger
from tests.helpers import ledger_sum

ACCOUNTS = "/api/addons/accounts"
HOLDS = "/api/addons/holds"
USAGE = "/api/buyer-addon/usage"


def test_reserve_fifty_work_capture_thirty_seven(client, auth, funded_account_id, product, clock):
    answer = client.post(f"{ACCOUNTS}/{funded_account_id}/holds", headers=auth, json={
        "value": 50, "description": "render 7", "reference": "job_7", "metadata": {"frames": "12"}})
    assert answer.status_code == 201
    hold = answer.get_json()
    assert hold == {"id": hold["id"], "account_id": funded_account_id, "amount": 50, "status": "held",
                    "captured_amount": None, "entry_id": None,
                    "expires_at": storage.isoformat(clock.now + timedelta(seconds=900)),
                    "description": "render 7", "reference": "job_7", "metadata": {"frames": "12"},
                    "created_at": storage.isoformat(clock.now)}
    assert hold["id"].startswith("hold_")
    account = client.get(f"{ACCOUNTS}/{funded_account_id}", headers=auth).get_json()
    assert (account["balance"], account["held"], account["available"]) == (1000, 50, 950)
    usage = client.post(USAGE, headers=auth, json={"product_id": product.id, "buyer_email": "bob@example.com"})
    assert (usage.get_json()["data"]["available"], usage.get_json()["data"]["held"]) == (950, 50)

    captured = client.post(f"{HOLDS}/{hold['id']}/capture", headers=auth, json={"value": 37})
    assert captured.status_code == 200
    body = captured.get_json()
    assert (body["status"], body["captured_amount"]) == ("captured", 37)
    assert client.get(f"{HOLDS}/{hold['id']}", headers=auth).get_json() == body
    entry = client.get(f"{ACCOUNTS}/{funded_account_id}/ledger", headers=auth).get_json()["data"][0]
    assert (entry["id"], entry["kind"], entry["delta"], entry["reference"], entry["metadata"]) == (
        body["entry_id"], "usage", -37, "job_7", {"frames": "12"})
    account = client.get(f"{ACCOUNTS}/{funded_account_id}", headers=auth).get_json()
    assert (account["balance"], account["held"], account["available"]) == (963, 0, 963)
    assert ledger_sum(funded_account_id) == 963


def test_the_paykickstart_route_takes_a_form_with_auth_token(client, api_key, funded_account_id, product):
    answer = client.post(f"{USAGE}/hold", data={
        "auth_token": api_key, "product_id": product.id, "buyer_email": "Bob@Example.com", "value": "40",
        "expires_in": "60", "metadata[job]": "a"})
    assert answer.status_code == 201
    body = answer.get_json()
    assert body["success"] is True and body["data"]["amount"] == 40 and body["data"]["metadata"] == {"job": "a"}
    by_invoice = client.post(f"{USAGE}/hold", json={"auth_token": api_key, "invoice_id": "order_1", "value": 5})
    assert by_invoice.status_code == 201 and by_invoice.get_json()["data"]["account_id"] == funded_account_id
    assert ledger.get_account(funded_account_id).held == 45
    unknown = client.post(f"{USAGE}/hold", json={"auth_token": api_key, "product_id": product.id,
                                                 "buyer_email": "nobody@example.com", "value": 5})
    assert unknown.status_code == 404 and unknown.get_json()["error"]["code"] == "account_not_found"


def test_deductions_are_checked_against_available(client, auth, funded_account_id, product):
    client.post(f"{ACCOUNTS}/{funded_account_id}/holds", headers=auth, json={"value": 990})
    deduct = client.post(f"{USAGE}/add", headers=auth, json={"product_id": product.id,
                                                             "buyer_email": "bob@example.com", "value": -11})
    assert deduct.status_code == 402 and deduct.get_json()["error"]["code"] == "insufficient_credits"
    adjust = client.post(f"{ACCOUNTS}/{funded_account_id}/adjustments", headers=auth,
                         json={"value": -11, "description": "fix"})
    assert adjust.status_code == 402
    hold = client.post(f"{ACCOUNTS}/{funded_account_id}/holds", headers=auth, json={"value": 11})
    assert hold.status_code == 402
    ok = client.post(f"{USAGE}/add", headers=auth, json={"product_id": product.id,
                                                         "buyer_email": "bob@example.com", "value": -10})
    assert ok.status_code == 200 and ok.get_json()["data"]["available"] == 0
    assert ledger.balance(funded_account_id) == 990 == ledger_sum(funded_account_id)


def test_every_write_replays_its_first_answer_by_key(client, auth, funded_account_id):
    url = f"{ACCOUNTS}/{funded_account_id}/holds"
    first = client.post(url, headers={**auth, "Idempotency-Key": "h-1"}, json={"value": 30})
    again = client.post(url, headers={**auth, "Idempotency-Key": "h-1"}, json={"value": 30})
    assert again.headers.get("Idempotent-Replayed") == "true" and again.get_json() == first.get_json()
    assert client.post(url, headers={**auth, "Idempotency-Key": "h-1"}, json={"value": 31}).status_code == 422
    assert storage.CreditHold.select().count() == 1
    hold_id = first.get_json()["id"]

    capture = f"{HOLDS}/{hold_id}/capture"
    captured = client.post(capture, headers={**auth, "Idempotency-Key": "c-1"}, json={"value": 20})
    replay = client.post(capture, headers={**auth, "Idempotency-Key": "c-1"}, json={"value": 20})
    assert replay.status_code == 200 and replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.get_json() == captured.get_json()
    fresh = client.post(capture, headers={**auth, "Idempotency-Key": "c-2"}, json={"value": 20})
    assert fresh.status_code == 409 and fresh.get_json()["error"]["code"] == "hold_not_active"
    assert storage.LedgerEntry.select().where(storage.LedgerEntry.kind == "usage").count() == 1

    other = client.post(url, headers=auth, json={"value": 5}).get_json()["id"]
    released = client.post(f"{HOLDS}/{other}/release", headers={**auth, "Idempotency-Key": "r-1"})
    assert released.status_code == 200 and released.get_json()["status"] == "released"
    assert client.post(f"{HOLDS}/{other}/release", headers={**auth, "Idempotency-Key": "r-1"}).get_json() == \
        released.get_json()
    assert client.post(f"{HOLDS}/{other}/release", headers=auth).status_code == 409
    assert ledger.get_account(funded_account_id).available == 980


def test_capture_after_expiry_is_409_hold_not_active(client, auth, funded_account_id, clock):
    hold = client.post(f"{ACCOUNTS}/{funded_account_id}/holds", headers=auth,
                       json={"value": 100, "expires_in": 5}).get_json()
    clock.advance(seconds=5)
    assert client.get(f"{HOLDS}/{hold['id']}", headers=auth).get_json()["status"] == "expired"
    assert client.get(f"{ACCOUNTS}/{funded_account_id}", headers=auth).get_json()["available"] == 1000
    refused = client.post(f"{HOLDS}/{hold['id']}/capture", headers=auth, json={})
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "hold_not_active"
    assert ledger.balance(funded_account_id) == 1000


def test_holds_are_listed_newest_first_and_filtered_by_status(client, auth, funded_account_id):
    ids = [client.post(f"{ACCOUNTS}/{funded_account_id}/holds", headers=auth, json={"value": n}).get_json()["id"]
           for n in (1, 2, 3)]
    client.post(f"{HOLDS}/{ids[0]}/release", headers=auth)
    page = client.get(f"{ACCOUNTS}/{funded_account_id}/holds?limit=2", headers=auth).get_json()
    assert [h["id"] for h in page["data"]] == [ids[2], ids[1]] and page["next_cursor"]
    rest = client.get(f"{ACCOUNTS}/{funded_account_id}/holds?cursor={page['next_cursor']}", headers=auth).get_json()
    assert [h["id"] for h in rest["data"]] == [ids[0]]
    released = client.get(f"{ACCOUNTS}/{funded_account_id}/holds?status=released", headers=auth).get_json()
    assert [h["id"] for h in released["data"]] == [ids[0]]
    assert client.get(f"{ACCOUNTS}/{funded_account_id}/holds?status=nope", headers=auth).status_code == 422


def test_bad_input_is_refused_and_records_nothing(client, auth, funded_account_id):
    url = f"{ACCOUNTS}/{funded_account_id}/holds"
    for body in ({"value": 0}, {"value": -1}, {"value": "5"}, {"value": 5, "expires_in": 0},
                 {"value": 5, "expires_in": 86401}, {"value": 2**53}, {}):
        answer = client.post(url, headers={**auth, "Idempotency-Key": "bad"}, json=body)
        assert answer.status_code == 422, body
    hold = client.post(url, headers=auth, json={"value": 5}).get_json()
    over = client.post(f"{HOLDS}/{hold['id']}/capture", headers=auth, json={"value": 6})
    assert over.status_code == 422
    assert client.post(f"{HOLDS}/{hold['id']}/capture", headers=auth, json={"value": 0}).status_code == 422
    assert storage.CreditHold.select().count() == 1 and storage.IdempotencyRecord.select().count() == 0


def test_another_merchants_holds_are_not_found(client, auth, other_auth, funded_account_id):
    hold = client.post(f"{ACCOUNTS}/{funded_account_id}/holds", headers=auth, json={"value": 5}).get_json()
    for method, url in (("get", f"{HOLDS}/{hold['id']}"), ("post", f"{HOLDS}/{hold['id']}/capture"),
                        ("post", f"{HOLDS}/{hold['id']}/release"), ("get", f"{ACCOUNTS}/{funded_account_id}/holds"),
                        ("post", f"{ACCOUNTS}/{funded_account_id}/holds")):
        answer = client.open(url, method=method.upper(), headers=other_auth,
                             json={"value": 1} if url.endswith("/holds") and method == "post" else None)
        assert answer.status_code == 404, url
    assert client.post(f"{HOLDS}/{hold['id']}/capture", headers={}).status_code == 401
    assert storage.CreditHold.get_by_id(hold["id"]).status == "held"
