"""The demo host's own data: its shop, campaigns, products and orders.

A real host already has all of this. It keeps it in its own database; the
plugin keeps add-ons, accounts and the ledger in its own (``ADDONS_DATABASE_URL``).
The only links are ids: the shop's ``addons_merchant_id`` and each add-on's
``host_product_id`` (the host product's id, as a string).
"""

from __future__ import annotations

from datetime import UTC, datetime

from peewee import (
    CharField,
    DateTimeField,
    DecimalField,
    ForeignKeyField,
    IntegerField,
    Model,
    SqliteDatabase,
    TextField,
)

__all__ = ["db", "bind", "close", "Shop", "Campaign", "Product", "Order", "OrderLine", "the_shop"]

#: The host's database (bound by :func:`bind`).
db = SqliteDatabase(None)

#: The host's own payment types; the plugin's ``get_product_types`` adds "Add on".
HOST_PRODUCT_TYPES = [{"id": "one_time", "label": "One-time"}, {"id": "subscription", "label": "Subscription"}]


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class _Model(Model):
    class Meta:
        database = db


class Shop(_Model):
    """The merchant's shop; ``addons_merchant_id`` is its merchant in the plugin."""

    name = CharField()
    addons_merchant_id = CharField()


class Campaign(_Model):
    name = CharField()
    description = TextField(default="")


class Product(_Model):
    """A host product. Its payment type picks whose pricing applies: the host's
    own (one-time, subscription) or the plugin's ("addon")."""

    campaign = ForeignKeyField(Campaign, backref="products")
    name = CharField()
    description = TextField(default="")
    payment_type = CharField(null=True)
    one_time_price = DecimalField(max_digits=12, decimal_places=2, null=True)
    subscription_price = DecimalField(max_digits=12, decimal_places=2, null=True)
    subscription_interval = CharField(null=True)


class Order(_Model):
    """A paid order; ``checkout_id`` (one per checkout form) makes a double submit one order."""

    checkout_id = CharField(unique=True)
    buyer_email = CharField()
    total = DecimalField(max_digits=14, decimal_places=3)
    currency = CharField()
    payment_method = CharField()
    charge_id = CharField(null=True)
    status = CharField(default="paid")
    created_at = DateTimeField(default=_now)


class OrderLine(_Model):
    order = ForeignKeyField(Order, backref="lines")
    product = ForeignKeyField(Product)
    quantity = IntegerField()


def bind(path: str) -> None:
    """Open the host's SQLite database and create its tables if needed."""
    db.init(path, pragmas={"journal_mode": "wal", "foreign_keys": 1}, check_same_thread=False)
    with db.connection_context():
        db.create_tables([Shop, Campaign, Product, Order, OrderLine], safe=True)


def close(exc: BaseException | None = None) -> None:
    """Give this thread's connection back at the end of a request."""
    if not db.is_closed():
        db.close()


def the_shop() -> Shop:
    """The demo runs one shop (a platform would look it up per signed-in merchant)."""
    return Shop.select().order_by(Shop.id).get()
