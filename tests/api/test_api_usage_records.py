"""Batch usage, ``POST /addons/usage-records`` (SPEC §13): each record applied or
refused on its own, in order, exactly as ``usage/add`` would; on both databases."""

from __future__ import annotations

import json

import pytest

import storage
from addon_plugin import ledger, signals
from tests.helpers import THRESHOLD, create_product, ledger_sum, run_concurrently, sequences, top_ups

RECORDS = "/api/addons/usage-records"
ADD = "/api/buyer-addon/usage/add"


def entries(account_id: str) -> list[storage.LedgerEntry]:
    return list(storage.LedgerEntry.select().where(storage.LedgerEntry.account == account_id)
                .order_by(storage.LedgerEntry.sequence))


def statuses(response) -> list[int]:
    return [result["status"] for result in response.get_json()["data"]]


def test_mixed_records_are_each_applied_or_refused_on_their_own_in_order(client, auth, product,
                                                                       funded_account_id):
    records = [
        {"account_id": funded_account_id, "value": -400, "description": "render", "metadata": {"job": "1"}},
        {"account_id": funded_account_id, "value": -700},                        # 402: 600 left
        {"account_id": "acct_nobody", "value": -1},                                # 404
        {"product_id": product.id, "buyer_email": "nobody@example.com", "value": -1},  # 404: deduction, no account
        {"account_id": funded_account_id, "value": 0},                             # 422
        {"account_id": funded_account_id, "value": -1, "surprise": True},          # 422: unknown field
        "not an object",                                                          # 422
        {"product_id": product.id, "value": -1},                                   # 422: half a name
        {"product_id": product.id, "buyer_email": "BOB@example.com", "value": -600},  # by buyer: 600 → 0
        {"product_id": product.id, "buyer_email": "new@example.com", "value": 5},    # opens an account
    ]
    response = client.post(RECORDS, json={"records": records}, headers=auth)
    assert response.status_code == 200
    body = response.get_json()
    assert statuses(response) == [200, 402, 404, 404, 422, 422, 422, 422, 200, 200]
    first, refused = body["data"][0], body["data"][1]
    assert first["balance"] == 600 and first["error"] is None
    assert first["entry"]["delta"] == -400 and first["entry"]["kind"] == "usage"
    assert first["entry"]["metadata"] == {"job": "1"} and first["entry"]["description"] == "render"
    assert refused["entry"] is None and refused["balance"] is None
    assert refused["error"]["code"] == "insufficient_credits"
    assert body["data"][2]["error"]["code"] == "account_not_found"
    assert body["data"][5]["error"]["fields"] == {"surprise": ["Unknown field."]}
    assert body["data"][8]["balance"] == 0
    assert body["data"][9]["entry"]["kind"] == "adjustment" and body["data"][9]["balance"] == 5
    assert [e.delta for e in entries(funded_account_id)] == [1000, -400, -600]
    assert ledger.balance(funded_account_id) == 0 == ledger_sum(funded_account_id)
    assert sequences(funded_account_id) == [1, 2, 3]


def test_records_answer_what_usage_add_answers(client, auth, product, funded_account_id):
    record = {"product_id": product.id, "buyer_email": "bob@example.com", "value": -3, "reference": "job-9"}
    single = client.post(ADD, json=record, headers=auth).get_json()["data"]
    batch = client.post(RECORDS, json={"records": [record]}, headers=auth).get_json()["data"][0]
    for name in ("delta", "kind", "description", "reference", "metadata", "actor", "allocations"):
        assert batch["entry"][name] == single["entry"][name]
    assert batch["entry"]["sequence"] == single["entry"]["sequence"] + 1
    assert (single["balance"], batch["balance"]) == (997, 994)


