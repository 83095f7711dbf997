"""Buyer e-mails have one normal form (NFC, trimmed, lower-cased) wherever they
enter, so a buyer's credits are found whichever way the address was spelled."""

from __future__ import annotations

import json
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from addon_plugin import ledger
from addon_plugin.emails import normalise_email
from tests.helpers import create_product

ADD = "/api/buyer-addon/usage/add"
USAGE = "/api/buyer-addon/usage"

#: "josé@example.com", composed (é = U+00E9) and decomposed (e + U+0301).
NFC = "jos\u00e9@example.com"
NFD = "jose\u0301@example.com"


def test_the_normal_form_is_nfc_trimmed_and_lower_cased():
    assert unicodedata.normalize("NFD", NFC) == NFD
    assert normalise_email(NFD) == normalise_email(NFC) == NFC
    assert normalise_email("  Jos\u00c9@Example.COM\n") == NFC
    assert normalise_email("JOSE\u0301@EXAMPLE.COM") == NFC


@given(st.text())
def test_normalising_twice_changes_nothing(text):
    once = normalise_email(text)
    assert normalise_email(once) == once
    assert unicodedata.is_normalized("NFC", once)


@pytest.fixture
def addon(merchant_id):
    return create_product(merchant_id, host_product_id="host-7")


def _order(merchant_id: str, email: str) -> dict:
    return {"id": "order_1", "merchant_id": merchant_id, "buyer_email": email,
            "lines": [{"id": "l1", "host_product_id": "host-7", "quantity": 1}]}


@pytest.mark.parametrize("paid_as, used_as", [(NFD, NFC), (NFC, NFD), (NFD, NFD.upper()), (NFC, f" {NFD} ")],
                         ids=["nfd-then-nfc", "nfc-then-nfd", "nfd-then-upper", "nfc-then-padded-nfd"])
def test_credits_bought_with_one_spelling_are_used_with_another(app, client, auth, merchant_id, addon,
                                                               paid_as, used_as):
    app.extensions["addons"].plugin.order_paid(_order(merchant_id, paid_as), None)
    body = {"product_id": addon.id, "buyer_email": used_as}
    balance = client.post(USAGE, json=body, headers=auth)
    assert balance.status_code == 200, balance.get_json()
    assert (balance.get_json()["data"]["buyer_email"], balance.get_json()["data"]["balance"]) == (NFC, 100)
    for send in ({"json": {**body, "value": -40}}, {"data": {**body, "value": "-40"}}):  # JSON, then a form
        used = client.post(ADD, headers=auth, **send)
        assert used.status_code == 200, used.get_json()
    assert used.get_json()["data"]["balance"] == 20
    listed = client.get("/api/addons/accounts", query_string={"buyer_email": used_as}, headers=auth)
    assert [a["balance"] for a in listed.get_json()["data"]] == [20]


def test_credits_added_over_the_api_reach_the_signed_in_buyer(app, client, auth, merchant_id, addon):
    """Added with the decomposed spelling; the host's session holds the composed one."""
    added = client.post(ADD, json={"product_id": addon.id, "buyer_email": NFD, "value": 5}, headers=auth)
    assert added.status_code == 200, added.get_json()
    plugin = app.extensions["addons"].plugin
    plugin.buyer_loader(lambda: (merchant_id, NFC.upper()))
    assert plugin.current_buyer() == (merchant_id, NFC, None)
    mine = client.get("/api/addons/me/accounts")
    assert [a["balance"] for a in mine.get_json()["data"]] == [5]
    assert ledger.find_account_id(merchant_id, addon.id, NFD) == added.get_json()["data"]["account_id"]


def test_the_cli_finds_the_account_whatever_the_spelling(app, merchant_id, addon):
    app.extensions["addons"].plugin.order_paid(_order(merchant_id, NFC), None)
    result = app.test_cli_runner().invoke(args=["addons", "balance", "--merchant", merchant_id, "--product",
                                                addon.id, "--email", f" {NFD.upper()}"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["balance"] == 100
