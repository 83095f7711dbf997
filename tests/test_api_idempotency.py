"""Idempotent writes over HTTP, on Stripe's rules (SPEC §3)."""

from __future__ import annotations

from datetime import timedelta

import pytest

import storage
from addon_plugin import idempotency, ledger, merchants
from conftest import bearer, sequences

ADD = "/api/buyer-addon/usage/add"


@pytest.fixture
def deduct(client, auth, product, funded_account_id):
    """POST a deduction of ``value`` with an idempotency key (header by default)."""

    def post(value: int, key: str = "job-1", *, in_body: bool = False, headers: dict | None = None, **fields):
        body = {"product_id": product.id, "buyer_email": "bob@example.com", "value": value, **fields}
        if in_body:
            body["idempotency_key"] = key
            return client.post(ADD, json=body, headers=headers or auth)
        return client.post(ADD, json=body, headers={**(headers or auth), "Idempotency-Key": key})

    return post


@pytest.mark.parametrize("in_body", [False, True])
def test_a_replay_answers_the_first_result_once_applied(deduct, funded_account_id, in_body):
    first = deduct(-10, in_body=in_body)
    replay = deduct(-10, in_body=in_body)
    assert first.status_code == replay.status_code == 200
    assert "Idempotent-Replayed" not in first.headers
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json() == first.get_json()
    assert ledger.balance(funded_account_id) == 990 and sequences(funded_account_id) == [1, 2]


def test_the_same_key_with_another_body_is_422(deduct, funded_account_id):
    deduct(-10)
    response = deduct(-11)
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "idempotency_key_reused"
    assert ledger.balance(funded_account_id) == 990


def test_the_same_key_on_another_route_is_422(deduct, client, auth, funded_account_id):
    deduct(-10)
    response = client.post(f"/api/addons/accounts/{funded_account_id}/adjustments",
                           json={"value": -10, "description": "x"}, headers={**auth, "Idempotency-Key": "job-1"})
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "idempotency_key_reused"


def test_a_refusal_is_stored_and_replayed(deduct, funded_account_id):
    first = deduct(-5000)
    assert first.status_code == 402
    ledger.record(funded_account_id, 10_000, "purchase", reference="order_2")
    replay = deduct(-5000)
    assert replay.status_code == 402 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json() == first.get_json()
    assert ledger.balance(funded_account_id) == 11_000


def test_a_validation_refusal_stores_nothing_and_may_be_retried(deduct, funded_account_id):
    assert deduct(0).status_code == 422
    assert storage.IdempotencyRecord.select().count() == 0
    retried = deduct(-10)
    assert retried.status_code == 200 and "Idempotent-Replayed" not in retried.headers
    assert ledger.balance(funded_account_id) == 990


def test_a_refusal_found_deep_in_a_write_stores_nothing(deduct, funded_account_id):
    """Metadata over 8 KB is found by the ledger, inside the write: still a 422 that stores nothing."""
    too_big = {f"k{n}": "v" * 400 for n in range(30)}
    assert deduct(-10, metadata=too_big).status_code == 422
    assert storage.IdempotencyRecord.select().count() == 0
    assert deduct(-10).status_code == 200


def test_a_malformed_body_stores_nothing(client, auth, deduct, funded_account_id):
    response = client.post(ADD, data=b'{"value": -10,', content_type="application/json",
                           headers={**auth, "Idempotency-Key": "job-1"})
    assert response.status_code == 400
    assert storage.IdempotencyRecord.select().count() == 0
    assert deduct(-10).status_code == 200


def test_an_unauthenticated_request_stores_nothing(deduct, funded_account_id):
    assert deduct(-10, headers=bearer("sk_nope")).status_code == 401
    assert storage.IdempotencyRecord.select().count() == 0
    assert deduct(-10).status_code == 200


def test_keys_are_per_merchant(deduct, client, other_auth, merchant_id):
    deduct(-10)
    other = client.post("/api/addons/products", json={"price": "1.00", "credit_amount": 1},
                        headers={**other_auth, "Idempotency-Key": "job-1"})
    assert other.status_code == 201


def test_creating_a_product_twice_with_one_key_makes_one(client, auth):
    headers = {**auth, "Idempotency-Key": "prod-1"}
    first = client.post("/api/addons/products", json={"price": "1.00", "credit_amount": 1}, headers=headers)
    replay = client.post("/api/addons/products", json={"price": "1.00", "credit_amount": 1}, headers=headers)
    assert replay.status_code == 201 and replay.get_json() == first.get_json()
    assert storage.Product.select().count() == 1


