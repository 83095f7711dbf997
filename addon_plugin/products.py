"""Add-on products: create, change, read. Validated data in, rows out.

A change applies to future purchases and top-ups; ``product_saved`` is sent
inside the transaction so subscribers (e.g. auto top-up switching off when
``top_up_allowed`` goes false) change state together with the product.

Hosts read products here (the public names in ``__all__``; a row is read as the
API's resource with ``addon_plugin.product_body``) and save them with the
``save_pricing`` hook, which validates first: ``create_product`` and
``update_product`` take data a schema already loaded.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from flask import current_app

import storage
from storage import new_id, transaction, utcnow

from . import signals
from .errors import ProductNotFound, ValidationError
from .money import from_minor, parse_price, to_minor

__all__ = ["get_product", "product_for_host"]


def _columns(data: dict[str, Any], currency: str) -> dict[str, Any]:
    """Schema output → column values (price as minor units of ``currency``)."""
    columns = {k: v for k, v in data.items() if k in (
        "name", "currency", "credit_amount", "top_up_allowed", "overdraft_limit", "host_product_id")}
    if "price" in data:
        try:
            price = parse_price(str(data["price"]), currency)
        except ValueError as error:
            raise ValidationError(fields={"price": [str(error)]}) from None
        columns["price_minor"] = to_minor(Decimal(price), currency)
    return columns


def create_product(merchant_id: str, data: dict[str, Any]) -> storage.Product:
    """A new add-on product from :class:`~addon_plugin.schemas.ProductCreateSchema` data."""
    currency = data.get("currency") or current_app.config["ADDONS_DEFAULT_CURRENCY"]
    columns = _columns(data, currency)
    columns.setdefault("name", f"{data['credit_amount']} credits")
    columns["currency"] = currency
    with transaction():
        _check_host_product_id(merchant_id, columns.get("host_product_id"), None)
        product = storage.Product.create(id=new_id("prod"), merchant=merchant_id, **columns)
        signals.product_saved.send(current_app._get_current_object(), product=product, created=True)
    return product


def update_product(merchant_id: str, product_id: str, data: dict[str, Any]) -> storage.Product:
    """Apply :class:`~addon_plugin.schemas.ProductUpdateSchema` data to a product."""
    with transaction():
        product = get_product(merchant_id, product_id)
        currency = data.get("currency") or product.currency
        columns = _columns(data, currency)
        if "currency" in data and "price" not in data:
            # The stored minor units mean something else in another currency.
            columns.update(_columns({"price": str(from_minor(product.price_minor, product.currency))}, currency))
        _check_host_product_id(merchant_id, columns.get("host_product_id"), product.id)
        if columns:
            columns["updated_at"] = utcnow()
            storage.Product.update(**columns).where(storage.Product.id == product.id).execute()
            product = get_product(merchant_id, product_id)
        signals.product_saved.send(current_app._get_current_object(), product=product, created=False)
    return product


def get_product(merchant_id: str, product_id: str) -> storage.Product:
    """The merchant's product, or :class:`ProductNotFound` (also for another merchant's)."""
    product = storage.Product.get_or_none(
        (storage.Product.id == product_id) & (storage.Product.merchant == merchant_id))
    if product is None:
        raise ProductNotFound(product_id=product_id)
    return product


def product_for_host(merchant_id: str, host_product_id: str) -> storage.Product | None:
    """The add-on product the host knows by ``host_product_id``, if any."""
    return storage.Product.get_or_none(
        (storage.Product.merchant == merchant_id) & (storage.Product.host_product_id == host_product_id))


def _check_host_product_id(merchant_id: str, host_product_id: str | None, own_id: str | None) -> None:
    if host_product_id is None:
        return
    other = product_for_host(merchant_id, host_product_id)
    if other is not None and other.id != own_id:
        raise ValidationError(fields={"host_product_id": ["Another add-on already uses this host product id."]})
