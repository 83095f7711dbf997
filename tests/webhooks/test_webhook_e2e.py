"""Webhooks over real HTTP: a merchant's server on 127.0.0.1 (``tests.faults.receiver``,
a thread in the test) verifies every request with the `standardwebhooks` package.

Workers run in this process (``worker.run_once``) or as real ``flask addons
worker`` subprocesses: one killed with SIGKILL mid-delivery, two at once on
PostgreSQL. Nothing sleeps to synchronise: the tests wait on events and on
conditions, each with a deadline.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

import storage
from addon_plugin import worker
from storage import WebhookAttempt, WebhookDelivery, WebhookEvent
from tests.faults.harness import poll
from tests.faults.receiver import Receiver

DEADLINE = 60  # seconds any wait may take before the test fails


@pytest.fixture
def local(app):
    """The app allowed to call 127.0.0.1, with three immediate attempts."""
    app.config.update(ADDONS_WEBHOOK_ALLOW_PRIVATE_URLS=True, ADDONS_WEBHOOK_RETRY_SCHEDULE=[0, 0, 0])
    return app


def _register(client, api_key: str, receiver: Receiver, event_types: list[str] | None = None) -> str:
    response = client.post("/api/addons/webhook-endpoints", json={"url": receiver.url, "event_types": event_types},
                           headers={"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 201, response.get_json()
    receiver.secret = response.get_json()["secret"]
    return response.get_json()["id"]


def test_usage_through_the_api_arrives_signed_and_complete(local, client, api_key, product):
    auth = {"Authorization": f"Bearer {api_key}"}
    with Receiver() as receiver:
        _register(client, api_key, receiver)
        usage = {"product_id": product.id, "buyer_email": "Bob@Example.com"}
        first = client.post("/api/buyer-addon/usage/add", json={**usage, "value": 100}, headers=auth)
        assert first.status_code == 200, first.get_json()
        account_id = first.get_json()["data"]["account_id"]
        storage.CreditAccount.update(threshold=30).where(storage.CreditAccount.id == account_id).execute()
        entries = [first.get_json()["data"]["entry"]["id"]]
        for n in range(10):
            answer = client.post("/api/buyer-addon/usage/add", data={**usage, "value": "-10",
                                                                     "description": f"render {n}"}, headers=auth)
            assert answer.status_code == 200, answer.get_json()
            entries.append(answer.get_json()["data"]["entry"]["id"])
        assert receiver.requests == []  # nothing is sent from a request thread

        worker.run_once()
        assert receiver.wait_until(lambda: len(receiver.requests) >= 13)

    assert all(request["verified"] for request in receiver.requests)
    assert all(count == 1 for count in receiver.ids().values())
    by_type = collections.defaultdict(list)
    for request in receiver.requests:
        by_type[request["body"]["type"]].append(request["body"]["data"])
    updated = sorted(by_type["balance.updated"], key=lambda data: data["entry"]["sequence"])
    assert [data["entry"]["sequence"] for data in updated] == list(range(1, 12))  # complete, no gaps
    assert [data["entry"]["id"] for data in updated] == entries
    assert [data["balance"] for data in updated] == [100, 90, 80, 70, 60, 50, 40, 30, 20, 10, 0]
    assert {data["buyer_email"] for data in updated} == {"bob@example.com"}
    [low] = by_type["balance.low"]
    [depleted] = by_type["balance.depleted"]
    assert (low["balance"], low["entry"]["sequence"]) == (30, 8)
    assert (depleted["balance"], depleted["entry"]["sequence"]) == (0, 11)
    assert {r["headers"]["user-agent"].split("/")[0] for r in receiver.requests} == {"addon-credits-webhooks"}
    assert WebhookDelivery.select().where(WebhookDelivery.status != "succeeded").count() == 0


def test_the_address_is_checked_again_at_delivery_time(local, client, api_key, funded_account_id):
    from addon_plugin import ledger

    with Receiver() as receiver:
        _register(client, api_key, receiver)  # allowed then...
        local.config["ADDONS_WEBHOOK_ALLOW_PRIVATE_URLS"] = False  # ...refused now (as if DNS changed)
        ledger.record(funded_account_id, -1, "usage")
        worker.run_once()
        assert receiver.requests == []
    errors = {attempt.error for attempt in WebhookAttempt.select()}
    assert errors and all("refused by the SSRF guard" in error and "127.0.0.1" in error for error in errors)
    assert WebhookDelivery.select().where(WebhookDelivery.status == "failed").count() == 1


def test_a_real_connection_refused_is_a_failed_attempt(local, merchant_id, funded_account_id):
    from addon_plugin import ledger
    from webhooks import endpoints

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoints.create_endpoint(merchant_id, f"http://127.0.0.1:{port}/hook")
    ledger.record(funded_account_id, -1, "usage")
    worker.run_once()
    attempts = list(WebhookAttempt.select())
    assert len(attempts) == 3
    assert all(a.status_code is None and a.error.startswith("connection error") for a in attempts)


# -- real worker processes -------------------------------------------------------

_WORKER_APP = textwrap.dedent("""
    import json, os
    from flask import Flask
    from addon_plugin import AddonPlugin

    app = Flask("worker", instance_path=os.environ["WORKER_INSTANCE"])
    app.config.update(json.loads(os.environ["WORKER_CONFIG"]))
    AddonPlugin(app)
