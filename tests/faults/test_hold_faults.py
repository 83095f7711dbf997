"""Fault suite, spend holds: a real gunicorn server over loopback, SIGKILLed
between the holds and their captures (and during each), on SQLite and
PostgreSQL. Clients retry unanswered requests with the same idempotency key.
Nothing held is lost, and nothing is spent twice."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

import pytest
import requests

import storage
from addon_plugin import ledger
from tests.helpers import ledger_sum

from .harness import Server, post_until_answered

pytestmark = [pytest.mark.faults, pytest.mark.slow]

CLIENTS, PER_CLIENT, HOLD, COST = 6, 15, 10, 7


def _load_with_a_kill(server: Server, send: Callable[[requests.Session, int, int], requests.Response]
                      ) -> Counter[int]:
    """Every client sends its PER_CLIENT requests; the server is SIGKILLed once a
    third have been answered and started again; returns the statuses."""
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    third = threading.Event()

    def client(index: int) -> None:
        session = requests.Session()
        for n in range(PER_CLIENT):
            response = send(session, index, n)
            with lock:
                statuses[response.status_code] += 1
                if sum(statuses.values()) >= CLIENTS * PER_CLIENT // 3:
                    third.set()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    assert third.wait(timeout=60), "load never reached a third"
    server.kill()
    server.start()
    for thread in threads:
        thread.join()
    return statuses


def test_server_killed_between_holds_and_captures_loses_nothing_and_spends_nothing_twice(
        server, api_key, product, funded_account_id):
    run = uuid.uuid4().hex[:6]
    auth = {"Authorization": f"Bearer {api_key}"}
    deadline = time.monotonic() + 120
    hold_ids: dict[tuple[int, int], str] = {}

    def place(session: requests.Session, index: int, n: int) -> requests.Response:
        body = {"product_id": product.id, "buyer_email": "bob@example.com", "value": HOLD,
                "expires_in": 3600, "idempotency_key": f"{run}-hold-{index}-{n}"}
        response = post_until_answered(session, f"{server.url}/api/buyer-addon/usage/hold", body, auth, deadline)
        if response.status_code == 201:
            hold_ids[index, n] = response.json()["data"]["id"]
        return response

    placed = _load_with_a_kill(server, place)
    jobs = CLIENTS * PER_CLIENT
    rows = list(storage.CreditHold.select().where(storage.CreditHold.account == funded_account_id))
    account = ledger.get_account(funded_account_id)
    print(f"\n  {jobs} holds sent, server killed once: statuses {dict(placed)}; {len(rows)} holds written")
    assert placed == Counter({201: jobs})
    assert sorted(hold_ids.values()) == sorted(row.id for row in rows)  # each acknowledged, none twice
    assert {row.status for row in rows} == {"held"}
    assert (account.balance, account.held, account.available) == (1000, HOLD * jobs, 1000 - HOLD * jobs)

    server.kill()  # between the holds and their captures
    server.start()
    assert ledger.get_account(funded_account_id).held == HOLD * jobs

    def capture(session: requests.Session, index: int, n: int) -> requests.Response:
        headers = {**auth, "Idempotency-Key": f"{run}-capture-{index}-{n}"}
        return post_until_answered(session, f"{server.url}/api/addons/holds/{hold_ids[index, n]}/capture",
                                   {"value": COST}, headers, deadline)

    captured = _load_with_a_kill(server, capture)
    rows = list(storage.CreditHold.select().where(storage.CreditHold.account == funded_account_id))
    usage = list(storage.LedgerEntry.select().where((storage.LedgerEntry.account == funded_account_id)
                                                    & (storage.LedgerEntry.kind == "usage")))
    print(f"  {jobs} captures sent, server killed once: statuses {dict(captured)}; {len(usage)} usage entries")
    assert captured == Counter({200: jobs})
    assert {(row.status, row.captured_amount) for row in rows} == {("captured", COST)}
    assert sorted(row.entry_id for row in rows) == sorted(entry.id for entry in usage)  # one entry per hold
    assert {entry.delta for entry in usage} == {-COST}
    account = ledger.get_account(funded_account_id)
    assert (account.balance, account.held) == (1000 - COST * jobs, 0)
    assert account.balance == ledger_sum(funded_account_id)
