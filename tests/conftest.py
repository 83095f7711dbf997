"""Fixtures that chain: database_url → app → merchant → product → account
(→ auto_account_id, with the top-up fixtures other areas use too).

Every test that uses ``app`` runs twice: on SQLite (a file in tmp_path) and on
PostgreSQL (a database made for this run and dropped after it). The PostgreSQL
runs skip, saying why, when no server answers at ``ADDONS_TEST_POSTGRES_URL``
(default ``postgresql://postgres@127.0.0.1:5432/postgres``).
"""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator

import pytest
from flask import Flask

import storage
from addon_plugin import ledger, merchants, signals
from addon_plugin.topup import TestGateway, set_auto_top_up
from tests.helpers import POSTGRES_ADMIN_URL, THRESHOLD, Clock, bearer, create_product, make_app, on_empty_database


def _postgres_admin():
    import psycopg2

    conn = psycopg2.connect(POSTGRES_ADMIN_URL, connect_timeout=3)
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, migrated once."""
    try:
        admin = _postgres_admin()
    except Exception as error:  # no driver, no server: say so and skip
        pytest.skip(f"PostgreSQL not available at {POSTGRES_ADMIN_URL}: {error}".strip())
    name = f"addons_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    url = f"{base}/{name}"
    try:
        yield url
    finally:
        storage.unbind()  # release the pool's connections
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(autouse=True)
def _release_database() -> Iterator[None]:
    """Unbind the database a test bound (through a host app it made, say), so the
    next test may bind its own; one bound by a wider fixture stays bound."""
    bound = storage.db.obj
    yield
    if storage.db.obj is not bound:
        storage.unbind()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """The URL of an empty, migrated database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/addons.sqlite3"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(params=["sqlite", "postgresql"])
def new_database(request, tmp_path) -> Iterator[Callable[[], str]]:
    """Makes empty, unmigrated databases of each kind: each call returns a new one's URL."""
    made: list[str] = []
    admin = None
    if request.param == "postgresql":
        try:
            admin = _postgres_admin()
        except Exception as error:
            pytest.skip(f"PostgreSQL not available at {POSTGRES_ADMIN_URL}: {error}".strip())

    def make() -> str:
        name = f"addons_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        made.append(name)
        if admin is None:
            return f"sqlite:///{tmp_path}/{name}.sqlite3"
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        return f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"

    yield make
    if admin is not None:
        storage.unbind()
        with admin.cursor() as cursor:
            for name in made:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def app(database_url, tmp_path) -> Iterator[Flask]:
    """The host app, inside an app context, on an empty migrated database."""
    app = make_app(database_url, str(tmp_path))
    with on_empty_database(app):
        yield app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def merchant(app):
    """A merchant and its first API key: ``(merchant, key)``."""
    return merchants.create_merchant("Acme Rockets")


@pytest.fixture
def merchant_id(merchant) -> str:
    return merchant[0].id


@pytest.fixture
def api_key(merchant) -> str:
    return merchant[1].key


@pytest.fixture
def product(merchant_id) -> storage.Product:
    return create_product(merchant_id)


@pytest.fixture
def account_id(merchant_id, product) -> str:
    """An empty account for bob@example.com."""
    return ledger.open_account(merchant_id, product.id, "bob@example.com")


@pytest.fixture
def funded_account_id(account_id) -> str:
    """bob's account holding 1000 credits."""
    ledger.record(account_id, 1000, "purchase", reference="order_1")
    return account_id


@pytest.fixture
def clock(monkeypatch) -> Clock:
    """The ledger's clock (``ledger.utcnow``), frozen until advanced."""
    clock = Clock()
    monkeypatch.setattr(ledger, "utcnow", clock)
    return clock


# -- the HTTP API ---------------------------------------------------------------------

@pytest.fixture
def auth(api_key) -> dict[str, str]:
    """Headers authenticating as the merchant."""
    return bearer(api_key)


@pytest.fixture
def other_auth(app) -> dict[str, str]:
    """Headers authenticating as a second, unrelated merchant."""
    return bearer(merchants.create_merchant("Other Rockets")[1].key)


@pytest.fixture
def real_ids(merchant, product, funded_account_id) -> dict[str, str]:
    """Ids of real objects, so the schemathesis walk's requests reach past the 404s.
    The key id is a spare key's: revoking it must not lock the run out."""
    return {"product_id": product.id, "account_id": funded_account_id,
            "key_id": merchants.create_api_key(merchant[0].id).id}

# -- top-ups (the API, hooks and webhooks use them too) -------------------------------


@pytest.fixture
def gateway(app) -> TestGateway:
    """The app's payment gateway: a fresh :class:`TestGateway` to inspect."""
    gateway = TestGateway()
    app.config["ADDONS_PAYMENT_GATEWAY"] = gateway
    return gateway


@pytest.fixture
def auto_account_id(funded_account_id, merchant_id, gateway) -> str:
    """bob's account: 1000 credits, auto top-up on at threshold 500 with a good card."""
    set_auto_top_up(funded_account_id, merchant_id=merchant_id, enabled=True, threshold=THRESHOLD,
                    payment_method="pm_card_visa")
    return funded_account_id


@pytest.fixture
def received(app) -> Iterator[dict[str, list[dict]]]:
    """The kwargs of every top-up signal the app sends, by signal name."""
    seen: dict[str, list[dict]] = defaultdict(list)
    receivers = {}
    for name in ("top_up_succeeded", "top_up_failed", "top_up_unresolved", "auto_top_up_disabled"):
        def receiver(sender, _name=name, **kwargs):
            assert sender is app
            seen[_name].append(kwargs)
        receivers[name] = receiver
        getattr(signals, name).connect(receiver, sender=app)
    yield seen
    for name, receiver in receivers.items():
        getattr(signals, name).disconnect(receiver, sender=app)
