"""Fault suite, races: requests that collide through real servers.

- one hot account drained at once through two gunicorn servers (four
  processes) on one database: never oversold, every entry once, no gap;
- many clients crossing an auto top-up threshold at the same moment, on two
  servers, while the settings are saved again: one top-up, one charge, one credit;
- webhook endpoints deleted while deliveries to them are in flight and usage
  keeps writing new ones: no 500 anywhere, the worker carries on, nothing more
  goes to a deleted endpoint, the others get everything.

(The same idempotency key from many clients is in ``test_usage_faults``; several
workers on PostgreSQL without a repeated attempt in ``tests/webhooks/test_webhook_e2e.py``.)
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import requests

import storage
from addon_plugin import ledger
from addon_plugin.topup import execute
from tests.helpers import create_product, ledger_sum, run_concurrently, sequences

from .gateway import FileGateway
from .harness import Server, Worker, environ, poll, post_until_answered
from .receiver import Receiver, register

pytestmark = [pytest.mark.faults, pytest.mark.slow]

DEADLINE = 60


@pytest.fixture
def mode() -> str:
    """``ADDONS_TOP_UP_MODE`` of the servers (a test parametrizes it to change it)."""
    return "worker"


@pytest.fixture
def servers(env, mode) -> Iterator[list[Server]]:
    """Two gunicorn servers (two workers each) on the test's database."""
    servers = [Server({**env, **environ(ADDONS_TOP_UP_MODE=mode)}) for _ in range(2)]
    try:
        yield [server.start() for server in servers]
    finally:
        for server in servers:
            server.stop()


def test_one_hot_account_drained_through_two_servers_is_never_oversold(servers, api_key, product,
                                                                       funded_account_id):
    """Eight clients, split over two servers, ask for 1200 credits of bob's 1000 at once."""
    clients, per_client, value = 8, 75, -2
    run = uuid.uuid4().hex[:6]
    auth = {"Authorization": f"Bearer {api_key}"}
    answers: dict[str, requests.Response] = {}
    deadline = time.monotonic() + DEADLINE

    def client(index: int) -> None:
        session = requests.Session()
        url = f"{servers[index % 2].url}/api/buyer-addon/usage/add"
        for n in range(per_client):
            key = f"{run}-{index}-{n}"
            answers[key] = post_until_answered(session, url, {
                "product_id": product.id, "buyer_email": "bob@example.com", "value": value,
                "idempotency_key": key}, auth, deadline)

    assert run_concurrently(client, clients, timeout=2 * DEADLINE) == []
    statuses = Counter(r.status_code for r in answers.values())
    acknowledged = {key for key, r in answers.items() if r.status_code == 200}
    written = Counter(e.idempotency_key for e in storage.LedgerEntry.select().where(
        storage.LedgerEntry.idempotency_key.startswith(f"{run}-")))
    balances_after = sorted(r.json()["data"]["balance"] for r in answers.values() if r.status_code == 200)
    print(f"\n  {len(answers)} requests for {-value} credits each on one account of 1000, through 2 servers: "
          f"statuses {dict(statuses)}; entries written {sum(written.values())}; final balance "
          f"{ledger.balance(funded_account_id)}")

    assert statuses == Counter({200: 500, 402: 100})
    assert {r.json()["error"]["code"] for r in answers.values() if r.status_code == 402} == {"insufficient_credits"}
    assert set(written) == acknowledged and set(written.values()) == {1}
    assert balances_after == list(range(0, 1000, 2))  # each acknowledged answer saw its own balance
    assert ledger.balance(funded_account_id) == 0 == ledger_sum(funded_account_id)
    assert sequences(funded_account_id) == list(range(1, 502))


