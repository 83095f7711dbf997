"""The drop-in pages on a host app: loaders the test sets (``signed_in``), a
secret key for the CSRF tokens, the test gateway with top-ups charged inline.
Every test runs on SQLite and PostgreSQL (``database_url``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

import storage
from addon_plugin import AddonPlugin, ledger, merchants
from addon_plugin.topup import TestGateway
from tests.helpers import create_product, on_empty_database


@pytest.fixture
def signed_in() -> dict[str, Any]:
    """Who the host's loaders say is signed in: ``merchant`` (an id) and ``buyer`` (a tuple)."""
    return {"merchant": None, "buyer": None}


@pytest.fixture
def app(database_url, tmp_path, signed_in) -> Iterator[Flask]:
    """A host app with the plugin and its pages mounted at the default prefixes."""
    app = Flask("host", instance_path=str(tmp_path))
    app.config.update(TESTING=True, SECRET_KEY="test-secret", ADDONS_DATABASE_URL=database_url,
                      ADDONS_PAYMENT_GATEWAY=TestGateway(), ADDONS_TOP_UP_MODE="inline",
                      ADDONS_WEBHOOK_ALLOW_PRIVATE_URLS=True)
    plugin = AddonPlugin(app)
    plugin.merchant_loader(lambda: signed_in["merchant"])
    plugin.buyer_loader(lambda: signed_in["buyer"])
    plugin.payment_methods_loader(lambda: [("pm_card_visa", "Visa 4242"), ("pm_card_chargeDeclined", "Visa 0002")])
    with on_empty_database(app):
        yield app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def merchant_id(app, signed_in) -> str:
    """The signed-in merchant (the console's)."""
    merchant, _ = merchants.create_merchant("Acme Rockets")
    signed_in["merchant"] = merchant.id
    return merchant.id


@pytest.fixture
def other_merchant_id(app) -> str:
    return merchants.create_merchant("Other Rockets")[0].id


@pytest.fixture
def product(merchant_id) -> storage.Product:
    return create_product(merchant_id)


@pytest.fixture
def account_id(merchant_id, product, signed_in) -> str:
    """bob's account with 1000 purchased credits; bob is the signed-in buyer."""
    account_id = ledger.open_account(merchant_id, product.id, "bob@example.com")
    ledger.record(account_id, 1000, "purchase", reference="order_1", actor="hook:order_paid",
                  description="1 × 100 credits")
    signed_in["buyer"] = (merchant_id, "bob@example.com")
    return account_id
