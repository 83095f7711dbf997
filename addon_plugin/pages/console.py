"""The merchant console: products, buyers and their accounts, adjustments and
promotional grants, charts, API keys and webhook endpoints with their
deliveries. Every read and write is the signed-in merchant's own (another
merchant's id is 404), through the services the API uses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

from flask import abort, flash, g, redirect, render_template, request, url_for

import storage

from .. import accounts, idempotency, merchants, products
from ..errors import AddonError, NotFound, ValidationError
from ..hooks import PRICING_FIELDS, load_pricing
from ..plain import plain
from ..present import product_body
from ..schemas import AdjustmentCreateSchema, load_fields
from . import csrf, reports
from .charts import bar_chart
from .common import make_blueprint, new_key, plugin, refuse_inactive, sign_in

__all__ = ["console"]

console = make_blueprint("addons_console")
_adjustment_schema = AdjustmentCreateSchema()


@console.before_request
def _signed_in_merchant() -> Any:
    """Only a signed-in merchant, and only with a valid token on a write."""
    if request.endpoint and request.endpoint.endswith(".static"):
        return None  # the stylesheet is public: the sign-in answer uses it too
    refuse_inactive()
    g.addons_merchant_id = plugin().current_merchant_id()
    if g.addons_merchant_id is None:
        return sign_in()
    csrf.protect()
    return None


def _merchant() -> str:
    return str(g.addons_merchant_id)


def _page(template: str, status: int = 200, **context: Any) -> Any:
    return render_template(f"addons/console/{template}", **context), status


def _own(fetch: Any, *args: Any) -> Any:
    """``fetch(merchant_id, *args)``, or 404 when it is not the merchant's."""
    try:
        return fetch(_merchant(), *args)
    except NotFound:
        abort(404)


# -- overview -------------------------------------------------------------------

@console.get("/")
def overview() -> Any:
    """Charts of credits used and top-up revenue per day."""
    used, revenue = reports.merchant_days(_merchant())
    charts = [bar_chart("chart-used", f"Credits used per day, last {reports.DAYS} days", used.days,
                        [("Used", "used", used.series["used"])], "credits")]
    charts += [bar_chart(f"chart-revenue-{currency}", f"Top-up revenue per day ({currency})", daily.days,
                         [("Revenue", "revenue", daily.series["revenue"])], currency)
               for currency, daily in revenue.items()]
    return _page("overview.html", charts=charts, has_revenue=bool(revenue))


# -- products -------------------------------------------------------------------

@console.get("/products")
def product_list() -> Any:
    rows = storage.Product.select().where(storage.Product.merchant == _merchant()).order_by(storage.Product.id.desc())
    return _page("products.html", products=[product_body(row) for row in rows])


def _pricing_page(product: storage.Product | None, status: int = 200, errors: Any = None) -> Any:
    fields = plugin().render_pricing_form("addon", "", product=product,
                                          data=request.form if request.method == "POST" else None, errors=errors)
    key = (request.form.get("idempotency_key") if request.method == "POST" else None) or new_key()
    return _page("product_edit.html", status, product=product_body(product) if product else None, fields=fields,
                 idempotency_key=None if product else key)


@console.route("/products/new", methods=["GET", "POST"])
def product_new() -> Any:
    """A new product, once per form (its idempotency key, in the merchant's API key space)."""
    if request.method == "GET":
        return _pricing_page(None)
    merchant_id = _merchant()
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
    product = _own(products.get_product, product_id)
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
            return _page("product_confirm.html", product=product_body(product), affected=affected, kept=kept)
    try:
        product = products.update_product(_merchant(), product_id, loaded)
    except ValidationError as error:
        return _pricing_page(product, 422, plain(error.messages, keep=("price",)))
    flash(f"Product {product.name} saved.")
    return redirect(url_for(".product_list"))


# -- buyers and accounts ----------------------------------------------------------

@console.get("/buyers")
def buyers() -> Any:
    email = request.args.get("email", "").strip().lower()
    found = accounts.list_accounts(_merchant(), buyer_email=email or None, limit=500)["data"] if (
        not email or "@" in email) else []
    names = {row.id: row.name for row in storage.Product.select().where(storage.Product.merchant == _merchant())}
    return _page("buyers.html", accounts=sorted(found, key=lambda a: (a["buyer_email"], a["id"])), names=names,
                 email=email)


