"""Lists: ``{"data", "next_cursor"}``, newest first, ``limit`` 1–500 (default 50), opaque cursors."""

from __future__ import annotations

import base64
import json

import pytest

from addon_plugin import ledger, merchants
from tests.helpers import create_product


def _walk(client, path: str, auth: dict, limit: int) -> list[list[str]]:
    """Every page of a list, as lists of ids, following ``next_cursor``."""
    pages, cursor = [], None
    while True:
        query = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        response = client.get(path, query_string=query, headers=auth)
        assert response.status_code == 200
        pages.append([item["id"] for item in response.get_json()["data"]])
        cursor = response.get_json()["next_cursor"]
        if cursor is None:
            return pages


def test_products_page_newest_first_without_gaps_or_repeats(client, auth, merchant_id):
    ids = [create_product(merchant_id, name=f"p{n}").id for n in range(7)]
    assert _walk(client, "/api/addons/products", auth, 3) == [ids[6:3:-1], ids[3:0:-1], ids[:1]]


def test_accounts_page_newest_first(client, auth, merchant_id, product):
    ids = [ledger.open_account(merchant_id, product.id, f"b{n}@example.com") for n in range(5)]
    assert _walk(client, "/api/addons/accounts", auth, 2) == [ids[4:2:-1], ids[2:0:-1], ids[:1]]


def test_api_keys_page_newest_first(client, auth, merchant):
    ids = [merchant[1].id] + [merchants.create_api_key(merchant[0].id).id for _ in range(2)]
    assert _walk(client, "/api/addons/api-keys", auth, 2) == [ids[2:0:-1], ids[:1]]


def test_a_page_exactly_full_has_no_next_cursor(client, auth, merchant_id):
    for n in range(2):
        create_product(merchant_id, name=f"p{n}")
    body = client.get("/api/addons/products", query_string={"limit": 2}, headers=auth).get_json()
    assert len(body["data"]) == 2 and body["next_cursor"] is None


def test_the_default_limit_is_50(client, auth, funded_account_id):
    for _ in range(55):
        ledger.record(funded_account_id, -1, "usage")
    page = client.get(f"/api/addons/accounts/{funded_account_id}/ledger", headers=auth).get_json()
    assert [e["sequence"] for e in page["data"]] == list(range(56, 6, -1))
    rest = client.get(f"/api/addons/accounts/{funded_account_id}/ledger", query_string={"cursor": page["next_cursor"]},
                      headers=auth).get_json()
    assert [e["sequence"] for e in rest["data"]] == [6, 5, 4, 3, 2, 1] and rest["next_cursor"] is None


@pytest.mark.parametrize("limit, status", [("1", 200), ("500", 200), ("0", 422), ("501", 422), ("-5", 422),
                                           ("ten", 422), ("", 422), ("2.0", 422)])
def test_limit_must_be_1_to_500(client, auth, limit, status):
    response = client.get("/api/addons/products", query_string={"limit": limit}, headers=auth)
    assert response.status_code == status
    if status == 422:
        assert response.get_json()["error"]["fields"] == {"limit": response.get_json()["error"]["fields"]["limit"]}


def _cursor(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize("path, cursor", [
    ("/api/addons/products", "not base64 !"),
    ("/api/addons/products", _cursor(5)),
    ("/api/addons/products", _cursor(["a"])),
    ("/api/addons/products", _cursor("a\x00b")),
    ("/api/addons/products", base64.urlsafe_b64encode(b"\xff\xfe").decode()),
    ("/api/addons/accounts/{account}/ledger", _cursor("prod_x")),
    ("/api/addons/accounts/{account}/ledger", _cursor(True)),
    ("/api/addons/accounts/{account}/ledger", _cursor(2**64)),
])
def test_a_cursor_this_list_did_not_give_is_422(client, auth, funded_account_id, path, cursor):
    response = client.get(path.format(account=funded_account_id), query_string={"cursor": cursor}, headers=auth)
    assert response.status_code == 422
    assert response.get_json()["error"]["fields"] == {"cursor": ["Not a cursor this list gave."]}
