"""Fault suite, the worker: ``flask addons worker`` SIGKILLed again and again
mid-delivery and mid-top-up while usage flows through the real HTTP server.

Usage on accounts with auto top-up keeps crossing their thresholds, so the one
worker process both delivers webhooks (to a receiver thread that verifies every
signature) and charges top-ups (at a gateway that keeps its charges on file,
across processes). The test kills the worker at moments it observes: a delivery
held open by the receiver, a charge paused before it is on file, a charge
paused right after it (the money taken, the credit not yet written), and once
more wherever it happens to be. After a final clean drain: every event arrived
at least once under its ``webhook-id``, every top-up was charged once and
credited once, and every balance is its ledger's sum.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import pytest
import requests

import storage
from addon_plugin import ledger
from addon_plugin.topup import execute
from storage import utcnow
from tests.helpers import create_product, ledger_sum, sequences

from .gateway import FileGateway
from .harness import Worker, environ, poll, post_until_answered
from .receiver import Receiver, register

pytestmark = [pytest.mark.faults, pytest.mark.slow]

DEADLINE = 60  # seconds any wait may take before the test fails
ACCOUNTS, MIN_PER_CLIENT, USE = 4, 40, 25
BACKLOG = 40  # clients wait while more usage than this is not yet delivered
START, THRESHOLD = 400, 200


@pytest.fixture
def env(env) -> dict[str, str]:
    """Loopback webhooks with short timeouts and a short lease; no daily top-up limit."""
    return {**env, **environ(
        ADDONS_TOP_UP_DAILY_LIMIT=10_000,
        ADDONS_WEBHOOK_TIMEOUT=[0.5, 1],
        ADDONS_WEBHOOK_LEASE=2,
        ADDONS_WEBHOOK_RETRY_SCHEDULE=[0, 0.2, 0.5, 1, 1, 1, 1, 1],
    )}


def _expire_dead_top_up_leases() -> int:
    """A killed worker's top-up stays ``charging`` until its lease (ADDONS_TOP_UP_LEASE,
    minutes) runs out; move that moment to now rather than wait. Only called
    while no worker is alive, so every lease is a dead worker's."""
    return storage.TopUp.update(next_attempt_at=utcnow()).where(storage.TopUp.status == "charging").execute()


