"""Fault suite, the database going away (PostgreSQL) or being busy (SQLite)."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections import Counter

import pytest
import requests

import storage
from addon_plugin import ledger
from tests.helpers import POSTGRES_ADMIN_URL, ledger_sum, sequences

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def _terminate_backends(database: str) -> int:
    import psycopg2

    admin = psycopg2.connect(POSTGRES_ADMIN_URL, connect_timeout=3)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                       "WHERE datname = %s AND pid <> pg_backend_pid()", (database,))
        (count,) = cursor.fetchone()
    admin.close()
    return count


def test_connections_terminated_under_load_give_clean_503s_and_recover(server, database_url, api_key,
                                                                      product, funded_account_id):
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL outage: SQLite is embedded and has no server to lose")
    database = database_url.rsplit("/", 1)[1]
    run = uuid.uuid4().hex[:6]
    headers = {"Authorization": f"Bearer {api_key}"}
    statuses: Counter[int] = Counter()
    slowest = [0.0]
    lock = threading.Lock()
    stop = threading.Event()
    acknowledged: set[str] = set()

    def client(index: int) -> None:
        session = requests.Session()
        n = 0
        while not stop.is_set():
            key = f"{run}-{index}-{n}"
            n += 1
            body = {"product_id": product.id, "buyer_email": "bob@example.com", "value": -1,
                    "idempotency_key": key}
            while True:  # retry the same key until it is answered with something other than 503
                started = time.monotonic()
                response = session.post(f"{server.url}/api/buyer-addon/usage/add", json=body,
                                        headers=headers, timeout=15)
                with lock:
                    slowest[0] = max(slowest[0], time.monotonic() - started)
                    statuses[response.status_code] += 1
                if response.status_code == 503:
                    assert response.json()["error"]["code"] == "database_unavailable"
                    continue
                assert response.status_code == 200, response.text
                with lock:
                    acknowledged.add(key)
                break

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    terminated = 0
    for _ in range(5):  # five outages, each once some traffic has flowed since the last
        target = sum(statuses.values()) + 40
        deadline = time.monotonic() + 30
        while sum(statuses.values()) < target and time.monotonic() < deadline:
            time.sleep(0.01)
        terminated += _terminate_backends(database)
    target = sum(statuses.values()) + 40
    deadline = time.monotonic() + 30
    while sum(statuses.values()) < target and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    for thread in threads:
        thread.join()

    storage.db.close()
    written = Counter(e.idempotency_key for e in storage.LedgerEntry.select().where(
        storage.LedgerEntry.idempotency_key.startswith(f"{run}-")))
    print(f"\n  {terminated} backends terminated over 5 outages; answers {dict(statuses)}; "
          f"slowest answer {slowest[0]:.2f}s; {len(acknowledged)} acknowledged, {sum(written.values())} written")
    assert statuses[503] > 0, "the outages never reached a request"
    assert set(written) == acknowledged and set(written.values()) == {1}
    assert slowest[0] < 15
    assert ledger.balance(funded_account_id) == 1000 - len(acknowledged) == ledger_sum(funded_account_id)
    assert sequences(funded_account_id) == list(range(1, len(acknowledged) + 2))


def test_a_held_sqlite_write_lock_makes_requests_wait_not_fail(server, database_url, api_key, product,
                                                               funded_account_id):
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite write-lock contention")
    path = database_url[len("sqlite:///"):]
    holder = sqlite3.connect(path, isolation_level=None, timeout=30)
    holder.execute("BEGIN IMMEDIATE")  # another process's long write transaction
    answers: list[requests.Response] = []

    def client(n: int) -> None:
        answers.append(requests.post(f"{server.url}/api/buyer-addon/usage/add", timeout=30, json={
            "product_id": product.id, "buyer_email": "bob@example.com", "value": -1,
            "idempotency_key": f"wait-{n}"}, headers={"Authorization": f"Bearer {api_key}"}))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    threads[0].join(timeout=1.0)  # the requests are now queued on the lock
    still_waiting = sum(thread.is_alive() for thread in threads)
    holder.execute("COMMIT")
    holder.close()
    for thread in threads:
        thread.join()
    print(f"\n  {still_waiting} of 4 requests waited on the held write lock; statuses "
          f"{Counter(r.status_code for r in answers)}")
    assert still_waiting == 4
    assert [r.status_code for r in answers] == [200] * 4
    storage.db.close()
    assert ledger.balance(funded_account_id) == 996 == ledger_sum(funded_account_id)
