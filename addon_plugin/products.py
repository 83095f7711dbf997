"""Add-on products: create, change, read. Validated data in, rows out.

What only the whole product can tell is checked here, for the API and the
pricing form alike: a price's digits against its currency (a currency change
needs the price in the new one), and that the largest top-up
(``ADDONS_TOP_UP_MAX_BANKS`` times the price) fits the amount column.

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
from .money import MAX_MINOR, from_minor, parse_price, to_minor
from .state import current_app_object

__all__ = ["get_product", "product_for_host"]


def _columns(data: dict[str, Any], currency: str) -> dict[str, Any]:
    """Schema output → column values (price as minor units of ``currency``)."""
    columns = {k: v for k, v in data.items() if k in (
        "name", "currency", "credit_amount", "top_up_allowed", "overdraft_limit", "host_product_id",
        "credit_expiry_days")}
    if "price" in data:
        try:
            price = parse_price(str(data["price"]), currency)
        except ValueError as error:
            raise ValidationError(fields={"price": [str(error)]}) from None
        columns["price_minor"] = to_minor(Decimal(price), currency)
        _check_largest_top_up(columns["price_minor"], currency)
    return columns


def _check_largest_top_up(price_minor: int, currency: str) -> None:
    """Refuse a price whose largest top-up could not be stored (found at save,
    not when a card has been charged)."""
    banks = int(current_app.config["ADDONS_TOP_UP_MAX_BANKS"])
    if price_minor * banks > MAX_MINOR:
        largest = from_minor(MAX_MINOR // banks, currency)
        message = (f"Too large: one auto top-up may buy {banks} banks at this price, and that amount is more "
                   f"than can be stored. The largest price is {largest} {currency}.")
        raise ValidationError(fields={"price": [message]})


def create_product(merchant_id: str, data: dict[str, Any]) -> storage.Product:
    """A new add-on product from :class:`~addon_plugin.schemas.ProductCreateSchema` data."""
    currency = data.get("currency") or current_app.config["ADDONS_DEFAULT_CURRENCY"]
    columns = _columns(data, currency)
    columns.setdefault("name", f"{data['credit_amount']} credits")
    columns["currency"] = currency
    with transaction():
        _check_host_product_id(merchant_id, columns.get("host_product_id"), None)
        product = storage.Product.create(id=new_id("prod"), merchant=merchant_id, **columns)
        signals.product_saved.send(current_app_object(), product=product, created=True)
    return product


def update_product(merchant_id: str, product_id: str, data: dict[str, Any]) -> storage.Product:
    """Apply :class:`~addon_plugin.schemas.ProductUpdateSchema` data to a product."""
    with transaction():
        product = get_product(merchant_id, product_id)
        currency = data.get("currency") or product.currency
        if currency != product.currency and "price" not in data:
            # 19.00 USD is not 19.00 EUR, and may not even be a valid JPY amount.
            message = f"Required when the currency changes: give the price in {currency}."
            raise ValidationError(fields={"price": [message]})
        columns = _columns(data, currency)
        _check_host_product_id(merchant_id, columns.get("host_product_id"), product.id)
        if columns:
            columns["updated_at"] = utcnow()
            storage.Product.update(**columns).where(storage.Product.id == product.id).execute()
            product = get_product(merchant_id, product_id)
        signals.product_saved.send(current_app_object(), product=product, created=False)
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
