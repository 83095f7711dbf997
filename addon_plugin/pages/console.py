"""The merchant console: products, buyers and their accounts, adjustments and
promotional grants, charts, API keys and webhook endpoints with their
deliveries. Every read and write is the signed-in merchant's own (another
merchant's id is 404), through the services the API uses. The developer
pages (API keys, webhooks) are in :mod:`addon_plugin.pages.developers`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import abort, flash, g, redirect, render_template, request, url_for

import storage

from .. import accounts, idempotency, products
from ..errors import AddonError, NotFound, ValidationError
from ..hooks import PRICING_FIELDS, load_pricing
from ..plain import plain
from ..present import product_body
from ..schemas import AdjustmentCreateSchema, load_fields
from . import reports
from .charts import bar_chart
from .common import make_blueprint, new_key, plugin

__all__ = ["console", "current_merchant", "page", "own"]

console = make_blueprint("addons_console", lambda host: host.current_merchant_id(), "addons_merchant_id")
_adjustment_schema = AdjustmentCreateSchema()


def current_merchant() -> str:
    """The signed-in merchant's id (the guard above made sure there is one)."""
    return str(g.addons_merchant_id)


def page(template: str, status: int = 200, **context: Any) -> Any:
    """``addons/console/<template>`` rendered, with its status."""
    return render_template(f"addons/console/{template}", **context), status


def own(fetch: Any, *args: Any) -> Any:
    """``fetch(merchant_id, *args)``, or 404 when it is not the merchant's."""
    try:
        return fetch(current_merchant(), *args)
    except NotFound:
        abort(404)


# -- overview -------------------------------------------------------------------

@console.get("/")
def overview() -> Any:
    """Charts of credits used and top-up revenue per day."""
    used, revenue = reports.merchant_days(current_merchant())
    charts = [bar_chart("chart-used", f"Credits used per day, last {reports.DAYS} days", used.days,
                        [("Used", "used", used.series["used"])], "credits")]
    charts += [bar_chart(f"chart-revenue-{currency}", f"Top-up revenue per day ({currency})", daily.days,
                         [("Revenue", "revenue", daily.series["revenue"])], currency)
               for currency, daily in revenue.items()]
    return page("overview.html", charts=charts, has_revenue=bool(revenue))


# -- products -------------------------------------------------------------------

@console.get("/products")
def product_list() -> Any:
    product = storage.Product
    rows = product.select().where(product.merchant == current_merchant()).order_by(product.id.desc())
    return page("products.html", products=[product_body(row) for row in rows])


def _pricing_page(product: storage.Product | None, status: int = 200, errors: Any = None) -> Any:
    fields = plugin().render_pricing_form("addon", "", product=product,
                                          data=request.form if request.method == "POST" else None, errors=errors)
    key = (request.form.get("idempotency_key") if request.method == "POST" else None) or new_key()
    return page("product_edit.html", status, product=product_body(product) if product else None, fields=fields,
                 idempotency_key=None if product else key)


@console.route("/products/new", methods=["GET", "POST"])
def product_new() -> Any:
    """A new product, once per form (its idempotency key, in the merchant's API key space)."""
    if request.method == "GET":
        return _pricing_page(None)
    merchant_id = current_merchant()
    try:
        loaded = load_pricing(request.form)
        outcome = idempotency.run(
            merchant_id, request.form.get("idempotency_key") or None,
            idempotency.fingerprint("host", "create_product", loaded),
            lambda: (product_body(products.create_product(merchant_id, loaded)), 201))
    except ValidationError as error:
        return _pricing_page(None, 422, error.messages)
    if outcome.status >= 400:
        return _pricing_page(None, 422, AddonError.from_dict(outcome.body, outcome.status).fields or
                             {"general": [outcome.body["error"]["message"]]})
    flash(f"Product {outcome.body['name']} created.")
    return redirect(url_for(".product_list"))


@console.route("/products/<product_id>", methods=["GET", "POST"])
def product_edit(product_id: str) -> Any:
    """Edit a product; switching it to one-time purchase first says how many
    buyers' auto top-up that switches off, and asks to confirm."""
    product = own(products.get_product, product_id)
    if request.method == "GET":
        return _pricing_page(product)
    try:
        loaded = load_pricing(request.form)
    except ValidationError as error:
        return _pricing_page(product, 422, error.messages)
    if product.top_up_allowed and loaded.get("top_up_allowed") is False and request.form.get("confirmed") != "yes":
        affected = (storage.CreditAccount.select().where((storage.CreditAccount.product == product.id)
                                                         & storage.CreditAccount.auto_top_up_enabled).count())
        if affected:
            kept = [(name, request.form.get(name, "")) for name in PRICING_FIELDS]
            return page("product_confirm.html", product=product_body(product), affected=affected, kept=kept)
    try:
        product = products.update_product(current_merchant(), product_id, loaded)
    except ValidationError as error:
        return _pricing_page(product, 422, plain(error.messages, keep=("price",)))
    flash(f"Product {product.name} saved.")
    return redirect(url_for(".product_list"))


