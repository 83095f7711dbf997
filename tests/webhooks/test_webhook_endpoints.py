"""webhooks.endpoints: the merchant-scoped service behind the endpoints API."""

from __future__ import annotations

import dataclasses

import pytest
import responses

import storage
from addon_plugin import ledger, merchants, worker
from addon_plugin.errors import ValidationError
from webhooks import DeliveryNotFound, EndpointDisabled, EndpointNotFound, InvalidUrl, endpoints

URL = "https://merchant.example/hook"


@pytest.fixture
def hooks(app):
    app.config.update(ADDONS_WEBHOOK_ALLOW_PRIVATE_URLS=True, ADDONS_WEBHOOK_RETRY_SCHEDULE=[0])
    return app


@pytest.fixture
def endpoint(hooks, merchant_id):
    return endpoints.create_endpoint(merchant_id, URL, ["balance.low", "balance.updated"], "main")


@pytest.fixture
def other_merchant_id(app) -> str:
    return merchants.create_merchant("Someone else")[0].id


def test_create_answers_the_secret_once(merchant_id, endpoint):
    created, secret = endpoint
    assert secret.startswith("whsec_")
    assert created.id.startswith("ep_") and created.url == URL and created.description == "main"
    assert created.event_types == ["balance.low", "balance.updated"] and created.enabled
    assert "secret" not in {f.name for f in dataclasses.fields(endpoints.Endpoint)}
    assert endpoints.get_endpoint(merchant_id, created.id) == created
    assert secret not in repr(endpoints.list_endpoints(merchant_id))


def test_private_urls_are_refused_by_default(app, merchant_id):
    with pytest.raises(InvalidUrl):
        endpoints.create_endpoint(merchant_id, "http://127.0.0.1:8000/hook")
    with pytest.raises(InvalidUrl):
        endpoints.create_endpoint(merchant_id, "http://169.254.169.254/latest/meta-data/")
    assert storage.WebhookEndpoint.select().count() == 0


@pytest.mark.parametrize("event_types", [["balance.nope"], "balance.low", [1], ["balance.low", None]])
def test_unknown_event_types_are_refused(hooks, merchant_id, event_types):
    with pytest.raises(ValidationError) as caught:
        endpoints.create_endpoint(merchant_id, URL, event_types)
    assert "event_types" in caught.value.fields


def test_omitted_or_empty_event_types_mean_all(hooks, merchant_id):
    assert endpoints.create_endpoint(merchant_id, URL)[0].event_types == []
    assert endpoints.create_endpoint(merchant_id, URL, [])[0].event_types == []


def test_list_is_newest_first_with_a_cursor(hooks, merchant_id, other_merchant_id):
    ids = [endpoints.create_endpoint(merchant_id, f"{URL}/{n}")[0].id for n in range(5)]
    endpoints.create_endpoint(other_merchant_id, URL)
    newest_first = sorted(ids, reverse=True)  # ids sort by creation time (to the millisecond)
    first = endpoints.list_endpoints(merchant_id, limit=2)
    assert [e.id for e in first.data] == newest_first[:2] and first.next_cursor
    rest = endpoints.list_endpoints(merchant_id, limit=10, cursor=first.next_cursor)
    assert [e.id for e in rest.data] == newest_first[2:] and rest.next_cursor is None
    with pytest.raises(ValidationError):
        endpoints.list_endpoints(merchant_id, limit=501)


def test_update_changes_only_what_is_given(merchant_id, endpoint):
    created, _ = endpoint
    updated = endpoints.update_endpoint(merchant_id, created.id, description="renamed")
    assert (updated.description, updated.url, updated.event_types) == ("renamed", URL, created.event_types)
    updated = endpoints.update_endpoint(merchant_id, created.id, url=URL + "/v2", event_types=None)
    assert (updated.url, updated.event_types, updated.description) == (URL + "/v2", [], "renamed")
    disabled = endpoints.update_endpoint(merchant_id, created.id, enabled=False)
    assert (disabled.enabled, disabled.disabled_reason) == (False, "disabled_by_merchant")
    enabled = endpoints.update_endpoint(merchant_id, created.id, enabled=True)
    assert (enabled.enabled, enabled.disabled_reason) == (True, None)


def test_update_checks_the_url_again(app, merchant_id, endpoint):
    app.config["ADDONS_WEBHOOK_ALLOW_PRIVATE_URLS"] = False
    with pytest.raises(InvalidUrl):
        endpoints.update_endpoint(merchant_id, endpoint[0].id, url="http://10.0.0.8/")
    assert endpoints.get_endpoint(merchant_id, endpoint[0].id).url == URL


