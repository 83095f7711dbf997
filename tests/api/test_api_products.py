"""``/addons/products``: create, list, read, change."""

from __future__ import annotations

import pytest

import storage
from tests.helpers import create_product

PRODUCTS = "/api/addons/products"


def test_create_answers_201_with_the_product(client, auth):
    response = client.post(PRODUCTS, json={"price": "19.00", "credit_amount": 100, "top_up_allowed": True,
                                           "overdraft_limit": 5, "host_product_id": "plan-7"}, headers=auth)
    assert response.status_code == 201
    body = response.get_json()
    assert body == {"id": body["id"], "name": "100 credits", "price": "19.00", "currency": "USD",
                    "credit_amount": 100, "top_up_allowed": True, "overdraft_limit": 5,
                    "host_product_id": "plan-7", "credit_expiry_days": None}
    assert body["id"].startswith("prod_")
    assert storage.Product.get_by_id(body["id"]).price_minor == 1900


def test_create_keeps_the_currency_digits(client, auth):
    response = client.post(PRODUCTS, json={"name": "Yen pack", "price": "500", "currency": "JPY",
                                           "credit_amount": 10}, headers=auth)
    assert response.status_code == 201
    assert response.get_json()["price"] == "500"
    assert response.get_json()["currency"] == "JPY"


@pytest.mark.parametrize("body, field", [
    ({"credit_amount": 100}, "price"),
    ({"price": "19.00"}, "credit_amount"),
    ({"price": 19.0, "credit_amount": 100}, "price"),
    ({"price": "0", "credit_amount": 100}, "price"),
    ({"price": "-1.00", "credit_amount": 100}, "price"),
    ({"price": "19.001", "credit_amount": 100}, "price"),
    ({"price": "NaN", "credit_amount": 100}, "price"),
    ({"price": "abc", "credit_amount": 100}, "price"),
    ({"price": "1e2", "credit_amount": 100}, "price"),
    ({"price": " 19.00", "credit_amount": 100}, "price"),
    ({"price": "+19", "credit_amount": 100}, "price"),
    ({"price": "１９", "credit_amount": 100}, "price"),
    ({"price": "1000000000000000", "credit_amount": 100}, "price"),
    ({"price": "10", "currency": "JPY", "credit_amount": 0}, "credit_amount"),
    ({"price": "19.00", "credit_amount": "100"}, "credit_amount"),
    ({"price": "19.00", "credit_amount": 2**53}, "credit_amount"),
    ({"price": "19.00", "credit_amount": 100, "overdraft_limit": -1}, "overdraft_limit"),
    ({"price": "19.00", "credit_amount": 100, "currency": "XXX"}, "currency"),
    ({"price": "19.00", "credit_amount": 100, "colour": "red"}, "colour"),
])
def test_create_refuses_invalid_fields(client, auth, body, field):
    response = client.post(PRODUCTS, json=body, headers=auth)
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["fields"]
    assert storage.Product.select().count() == 0


def test_create_refuses_a_host_product_id_already_used(client, auth, merchant_id):
    create_product(merchant_id, host_product_id="plan-7")
    response = client.post(PRODUCTS, json={"price": "1.00", "credit_amount": 1, "host_product_id": "plan-7"},
                           headers=auth)
    assert response.status_code == 422
    assert "host_product_id" in response.get_json()["error"]["fields"]


def test_list_is_newest_first(client, auth, merchant_id):
    ids = [create_product(merchant_id, name=f"p{n}").id for n in range(3)]
    response = client.get(PRODUCTS, headers=auth)
    assert response.status_code == 200
    assert [p["id"] for p in response.get_json()["data"]] == ids[::-1]
    assert response.get_json()["next_cursor"] is None


def test_get_answers_the_product(client, auth, product):
    response = client.get(f"{PRODUCTS}/{product.id}", headers=auth)
    assert response.status_code == 200
    assert response.get_json()["id"] == product.id
    assert response.get_json()["price"] == "19.00"


def test_get_unknown_product_is_404(client, auth):
    response = client.get(f"{PRODUCTS}/prod_nope", headers=auth)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "product_not_found"


def test_patch_changes_only_the_given_fields(client, auth, product):
    response = client.patch(f"{PRODUCTS}/{product.id}", json={"price": "25.50", "name": "Bigger"}, headers=auth)
    assert response.status_code == 200
    body = response.get_json()
    assert (body["name"], body["price"], body["credit_amount"]) == ("Bigger", "25.50", 100)
    assert storage.Product.get_by_id(product.id).price_minor == 2550