def test_after_expiry_the_ledger_still_never_deducts_twice(deduct, funded_account_id):
    first = deduct(-10)
    storage.IdempotencyRecord.update(created_at=storage.utcnow() - timedelta(days=2)).execute()
    assert idempotency.prune() == 1
    again = deduct(-10)
    assert again.status_code == 200 and "Idempotent-Replayed" not in again.headers
    assert again.get_json()["data"]["entry"] == first.get_json()["data"]["entry"]
    assert ledger.balance(funded_account_id) == 990 and sequences(funded_account_id) == [1, 2]


def test_the_header_wins_over_the_body(deduct, client, auth, product, funded_account_id):
    body = {"product_id": product.id, "buyer_email": "bob@example.com", "value": -10, "idempotency_key": "in-body"}
    client.post(ADD, json=body, headers={**auth, "Idempotency-Key": "in-header"})
    entry = client.get(f"/api/addons/accounts/{funded_account_id}/ledger", query_string={"limit": 1},
                       headers=auth).get_json()["data"][0]
    assert entry["idempotency_key"] == "in-header"


# -- an empty or blank key is refused, never taken as "no key" -------------------------------

#: Every write route: (method, path with {account}/{product}/{key} ids, a valid body, by the buyer?).
WRITES = [
    ("POST", "/api/buyer-addon/usage/add", {"product_id": "{product}", "buyer_email": "bob@example.com",
                                            "value": -10}, False),
    ("POST", "/api/addons/accounts/{account}/adjustments", {"value": -10, "description": "x"}, False),
    ("PUT", "/api/addons/accounts/{account}/auto-top-up", {"enabled": False}, False),
    ("PUT", "/api/addons/me/accounts/{account}/auto-top-up", {"enabled": False}, True),
    ("POST", "/api/addons/products", {"price": "1.00", "credit_amount": 1}, False),
    ("PATCH", "/api/addons/products/{product}", {"name": "x"}, False),
    ("POST", "/api/addons/api-keys", {}, False),
    ("DELETE", "/api/addons/api-keys/{key}", {}, False),
    ("POST", "/api/addons/webhook-endpoints", {"url": "http://127.0.0.1:9/hook"}, False),
    ("PATCH", "/api/addons/webhook-endpoints/ep_none", {"description": "x"}, False),
    ("DELETE", "/api/addons/webhook-endpoints/ep_none", {}, False),
    ("POST", "/api/addons/webhook-endpoints/ep_none/rotate-secret", {}, False),
    ("POST", "/api/addons/deliveries/dlv_none/redeliver", {}, False),
]


def test_the_table_lists_every_write_route(app):
    routes = {(method, rule.rule) for rule in app.url_map.iter_rules()
              for method in rule.methods - {"GET", "HEAD", "OPTIONS"}}
    listed = {(method, path.replace("{account}", "<account_id>").replace("{product}", "<product_id>")
               .replace("{key}", "<key_id>").replace("ep_none", "<endpoint_id>").replace("dlv_none", "<delivery_id>"))
              for method, path, _, _ in WRITES}
    assert routes - {("POST", "/api/buyer-addon/usage")} == listed  # reading a balance is no write


def _row_counts() -> dict[str, int]:
    return {model.__name__: model.select().count() for model in storage.ALL_MODELS}


@pytest.mark.parametrize("method, path, body, by_buyer", WRITES, ids=[f"{m} {p}" for m, p, _, _ in WRITES])
def test_an_empty_or_blank_key_is_422_and_records_nothing(client, app, auth, merchant_id, product,
                                                          funded_account_id, method, path, body, by_buyer):
    app.config.update(ADDONS_PAYMENT_GATEWAY="test", ADDONS_WEBHOOK_ALLOW_PRIVATE_URLS=True)
    app.extensions["addons"].buyer_loader(lambda: (merchant_id, "bob@example.com"))
    ids = {"account": funded_account_id, "product": product.id,
           "key": merchants.create_api_key(merchant_id).id}
    path = path.format(**ids)
    body = {name: value.format(**ids) if isinstance(value, str) else value for name, value in body.items()}
    headers = {} if by_buyer else auth
    before = _row_counts()
    for blank in ("", "   ", "\t"):
        for sent in ({"headers": {**headers, "Idempotency-Key": blank}, "json": body},
                     {"headers": headers, "json": {**body, "idempotency_key": blank}}):
            for _ in range(2):  # the same request twice: refused twice, applied never
                response = client.open(path, method=method, **sent)
                assert response.status_code == 422, (blank, sent, response.get_json())
                error = response.get_json()["error"]
                assert error["code"] == "validation_error" and list(error["fields"]) == ["idempotency_key"]
    assert _row_counts() == before and ledger.balance(funded_account_id) == 1000