def test_a_replayed_record_answers_its_first_result_and_applies_once(client, auth, funded_account_id):
    deduct = {"account_id": funded_account_id, "value": -10, "idempotency_key": "job-1"}
    too_much = {"account_id": funded_account_id, "value": -5000, "idempotency_key": "job-2"}
    first = client.post(RECORDS, json={"records": [deduct, too_much]}, headers=auth).get_json()["data"]
    client.post(RECORDS, json={"records": [{"account_id": funded_account_id, "value": 4000,
                                            "idempotency_key": "refill"}]}, headers=auth)
    again = client.post(RECORDS, json={"records": [too_much, deduct, deduct,
                                                   {**deduct, "value": -11}]}, headers=auth).get_json()["data"]
    assert [r["status"] for r in first] == [200, 402]
    # The 402 is stored (Stripe's rules): its replay is refused again although credits now suffice.
    assert again[0] == first[1]
    assert again[1] == again[2] == first[0]
    assert again[3]["status"] == 422 and again[3]["error"]["code"] == "idempotency_key_reused"
    assert [e.delta for e in entries(funded_account_id)] == [1000, -10, 4000]
    assert ledger_sum(funded_account_id) == 4990


def test_a_key_repeated_within_one_batch_applies_once(client, auth, funded_account_id):
    record = {"account_id": funded_account_id, "value": -10, "idempotency_key": "twice"}
    data = client.post(RECORDS, json={"records": [record, record]}, headers=auth).get_json()["data"]
    assert data[0] == data[1] and data[0]["status"] == 200
    assert ledger_sum(funded_account_id) == 990


def test_a_record_whose_stored_answer_expired_replays_the_ledger_entry(app, client, auth, funded_account_id):
    record = {"account_id": funded_account_id, "value": -10, "idempotency_key": "old"}
    first = client.post(RECORDS, json={"records": [record]}, headers=auth).get_json()["data"][0]
    storage.IdempotencyRecord.update(created_at=storage.utcnow().replace(year=2000)).execute()
    again = client.post(RECORDS, json={"records": [record]}, headers=auth).get_json()["data"][0]
    assert again["entry"] == first["entry"] and again["balance"] == 990
    assert ledger_sum(funded_account_id) == 990


def test_the_whole_request_replays_by_its_idempotency_key(client, auth, funded_account_id):
    body = {"records": [{"account_id": funded_account_id, "value": -10}]}
    headers = {**auth, "Idempotency-Key": "batch-1"}
    first = client.post(RECORDS, json=body, headers=headers)
    again = client.post(RECORDS, json=body, headers=headers)
    other = client.post(RECORDS, json={"records": [{"account_id": funded_account_id, "value": -11}]},
                        headers=headers)
    assert again.get_json() == first.get_json() and again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 422 and other.get_json()["error"]["code"] == "idempotency_key_reused"
    assert ledger_sum(funded_account_id) == 990


def test_a_record_may_not_carry_the_requests_own_key(client, auth, funded_account_id):
    records = [{"account_id": funded_account_id, "value": -1, "idempotency_key": "same"},
               {"account_id": funded_account_id, "value": -2, "idempotency_key": "own"}]
    response = client.post(RECORDS, json={"records": records}, headers={**auth, "Idempotency-Key": "same"})
    assert statuses(response) == [422, 200]
    assert response.get_json()["data"][0]["error"]["code"] == "idempotency_key_reused"
    assert ledger_sum(funded_account_id) == 998


def test_another_merchants_account_is_404(client, other_auth, funded_account_id):
    response = client.post(RECORDS, json={"records": [{"account_id": funded_account_id, "value": -1}]},
                           headers=other_auth)
    assert statuses(response) == [404]
    assert ledger_sum(funded_account_id) == 1000


@pytest.mark.parametrize(("body", "headers", "status"), [
    ({"records": [{"account_id": "x", "value": -1}]}, {}, 401),
    ({"records": []}, None, 422),
    ({"records": [{"account_id": "x", "value": -1}] * 1001}, None, 422),
    ({"records": "many"}, None, 422),
    ({}, None, 422),
    ({"records": [], "extra": 1}, None, 422),
])
def test_the_request_is_checked_before_any_record(client, auth, body, headers, status):
    response = client.post(RECORDS, json=body, headers=auth if headers is None else headers)
    assert response.status_code == status
    assert storage.LedgerEntry.select().count() == 0


