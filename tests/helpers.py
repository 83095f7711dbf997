"""Plain helpers the tests share (fixtures live in the conftest files).

Import them as ``from tests.helpers import ledger_sum``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from flask import Flask
from peewee import fn

import storage
from addon_plugin import AddonPlugin

POSTGRES_ADMIN_URL = os.environ.get("ADDONS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def make_app(database_url: str, instance_path: str, **config) -> Flask:
    """A host app with the plugin mounted, as a host would do it."""
    app = Flask("host", instance_path=instance_path)
    app.config.update(TESTING=True, ADDONS_DATABASE_URL=database_url, **config)
    AddonPlugin(app)
    return app


def empty_postgres() -> None:
    """Empty every table of the bound PostgreSQL database but the schema version."""
    tables = [m._meta.table_name for m in storage.ALL_MODELS if m is not storage.SchemaVersion]
    if storage.SchemaVersion.table_exists():
        existing = set(storage.db.get_tables())
        names = ", ".join(f'"{t}"' for t in tables if t in existing)
        if names:
            storage.db.execute_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")


@contextmanager
def on_empty_database(app: Flask) -> Iterator[Flask]:
    """``app`` in its app context, on its migrated database emptied (the run shares one
    PostgreSQL database between tests); the database is unbound afterwards."""
    with app.app_context():
        storage.migrate()
        if storage.dialect() == "postgresql":
            empty_postgres()
        yield app
    storage.unbind()


def create_product(merchant_id: str, **fields) -> storage.Product:
    """An add-on product row (the products service comes with the API)."""
    values = dict(name="100 credits", price_minor=1900, currency="USD", credit_amount=100,
                  top_up_allowed=True, overdraft_limit=0)
    values.update(fields)
    return storage.Product.create(id=storage.new_id("prod"), merchant=merchant_id, **values)


def ledger_sum(account_id: str) -> int:
    """The sum of the account's ledger, straight from the table."""
    total = (storage.LedgerEntry.select(fn.COALESCE(fn.SUM(storage.LedgerEntry.delta), 0))
             .where(storage.LedgerEntry.account == account_id).scalar())
    return int(total)


def sequences(account_id: str) -> list[int]:
    """The account's ledger sequence numbers, in order."""
    rows = (storage.LedgerEntry.select(storage.LedgerEntry.sequence)
            .where(storage.LedgerEntry.account == account_id).order_by(storage.LedgerEntry.sequence))
    return [row.sequence for row in rows]


class Clock:
    """The ledger's clock, moved by hand (time-dependent rules, no sleeps)."""

    def __init__(self) -> None:
        self.now = storage.utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def bearer(key: str) -> dict[str, str]:
    """Request headers carrying ``key`` as a Bearer token."""
    return {"Authorization": f"Bearer {key}"}


def run_concurrently(work: Callable[[int], object], count: int, *, app: Flask | None = None,
                     timeout: float = 60) -> list[BaseException]:
    """Run ``work(index)`` for index 0..count-1, each in its own thread, released
    together by a barrier; each inside its own app context (its own connection)
    when ``app`` is given. Returns the exceptions raised, for the test to check."""
    start = threading.Barrier(count, timeout=timeout)
    failures: list[BaseException] = []

    def run(index: int) -> None:
        try:
            start.wait()
            if app is None:
                work(index)
            else:
                with app.app_context():
                    work(index)
        except BaseException as error:  # surfaced to the test
            failures.append(error)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a thread is still running"
    return failures


# -- top-ups ------------------------------------------------------------------------------

#: The auto top-up threshold of the ``auto_account_id`` fixture.
THRESHOLD = 500

def settings_of(auto_top_up: dict) -> dict:
    """An account's ``auto_top_up`` without its visible state: the settings alone."""
    return {name: auto_top_up[name] for name in ("enabled", "payment_method", "customer")}


#: The visible auto top-up state of an account that never had a top-up or a limit.
QUIET = {"monthly_limit": None, "consecutive_failures": 0, "last_failure": None, "retry_at": None,
         "last_top_up": None}


def top_ups(account_id: str) -> list[storage.TopUp]:
    """The account's top-ups, oldest first."""
    return list(storage.TopUp.select().where(storage.TopUp.account == account_id).order_by(
        storage.TopUp.created_at, storage.TopUp.id))


def top_up_entries(account_id: str) -> list[storage.LedgerEntry]:
    """The account's ``top_up`` ledger entries."""
    return list(storage.LedgerEntry.select().where(
        (storage.LedgerEntry.account == account_id) & (storage.LedgerEntry.kind == "top_up")))


def account_row(account_id: str) -> storage.CreditAccount:
    return storage.CreditAccount.get_by_id(account_id)