# -- buyers and accounts ----------------------------------------------------------

@console.get("/buyers")
def buyers() -> Any:
    email = request.args.get("email", "").strip().lower()
    found = accounts.list_accounts(current_merchant(), buyer_email=email or None, limit=500)["data"] if (
        not email or "@" in email) else []
    names = {row.id: row.name for row in storage.Product.select().where(storage.Product.merchant == current_merchant())}
    return page("buyers.html", accounts=sorted(found, key=lambda a: (a["buyer_email"], a["id"])), names=names,
                 email=email)


def _account_page(account_id: str, status: int = 200, *, form: str | None = None, values: Any = None,
                  errors: Any = None) -> Any:
    """One account: balance, auto top-up state and consent records, holds,
    grants, ledger, top-ups; the adjustment and grant forms."""
    merchant_id = current_merchant()
    account = own(accounts.get_account, account_id)
    forms = {"adjust": {"idempotency_key": new_key()}, "grant": {"idempotency_key": new_key()}}
    form_errors: dict[str, Any] = {"adjust": {}, "grant": {}}
    if form is not None:
        forms[form], form_errors[form] = values, errors or {}
    return page("account.html", status, account=account,
                 product=product_body(products.get_product(merchant_id, account["product_id"])),
                 entries=accounts.list_entries(merchant_id, account_id, limit=100)["data"],
                 grants=accounts.list_grants(merchant_id, account_id, limit=100)["data"],
                 top_ups=accounts.list_top_ups(merchant_id, account_id, limit=50)["data"],
                 holds=accounts.list_holds(merchant_id, account_id, limit=50)["data"],
                 consents=accounts.list_consents(merchant_id, account_id, limit=50)["data"],
                 forms=forms, errors=form_errors)


@console.get("/accounts/<account_id>")
def account(account_id: str) -> Any:
    return _account_page(account_id)


def _expires_at(days: str) -> str:
    """Midnight UTC ``days`` days ahead (a double submit names the same moment)."""
    if not (days.isascii() and days.isdigit() and 1 <= int(days) <= 3650):
        raise ValueError(days)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (today + timedelta(days=int(days))).isoformat()


def _adjustment(data: dict[str, Any]) -> dict[str, Any]:
    """The adjustment service's fields from a console form; every bad field at once."""
    given = {name: value for name, value in data.items() if value not in ("", None)}
    days = request.form.get("expires_in_days", "").strip()
    if days:
        try:
            given["expires_at"] = _expires_at(days)
        except ValueError:
            given.pop("expires_at", None)
            problems: dict[str, Any] = {"expires_in_days": ["bad"]}
            try:
                load_fields(_adjustment_schema, given)
            except ValidationError as error:
                problems.update(error.messages)
            raise ValidationError(fields=problems) from None
    return given


def _write_to_account(account_id: str, form: str, data: dict[str, Any]) -> Any:
    """An adjustment through the API's idempotent service; a refusal re-shows the form."""
    own(accounts.get_account, account_id)
    field = "amount" if form == "grant" else "value"
    try:
        change = accounts.adjust(current_merchant(), account_id, _adjustment(data), actor="console")
    except ValidationError as error:  # nothing stored: the corrected form may reuse its key
        messages = {"expires_in_days" if name == "expires_at" else name: text for name, text in error.messages.items()}
        if field == "amount" and "value" in messages:
            messages["amount"] = messages.pop("value")
        keep = ("expires_in_days",) if "expires_at" in error.messages else ()
        messages.pop("category", None)  # follows from the value's sign: the value's message says it
        return _account_page(account_id, 422, form=form, values=request.form.to_dict(),
                             errors=plain(messages, keep=keep))
    except AddonError as error:  # the refusal is kept for that key: a new try needs a new one
        values = {**request.form.to_dict(), "idempotency_key": new_key()}
        return _account_page(account_id, 422, form=form, values=values, errors={field: [error.message]})
    flash(f"{'Granted' if form == 'grant' else 'Adjusted by'} {change['entry']['delta']:+d} credits: "
          f"the balance is {change['balance']}.")
    return redirect(url_for(".account", account_id=account_id))


@console.post("/accounts/<account_id>/adjustments")
def adjust(account_id: str) -> Any:
    """A manual adjustment with a reason (credits added are a paid grant, as a correction)."""
    form = request.form
    value = form.get("value", "").strip()
    return _write_to_account(account_id, "adjust", {
        "value": value, "description": form.get("description", "").strip(),
        "category": None if value.startswith("-") else "paid", "idempotency_key": form.get("idempotency_key")})


@console.post("/accounts/<account_id>/grants")
def grant(account_id: str) -> Any:
    """A promotional grant, expiring after the days given (if any)."""
    form = request.form
    amount = form.get("amount", "").strip()
    if amount.startswith("-") or amount in ("0", "-0"):
        amount = "x"  # a grant adds: refused as not a positive number
    return _write_to_account(account_id, "grant", {
        "value": amount, "description": form.get("description", "").strip() or "Promotional credits",
        "category": "promotional", "idempotency_key": form.get("idempotency_key")})