""")


def spawn_worker(app, tmp_path, *args: str, **config) -> subprocess.Popen:
    """``flask addons worker ARGS`` in a new process, on the test's database."""
    app_file = tmp_path / "worker_app.py"
    app_file.write_text(_WORKER_APP)
    settings = {"ADDONS_DATABASE_URL": app.config["ADDONS_DATABASE_URL"], "ADDONS_WEBHOOK_ALLOW_PRIVATE_URLS": True,
                "ADDONS_WEBHOOK_RETRY_SCHEDULE": [0, 0, 0], **config}
    env = {**os.environ, "WORKER_CONFIG": json.dumps(settings), "WORKER_INSTANCE": str(tmp_path / "instance")}
    return subprocess.Popen([sys.executable, "-m", "flask", "--app", str(app_file), "addons", "worker", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _usage(account_id: str, count: int) -> None:
    from addon_plugin import ledger

    for _ in range(count):
        ledger.record(account_id, -1, "usage")


@pytest.mark.slow
def test_a_worker_killed_mid_delivery_loses_nothing(local, client, api_key, funded_account_id, tmp_path):
    in_flight, release = threading.Event(), threading.Event()

    def hold(number: int) -> None:
        if number == 5:  # the fifth request stalls until the test has killed its worker
            in_flight.set()
            release.wait(DEADLINE)

    with Receiver(hold) as receiver:
        _register(client, api_key, receiver, ["balance.updated"])
        _usage(funded_account_id, 12)
        events = {event.id for event in WebhookEvent.select()}
        assert len(events) == 12

        config = dict(ADDONS_WEBHOOK_LEASE=3, ADDONS_WEBHOOK_TIMEOUT=[1, 1.5])
        doomed = spawn_worker(local, tmp_path, "--poll-interval", "0.05", **config)
        try:
            assert in_flight.wait(DEADLINE), doomed.stderr.read() if doomed.poll() is not None else "no request"
            doomed.send_signal(signal.SIGKILL)
            assert doomed.wait(DEADLINE) == -signal.SIGKILL
        finally:
            release.set()
        held = receiver.requests[4]["id"]
        assert WebhookDelivery.get(WebhookDelivery.lease_token.is_null(False)).event_id == held

        survivor = spawn_worker(local, tmp_path, "--poll-interval", "0.05", **config)
        try:
            assert receiver.wait_until(lambda: set(receiver.ids()) == events and receiver.ids()[held] >= 2)
            assert poll(lambda: WebhookDelivery.select().where(WebhookDelivery.status == "succeeded").count() == 12)
        finally:
            survivor.terminate()
            survivor.wait(DEADLINE)

    counts = receiver.ids()
    assert set(counts) == events  # every event arrived, under its own webhook-id
    assert counts[held] >= 2  # the interrupted one again, with the same webhook-id
    assert all(request["verified"] for request in receiver.requests)
    held_delivery = WebhookDelivery.get(WebhookDelivery.event == held)
    assert [a.number for a in WebhookAttempt.select().where(WebhookAttempt.delivery == held_delivery)] == [1]


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_workers_on_postgresql_deliver_500_events_without_a_repeat(local, client, api_key, funded_account_id,
                                                                       tmp_path):
    both_busy = threading.Barrier(2, timeout=DEADLINE)

    def hold(number: int) -> None:
        if number <= 2:  # the first two requests wait for each other: two workers deliver at once
            both_busy.wait()

    with Receiver(hold) as receiver:
        _register(client, api_key, receiver, ["balance.updated"])
        _usage(funded_account_id, 500)
        events = {event.id for event in WebhookEvent.select()}
        assert len(events) == 500

        workers = [spawn_worker(local, tmp_path, "--once") for _ in range(2)]
        for process in workers:
            out, err = process.communicate(timeout=DEADLINE * 2)
            assert process.returncode == 0, err

    assert not both_busy.broken
    counts = receiver.ids()
    assert set(counts) == events and set(counts.values()) == {1}  # each exactly once
    assert all(request["verified"] for request in receiver.requests)
    assert WebhookAttempt.select().count() == 500
    assert WebhookDelivery.select().where((WebhookDelivery.status == "succeeded")
                                          & (WebhookDelivery.attempt_count == 1)).count() == 500
