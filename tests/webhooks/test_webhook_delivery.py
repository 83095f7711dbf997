"""webhooks.delivery: attempts, retries, leases and pruning, against `responses`."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import requests
import responses
from standardwebhooks import Webhook, WebhookVerificationError

import storage
from addon_plugin import ledger, signals, worker
from storage import WebhookAttempt, WebhookDelivery, WebhookEndpoint, utcnow
from webhooks import delivery, endpoints

URL = "https://merchant.example/hook"


@pytest.fixture
def hooks(app):
    """Fake hosts allowed, and three immediate attempts."""
    app.config.update(ADDONS_WEBHOOK_ALLOW_PRIVATE_URLS=True, ADDONS_WEBHOOK_RETRY_SCHEDULE=[0, 0, 0])
    return app


@pytest.fixture
def endpoint(hooks, merchant_id):
    """``(endpoint, secret)`` of an endpoint for balance.updated only."""
    return endpoints.create_endpoint(merchant_id, URL, ["balance.updated"])


@pytest.fixture
def delivery_id(endpoint, account_id) -> str:
    """One pending delivery: a balance.updated event for bob's first entry."""
    ledger.record(account_id, 40, "adjustment")
    return WebhookDelivery.get().id


@pytest.fixture
def mock():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def failures(app):
    """Every ``webhook_delivery_failed`` the app sends: ``(delivery, endpoint)``."""
    seen = []

    def record(sender, delivery, endpoint):
        seen.append((delivery, endpoint))

    signals.webhook_delivery_failed.connect(record, sender=app)
    yield seen
    signals.webhook_delivery_failed.disconnect(record, sender=app)


def attempts(delivery_id: str) -> list[tuple[int, int | None, str | None]]:
    return [(a.number, a.status_code, a.error) for a in
            WebhookAttempt.select().where(WebhookAttempt.delivery == delivery_id).order_by(WebhookAttempt.number)]


def state(delivery_id: str) -> WebhookDelivery:
    return WebhookDelivery.get_by_id(delivery_id)


def test_success_sends_the_signed_body_once(endpoint, delivery_id, mock):
    _, secret = endpoint
    mock.add(responses.POST, URL, body="thanks")
    assert worker.run_once() == 1
    [call] = mock.calls
    event = storage.WebhookEvent.get()
    assert call.request.body == event.payload.encode()
    headers = call.request.headers
    assert headers["webhook-id"] == event.id
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("addon-credits-webhooks/")
    assert Webhook(secret).verify(call.request.body, dict(headers))["type"] == "balance.updated"
    done = state(delivery_id)
    assert (done.status, done.attempt_count, done.next_attempt_at) == ("succeeded", 1, None)
    assert done.completed_at is not None and done.lease_token is None
    [attempt] = WebhookAttempt.select()
    assert (attempt.number, attempt.status_code, attempt.error, attempt.response_excerpt) == (1, 200, None, "thanks")
    assert attempt.duration_ms >= 0


def test_500_then_success_is_retried_with_the_same_id(delivery_id, mock):
    mock.add(responses.POST, URL, status=500, body="boom")
    mock.add(responses.POST, URL, status=204)
    assert worker.run_once() == 2
    assert [c.request.headers["webhook-id"] for c in mock.calls] == [storage.WebhookEvent.get().id] * 2
    assert attempts(delivery_id) == [(1, 500, None), (2, 204, None)]
    assert state(delivery_id).status == "succeeded"
    assert WebhookAttempt.get(WebhookAttempt.number == 1).response_excerpt == "boom"


def test_a_timeout_is_a_failed_attempt(delivery_id, mock):
    mock.add(responses.POST, URL, body=requests.exceptions.ReadTimeout("read timed out"))
    mock.add(responses.POST, URL, status=200)
    worker.run_once()
    [(number, status, error), second] = attempts(delivery_id)
    assert (number, status) == (1, None) and error.startswith("timeout:")
    assert second == (2, 200, None)