def test_workers_killed_mid_delivery_and_mid_top_up_lose_nothing_and_charge_once(
        env, server, merchant_id, api_key, tmp_path):
    run = uuid.uuid4().hex[:6]
    auth = {"Authorization": f"Bearer {api_key}"}
    gateway = FileGateway(env["FAULTS_GATEWAY_DIR"])
    product = create_product(merchant_id, credit_amount=100, price_minor=1900, overdraft_limit=1_000_000)

    hold_lock = threading.Lock()
    hold_armed, held, release = threading.Event(), threading.Event(), threading.Event()

    def hold(number: int) -> None:
        with hold_lock:
            if not hold_armed.is_set():
                return
            hold_armed.clear()
        held.set()  # a delivery is in flight, and stays so until the worker is killed
        release.wait(DEADLINE)

    with Receiver(hold) as receiver:
        register(server.url, auth, receiver)

        accounts = []
        for n in range(ACCOUNTS):
            opened = requests.post(f"{server.url}/api/buyer-addon/usage/add", headers=auth, timeout=10, json={
                "product_id": product.id, "buyer_email": f"buyer{n}@example.com", "value": START})
            assert opened.status_code == 200, opened.text
            account_id = opened.json()["data"]["account_id"]
            switched = requests.put(f"{server.url}/api/addons/accounts/{account_id}/auto-top-up", headers=auth,
                                    timeout=10, json={"enabled": True, "threshold": THRESHOLD,
                                                      "payment_method": "pm_card_visa"})
            assert switched.status_code == 200, switched.text
            accounts.append(account_id)

        statuses: Counter[int] = Counter()
        acknowledged: set[str] = set()
        lock = threading.Lock()
        stop = threading.Event()

        def client(index: int) -> None:
            session = requests.Session()
            deadline = time.monotonic() + DEADLINE * 2
            n = 0
            while n < MIN_PER_CLIENT or not stop.is_set():
                # Flow control: usage outruns one worker; keep the backlog short so
                # balances hover about the thresholds and top-ups keep coming.
                receiver.wait_until(lambda: len(receiver.requests) >= len(acknowledged) - BACKLOG or stop.is_set())
                key = f"{run}-{index}-{n}"
                body = {"product_id": product.id, "buyer_email": f"buyer{index}@example.com", "value": -USE,
                        "idempotency_key": key}
                response = post_until_answered(session, f"{server.url}/api/buyer-addon/usage/add", body, auth,
                                               deadline)
                with lock:
                    statuses[response.status_code] += 1
                    if response.status_code == 200:
                        acknowledged.add(key)
                n += 1

        log = tmp_path / "worker.log"
        worker = Worker(env, "--poll-interval", "0.05", log=log).start()
        clients = [threading.Thread(target=client, args=(i,)) for i in range(ACCOUNTS)]
        for thread in clients:
            thread.start()

        kills: list[str] = []
        try:
            for moment in ("mid-delivery", "after the charge", "mid-delivery", "before the charge"):
                # Let the worker (fresh, or the first) show progress first.
                target = len(receiver.requests) + 15
                assert receiver.wait_until(lambda target=target: len(receiver.requests) >= target), worker.output()
                if moment == "mid-delivery":
                    held.clear()
                    release.clear()
                    hold_armed.set()
                    assert held.wait(DEADLINE), f"no delivery was held\n{worker.output()}"
                else:
                    gateway.pause_next(moment.split()[0])
                    paused = gateway.wait_paused(DEADLINE)
                    assert paused == worker.process.pid, f"no charge paused {moment}\n{worker.output()}"
                assert worker.kill() == -9
                release.set()
                kills.append(moment)
                _expire_dead_top_up_leases()
                worker = Worker(env, "--poll-interval", "0.05", log=log).start()
            target = len(receiver.requests) + 15
            assert receiver.wait_until(lambda: len(receiver.requests) >= target), worker.output()
            stop.set()
            assert worker.kill() == -9  # and once more, wherever it is
            kills.append("anywhere")
        finally:
            stop.set()
            release.set()
            with receiver.changed:
                receiver.changed.notify_all()  # wake clients waiting on the backlog
            for thread in clients:
                thread.join()
            if worker.alive:  # the test failed: leave no worker behind
                worker.kill()

        # A clean drain, once the dead workers' leases have run out.
        _expire_dead_top_up_leases()
        assert poll(lambda: not storage.WebhookDelivery.select().where(
            storage.WebhookDelivery.lease_expires_at > utcnow()).exists(), timeout=DEADLINE)
        drain = Worker(env, "--once", log=log)
        assert drain.run(timeout=DEADLINE * 2) == 0, drain.output()
        storage.db.close()

        events = {event.id for event in storage.WebhookEvent.select()}
        received = receiver.ids()
        assert all(request["verified"] for request in receiver.requests)

    deliveries = Counter(d.status for d in storage.WebhookDelivery.select())
    top_ups = list(storage.TopUp.select())
    charges = Counter(charge["idempotency_key"] for charge in gateway.charges())
    calls = Counter(call["idempotency_key"] for call in gateway.calls())
    credits = Counter(entry.reference for entry in storage.LedgerEntry.select().where(
        storage.LedgerEntry.kind == "top_up"))
    usage = Counter(entry.idempotency_key for entry in storage.LedgerEntry.select().where(
        storage.LedgerEntry.idempotency_key.startswith(f"{run}-")))
    top_up_events = storage.WebhookEvent.select().where(storage.WebhookEvent.type == "top_up.succeeded").count()
    print(f"\n  kills: {', '.join(kills)}; usage requests {sum(statuses.values())} "
          f"(statuses {dict(statuses)}), {len(acknowledged)} acknowledged, {sum(usage.values())} entries")
    print(f"  events {len(events)}, deliveries {dict(deliveries)}, requests received {len(receiver.requests)} "
          f"({sum(1 for n in received.values() if n > 1)} events delivered more than once)")
    print(f"  top-ups {Counter(t.status for t in top_ups)}; gateway calls {sum(calls.values())}, "
          f"charges {sum(charges.values())}; top_up entries {sum(credits.values())}; "
          f"top_up.succeeded events {top_up_events}")

    # Usage: every acknowledged request exactly once.
    assert statuses == Counter({200: sum(statuses.values())})
    assert set(usage) == acknowledged and set(usage.values()) == {1}
    # Webhooks: every event arrived, under its own webhook-id, signed.
    assert set(received) == events
    assert deliveries == Counter({"succeeded": len(events)})
    # Top-ups: each charged once at the gateway and credited once in the ledger.
    assert top_ups and {t.status for t in top_ups} == {"succeeded"}
    assert charges == Counter({execute.charge_key(t.id): 1 for t in top_ups})
    assert {t.charge_id for t in top_ups} == {c["id"] for c in gateway.charges()}
    assert credits == Counter({t.id: 1 for t in top_ups})
    assert top_up_events == len(top_ups)
    assert max(calls.values()) >= 2  # a charge was made again after a kill, and the gateway returned the first
    # Balances: the ledger's sum, with gap-free sequences.
    for account_id in accounts:
        account_top_ups = [t for t in top_ups if t.account_id == account_id]
        entries = storage.LedgerEntry.select().where(storage.LedgerEntry.account == account_id).count()
        assert ledger.balance(account_id) == ledger_sum(account_id) == (
            START - USE * (entries - 1 - len(account_top_ups)) + sum(t.credits for t in account_top_ups))
        assert sequences(account_id) == list(range(1, entries + 1))
