"""The merchant's side: campaigns, the product editor's Pricing tab, buyers and
the developer page. Add-on pricing is the plugin's: the tab shows what
``render_pricing_form`` returns and saves with ``save_pricing``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from markupsafe import Markup

from addon_plugin import accounts, merchants, product_body, products
from addon_plugin.errors import (
    AccountNotFound,
    BalanceLimitExceeded,
    Conflict,
    InsufficientCredits,
    NotFound,
    ValidationError,
)
from webhooks import EVENT_TYPES
from webhooks import endpoints as webhook_endpoints

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


# -- buyers ------------------------------------------------------------------------

@merchant.get("/buyers")
def buyers() -> str:
    merchant_id = _merchant_id()
    found = accounts.list_accounts(merchant_id, limit=500)["data"]
    names = {product_id: product_body(products.get_product(merchant_id, product_id))["name"]
             for product_id in {account["product_id"] for account in found}}
    return render_template("buyers.html", accounts=sorted(found, key=lambda a: (a["buyer_email"], a["id"])),
                           names=names)


@merchant.route("/buyers/<account_id>", methods=["GET", "POST"])
def buyer_account(account_id: str):
    """One buyer's account: its grants and ledger, and a manual adjustment with
    a reason (through the plugin's adjustment service: the API's schema and
    idempotency); credits added are a promotional grant, expiring after the
    days given (if any)."""
    merchant_id = _merchant_id()
    try:
        account = accounts.get_account(merchant_id, account_id)
    except AccountNotFound:
        abort(404)
    errors: dict[str, Any] = {}
    form: dict[str, Any] = {"idempotency_key": uuid.uuid4().hex}  # one per form: a double submit adjusts once
    if request.method == "POST":
        submitted = {name: request.form[name].strip() for name in ("value", "description", "idempotency_key")
                     if request.form.get(name, "").strip()}
        try:
            days = request.form.get("expires_in_days", "").strip()
            if days:
                if not days.isascii() or not days.isdigit() or not 1 <= int(days) <= 3650:
                    raise ValidationError(fields={"expires_in_days": ["Whole days from 1 to 3650, or empty."]})
                # Midnight UTC that many days ahead: a double submit sends the same moment.
                today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
                submitted["expires_at"] = (today + timedelta(days=int(days))).isoformat()
            change = accounts.adjust(merchant_id, account_id, submitted, actor="storefront:merchant")
            flash(f"Adjusted by {change['entry']['delta']:+d}: the balance is {change['balance']}.")
            return redirect(url_for(".buyer_account", account_id=account_id))
        except ValidationError as error:  # nothing was stored: the corrected form may reuse its key
            errors = {"expires_in_days" if name == "expires_at" else name: text
                      for name, text in error.messages.items()}
            form = request.form.to_dict()
        except (InsufficientCredits, BalanceLimitExceeded) as error:  # kept for that key: a new try needs a new one
            errors, form = {"value": [error.message]}, {**request.form.to_dict(), **form}
    entries = accounts.list_entries(merchant_id, account_id, limit=100)["data"]
    account_grants = accounts.list_grants(merchant_id, account_id, limit=100)["data"]
    return render_template("buyer_account.html", account=account,
                           addon=product_body(products.get_product(merchant_id, account["product_id"])),
                           entries=entries, grants=account_grants, errors=errors, form=form), 422 if errors else 200


# -- developers --------------------------------------------------------------------

def _developer_page(status: int = 200, *, errors: Any = None, form: Any = None, **shown: Any):
    merchant_id = _merchant_id()
    keys = merchants.list_api_keys(merchant_id, limit=100)["data"]
    endpoints = webhook_endpoints.list_endpoints(merchant_id, limit=100).data
    return render_template("developer.html", keys=keys, endpoints=endpoints, event_types=EVENT_TYPES,
                           errors=errors or {}, form=form or {},
                           receiver_url=url_for("webhook_receiver", _external=True), **shown), status


@merchant.get("/developer")
def developer():
    return _developer_page()


@merchant.post("/developer/api-keys")
def create_api_key():
    """The new key is shown in this response only (never put in a session or a log)."""
    return _developer_page(201, new_key=merchants.create_api_key(_merchant_id()))


@merchant.post("/developer/api-keys/<key_id>/revoke")
def revoke_api_key(key_id: str):
    try:
        merchants.revoke_api_key(key_id, _merchant_id())
    except NotFound:
        abort(404)
    flash(f"Revoked {key_id}: requests with it are refused from now on.")
    return redirect(url_for(".developer"))


@merchant.post("/developer/webhooks")
def create_webhook_endpoint():
    """The endpoint's signing secret is shown in this response only."""
    try:
        endpoint, secret = webhook_endpoints.create_endpoint(
            _merchant_id(), request.form.get("url", "").strip(), request.form.getlist("event_types") or None,
            request.form.get("description", "").strip())
    except ValidationError as error:
        return _developer_page(422, errors=error.messages, form=request.form)
    return _developer_page(201, new_endpoint=endpoint, new_secret=secret)


@merchant.get("/developer/webhooks/<endpoint_id>")
def webhook_deliveries(endpoint_id: str) -> str:
    merchant_id = _merchant_id()
    try:
        endpoint = webhook_endpoints.get_endpoint(merchant_id, endpoint_id)
    except NotFound:
        abort(404)
    deliveries = webhook_endpoints.list_deliveries(merchant_id, endpoint_id, limit=100).data
    return render_template("deliveries.html", endpoint=endpoint, deliveries=deliveries)


@merchant.post("/developer/deliveries/<delivery_id>/redeliver")
def redeliver(delivery_id: str):
    try:
        delivery = webhook_endpoints.redeliver(_merchant_id(), delivery_id)
    except NotFound:
        abort(404)
    except Conflict as error:
        flash(error.message)
        return redirect(url_for(".developer"))
    flash(f"Delivery {delivery.id} queued again; the worker makes the attempt.")
    return redirect(url_for(".webhook_deliveries", endpoint_id=delivery.endpoint_id))
