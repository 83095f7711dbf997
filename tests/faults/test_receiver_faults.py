"""Fault suite, the merchant's receiver: down (connection refused), then
answering 503, then answering slower than the read timeout, then back.

Usage through the real HTTP server makes the events; one ``flask addons
worker`` process delivers them on a short retry schedule. Each phase lasts until
every delivery has met it (observed, not timed). After: everything arrived,
signed, under its own ``webhook-id``; every attempt is logged with the outcome
the receiver gave it; each retry came no earlier than its delay allows (less
10% jitter) and no later than it allows (plus 10% jitter and a tolerance)
unless the worker was busy with another attempt; and no delivery was marked
failed while it had attempts left.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from datetime import timedelta
from itertools import pairwise

import pytest
import requests

from storage import WebhookAttempt, WebhookDelivery
from webhooks.schedule import JITTER

from .harness import Worker, environ, poll
from .receiver import Receiver, register

pytestmark = [pytest.mark.faults, pytest.mark.slow]

DEADLINE = 60
SCHEDULE = [0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8]
CONNECT_TIMEOUT, READ_TIMEOUT = 1, 1
EVENTS = 3
#: How late past its due time (jitter included) an attempt may start when the
#: worker was idle: its poll interval (0.05 s), a claim, and a busy machine.
TOLERANCE = 0.5


@pytest.fixture
def env(env) -> dict[str, str]:
    """A short retry schedule, and a read timeout a slow receiver can exceed."""
    return {**env, **environ(ADDONS_WEBHOOK_RETRY_SCHEDULE=SCHEDULE,
                             ADDONS_WEBHOOK_TIMEOUT=[CONNECT_TIMEOUT, READ_TIMEOUT])}


def _outcome(attempt: WebhookAttempt) -> str:
    """What the worker logged for an attempt, as the receiver's phase names it."""
    if attempt.status_code is not None:
        return str(attempt.status_code)
    return attempt.error.split(":", 1)[0]  # "connection error" or "timeout"


def _deliveries() -> list[WebhookDelivery]:
    return list(WebhookDelivery.select())


def test_a_receiver_down_then_failing_then_slow_gets_everything_on_schedule(env, server, api_key, product,
                                                                           funded_account_id, tmp_path):
    auth = {"Authorization": f"Bearer {api_key}"}
    phase = ["down"]
    too_late = threading.Event()

    def answer(record: dict) -> int:
        record["phase"] = mode = phase[0]
        if mode == "503":
            return 503
        if mode == "slow":  # answers only after the worker has given up waiting
            too_late.wait(READ_TIMEOUT + 2)
        return 200 if record["verified"] else 400

    def seen_in(mode: str) -> bool:
        return {r["id"] for r in receiver.requests if r.get("phase") == mode} == events

    receiver = Receiver(answer=answer)  # not listening yet: the merchant's server is down
    worker = Worker(env, "--poll-interval", "0.05", log=tmp_path / "worker.log")
    try:
        register(server.url, auth, receiver)
        worker.start()
        for n in range(EVENTS):
            used = requests.post(f"{server.url}/api/buyer-addon/usage/add", headers=auth, timeout=10, json={
                "product_id": product.id, "buyer_email": "bob@example.com", "value": -1, "description": f"render {n}"})
            assert used.status_code == 200, used.text
        events = {d.event_id for d in _deliveries()}
        assert len(events) == EVENTS

        # Down: every delivery is refused twice, and stays pending.
        assert poll(lambda: all(d.attempt_count >= 2 for d in _deliveries()), DEADLINE), worker.output()
        assert {d.status for d in _deliveries()} == {"pending"}
        phase[0] = "503"
        receiver.start()
        assert receiver.wait_until(lambda: seen_in("503")), worker.output()
        assert {d.status for d in _deliveries()} == {"pending"}
        phase[0] = "slow"
        assert receiver.wait_until(lambda: seen_in("slow")), worker.output()
        assert {d.status for d in _deliveries()} != {"failed"}
        phase[0] = "up"
        assert poll(lambda: {d.status for d in _deliveries()} == {"succeeded"}, DEADLINE), worker.output()
    finally:
        too_late.set()
        if worker.process:
            worker.kill()
        receiver.stop()

    attempts = list(WebhookAttempt.select().order_by(WebhookAttempt.created_at))
    by_delivery: dict[str, list[WebhookAttempt]] = defaultdict(list)
    for attempt in attempts:
        by_delivery[attempt.delivery_id].append(attempt)
    deliveries = {d.id: d for d in _deliveries()}
    outcomes = Counter(_outcome(a) for a in attempts)
    print(f"\n  {EVENTS} events, {len(attempts)} attempts: {dict(outcomes)}; receiver saw "
          f"{dict(Counter(r['phase'] for r in receiver.requests))}; attempts per delivery "
          f"{sorted(len(a) for a in by_delivery.values())} of {len(SCHEDULE)} allowed")

    # Everything arrived, signed, once it was back.
    assert all(r["verified"] for r in receiver.requests)
    assert {r["id"] for r in receiver.requests if r["phase"] == "up"} == events
    # Every attempt is logged with the outcome the receiver gave it, phase after phase.
    order = ["connection error", "503", "timeout", "200"]
    for delivery_id, made in by_delivery.items():
        delivery = deliveries[delivery_id]
        assert [a.number for a in sorted(made, key=lambda a: a.number)] == list(range(1, len(made) + 1))
        assert delivery.status == "succeeded" and delivery.attempt_count == len(made) <= len(SCHEDULE)
        logged = [_outcome(a) for a in sorted(made, key=lambda a: a.number)]
        assert sorted(set(logged), key=order.index) == order, logged
        assert logged == sorted(logged, key=order.index) and logged.count("200") == 1, logged
        seen = Counter(r["phase"] for r in receiver.requests if r["id"] == delivery.event_id)
        assert (seen["503"], seen["slow"], seen["up"]) == (logged.count("503"), logged.count("timeout"), 1)
        assert all(a.duration_ms >= READ_TIMEOUT * 1000 * 0.9 for a in made if _outcome(a) == "timeout")
    # The schedule: attempt n + 1 starts SCHEDULE[n] (± jitter) after attempt n was recorded;
    # later only while the one worker was busy with another attempt.
    starts = {a.id: a.created_at - timedelta(milliseconds=a.duration_ms) for a in attempts}
    waits = []
    for made in by_delivery.values():
        made.sort(key=lambda a: a.number)
        for previous, attempt in pairwise(made):
            delay = SCHEDULE[previous.number]
            waited = (starts[attempt.id] - previous.created_at).total_seconds()
            assert waited >= delay * (1 - JITTER) - 0.005, (attempt.number, delay, waited)
            busy_until = max(a.created_at for a in attempts if a.created_at < attempt.created_at)
            due_by = previous.created_at + timedelta(seconds=delay * (1 + JITTER))
            late = (starts[attempt.id] - max(due_by, busy_until)).total_seconds()
            assert late <= TOLERANCE, (attempt.number, delay, waited, late)
            waits.append((delay, round(waited, 2)))
    print(f"  retry waits (scheduled delay, waited): {sorted(waits)}")
