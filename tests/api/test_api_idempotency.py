"""Idempotent writes over HTTP, on Stripe's rules."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest

import storage
from addon_plugin import idempotency, ledger, merchants
from tests.helpers import bearer, ledger_sum, sequences

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


@pytest.fixture
def clock(monkeypatch):
    """The idempotency records' clock (``storage.utcnow``), moved by ``clock.advance(**timedelta_args)``."""
    real, offset = storage.utcnow, [timedelta()]
    monkeypatch.setattr(storage, "utcnow", lambda: real() + offset[0])

    class Clock:
        def advance(self, **delta) -> None:
            offset[0] += timedelta(**delta)

    return Clock()


def test_a_stored_answer_is_replayed_until_the_ttl_and_then_expires(deduct, clock, app, funded_account_id):
    first = deduct(-10)
    clock.advance(seconds=app.config["ADDONS_IDEMPOTENCY_TTL"] - 1)
    assert deduct(-10).headers["Idempotent-Replayed"] == "true"
    assert storage.IdempotencyRecord.select().count() == 1 and idempotency.prune() == 0
    clock.advance(seconds=2)
    assert idempotency.prune() == 1
    assert first.get_json()["data"]["entry"]["sequence"] == 2 and sequences(funded_account_id) == [1, 2]


@pytest.mark.parametrize("route", ["usage", "adjustment"])
def test_a_replay_after_the_record_expired_answers_the_first_entry_as_a_replay(
        client, auth, product, deduct, clock, app, funded_account_id, route):
    """The ledger keeps its keys for good: once the stored answer has expired the
    request is still not applied twice, and it is answered as the replay it is: the
    first entry, the balance that entry left (not today's), ``Idempotent-Replayed``."""
    def send(value: int, key: str):
        if route == "usage":
            return deduct(value, key)
        return client.post(f"/api/addons/accounts/{funded_account_id}/adjustments",
                           json={"value": value, "description": "fix"}, headers={**auth, "Idempotency-Key": key})

    first = send(-10, "job-1")
    send(-30, "job-2")
    clock.advance(seconds=app.config["ADDONS_IDEMPOTENCY_TTL"] + 1)
    again = send(-10, "job-1")
    assert again.status_code == first.status_code and again.headers["Idempotent-Replayed"] == "true"
    answer = again.get_json()["data"] if route == "usage" else again.get_json()
    assert answer["entry"] == (first.get_json()["data"] if route == "usage" else first.get_json())["entry"]
    assert answer["balance"] == answer["entry"]["balance_after"] == 990
    assert ledger.balance(funded_account_id) == 960 and sequences(funded_account_id) == [1, 2, 3]
    replayed_again = send(-10, "job-1")  # stored anew: the same answer from the record
    assert replayed_again.get_json() == again.get_json() and replayed_again.headers["Idempotent-Replayed"] == "true"


def test_after_expiry_another_request_with_the_key_is_still_refused(deduct, clock, app, funded_account_id):
    deduct(-10)
    clock.advance(seconds=app.config["ADDONS_IDEMPOTENCY_TTL"] + 1)
    response = deduct(-11)
    assert response.status_code == 422 and response.get_json()["error"]["code"] == "idempotency_key_reused"
    assert ledger.balance(funded_account_id) == 990


def test_the_header_wins_over_the_body(deduct, client, auth, product, funded_account_id):
    body = {"product_id": product.id, "buyer_email": "bob@example.com", "value": -10, "idempotency_key": "in-body"}
    client.post(ADD, json=body, headers={**auth, "Idempotency-Key": "in-header"})
    entry = client.get(f"/api/addons/accounts/{funded_account_id}/ledger", query_string={"limit": 1},
                       headers=auth).get_json()["data"][0]
    assert entry["idempotency_key"] == "in-header"


def test_an_answer_committed_after_the_claim_looked_is_replayed_not_a_500(deduct, monkeypatch, funded_account_id):
    """The race of the test below, made certain: the claim misses the stored
    answer (on PostgreSQL its snapshot can predate the first request's commit),
    the request runs again, and its record collides with the first one's. It is
    rolled back and answered from the record: a replay, never a 500."""
    first = deduct(-10)
    claim, missed = idempotency._claim, []

    def stale_once(*args):
        if not missed:
            missed.append(True)
            return None
        return claim(*args)

    monkeypatch.setattr(idempotency, "_claim", stale_once)
    again = deduct(-10)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert ledger.balance(funded_account_id) == 990 and sequences(funded_account_id) == [1, 2]