def test_patch_checks_the_price_against_the_products_own_currency(client, auth, merchant_id):
    yen = create_product(merchant_id, currency="JPY", price_minor=500)
    response = client.patch(f"{PRODUCTS}/{yen.id}", json={"price": "5.50"}, headers=auth)
    assert response.status_code == 422
    assert "price" in response.get_json()["error"]["fields"]
    assert storage.Product.get_by_id(yen.id).price_minor == 500


def test_patch_refuses_unknown_fields(client, auth, product):
    response = client.patch(f"{PRODUCTS}/{product.id}", json={"id": "prod_other"}, headers=auth)
    assert response.status_code == 422
    assert storage.Product.get_by_id(product.id).name == product.name


def test_patch_unknown_product_is_404(client, auth):
    response = client.patch(f"{PRODUCTS}/prod_nope", json={"name": "x"}, headers=auth)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "product_not_found"


@pytest.mark.parametrize("method, path", [("post", PRODUCTS), ("get", PRODUCTS), ("get", f"{PRODUCTS}/x"),
                                          ("patch", f"{PRODUCTS}/x")])
def test_every_route_needs_a_key(client, method, path):
    response = getattr(client, method)(path, json={"price": "1.00", "credit_amount": 1})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert storage.Product.select().count() == 0


# -- a currency change needs its price --------------------------------------------------

@pytest.mark.parametrize("currency", ["EUR", "JPY", "KWD"])
def test_patch_of_the_currency_alone_is_refused_on_price(client, auth, product, currency):
    """19.00 USD must not silently become 19.00 EUR (or be refused for digits JPY lacks)."""
    response = client.patch(f"{PRODUCTS}/{product.id}", json={"currency": currency},
                            headers={**auth, "Idempotency-Key": "k1"})
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert (error["code"], list(error["fields"])) == ("validation_error", ["price"])
    assert "currency" in error["fields"]["price"][0]
    row = storage.Product.get_by_id(product.id)
    assert (row.currency, row.price_minor) == ("USD", 1900)
    assert storage.IdempotencyRecord.select().count() == 0


def test_patch_of_the_currency_with_its_price_is_applied(client, auth, product):
    response = client.patch(f"{PRODUCTS}/{product.id}", json={"currency": "JPY", "price": "2800"}, headers=auth)
    assert response.status_code == 200, response.get_json()
    assert (response.get_json()["currency"], response.get_json()["price"]) == ("JPY", "2800")
    assert storage.Product.get_by_id(product.id).price_minor == 2800
    same = client.patch(f"{PRODUCTS}/{product.id}", json={"currency": "JPY", "name": "Yen"}, headers=auth)
    assert same.status_code == 200, same.get_json()  # the currency it already has: no change
    assert (same.get_json()["currency"], same.get_json()["price"]) == ("JPY", "2800")


# -- a price whose top-up would not fit the amount column -------------------------------

#: (2**63 - 1) // 10 minor units: the largest KWD price whose ADDONS_TOP_UP_MAX_BANKS (10) multiple fits.
LARGEST_KWD = "922337203685477.580"
TOO_LARGE_KWD = "922337203685477.581"


def test_create_refuses_a_price_whose_largest_top_up_would_not_fit(client, auth):
    body = {"currency": "KWD", "credit_amount": 100}
    refused = client.post(PRODUCTS, json={**body, "price": TOO_LARGE_KWD}, headers=auth)
    assert refused.status_code == 422
    assert list(refused.get_json()["error"]["fields"]) == ["price"]
    assert "Too large" in refused.get_json()["error"]["fields"]["price"][0]
    assert storage.Product.select().count() == 0
    created = client.post(PRODUCTS, json={**body, "price": LARGEST_KWD}, headers=auth)
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["price"] == LARGEST_KWD


def test_patch_refuses_a_price_whose_largest_top_up_would_not_fit(app, client, auth, merchant_id):
    kwd = create_product(merchant_id, currency="KWD", price_minor=19000)
    refused = client.patch(f"{PRODUCTS}/{kwd.id}", json={"price": TOO_LARGE_KWD}, headers=auth)
    assert refused.status_code == 422 and list(refused.get_json()["error"]["fields"]) == ["price"]
    assert storage.Product.get_by_id(kwd.id).price_minor == 19000
    app.config["ADDONS_TOP_UP_MAX_BANKS"] = 100  # bigger top-ups: a price 10 times smaller no longer fits
    refused = client.patch(f"{PRODUCTS}/{kwd.id}", json={"price": "92233720368547.759"}, headers=auth)
    assert refused.status_code == 422 and list(refused.get_json()["error"]["fields"]) == ["price"]
    assert storage.Product.get_by_id(kwd.id).price_minor == 19000
    accepted = client.patch(f"{PRODUCTS}/{kwd.id}", json={"price": "92233720368547.758"}, headers=auth)
    assert accepted.status_code == 200, accepted.get_json()
