"""``/addons/api-keys``: create (shown once), list, revoke (401 at once)."""

from __future__ import annotations

import storage
from tests.helpers import bearer

KEYS = "/api/addons/api-keys"


def test_create_shows_the_key_once_and_stores_only_its_hash(client, auth, merchant_id):
    response = client.post(KEYS, headers=auth)
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"id", "key", "created_at"}
    assert body["key"].startswith("sk_")
    row = storage.ApiKey.get_by_id(body["id"])
    assert row.merchant_id == merchant_id
    assert body["key"].split("_", 2)[2] not in row.secret_hash  # sk_<key id>_<secret>: the secret may hold "_"
    assert client.get(KEYS, headers=bearer(body["key"])).status_code == 200


def test_list_never_shows_a_secret(client, auth, merchant):
    client.post(KEYS, headers=auth)
    response = client.get(KEYS, headers=auth)
    assert response.status_code == 200
    keys = response.get_json()["data"]
    assert len(keys) == 2 and keys[1]["id"] == merchant[1].id
    assert all(set(key) == {"id", "created_at", "revoked_at"} for key in keys)
    assert merchant[1].key not in response.get_data(as_text=True)


def test_a_revoked_key_is_refused_at_once(client, auth):
    new = client.post(KEYS, headers=auth).get_json()
    response = client.delete(f"{KEYS}/{new['id']}", headers=auth)
    assert response.status_code == 200
    assert response.get_json()["id"] == new["id"] and response.get_json()["revoked_at"] is not None
    refused = client.get(KEYS, headers=bearer(new["key"]))
    assert refused.status_code == 401
    assert refused.get_json()["error"]["code"] == "unauthorized"


def test_a_key_may_revoke_itself(client, merchant, auth):
    assert client.delete(f"{KEYS}/{merchant[1].id}", headers=auth).status_code == 200
    assert client.get(KEYS, headers=auth).status_code == 401


def test_revoking_twice_changes_nothing(client, auth):
    new = client.post(KEYS, headers=auth).get_json()
    first = client.delete(f"{KEYS}/{new['id']}", headers=auth).get_json()
    second = client.delete(f"{KEYS}/{new['id']}", headers=auth)
    assert second.status_code == 200
    assert second.get_json() == first


def test_revoking_an_unknown_key_is_404(client, auth):
    response = client.delete(f"{KEYS}/key_nope", headers=auth)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "api_key_not_found"


def test_an_idempotent_replay_of_create_never_shows_the_key_again(client, auth):
    headers = {**auth, "Idempotency-Key": "new-key-1"}
    first = client.post(KEYS, headers=headers)
    replay = client.post(KEYS, headers=headers)
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json() == {"id": first.get_json()["id"], "created_at": first.get_json()["created_at"]}
    assert storage.ApiKey.select().count() == 2
    stored = storage.IdempotencyRecord.get().response_body
    assert first.get_json()["key"] not in stored


def test_create_refuses_unknown_fields(client, auth):
    response = client.post(KEYS, json={"name": "ci"}, headers=auth)
    assert response.status_code == 422
    assert "name" in response.get_json()["error"]["fields"]
    assert storage.ApiKey.select().count() == 1


def test_malformed_keys_are_401(client):
    for header in ("Bearer", "Bearer sk_", "Bearer sk_abc_def", "Basic abc", "Bearer sk_" + "a" * 26 + "_\x00" * 30,
                   "Bearer sk_01m88xrss32d6terewdx8tet5x_" + "A" * 43):
        response = client.get(KEYS, headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.get_json()["error"]["code"] == "unauthorized"