def _account_page(account_id: str, status: int = 200, *, form: str | None = None, values: Any = None,
                  errors: Any = None) -> Any:
    """One account: balance, grants, ledger, top-ups; the adjustment and grant forms."""
    merchant_id = _merchant()
    account = _own(accounts.get_account, account_id)
    forms = {"adjust": {"idempotency_key": new_key()}, "grant": {"idempotency_key": new_key()}}
    form_errors: dict[str, Any] = {"adjust": {}, "grant": {}}
    if form is not None:
        forms[form], form_errors[form] = values, errors or {}
    return _page("account.html", status, account=account,
                 product=product_body(products.get_product(merchant_id, account["product_id"])),
                 entries=accounts.list_entries(merchant_id, account_id, limit=100)["data"],
                 grants=accounts.list_grants(merchant_id, account_id, limit=100)["data"],
                 top_ups=accounts.list_top_ups(merchant_id, account_id, limit=50)["data"],
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
    _own(accounts.get_account, account_id)
    field = "amount" if form == "grant" else "value"
    try:
        change = accounts.adjust(_merchant(), account_id, _adjustment(data), actor="console")
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


# -- API keys -------------------------------------------------------------------

def _keys_page(status: int = 200, **shown: Any) -> Any:
    return _page("api_keys.html", status, keys=merchants.list_api_keys(_merchant(), limit=100)["data"], **shown)


@console.get("/api-keys")
def api_keys() -> Any:
    return _keys_page()


@console.post("/api-keys")
def api_key_create() -> Any:
    """The new key is shown in this response only (never in a session, a flash or a log)."""
    return _keys_page(201, new_key=merchants.create_api_key(_merchant()))


@console.route("/api-keys/<key_id>/revoke", methods=["GET", "POST"])
def api_key_revoke(key_id: str) -> Any:
    """A confirmation page, then the revocation."""
    key = next((k for k in merchants.list_api_keys(_merchant(), limit=500)["data"] if k["id"] == key_id), None)
    if key is None:
        abort(404)
    if request.method == "GET":
        return _page("confirm.html", title="Revoke this API key?", action=url_for(".api_key_revoke", key_id=key_id),
                     text=f"Programs using the key {key_id} will be refused from the moment you revoke it. "
                          "This cannot be undone.", button="Revoke the key", back=url_for(".api_keys"))
    _own(lambda merchant_id, k: merchants.revoke_api_key(k, merchant_id), key_id)
    flash(f"Key {key_id} revoked: requests with it are refused from now on.")
    return redirect(url_for(".api_keys"))


# -- webhooks -------------------------------------------------------------------

def _webhooks() -> ModuleType:
    """``webhooks.endpoints``, imported when a page needs it: the plugin reaches
    ``webhooks`` only at run time, once ``init_app`` has wired it, never on import."""
    from webhooks import endpoints

    return endpoints


def _event_types() -> tuple[str, ...]:
    from webhooks import EVENT_TYPES

    return EVENT_TYPES


def _webhooks_page(status: int = 200, *, errors: Any = None, form: Any = None, **shown: Any) -> Any:
    return _page("webhooks.html", status, endpoints=_webhooks().list_endpoints(_merchant(), limit=100).data,
                 event_types=_event_types(), errors=errors or {}, form=form or {}, **shown)


@console.get("/webhooks")
def webhooks() -> Any:
    return _webhooks_page()


def _endpoint_fields() -> dict[str, Any]:
    form = request.form
    return {"url": form.get("url", "").strip(), "event_types": form.getlist("event_types") or None,
            "description": form.get("description", "").strip()}


@console.post("/webhooks")
def webhook_create() -> Any:
    """The endpoint's signing secret is shown in this response only."""
    try:
        endpoint, secret = _webhooks().create_endpoint(_merchant(), **_endpoint_fields())
    except ValidationError as error:
        return _webhooks_page(422, errors=plain(error.messages, keep=("event_types",)), form=request.form)
    return _webhooks_page(201, new_endpoint=endpoint, new_secret=secret)


@console.route("/webhooks/<endpoint_id>", methods=["GET", "POST"])
def webhook_edit(endpoint_id: str) -> Any:
    """Change the URL, events, description, or switch the endpoint on or off."""
    endpoint = _own(_webhooks().get_endpoint, endpoint_id)
    if request.method == "POST":
        fields = _endpoint_fields()
        try:
            _webhooks().update_endpoint(_merchant(), endpoint_id, url=fields["url"],
                                              event_types=fields["event_types"], description=fields["description"],
                                              enabled=request.form.get("enabled") == "on")
        except ValidationError as error:
            return _page("webhook_edit.html", 422, endpoint=endpoint, event_types=_event_types(), form=request.form,
                         errors=plain(error.messages, keep=("event_types",)))
        flash("Endpoint saved.")
        return redirect(url_for(".webhook_edit", endpoint_id=endpoint_id))
    return _page("webhook_edit.html", endpoint=endpoint, event_types=_event_types(), form=None, errors={})


@console.route("/webhooks/<endpoint_id>/rotate", methods=["GET", "POST"])
def webhook_rotate(endpoint_id: str) -> Any:
    endpoint = _own(_webhooks().get_endpoint, endpoint_id)
    if request.method == "GET":
        return _page("confirm.html", title="Rotate the signing secret?",
                     action=url_for(".webhook_rotate", endpoint_id=endpoint_id),
                     text=f"A new secret signs deliveries to {endpoint.url}. The old one keeps signing too for a "
                          "grace period, so you can switch your receiver over without missing a message.",
                     button="Rotate the secret", back=url_for(".webhook_edit", endpoint_id=endpoint_id))
    endpoint, secret = _own(_webhooks().rotate_secret, endpoint_id)
    return _page("webhook_edit.html", endpoint=endpoint, event_types=_event_types(), form=None, errors={},
                 new_secret=secret)


@console.route("/webhooks/<endpoint_id>/delete", methods=["GET", "POST"])
def webhook_delete(endpoint_id: str) -> Any:
    endpoint = _own(_webhooks().get_endpoint, endpoint_id)
    if request.method == "GET":
        return _page("confirm.html", title="Delete this endpoint?",
                     action=url_for(".webhook_delete", endpoint_id=endpoint_id),
                     text=f"Nothing more is sent to {endpoint.url}, and its delivery log is deleted with it. "
                          "This cannot be undone.", button="Delete the endpoint",
                     back=url_for(".webhook_edit", endpoint_id=endpoint_id))
    _own(_webhooks().delete_endpoint, endpoint_id)
    flash(f"Endpoint {endpoint.url} deleted.")
    return redirect(url_for(".webhooks"))


@console.get("/webhooks/<endpoint_id>/deliveries")
def deliveries(endpoint_id: str) -> Any:
    endpoint = _own(_webhooks().get_endpoint, endpoint_id)
    found = _webhooks().list_deliveries(_merchant(), endpoint_id, limit=100).data
    return _page("deliveries.html", endpoint=endpoint, deliveries=found)


@console.get("/deliveries/<delivery_id>")
def delivery(delivery_id: str) -> Any:
    """One delivery: the body and headers sent, and each attempt's answer."""
    found = _own(_webhooks().get_delivery, delivery_id)
    event = storage.WebhookEvent.get_by_id(found.event_id)
    endpoint = _own(_webhooks().get_endpoint, found.endpoint_id)
    from webhooks.delivery import USER_AGENT  # at run time only, as _webhooks() says

    headers = [("content-type", "application/json"), ("user-agent", USER_AGENT), ("webhook-id", found.event_id),
               ("webhook-timestamp", "the attempt's time, in seconds since 1970"),
               ("webhook-signature", "v1,… (signed at each attempt with the endpoint's secret)")]
    return _page("delivery.html", delivery=found, endpoint=endpoint, body=event.payload, headers=headers)


@console.post("/deliveries/<delivery_id>/redeliver")
def redeliver(delivery_id: str) -> Any:
    try:
        found = _own(_webhooks().redeliver, delivery_id)
    except AddonError as error:  # the endpoint is disabled
        flash(error.message)
        return redirect(url_for(".delivery", delivery_id=delivery_id))
    flash("Delivery queued again: it is sent within moments, with the same webhook-id.")
    return redirect(url_for(".delivery", delivery_id=found.id))