@pytest.mark.parametrize("mode", ["worker", "inline"])
def test_many_clients_crossing_the_threshold_at_once_make_one_top_up(servers, env, merchant_id, api_key, mode):
    """24 deductions and 2 saves of the same settings, at once, on an account 10
    credits above its threshold: every one of them may decide a top-up. In
    ``worker`` mode two workers then race to charge it; in ``inline`` mode the
    request that decided it charges it while the others are still running."""
    auth = {"Authorization": f"Bearer {api_key}"}
    gateway = FileGateway(env["FAULTS_GATEWAY_DIR"])
    product = create_product(merchant_id, credit_amount=1000, price_minor=1900)
    body = {"product_id": product.id, "buyer_email": "hot@example.com"}
    opened = requests.post(f"{servers[0].url}/api/buyer-addon/usage/add", json={**body, "value": 510},
                           headers=auth, timeout=10)
    assert opened.status_code == 200, opened.text
    account_id = opened.json()["data"]["account_id"]
    settings = {"enabled": True, "threshold": 500, "payment_method": "pm_card_visa"}
    saved = requests.put(f"{servers[1].url}/api/addons/accounts/{account_id}/auto-top-up", json=settings,
                         headers=auth, timeout=10)
    assert saved.status_code == 200, saved.text
    deductions, saves = 24, 2
    used: list[requests.Response] = []
    resaved: list[requests.Response] = []

    def client(index: int) -> None:
        server = servers[index % 2]
        if index < saves:
            resaved.append(requests.put(f"{server.url}/api/addons/accounts/{account_id}/auto-top-up",
                                        json=settings, headers=auth, timeout=30))
        else:
            used.append(requests.post(f"{server.url}/api/buyer-addon/usage/add",
                                      json={**body, "value": -10}, headers=auth, timeout=30))

    assert run_concurrently(client, deductions + saves, timeout=2 * DEADLINE) == []
    answers = used + resaved
    decided = storage.TopUp.select().count()
    if mode == "worker":
        workers = [Worker(env, "--once") for _ in range(2)]
        for worker in workers:
            worker.start()
        assert [worker.process.wait(DEADLINE) for worker in workers] == [0, 0]
    assert poll(lambda: not storage.TopUp.select().where(storage.TopUp.status.in_(storage.TOP_UP_IN_FLIGHT)).exists())
    crossed = sum(1 for r in used if r.status_code == 200 and r.json()["data"]["balance"] <= 500)
    top_ups = list(storage.TopUp.select())
    charges = Counter(c["idempotency_key"] for c in gateway.charges())
    credits = list(storage.LedgerEntry.select().where(storage.LedgerEntry.kind == "top_up"))
    print(f"\n  {mode} mode, {deductions} deductions + {saves} saves at once: statuses "
          f"{dict(Counter(r.status_code for r in answers))}; {crossed} answers at or below the threshold; "
          f"top-ups decided {decided}, made {len(top_ups)}; gateway calls "
          f"{len(gateway.calls())}, charges {sum(charges.values())}, top_up entries {len(credits)}")

    assert [r.status_code for r in answers] == [200] * (deductions + saves)
    if mode == "worker":  # every deduction left the balance at or below the threshold, and tried to decide
        assert crossed == deductions
    else:  # the credit lands as soon as the deciding request has charged
        assert crossed >= 1
    assert decided == 1
    [top_up] = top_ups
    assert (top_up.status, top_up.banks, top_up.credits) == ("succeeded", 1, 1000)
    assert charges == Counter({execute.charge_key(top_up.id): 1}) and len(gateway.calls()) == 1
    assert [(e.reference, e.delta) for e in credits] == [(top_up.id, 1000)]
    assert ledger.balance(account_id) == 510 - 10 * deductions + 1000 == ledger_sum(account_id)
    assert sequences(account_id) == list(range(1, deductions + 3))


