"""The webhook endpoints API: routes, scoping, secrets shown only twice."""

from __future__ import annotations

import pytest
import responses

import storage
from addon_plugin import merchants, worker
from webhooks.api import DeliverySchema, EndpointSchema, EndpointWithSecretSchema

URL = "https://merchant.example/hook"
BASE = "/api/addons/webhook-endpoints"


@pytest.fixture
def hooks(app):
    app.config.update(ADDONS_WEBHOOK_ALLOW_PRIVATE_URLS=True, ADDONS_WEBHOOK_RETRY_SCHEDULE=[0, 0])
    return app


@pytest.fixture
def auth(api_key) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture
def created(hooks, client, auth) -> dict:
    response = client.post(BASE, json={"url": URL, "event_types": ["balance.updated"], "description": "main"},
                           headers=auth)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_create_answers_201_with_the_secret(created):
    assert created["id"].startswith("ep_") and created["secret"].startswith("whsec_")
    assert EndpointWithSecretSchema().validate(created) == {}
    assert (created["url"], created["event_types"], created["description"], created["enabled"]) == (
        URL, ["balance.updated"], "main", True)
    assert created["created_at"].endswith("Z")


def test_no_other_response_contains_the_secret(hooks, client, auth, created, funded_account_id):
    secret = created["secret"]
    endpoint_id = created["id"]
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, URL, status=500, body="nope")
        worker.run_once()
    delivery_id = storage.WebhookDelivery.get().id
    answers = [
        client.get(BASE, headers=auth),
        client.get(f"{BASE}/{endpoint_id}", headers=auth),
        client.patch(f"{BASE}/{endpoint_id}", json={"description": "x"}, headers=auth),
        client.get(f"{BASE}/{endpoint_id}/deliveries", headers=auth),
        client.post(f"/api/addons/deliveries/{delivery_id}/redeliver", headers=auth),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.get_json()
        assert secret not in answer.get_data(as_text=True) and "secret" not in answer.get_json()
    assert EndpointSchema().validate(answers[1].get_json()) == {}


def test_a_request_without_a_key_is_401(hooks, client):
    assert client.post(BASE, json={"url": URL}).status_code == 401
    assert client.get(BASE).status_code == 401
    assert client.post("/api/addons/deliveries/dlv_x/redeliver").status_code == 401


def test_private_urls_are_422_invalid_url(app, client, auth):
    for url in ("http://127.0.0.1:5000/hook", "http://169.254.169.254/", "file:///etc/passwd"):
        response = client.post(BASE, json={"url": url}, headers=auth)
        assert response.status_code == 422
        assert response.get_json()["error"]["code"] == "invalid_url"
        assert "url" in response.get_json()["error"]["fields"]
    assert storage.WebhookEndpoint.select().count() == 0


@pytest.mark.parametrize("body", [{}, {"url": 5}, {"url": URL, "event_types": ["nope"]},
                                  {"url": URL, "event_types": "balance.low"}, {"url": URL, "secret": "whsec_x"}])
def test_invalid_bodies_are_422(hooks, client, auth, body):
    response = client.post(BASE, json=body, headers=auth)
    assert response.status_code == 422 and response.get_json()["error"]["fields"]


def test_list_get_update_delete(hooks, client, auth, created):
    endpoint_id = created["id"]
    listed = client.get(BASE, headers=auth).get_json()
    assert [e["id"] for e in listed["data"]] == [endpoint_id] and listed["next_cursor"] is None
    assert client.get(f"{BASE}?limit=0", headers=auth).status_code == 422
    assert client.get(f"{BASE}?limit=501", headers=auth).status_code == 422

    patched = client.patch(f"{BASE}/{endpoint_id}", json={"enabled": False, "event_types": []}, headers=auth)
    assert patched.status_code == 200
    assert (patched.get_json()["enabled"], patched.get_json()["event_types"]) == (False, [])
    assert client.patch(f"{BASE}/{endpoint_id}", json={"enabled": "yes"}, headers=auth).status_code == 422

    deleted = client.delete(f"{BASE}/{endpoint_id}", headers=auth)
    assert deleted.status_code == 200 and deleted.get_json() == {"id": endpoint_id, "deleted": True}
    assert client.get(f"{BASE}/{endpoint_id}", headers=auth).status_code == 404


def test_rotation_answers_a_new_secret(hooks, client, auth, created):
    rotated = client.post(f"{BASE}/{created['id']}/rotate-secret", headers=auth)
    assert rotated.status_code == 200
    assert rotated.get_json()["secret"].startswith("whsec_") and rotated.get_json()["secret"] != created["secret"]


def test_idempotent_create_replays_without_a_second_endpoint(hooks, client, auth):
    headers = {**auth, "Idempotency-Key": "create-1"}
    first = client.post(BASE, json={"url": URL}, headers=headers)
    again = client.post(BASE, json={"url": URL}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.get_json()["id"] == first.get_json()["id"]
    assert storage.WebhookEndpoint.select().count() == 1


def test_replays_of_creation_and_rotation_hold_no_secret(hooks, client, auth):
    """The secret is shown once: not in a replay, not in the stored idempotency record."""
    created = client.post(BASE, json={"url": URL}, headers={**auth, "Idempotency-Key": "create-2"})
    rotate = f"{BASE}/{created.get_json()['id']}/rotate-secret"
    rotated = client.post(rotate, headers={**auth, "Idempotency-Key": "rotate-2"})
    secrets = [created.get_json()["secret"], rotated.get_json()["secret"]]
    for again in (client.post(BASE, json={"url": URL}, headers={**auth, "Idempotency-Key": "create-2"}),
                  client.post(rotate, headers={**auth, "Idempotency-Key": "rotate-2"})):
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert "secret" not in again.get_json() and again.get_json()["id"] == created.get_json()["id"]
    stored = " ".join(row.response_body for row in storage.IdempotencyRecord.select())
    assert not any(secret in stored for secret in secrets)


def test_deliveries_with_attempts_and_redelivery(hooks, client, auth, created, funded_account_id):
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, URL, status=500, body="down")
        worker.run_once()
        listed = client.get(f"{BASE}/{created['id']}/deliveries?status=failed", headers=auth).get_json()
        [delivery] = listed["data"]
        assert DeliverySchema().validate(delivery) == {}
        assert (delivery["status"], delivery["event_type"], delivery["attempt_count"]) == (
            "failed", "balance.updated", 2)
        assert [(a["number"], a["status_code"], a["response_excerpt"]) for a in delivery["attempts"]] == [
            (1, 500, "down"), (2, 500, "down")]

        calls = len(mock.calls)
        redelivered = client.post(f"/api/addons/deliveries/{delivery['id']}/redeliver", headers=auth)
        assert redelivered.status_code == 200 and redelivered.get_json()["status"] == "pending"
        assert len(mock.calls) == calls  # no attempt in the request thread
        mock.replace(responses.POST, URL, status=200)
        worker.run_once()
        assert mock.calls[-1].request.headers["webhook-id"] == delivery["event_id"]
    after = client.get(f"{BASE}/{created['id']}/deliveries", headers=auth).get_json()["data"][0]
    assert after["status"] == "succeeded" and [a["number"] for a in after["attempts"]] == [1, 2, 3]
    assert client.get(f"{BASE}/{created['id']}/deliveries?status=lost", headers=auth).status_code == 422


def test_redelivery_to_a_disabled_endpoint_is_409(hooks, client, auth, created, funded_account_id):
    delivery_id = storage.WebhookDelivery.get().id
    client.patch(f"{BASE}/{created['id']}", json={"enabled": False}, headers=auth)
    response = client.post(f"/api/addons/deliveries/{delivery_id}/redeliver", headers=auth)
    assert response.status_code == 409 and response.get_json()["error"]["code"] == "endpoint_disabled"


def test_another_merchants_ids_are_404(hooks, client, created, funded_account_id):
    _, other_key = merchants.create_merchant("Someone else")
    other = {"Authorization": f"Bearer {other_key.key}"}
    endpoint_id = created["id"]
    delivery_id = storage.WebhookDelivery.get().id
    for method, path, body in (
        ("get", f"{BASE}/{endpoint_id}", None),
        ("patch", f"{BASE}/{endpoint_id}", {"description": "mine"}),
        ("delete", f"{BASE}/{endpoint_id}", None),
        ("post", f"{BASE}/{endpoint_id}/rotate-secret", None),
        ("get", f"{BASE}/{endpoint_id}/deliveries", None),
        ("post", f"/api/addons/deliveries/{delivery_id}/redeliver", None),
    ):
        response = getattr(client, method)(path, json=body, headers=other)
        assert response.status_code == 404, (method, path)
        assert response.get_json()["error"]["code"] in ("webhook_endpoint_not_found", "delivery_not_found")
    assert client.get(BASE, headers=other).get_json()["data"] == []
    row = storage.WebhookEndpoint.get_by_id(endpoint_id)
    assert (row.description, row.secret) == ("main", created["secret"])


def test_the_routes_are_in_the_openapi_document(client):
    paths = client.get("/api/openapi.json").get_json()["paths"]
    assert set(paths[f"{BASE}"]) == {"get", "post"}
    assert set(paths[BASE + "/{endpoint_id}"]) == {"get", "patch", "delete"}
    assert set(paths[BASE + "/{endpoint_id}/rotate-secret"]) == {"post"}
    assert set(paths[BASE + "/{endpoint_id}/deliveries"]) == {"get"}
    assert set(paths["/api/addons/deliveries/{delivery_id}/redeliver"]) == {"post"}