def test_connection_refused_is_a_failed_attempt(delivery_id, mock):
    mock.add(responses.POST, URL, body=requests.exceptions.ConnectionError("[Errno 111] Connection refused"))
    mock.add(responses.POST, URL, status=200)
    worker.run_once()
    [(_, status, error), _] = attempts(delivery_id)
    assert status is None and error.startswith("connection error:") and "refused" in error


def test_410_disables_the_endpoint_and_fails_the_delivery(endpoint, delivery_id, account_id, mock, failures):
    ledger.record(account_id, 1, "adjustment")  # a second delivery, queued behind
    mock.add(responses.POST, URL, status=410)
    worker.run_once()
    assert len(mock.calls) == 1  # the other delivery waits: the endpoint is disabled
    row = WebhookEndpoint.get_by_id(endpoint[0].id)
    assert (row.enabled, row.disabled_reason) == (False, "gone")
    failed = WebhookDelivery.get(WebhookDelivery.status == "failed")
    assert failed.attempt_count == 1
    assert WebhookDelivery.select().where(WebhookDelivery.status == "pending").count() == 1
    assert [(d.id, e.id) for d, e in failures] == [(failed.id, endpoint[0].id)]

    mock.replace(responses.POST, URL, status=200)
    endpoints.update_endpoint(row.merchant_id, row.id, enabled=True)  # the merchant is back
    worker.run_once()
    assert WebhookDelivery.select().where(WebhookDelivery.status == "succeeded").count() == 1


def test_redirects_are_not_followed(delivery_id, mock):
    mock.add(responses.POST, URL, status=302, headers={"Location": "https://elsewhere.example/"})
    mock.add(responses.POST, "https://elsewhere.example/", status=200)
    mock.add(responses.GET, "https://elsewhere.example/", status=200)
    worker.run_once()
    assert {c.request.url for c in mock.calls} == {URL}
    assert attempts(delivery_id) == [(1, 302, None), (2, 302, None), (3, 302, None)]
    assert state(delivery_id).status == "failed"


def test_retry_after_postpones_the_next_attempt(delivery_id, mock):
    mock.add(responses.POST, URL, status=503, headers={"Retry-After": "120"})
    before = utcnow()
    worker.run_once()
    after = utcnow()
    assert len(mock.calls) == 1  # the schedule says "now", the receiver said 120 s
    row = state(delivery_id)
    assert (row.status, row.attempt_count) == ("pending", 1)
    assert before + timedelta(seconds=120) <= row.next_attempt_at <= after + timedelta(seconds=120)


def test_retries_follow_the_schedule_with_jitter(app, delivery_id, mock):
    app.config["ADDONS_WEBHOOK_RETRY_SCHEDULE"] = [0, 600, 3600]
    mock.add(responses.POST, URL, status=500)
    before = utcnow()
    worker.run_once()
    after = utcnow()
    row = state(delivery_id)
    assert row.attempt_count == 1
    assert before + timedelta(seconds=540) <= row.next_attempt_at <= after + timedelta(seconds=660)


def test_the_last_failure_fails_the_delivery_and_signals(endpoint, delivery_id, mock, failures):
    mock.add(responses.POST, URL, status=500)
    assert worker.run_once() == 3
    assert attempts(delivery_id) == [(1, 500, None), (2, 500, None), (3, 500, None)]
    row = state(delivery_id)
    assert (row.status, row.next_attempt_at) == ("failed", None) and row.completed_at is not None
    [(signalled, endpoint_row)] = failures
    assert (signalled.id, signalled.status, signalled.attempt_count) == (delivery_id, "failed", 3)
    assert endpoint_row.id == endpoint[0].id
    assert worker.run_once() == 0  # nothing left to do


def test_attempts_are_only_made_by_the_worker_and_only_when_due(app, delivery_id, mock):
    WebhookDelivery.update(next_attempt_at=utcnow() + timedelta(hours=1)).execute()
    mock.add(responses.POST, URL)
    assert worker.run_once() == 0 and len(mock.calls) == 0


