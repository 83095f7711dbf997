"""Fault suite, usage path: a real gunicorn server over loopback, on SQLite and
PostgreSQL. Each test prints its figures and asserts the invariants."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import pytest
import requests

import storage
from addon_plugin import ledger
from tests.helpers import ledger_sum, run_concurrently, sequences

from .harness import Server, post_until_answered

pytestmark = [pytest.mark.faults, pytest.mark.slow]

CLIENTS, PER_CLIENT = 6, 120


def usage_url(server: Server) -> str:
    return f"{server.url}/api/buyer-addon/usage/add"


def test_server_killed_mid_load_loses_nothing_and_applies_nothing_twice(server, api_key, product,
                                                                        funded_account_id):
    """Clients record usage with idempotency keys; the server is SIGKILLed partway
    and restarted; clients retry unanswered requests with the same keys."""
    run = uuid.uuid4().hex[:6]
    headers = {"Authorization": f"Bearer {api_key}"}
    acknowledged: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    halfway = threading.Event()
    lock = threading.Lock()
    deadline = time.monotonic() + 120

    def client(index: int) -> None:
        session = requests.Session()
        for n in range(PER_CLIENT):
            key = f"{run}-{index}-{n}"
            body = {"product_id": product.id, "buyer_email": "bob@example.com", "value": -1,
                    "idempotency_key": key}
            response = post_until_answered(session, usage_url(server), body, headers, deadline)
            with lock:
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    acknowledged[key] += 1
                if sum(statuses.values()) >= CLIENTS * PER_CLIENT // 3:
                    halfway.set()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    assert halfway.wait(timeout=60), "load never reached a third"
    server.kill()
    killed_at = sum(statuses.values())
    server.start()
    for thread in threads:
        thread.join()

    keyed = storage.LedgerEntry.select().where(storage.LedgerEntry.idempotency_key.startswith(f"{run}-"))
    written = Counter(entry.idempotency_key for entry in keyed)
    print(f"\n  sent {CLIENTS * PER_CLIENT} requests; server killed after {killed_at} answers; "
          f"statuses {dict(statuses)}; entries written {sum(written.values())}")
    assert statuses == Counter({200: CLIENTS * PER_CLIENT})
    assert set(acknowledged) == set(written) and set(written.values()) == {1}
    assert ledger.balance(funded_account_id) == 1000 - CLIENTS * PER_CLIENT == ledger_sum(funded_account_id)
    assert sequences(funded_account_id) == list(range(1, CLIENTS * PER_CLIENT + 2))


def test_one_idempotency_key_from_many_clients_applies_once(server, api_key, product, funded_account_id):
    """Twelve clients send the same request with the same key at the same time."""
    headers = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": f"same-{uuid.uuid4().hex}"}
    body = {"product_id": product.id, "buyer_email": "bob@example.com", "value": -7}
    answers: list[requests.Response] = []

    def client(_: int) -> None:
        session = requests.Session()
        deadline = time.monotonic() + 30
        while True:  # a 409 (still in flight) is retried, as the error says to
            response = post_until_answered(session, usage_url(server), body, headers, deadline)
            if response.status_code != 409 or time.monotonic() > deadline:
                answers.append(response)
                return

    assert run_concurrently(client, 12) == []
    replays = sum(r.headers.get("Idempotent-Replayed") == "true" for r in answers)
    print(f"\n  12 identical requests: statuses {Counter(r.status_code for r in answers)}, {replays} replays")
    assert [r.status_code for r in answers] == [200] * 12
    assert replays == 11
    assert len({r.json()["data"]["entry"]["id"] for r in answers}) == 1
    assert ledger.balance(funded_account_id) == 993 == ledger_sum(funded_account_id)


BATCH_CLIENTS, BATCHES, BATCH_SIZE = 4, 30, 10


def test_server_killed_mid_batches_loses_no_acknowledged_record_and_half_applies_none(
        server, api_key, merchant_id, product, funded_account_id):
    """Clients send batches of keyed records (one record in each batch refused for
    lack of credits, one for a bad field) to the hot account and to a second one;
    the server is SIGKILLed partway and restarted; clients send unanswered batches
    again, as they are. Every record acknowledged with 200 is in the ledger once;
    every entry written was acknowledged; the refused ones wrote nothing."""
    other = ledger.open_account(merchant_id, product.id, "ann@example.com")
    ledger.record(other, 10_000, "purchase")
    storage.db.close()
    run = uuid.uuid4().hex[:6]
    url = f"{server.url}/api/addons/usage-records"
    headers = {"Authorization": f"Bearer {api_key}"}
    acknowledged: Counter[str] = Counter()
    results: Counter[int] = Counter()
    answers: Counter[int] = Counter()
    halfway = threading.Event()
    lock = threading.Lock()
    deadline = time.monotonic() + 180

    def client(index: int) -> None:
        session = requests.Session()
        for n in range(BATCHES):
            records = [{"account_id": funded_account_id if i % 2 else other, "value": -1,
                        "idempotency_key": f"{run}-{index}-{n}-{i}"} for i in range(BATCH_SIZE)]
            records[3]["value"] = -10**9  # 402
            records[5]["value"] = 0       # 422: stores nothing, writes nothing
            response = post_until_answered(session, url, {"records": records},
                                           {**headers, "Idempotency-Key": f"{run}-{index}-{n}"}, deadline)
            with lock:
                answers[response.status_code] += 1
                if response.status_code == 200:
                    for record, result in zip(records, response.json()["data"], strict=True):
                        results[result["status"]] += 1
                        if result["status"] == 200:
                            acknowledged[record["idempotency_key"]] += 1
                if sum(answers.values()) >= BATCH_CLIENTS * BATCHES // 3:
                    halfway.set()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(BATCH_CLIENTS)]
    for thread in threads:
        thread.start()
    assert halfway.wait(timeout=120), "load never reached a third"
    server.kill()
    killed_at = sum(answers.values())
    server.start()
    for thread in threads:
        thread.join()

    keyed = storage.LedgerEntry.select().where(storage.LedgerEntry.idempotency_key.startswith(f"{run}-"))
    written = Counter(entry.idempotency_key for entry in keyed)
    total = BATCH_CLIENTS * BATCHES
    print(f"\n  sent {total} batches of {BATCH_SIZE}; server killed after {killed_at} answers; "
          f"answers {dict(answers)}; records {dict(results)}; entries written {sum(written.values())}")
    assert answers == Counter({200: total})
    assert results == Counter({200: total * (BATCH_SIZE - 2), 402: total, 422: total})
    assert set(acknowledged) == set(written) and set(written.values()) == {1}
    assert not any(key.endswith(("-3", "-5")) for key in written)
    # Odd records go to the hot account (1, 7, 9: 3 and 5 are refused), even ones to ann's (5).
    for account_id, start, count in ((funded_account_id, 1000, total * 3), (other, 10_000, total * 5)):
        assert ledger.balance(account_id) == start - count == ledger_sum(account_id)
        assert sequences(account_id) == list(range(1, count + 2))
