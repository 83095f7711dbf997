"""Fixtures that chain: database_url → app → merchant → product → account.

Every test that uses ``app`` runs twice: on SQLite (a file in tmp_path) and on
PostgreSQL (a database made for this run and dropped after it). The PostgreSQL
runs skip, saying why, when no server answers at ``ADDONS_TEST_POSTGRES_URL``
(default ``postgresql://postgres@127.0.0.1:5432/postgres``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
from flask import Flask

import storage
from addon_plugin import AddonPlugin, ledger, merchants

POSTGRES_ADMIN_URL = os.environ.get("ADDONS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


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


def _empty_postgres() -> None:
    tables = [m._meta.table_name for m in storage.ALL_MODELS if m is not storage.SchemaVersion]
    if storage.SchemaVersion.table_exists():
        existing = set(storage.db.get_tables())
        names = ", ".join(f'"{t}"' for t in tables if t in existing)
        if names:
            storage.db.execute_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")


def make_app(database_url: str, instance_path: str, **config) -> Flask:
    """A host app with the plugin mounted, as a host would do it."""
    app = Flask("host", instance_path=instance_path)
    app.config.update(TESTING=True, ADDONS_DATABASE_URL=database_url, **config)
    AddonPlugin(app)
    return app


@pytest.fixture
def app(database_url, tmp_path) -> Iterator[Flask]:
    """The host app, inside an app context, on an empty migrated database."""
    app = make_app(database_url, str(tmp_path))
    with app.app_context():
        storage.migrate()
        if storage.dialect() == "postgresql":
            _empty_postgres()
        yield app
    storage.unbind()


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


def create_product(merchant_id: str, **fields) -> storage.Product:
    """An add-on product row (the products service comes with the API)."""
    values = dict(name="100 credits", price_minor=1900, currency="USD", credit_amount=100,
                  top_up_allowed=True, overdraft_limit=0)
    values.update(fields)
    return storage.Product.create(id=storage.new_id("prod"), merchant=merchant_id, **values)


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


def ledger_sum(account_id: str) -> int:
    """The sum of the account's ledger, straight from the table."""
    from peewee import fn

    total = (storage.LedgerEntry.select(fn.COALESCE(fn.SUM(storage.LedgerEntry.delta), 0))
             .where(storage.LedgerEntry.account == account_id).scalar())
    return int(total)


def sequences(account_id: str) -> list[int]:
    rows = (storage.LedgerEntry.select(storage.LedgerEntry.sequence)
            .where(storage.LedgerEntry.account == account_id).order_by(storage.LedgerEntry.sequence))
    return [row.sequence for row in rows]


__all__ = ["Decimal", "make_app", "create_product", "ledger_sum", "sequences", "bearer"]


# -- the HTTP API ---------------------------------------------------------------------

def bearer(key: str) -> dict[str, str]:
    """Request headers carrying ``key`` as a Bearer token."""
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def auth(api_key) -> dict[str, str]:
    """Headers authenticating as the merchant."""
    return bearer(api_key)


@pytest.fixture
def other_auth(app) -> dict[str, str]:
    """Headers authenticating as a second, unrelated merchant."""
    return bearer(merchants.create_merchant("Other Rockets")[1].key)
