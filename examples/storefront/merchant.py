"""The merchant's side the host owns: campaigns and the product editor, whose
Pricing tab shows what the plugin's ``render_pricing_form`` returns and saves
with ``save_pricing``. Buyers, API keys and webhooks are the plugin's merchant
console (mounted at ``ADDONS_CONSOLE_PREFIX``)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from markupsafe import Markup

from addon_plugin import product_body, products
from addon_plugin.errors import ValidationError

from . import shop
from .addons import plugin

merchant = Blueprint("merchant", __name__)


def _merchant_id() -> str:
    return plugin.current_merchant_id()


def _product(campaign_id: int, product_id: int) -> shop.Product:
    product = shop.Product.get_or_none((shop.Product.id == product_id) & (shop.Product.campaign == campaign_id))
    if product is None:
        abort(404)
    return product


def _type_labels() -> dict[str, str]:
    """Payment type id → label: the host's own types plus the plugin's."""
    return {t["id"]: t["label"] for t in plugin.get_product_types(shop.HOST_PRODUCT_TYPES)}


def _addon_of(product: shop.Product):
    """The plugin's add-on for this host product, if it has one."""
    return products.product_for_host(_merchant_id(), str(product.id))


@merchant.get("/campaigns")
def campaigns() -> str:
    return render_template("campaigns.html", campaigns=shop.Campaign.select().order_by(shop.Campaign.id),
                           types=_type_labels())


@merchant.get("/campaigns/<int:campaign_id>/products/<int:product_id>")
def product(campaign_id: int, product_id: int) -> str:
    item = _product(campaign_id, product_id)
    addon = _addon_of(item)
    return render_template("product.html", product=item, addon=product_body(addon) if addon else None,
                           types=_type_labels())


@merchant.route("/campaigns/<int:campaign_id>/products/<int:product_id>/edit", methods=["GET", "POST"])
def edit_product(campaign_id: int, product_id: int):
    item = _product(campaign_id, product_id)
    if request.args.get("tab") == "pricing":
        return _pricing_tab(item)
    return _details_tab(item)


def _details_tab(item: shop.Product):
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        name = request.form.get("name", "").strip()
        if not name:
            errors["name"] = ["Enter a name."]
        else:
            item.name, item.description = name, request.form.get("description", "").strip()
            item.save()
            flash("Details saved.")
            return redirect(url_for(".edit_product", campaign_id=item.campaign_id, product_id=item.id))
    return render_template("product_edit.html", tab="details", product=item, errors=errors,
                           form=request.form if request.method == "POST" else None), 422 if errors else 200


def _host_pricing(payment_type: str, form: Any) -> dict[str, Any]:
    """The host's own pricing fields (one-time, subscription), or per-field errors."""
    field = {"one_time": "one_time_price", "subscription": "subscription_price"}[payment_type]
    try:
        price = Decimal(form.get(field, "").strip())
        valid = price.is_finite() and price > 0 and price == price.quantize(Decimal("0.01"))
    except InvalidOperation:
        valid = False
    if not valid:
        raise ValidationError(fields={field: ["Enter a price greater than 0, like 9.00."]})
    values = {field: price}
    if payment_type == "subscription":
        interval = form.get("subscription_interval")
        if interval not in ("month", "year"):
            raise ValidationError(fields={"subscription_interval": ["Choose month or year."]})
        values["subscription_interval"] = interval
    return values


def _pricing_tab(item: shop.Product):
    types = plugin.get_product_types(shop.HOST_PRODUCT_TYPES)
    chosen = request.form.get("payment_type") if request.method == "POST" else item.payment_type
    errors: dict[str, Any] = {}
    if request.method == "POST":
        try:
            if chosen == "addon":
                plugin.save_pricing("addon", request.form, None, merchant=_merchant_id(),
                                    host_product_id=str(item.id))
                values = {}
            elif chosen in ("one_time", "subscription"):
                values = _host_pricing(chosen, request.form)
            else:
                raise ValidationError(fields={"payment_type": ["Choose a payment type."]})
            shop.Product.update(payment_type=chosen, **values).where(shop.Product.id == item.id).execute()
            flash("Pricing saved.")
            return redirect(url_for(".edit_product", campaign_id=item.campaign_id, product_id=item.id,
                                    tab="pricing"))
        except ValidationError as error:
            errors = error.messages
    submitted = request.form if request.method == "POST" else None
    addon_fields = plugin.render_pricing_form(
        "addon", Markup(""), product=_addon_of(item), data=submitted if chosen == "addon" else None,
        errors=errors if chosen == "addon" else None)
    return render_template("product_edit.html", tab="pricing", product=item, types=types, chosen=chosen,
                           addon_fields=addon_fields, errors=errors if chosen != "addon" else {},
                           form=submitted), 422 if errors else 200