def test_checks_run_in_the_order_401_413_415_422(app, client, auth):
    app.config["ADDONS_BATCH_MAX_CONTENT_LENGTH"] = 2000
    big = json.dumps({"records": [{"account_id": "x" * 30, "value": -1}] * 100})
    assert client.post(RECORDS, data=big, content_type="application/json").status_code == 401
    too_big = client.post(RECORDS, data=big, content_type="application/json", headers=auth)
    assert too_big.status_code == 413 and too_big.get_json()["error"]["code"] == "payload_too_large"
    assert client.post(RECORDS, data="{", content_type="application/json", headers=auth).status_code == 400
    assert client.post(RECORDS, data={"records": "x"}, headers=auth).status_code == 415
    assert client.post(RECORDS, data="[]", content_type="application/json", headers=auth).status_code == 400


def test_the_batch_limit_is_its_own_setting(app, client, auth, funded_account_id):
    """A batch may be larger than ``ADDONS_MAX_CONTENT_LENGTH`` (64 KiB)."""
    records = [{"account_id": funded_account_id, "value": -1, "description": "d" * 100}] * 1000
    response = client.post(RECORDS, json={"records": records}, headers=auth)
    assert response.status_code == 200 and set(statuses(response)) == {200}
    assert ledger.balance(funded_account_id) == 0 == ledger_sum(funded_account_id)


def test_a_failing_subscriber_aborts_the_whole_batch(app, client, auth, funded_account_id):
    """A subscriber that raises after a record's entry was written: nothing of
    the batch is applied, nothing is stored, and the same batch may be sent again."""
    def fail_on_the_third(sender, *, entry, **kwargs):
        if entry.delta == -3:
            raise RuntimeError("subscriber down")

    records = [{"account_id": funded_account_id, "value": -n, "idempotency_key": f"k{n}"} for n in (1, 2, 3, 4)]
    headers = {**auth, "Idempotency-Key": "whole"}
    signals.balance_changed.connect(fail_on_the_third, sender=app)
    try:
        failed = client.post(RECORDS, json={"records": records}, headers=headers)
    finally:
        signals.balance_changed.disconnect(fail_on_the_third, sender=app)
    assert failed.status_code == 500 and failed.get_json()["error"]["code"] == "internal_error"
    assert [e.delta for e in entries(funded_account_id)] == [1000]
    assert storage.IdempotencyRecord.select().count() == 0
    assert storage.WebhookEvent.select().count() == 0
    retried = client.post(RECORDS, json={"records": records}, headers=headers)
    assert statuses(retried) == [200] * 4
    assert ledger_sum(funded_account_id) == 990


def test_a_thousand_records_crossing_the_threshold_decide_one_top_up(client, auth, auto_account_id):
    """1000 → 0 one credit at a time, through the threshold (500): one top-up is
    decided, by the record that crossed it; worker mode charges it later."""
    records = [{"account_id": auto_account_id, "value": -1} for _ in range(1000)]
    response = client.post(RECORDS, json={"records": records}, headers=auth)
    assert set(statuses(response)) == {200}
    decided = top_ups(auto_account_id)
    assert len(decided) == 1 and decided[0].status == "pending"
    assert ledger.balance(auto_account_id) == 0 == ledger_sum(auto_account_id)


def test_a_thousand_records_inline_top_up_charges_once(app, client, auth, auto_account_id, gateway):
    app.config["ADDONS_TOP_UP_MODE"] = "inline"
    records = [{"account_id": auto_account_id, "value": -1} for _ in range(1000)]
    response = client.post(RECORDS, json={"records": records}, headers=auth)
    assert set(statuses(response)) == {200}
    assert [t.status for t in top_ups(auto_account_id)] == ["succeeded"]
    assert len(gateway.charges) == 1
    assert ledger.balance(auto_account_id) == ledger_sum(auto_account_id) > THRESHOLD - 1000