def test_rotation_answers_a_new_secret_and_keeps_the_old_one_for_the_grace_period(app, merchant_id, endpoint):
    created, first = endpoint
    rotated, second = endpoints.rotate_secret(merchant_id, created.id)
    assert second != first and second.startswith("whsec_") and rotated.id == created.id
    row = storage.WebhookEndpoint.get_by_id(created.id)
    grace = app.config["ADDONS_WEBHOOK_SECRET_GRACE"]
    assert (row.secret, row.previous_secret) == (second, first)
    assert abs((row.previous_secret_expires_at - storage.utcnow()).total_seconds() - grace) < 60
    from webhooks.delivery import live_secrets

    now = storage.utcnow()
    assert live_secrets(row.secret, row.previous_secret, row.previous_secret_expires_at, now) == [second, first]
    assert live_secrets(row.secret, row.previous_secret, now, now) == [second]  # the grace period is over


def test_delete_removes_the_endpoint_and_its_deliveries(merchant_id, endpoint, funded_account_id):
    assert storage.WebhookDelivery.select().count() == 1
    endpoints.delete_endpoint(merchant_id, endpoint[0].id)
    assert storage.WebhookDelivery.select().count() == 0
    with pytest.raises(EndpointNotFound):
        endpoints.get_endpoint(merchant_id, endpoint[0].id)


def test_deliveries_are_listed_with_their_attempts(hooks, merchant_id, endpoint, account_id):
    for value in (1, 2, 3):
        ledger.record(account_id, value, "adjustment")
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, URL, status=500, body="down")
        worker.run_once()
    page = endpoints.list_deliveries(merchant_id, endpoint[0].id, limit=2)
    assert len(page.data) == 2 and page.next_cursor
    rest = endpoints.list_deliveries(merchant_id, endpoint[0].id, cursor=page.next_cursor)
    everything = page.data + rest.data
    assert len(everything) == 3 and rest.next_cursor is None
    assert [d.id for d in everything] == sorted((d.id for d in everything), reverse=True)
    for found in everything:
        assert (found.status, found.event_type, found.attempt_count) == ("failed", "balance.updated", 1)
        [attempt] = found.attempts
        assert (attempt.number, attempt.status_code, attempt.response_excerpt) == (1, 500, "down")
    assert endpoints.list_deliveries(merchant_id, endpoint[0].id, status="succeeded").data == []
    with pytest.raises(ValidationError):
        endpoints.list_deliveries(merchant_id, endpoint[0].id, status="lost")


def test_redeliver_makes_one_more_attempt_with_the_same_id(hooks, merchant_id, endpoint, account_id):
    ledger.record(account_id, 1, "adjustment")
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, URL, status=500)
        mock.add(responses.POST, URL, status=200)
        worker.run_once()
        [failed] = endpoints.list_deliveries(merchant_id, endpoint[0].id).data
        assert failed.status == "failed"
        queued = endpoints.redeliver(merchant_id, failed.id)
        assert queued.status == "pending" and len(mock.calls) == 1  # the worker sends, not the caller
        worker.run_once()
        assert [c.request.headers["webhook-id"] for c in mock.calls] == [failed.event_id] * 2
    done = endpoints.get_delivery(merchant_id, failed.id)
    assert done.status == "succeeded" and [a.number for a in done.attempts] == [1, 2]


def test_redeliver_to_a_disabled_endpoint_is_refused(merchant_id, endpoint, funded_account_id):
    dlv = storage.WebhookDelivery.get()
    endpoints.update_endpoint(merchant_id, endpoint[0].id, enabled=False)
    with pytest.raises(EndpointDisabled):
        endpoints.redeliver(merchant_id, dlv.id)


def test_another_merchants_ids_are_not_found(merchant_id, other_merchant_id, endpoint, funded_account_id):
    endpoint_id = endpoint[0].id
    delivery_id = storage.WebhookDelivery.get().id
    for call in (
        lambda: endpoints.get_endpoint(other_merchant_id, endpoint_id),
        lambda: endpoints.update_endpoint(other_merchant_id, endpoint_id, description="mine now"),
        lambda: endpoints.delete_endpoint(other_merchant_id, endpoint_id),
        lambda: endpoints.rotate_secret(other_merchant_id, endpoint_id),
        lambda: endpoints.list_deliveries(other_merchant_id, endpoint_id),
    ):
        with pytest.raises(EndpointNotFound):
            call()
    for call in (lambda: endpoints.get_delivery(other_merchant_id, delivery_id),
                 lambda: endpoints.redeliver(other_merchant_id, delivery_id)):
        with pytest.raises(DeliveryNotFound):
            call()
    assert endpoints.get_endpoint(merchant_id, endpoint_id).description == "main"
    assert endpoints.list_endpoints(other_merchant_id).data == []