def test_a_claimed_delivery_is_not_claimed_again_until_its_lease_expires(app, delivery_id):
    claim = delivery._claim(60)
    assert claim.delivery_id == delivery_id and claim.number == 1
    assert delivery._claim(60) is None  # another worker finds nothing
    # The first worker died; its lease runs out.
    WebhookDelivery.update(lease_expires_at=utcnow() - timedelta(seconds=1)).execute()
    again = delivery._claim(60)
    assert again.delivery_id == delivery_id and again.number == 1 and again.token != claim.token


def test_a_worker_that_lost_its_lease_records_nothing(app, endpoint, delivery_id):
    claim = delivery._claim(60)
    WebhookDelivery.update(lease_token="another-worker").execute()
    delivery._record(claim, delivery.Outcome(200, 5), [0, 0, 0])
    assert attempts(delivery_id) == []
    assert state(delivery_id).status == "pending"


def test_the_previous_secret_signs_only_during_its_grace_period(app, merchant_id, endpoint, delivery_id, mock):
    first_secret = endpoint[1]
    _, second_secret = endpoints.rotate_secret(merchant_id, endpoint[0].id)
    mock.add(responses.POST, URL)
    worker.run_once()
    headers = dict(mock.calls[0].request.headers)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (first_secret, second_secret):
        Webhook(secret).verify(mock.calls[0].request.body, headers)

    WebhookEndpoint.update(previous_secret_expires_at=utcnow() - timedelta(seconds=1)).execute()
    endpoints.redeliver(merchant_id, delivery_id)
    worker.run_once()
    headers = dict(mock.calls[1].request.headers)
    assert headers["webhook-id"] == mock.calls[0].request.headers["webhook-id"]
    assert len(headers["webhook-signature"].split(" ")) == 1
    Webhook(second_secret).verify(mock.calls[1].request.body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(first_secret).verify(mock.calls[1].request.body, headers)


def test_prune_removes_old_successful_deliveries_only(app, endpoint, account_id, mock):
    for value in (1, 2, 3):
        ledger.record(account_id, value, "adjustment")
    mock.add(responses.POST, URL, status=200)
    mock.add(responses.POST, URL, status=500)
    mock.add(responses.POST, URL, status=500)
    mock.add(responses.POST, URL, status=500)
    app.config["ADDONS_WEBHOOK_RETRY_SCHEDULE"] = [0, 3600]
    worker.run_once()  # one succeeds, two wait for a retry
    assert WebhookDelivery.select().where(WebhookDelivery.status == "succeeded").count() == 1
    assert delivery.prune(3600) == 0  # too young

    WebhookDelivery.update(completed_at=utcnow() - timedelta(days=31)).where(
        WebhookDelivery.status == "succeeded").execute()
    storage.WebhookEvent.update(created_at=utcnow() - timedelta(days=31)).execute()
    assert delivery.prune(30 * 24 * 3600) == 1
    assert WebhookDelivery.select().count() == 2
    assert WebhookDelivery.select().where(WebhookDelivery.status == "succeeded").count() == 0
    assert storage.WebhookEvent.select().count() == 2  # events of kept deliveries stay
    assert WebhookAttempt.select().count() == 2


def test_the_worker_prunes_on_its_own(app, endpoint, delivery_id, mock):
    mock.add(responses.POST, URL)
    worker.run_once()
    WebhookDelivery.update(completed_at=utcnow() - timedelta(days=31)).execute()
    app.extensions["addons"].worker_tasks["webhooks.prune"][0].pruned_at = None  # due now
    worker.run_once()
    assert WebhookDelivery.select().count() == 0 and WebhookAttempt.select().count() == 0


def test_a_deleted_endpoint_gets_nothing_more(merchant_id, endpoint, delivery_id, mock):
    endpoints.delete_endpoint(merchant_id, endpoint[0].id)
    mock.add(responses.POST, URL)
    assert worker.run_once() == 0 and len(mock.calls) == 0


def test_the_body_is_the_same_bytes_on_every_attempt(delivery_id, mock):
    mock.add(responses.POST, URL, status=500)
    worker.run_once()
    bodies = {c.request.body for c in mock.calls}
    assert len(bodies) == 1 and json.loads(bodies.pop())["type"] == "balance.updated"