def test_batches_racing_single_requests_on_one_hot_account_never_overdraw(app, auth, product, funded_account_id):
    """Four threads send batches of 50 one-credit deductions, four send single
    usage/add requests, all on one account holding 1000: exactly 1000 succeed."""
    def work(index: int) -> None:
        client = app.test_client()
        for n in range(25 if index < 4 else 100):
            if index < 4:
                client.post(RECORDS, json={"records": [{"account_id": funded_account_id, "value": -1,
                                                        "idempotency_key": f"b{index}-{n}-{i}"}
                                                       for i in range(50)]}, headers=auth)
            else:
                client.post(ADD, json={"product_id": product.id, "buyer_email": "bob@example.com", "value": -1,
                                       "idempotency_key": f"s{index}-{n}"}, headers=auth)

    assert run_concurrently(work, 8, app=app, timeout=300) == []
    assert ledger.balance(funded_account_id) == 0 == ledger_sum(funded_account_id)
    assert sequences(funded_account_id) == list(range(1, 1002))


def test_batches_naming_accounts_in_opposite_orders_do_not_deadlock(app, auth, merchant_id, product,
                                                                    funded_account_id):
    other = ledger.open_account(merchant_id, product.id, "ann@example.com")
    ledger.record(other, 1000, "purchase")

    def work(index: int) -> None:
        client = app.test_client()
        pair = [funded_account_id, other] if index % 2 else [other, funded_account_id]
        for _ in range(10):
            response = client.post(RECORDS, json={"records": [{"account_id": a, "value": -1} for a in pair * 5]},
                                   headers=auth)
            assert response.status_code == 200, response.get_json()

    assert run_concurrently(work, 6, app=app, timeout=300) == []
    assert ledger_sum(funded_account_id) == ledger_sum(other) == 1000 - 6 * 10 * 5


def test_a_record_may_name_a_product_of_another_merchant_only_to_be_refused(client, other_auth, product):
    response = client.post(RECORDS, json={"records": [{"product_id": product.id, "buyer_email": "x@example.com",
                                                       "value": 5}]}, headers=other_auth)
    assert statuses(response) == [404]
    assert response.get_json()["data"][0]["error"]["code"] == "product_not_found"


def test_records_use_the_product_they_name(client, auth, merchant_id, product, funded_account_id):
    other = create_product(merchant_id, name="other")
    response = client.post(RECORDS, json={"records": [
        {"product_id": other.id, "buyer_email": "bob@example.com", "value": 7},
        {"product_id": product.id, "buyer_email": "bob@example.com", "value": -7}]}, headers=auth)
    assert statuses(response) == [200, 200]
    assert ledger_sum(funded_account_id) == 993
    assert ledger_sum(ledger.find_account_id(merchant_id, other.id, "bob@example.com")) == 7


@pytest.mark.parametrize("named", ["pair", "id"])
def test_the_account_lookup_probes_an_index_per_name_never_scans_the_merchants_accounts(app, named):
    """Found on a merchant with 10,000 accounts, a batch of 10 read 10 index entries,
    not 10,000 rows (SQLite scanned them all for a row-value IN)."""
    from addon_plugin import batch

    count = 10 if named == "id" else 5
    text = batch.lookup_sql(named, count)
    if storage.dialect() == "sqlite":
        plan = [row[-1] for row in storage.db.execute_sql("EXPLAIN QUERY PLAN " + text,
                                                          ["x"] * (count * (2 if named == "pair" else 1) + 1))]
        assert not any(step.startswith("SCAN a") or "credit_account_merchant_id" in step for step in plan), plan
        assert any(step.startswith("SEARCH a USING") for step in plan), plan
    else:  # PostgreSQL plans by statistics: check the answer instead
        assert storage.db.execute_sql(text, ["x"] * (count * (2 if named == "pair" else 1) + 1)).fetchall() == []