def test_many_clients_spinning_on_one_key_get_the_first_result_never_a_5xx(app, api_key, product,
                                                                          funded_account_id):
    """Eight clients send one request with one key at once and resend it while
    it is 409 (in flight), for 30 keys. PostgreSQL read the stored answer with a
    snapshot taken before the key's lock, so a client could take the lock just
    after the first commit, miss its answer, re-run and hit the record's key: 500."""
    threads, rounds = 8, 100
    answers: list[tuple[str, int, bool, str | None]] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)
    body = {"product_id": product.id, "buyer_email": "bob@example.com", "value": -1}

    def spin() -> None:
        client = app.test_client()
        for round_ in range(rounds):
            start.wait()
            headers = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": f"spin-{round_}"}
            for _ in range(100_000):  # a 409 is resent at once, as a client spinning on it would
                response = client.post(ADD, json=body, headers=headers)
                if response.status_code != 409:
                    break
            entry = (response.get_json().get("data") or {}).get("entry") or {}
            with lock:
                answers.append((f"spin-{round_}", response.status_code,
                                response.headers.get("Idempotent-Replayed") == "true", entry.get("id")))

    workers = [threading.Thread(target=spin) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert Counter(status for _, status, _, _ in answers) == Counter({200: threads * rounds})
    for round_ in range(rounds):
        mine = [(replayed, entry) for key, _, replayed, entry in answers if key == f"spin-{round_}"]
        assert sorted(replayed for replayed, _ in mine) == [False] + [True] * (threads - 1)
        assert len({entry for _, entry in mine}) == 1
    assert ledger.balance(funded_account_id) == 1000 - rounds == ledger_sum(funded_account_id)


# -- key spaces: the API's, the hooks' and each buyer's keys never meet ------------------------

@pytest.mark.parametrize("client_key", ["order_paid:order_9:l1", '["order_paid","order_9","l1"]'])
def test_a_client_key_equal_to_a_hooks_key_never_blocks_the_grant(client, auth, app, merchant_id, product,
                                                                  funded_account_id, client_key):
    """A client's key spelled like the key order_paid derives (old or new form)
    is the client's own: the order's grant still happens."""
    assert client.post(ADD, json={"product_id": product.id, "buyer_email": "bob@example.com", "value": -1},
                       headers={**auth, "Idempotency-Key": client_key}).status_code == 200
    app.extensions["addons"].plugin.order_paid({"id": "order_9", "merchant_id": merchant_id,
                                                "buyer_email": "bob@example.com",
                                                "lines": [{"id": "l1", "product_id": product.id, "quantity": 1}]},
                                               None)
    assert ledger.balance(funded_account_id) == 1000 - 1 + 100 == ledger_sum(funded_account_id)


@pytest.mark.parametrize("client_key", ["order_refunded:order_9", '["order_refunded","order_9"]'])
def test_a_client_key_equal_to_a_hooks_key_never_makes_a_refund_a_no_op(client, auth, app, merchant_id, product,
                                                                        account_id, client_key):
    plugin = app.extensions["addons"].plugin
    plugin.order_paid({"id": "order_9", "merchant_id": merchant_id, "buyer_email": "bob@example.com",
                       "lines": [{"id": "l1", "product_id": product.id, "quantity": 1}]}, None)
    assert client.post(ADD, json={"product_id": product.id, "buyer_email": "bob@example.com", "value": -1},
                       headers={**auth, "Idempotency-Key": client_key}).status_code == 200
    plugin.order_refunded({"id": "order_9", "merchant_id": merchant_id}, None)
    assert ledger.balance(account_id) == 0 == ledger_sum(account_id)
    [refund] = storage.LedgerEntry.select().where(storage.LedgerEntry.kind == "refund")
    assert refund.delta == -99


def test_a_merchants_key_never_reaches_a_buyers_stored_answer(client, auth, app, merchant_id, product, account_id):
    """The buyer's records were stored under ``buyer:<email>`` + U+001F + key in
    the merchant's own key space: a merchant's key spelled so was replayed (or
    refused) with the buyer's answer."""
    app.config["ADDONS_PAYMENT_GATEWAY"] = "test"
    app.extensions["addons"].plugin.buyer_loader(lambda: (merchant_id, "bob@example.com"))
    settings = {"enabled": True, "threshold": 0, "payment_method": "pm_card_visa"}
    mine = client.put(f"/api/addons/me/accounts/{account_id}/auto-top-up", json=settings,
                      headers={"Idempotency-Key": "k"})
    theirs = client.put(f"/api/addons/accounts/{account_id}/auto-top-up", headers=auth,
                        json={**settings, "idempotency_key": "buyer:bob@example.com\x1fk"})
    assert mine.status_code == theirs.status_code == 200
    assert "Idempotent-Replayed" not in theirs.headers


def test_a_key_of_255_characters_works_everywhere_and_comes_back_as_sent(client, auth, app, merchant_id, product,
                                                                         funded_account_id):
    """Stored beside its key space, never inside it: no prefix can overflow the
    255-character key (the buyer's route was a 500 on PostgreSQL)."""
    app.config["ADDONS_PAYMENT_GATEWAY"] = "test"
    app.extensions["addons"].plugin.buyer_loader(lambda: (merchant_id, "bob@example.com"))
    keys = [f"{n}ü" + "k" * 252 + " " for n in range(3)]  # the buyer's may be the merchant's: another space
    usage = {"product_id": product.id, "buyer_email": "bob@example.com", "value": -1}
    requests = [
        ("post", ADD, usage, auth, keys[0]),
        ("post", f"/api/addons/accounts/{funded_account_id}/adjustments", {"value": -1, "description": "x"}, auth,
         keys[1]),
        ("put", f"/api/addons/me/accounts/{funded_account_id}/auto-top-up", {"enabled": False}, {}, keys[0]),
        ("post", "/api/addons/products", {"price": "1.00", "credit_amount": 1}, auth, keys[2]),
    ]
    for method, path, body, headers, key in requests:
        assert len(key) == 255
        first = getattr(client, method)(path, json={**body, "idempotency_key": key}, headers=headers)
        again = getattr(client, method)(path, json={**body, "idempotency_key": key}, headers=headers)
        assert first.status_code in (200, 201), (path, first.get_json())
        assert again.headers["Idempotent-Replayed"] == "true" and again.get_json() == first.get_json()
    entries = storage.LedgerEntry.select().where(storage.LedgerEntry.idempotency_key.is_null(False))
    assert sorted(e.idempotency_key for e in entries) == keys[:2]
    listed = client.get(f"/api/addons/accounts/{funded_account_id}/ledger", headers=auth).get_json()["data"]
    assert [e["idempotency_key"] for e in listed[:2]] == [keys[1], keys[0]]
    assert ledger.balance(funded_account_id) == 998
    assert client.post(ADD, json={**usage, "idempotency_key": keys[0] + "k"}, headers=auth).status_code == 422


# -- an empty or blank key is refused, never taken as "no key" -------------------------------

#: Every write route: (method, path with {account}/{product}/{key} ids, a valid body, by the buyer?).
WRITES = [
    ("POST", "/api/buyer-addon/usage/add", {"product_id": "{product}", "buyer_email": "bob@example.com",
                                            "value": -10}, False),
    ("POST", "/api/addons/accounts/{account}/adjustments", {"value": -10, "description": "x"}, False),
    ("POST", "/api/addons/usage-records", {"records": [{"account_id": "acct_none", "value": -10}]}, False),
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
    ("POST", "/api/addons/top-ups/topup_none/resolve", {"outcome": "failed"}, False),
    ("POST", "/api/addons/accounts/{account}/grants", {"amount": 5}, False),
    ("POST", "/api/addons/grants/grant_none/void", {}, False),
    ("POST", "/api/addons/accounts/{account}/holds", {"value": 5}, False),
    ("POST", "/api/buyer-addon/usage/hold", {"product_id": "{product}", "buyer_email": "bob@example.com",
                                             "value": 5}, False),
    ("POST", "/api/addons/holds/hold_none/capture", {}, False),
    ("POST", "/api/addons/holds/hold_none/release", {}, False),
]


def test_the_table_lists_every_write_route(app):
    """Every write of the API (the drop-in pages' forms are tested in tests/pages/)."""
    routes = {(method, rule.rule) for rule in app.url_map.iter_rules()
              for method in rule.methods - {"GET", "HEAD", "OPTIONS"} if rule.rule.startswith("/api/")}
    listed = {(method, path.replace("{account}", "<account_id>").replace("{product}", "<product_id>")
               .replace("{key}", "<key_id>").replace("ep_none", "<endpoint_id>").replace("dlv_none", "<delivery_id>")
               .replace("topup_none", "<top_up_id>").replace("grant_none", "<grant_id>")
               .replace("hold_none", "<hold_id>"))
              for method, path, _, _ in WRITES}
    assert routes - {("POST", "/api/buyer-addon/usage")} == listed  # reading a balance is no write


def _row_counts() -> dict[str, int]:
    return {model.__name__: model.select().count() for model in storage.ALL_MODELS}


@pytest.mark.parametrize("method, path, body, by_buyer", WRITES, ids=[f"{m} {p}" for m, p, _, _ in WRITES])
def test_an_empty_or_blank_key_is_422_and_records_nothing(client, app, auth, merchant_id, product,
                                                          funded_account_id, method, path, body, by_buyer):
    app.config.update(ADDONS_PAYMENT_GATEWAY="test", ADDONS_WEBHOOK_ALLOW_PRIVATE_URLS=True)
    app.extensions["addons"].plugin.buyer_loader(lambda: (merchant_id, "bob@example.com"))
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