def test_endpoints_deleted_while_delivering_stop_cleanly_and_others_get_everything(env, server, api_key, product,
                                                                                   funded_account_id, tmp_path):
    """Usage flows; endpoint A is deleted while an attempt to it is in flight;
    meanwhile other endpoints are created and deleted again and again. B gets
    every event."""
    run = uuid.uuid4().hex[:6]
    auth = {"Authorization": f"Bearer {api_key}"}
    hold_armed, held, release = threading.Event(), threading.Event(), threading.Event()

    def hold(number: int) -> None:
        if hold_armed.is_set():
            hold_armed.clear()
            held.set()  # the attempt to A is in flight until A is deleted
            release.wait(DEADLINE)

    usage: Counter[int] = Counter()
    churn: Counter[int] = Counter()
    stop = threading.Event()
    lock = threading.Lock()

    worker = Worker(env, "--poll-interval", "0.05", log=tmp_path / "worker.log")
    try:
        with Receiver(hold) as a, Receiver() as b, Receiver() as c:
            endpoint_a = register(server.url, auth, a)
            register(server.url, auth, b)
            worker.start()

            def client(index: int) -> None:
                session = requests.Session()
                for n in range(100):
                    response = post_until_answered(session, f"{server.url}/api/buyer-addon/usage/add", {
                        "product_id": product.id, "buyer_email": "bob@example.com", "value": -1,
                        "idempotency_key": f"{run}-{index}-{n}"}, auth, time.monotonic() + DEADLINE)
                    with lock:
                        usage[response.status_code] += 1

            def churner() -> None:  # endpoints come and go while events are written for them
                session = requests.Session()
                while not stop.is_set():
                    created = session.post(f"{server.url}/api/addons/webhook-endpoints", json={"url": c.url},
                                           headers=auth, timeout=30)
                    with lock:
                        churn[created.status_code] += 1
                    if created.status_code == 201:
                        c.secret = created.json()["secret"]
                        gone = session.delete(f"{server.url}/api/addons/webhook-endpoints/{created.json()['id']}",
                                              headers=auth, timeout=30)
                        with lock:
                            churn[gone.status_code] += 1

            clients = [threading.Thread(target=client, args=(i,)) for i in range(3)]
            churning = threading.Thread(target=churner)
            for thread in [*clients, churning]:
                thread.start()
            try:
                assert b.wait_until(lambda: len(b.requests) >= 10), worker.output()
                hold_armed.set()
                assert held.wait(DEADLINE), worker.output()
                deleted = requests.delete(f"{server.url}/api/addons/webhook-endpoints/{endpoint_a}",
                                          headers=auth, timeout=30)
                sent_to_a = len(a.requests)
            finally:
                release.set()
                for thread in clients:
                    thread.join()
                stop.set()
                churning.join()
            # The same worker delivers everything left (long enough for a stray delivery to A to show).
            drained = poll(lambda: not storage.WebhookDelivery.select().where(
                storage.WebhookDelivery.status == "pending").exists(), DEADLINE)
            worker_survived = worker.alive
            # Events the worker writes itself (a forecast warning) may come after the drain:
            # one more pass delivers them while the receivers still listen.
            worker.kill()
            assert Worker(env, "--once", log=tmp_path / "worker.log").run() == 0
    finally:
        if worker.process:
            worker.kill()

    log = worker.output()
    events = {e.id for e in storage.WebhookEvent.select()}
    deliveries = Counter((d.endpoint_id, d.status) for d in storage.WebhookDelivery.select())
    print(f"\n  usage {dict(usage)}; endpoint churn {dict(churn)}; deleting A (attempt in flight): "
          f"{deleted.status_code}; A got {len(a.requests)} requests ({sent_to_a} before the delete), "
          f"B {len(b.requests)} for {len(events)} events, churned endpoints {len(c.requests)}; "
          f"worker alive until stopped: {worker_survived}")

    assert deleted.status_code == 200, deleted.text
    assert usage == Counter({200: 300}) and set(churn) <= {200, 201}
    assert drained and worker_survived and "Traceback" not in log, log
    assert len(a.requests) == sent_to_a  # nothing more went to A once it was deleted
    assert not storage.WebhookDelivery.select().where(storage.WebhookDelivery.endpoint == endpoint_a).exists()
    assert set(b.ids()) == events and all(r["verified"] for r in b.requests)
    assert {status for (endpoint, status) in deliveries} == {"succeeded"}
    assert ledger.balance(funded_account_id) == 700 == ledger_sum(funded_account_id)
