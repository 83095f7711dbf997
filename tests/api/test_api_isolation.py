"""One merchant's key never reads or changes another's objects: every route
that names an object answers another merchant 404 (never 403) and changes nothing."""

from __future__ import annotations

import pytest

import storage
from addon_plugin import ledger

#: (method, path, JSON body) with ``{product}``, ``{account}``, ``{key}`` naming the first merchant's objects.
ROUTES = [
    ("get", "/api/addons/products/{product}", None),
    ("patch", "/api/addons/products/{product}", {"name": "Stolen", "price": "0.01"}),
    ("get", "/api/addons/accounts/{account}", None),
    ("get", "/api/addons/accounts/{account}/ledger", None),
    ("post", "/api/addons/accounts/{account}/adjustments", {"value": 500, "description": "free credits"}),
    ("post", "/api/addons/accounts/{account}/adjustments", {"value": -500, "description": "drain"}),
    ("delete", "/api/addons/api-keys/{key}", None),
    ("post", "/api/buyer-addon/usage", {"product_id": "{product}", "buyer_email": "bob@example.com"}),
    ("post", "/api/buyer-addon/usage", {"invoice_id": "order_1"}),
    ("post", "/api/buyer-addon/usage/add", {"product_id": "{product}", "buyer_email": "bob@example.com",
                                            "value": -5}),
    ("post", "/api/buyer-addon/usage/add", {"product_id": "{product}", "buyer_email": "bob@example.com",
                                            "value": 5}),
    ("post", "/api/buyer-addon/usage/add", {"invoice_id": "order_1", "value": -5}),
]


def _state() -> list:
    """Everything a refused request could have touched."""
    return [
        [(p.id, p.name, p.price_minor, p.updated_at) for p in storage.Product.select().order_by(storage.Product.id)],
        [(a.id, a.balance, a.last_sequence) for a in storage.CreditAccount.select().order_by(storage.CreditAccount.id)],
        storage.LedgerEntry.select().count(),
        [(k.id, k.revoked_at) for k in storage.ApiKey.select().order_by(storage.ApiKey.id)],
    ]


@pytest.mark.parametrize("method, path, body", ROUTES)
def test_another_merchants_object_is_404_and_unchanged(client, merchant, product, funded_account_id,
                                                       other_auth, method, path, body):
    ids = {"product": product.id, "account": funded_account_id, "key": merchant[1].id}
    if body is not None:
        body = {k: v.format(**ids) if isinstance(v, str) else v for k, v in body.items()}
    before = _state()
    response = getattr(client, method)(path.format(**ids), json=body, headers=other_auth)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"].endswith("not_found")
    assert _state() == before
    assert ledger.balance(funded_account_id) == 1000


def test_lists_show_only_the_merchants_own_objects(client, product, funded_account_id, other_auth):
    for path in ("/api/addons/products", "/api/addons/accounts"):
        response = client.get(path, headers=other_auth)
        assert response.status_code == 200
        assert response.get_json() == {"data": [], "next_cursor": None}
    keys = client.get("/api/addons/api-keys", headers=other_auth).get_json()["data"]
    assert len(keys) == 1
    assert storage.ApiKey.get_by_id(keys[0]["id"]).merchant.name == "Other Rockets"


def test_filters_cannot_reach_another_merchants_accounts(client, product, funded_account_id, other_auth):
    response = client.get("/api/addons/accounts", query_string={"product_id": product.id,
                                                               "buyer_email": "bob@example.com"},
                          headers=other_auth)
    assert response.get_json()["data"] == []
