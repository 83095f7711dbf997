"""The buyer portal: each of the signed-in buyer's accounts, its balance by
category and expiries, a 30-day chart, activity in plain words, top-ups and
the auto top-up settings (through the buyer's own idempotent service)."""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal
from typing import Any

from flask import abort, flash, g, redirect, render_template, request, url_for

from .. import accounts
from ..errors import AddonError, ValidationError
from ..money import minor_digits, parse_price
from ..plain import plain
from ..present import product_body
from ..products import get_product
from ..schemas import BuyerAutoTopUpSettingsSchema, load_fields
from ..topup import consent
from . import reports, words
from .charts import bar_chart
from .common import make_blueprint, new_key, plugin, when

__all__ = ["portal"]

portal = make_blueprint("addons_portal", lambda host: host.current_buyer(), "addons_buyer")
_settings_schema = BuyerAutoTopUpSettingsSchema()


def _account_view(account: dict[str, Any], form: dict[str, Any] | None = None,
                  errors: dict[str, list[str]] | None = None, review: dict[str, str] | None = None) -> dict[str, Any]:
    """What one account's section shows (``review``: the terms to agree to before saving ``form``)."""
    merchant_id = g.addons_buyer.merchant_id
    product = product_body(get_product(merchant_id, account["product_id"]))
    entries = accounts.list_entries(merchant_id, account["id"], limit=20)["data"]
    top_ups = accounts.list_top_ups(merchant_id, account["id"], limit=10)["data"]
    expiring = [grant for grant in accounts.list_grants(merchant_id, account["id"], status="active", limit=100)["data"]
                if grant["expires_at"] and grant["remaining"] > 0]
    daily = reports.account_days(account["id"])
    chart = bar_chart(f"chart-{account['id']}", f"Credits used and added, last {reports.DAYS} days", daily.days,
                      [("Used", "used", daily.series["used"]), ("Added", "added", daily.series["added"])], "credits")
    cards = plugin().current_payment_methods()
    on_file = account["auto_top_up"]["payment_method"]
    if on_file and on_file not in dict(cards):
        cards = [(on_file, "The card you paid with"), *cards]
    agreed = None
    if account["auto_top_up"]["enabled"]:
        latest = accounts.list_consents(merchant_id, account["id"], limit=1)["data"]
        agreed = latest[0]["terms"] if latest and latest[0]["enabled"] else None
    return {"account": account, "product": product, "activity": [(entry, words.activity(entry)) for entry in entries],
            "top_ups": [(top_up, words.top_up_status(top_up)) for top_up in top_ups],
            "notice": words.top_up_notice(account["auto_top_up"], when=when),
            "forecast": words.forecast(account, when=when), "agreed": agreed,
            "expiring": sorted(expiring, key=lambda grant: grant["expires_at"]), "chart": chart, "cards": cards,
            "form": form or {"idempotency_key": new_key()}, "errors": errors or {}, "review": review}


def _index(status: int = 200, *, failed: str | None = None, form: dict[str, Any] | None = None,
           errors: dict[str, list[str]] | None = None, review: dict[str, str] | None = None) -> Any:
    buyer = g.addons_buyer
    found = reversed(accounts.list_accounts(buyer.merchant_id, buyer_email=buyer.buyer_email, limit=500)["data"])
    views = [_account_view(account, form, errors, review) if account["id"] == failed else _account_view(account)
             for account in found]
    return render_template("addons/portal/index.html", buyer=buyer, views=views), status


@portal.get("/")
def index() -> Any:
    return _index()


def _settings(form: Any) -> dict[str, Any]:
    """The service's fields from the auto top-up form (an empty field: not given)."""
    enabled = form.get("enabled") == "on"
    data: dict[str, Any] = {"enabled": enabled, "idempotency_key": form.get("idempotency_key") or None}
    threshold = form.get("threshold", "").strip()
    card = form.get("payment_method", "").strip()
    if threshold or enabled:
        data["threshold"] = threshold or None
    if card and (enabled or threshold):
        data["payment_method"] = card
    data["monthly_limit"] = form.get("monthly_limit", "").strip() or None
    return {name: value for name, value in data.items() if value is not None}


def _terms_to_agree(account: dict[str, Any], data: dict[str, Any]) -> str | None:
    """The exact terms the buyer agrees to by saving ``data`` (valid settings),
    rendered as the consent record will keep them; None when saving needs no
    agreement (auto top-up stays off or is switched off, or what it may charge
    does not change)."""
    if not data["enabled"]:
        return None
    state = account["auto_top_up"]
    now = (state["enabled"], account["threshold"], state["payment_method"], _amount(state["monthly_limit"]))
    if now == (True, data["threshold"], data["payment_method"], _amount(data["monthly_limit"])):
        return None
    product = get_product(g.addons_buyer.merchant_id, account["product_id"])
    return consent.terms_for(product, threshold=data["threshold"], monthly_limit=data["monthly_limit"])


def _amount(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def _digest(terms: str) -> str:
    return hashlib.sha256(terms.encode()).hexdigest()


def _refused(account_id: str, error: ValidationError, currency: str) -> Any:
    messages = plain(error.messages)
    if "monthly_limit" in messages:
        messages["monthly_limit"] = [words.limit_message(currency, minor_digits(currency))]
    return _index(422, failed=account_id, form=request.form.to_dict(), errors=messages)


@portal.post("/accounts/<account_id>/auto-top-up")
def auto_top_up(account_id: str) -> Any:
    """Save the buyer's auto top-up settings; only their own account (else 404).
    Switching on, or changing what it may charge, first shows the exact terms
    (those the consent record keeps) and saves only once the buyer agrees to them."""
    buyer = g.addons_buyer
    try:
        account = accounts.get_account(buyer.merchant_id, account_id)
    except AddonError:
        abort(404)
    if account["buyer_email"] != buyer.buyer_email:
        abort(404)
    currency = get_product(buyer.merchant_id, account["product_id"]).currency
    data = _settings(request.form)
    problems: dict[str, Any] = {}
    try:
        parse_price(data.get("monthly_limit", "1"), currency)
    except ValueError:  # not an amount in the product's currency: said with the other fields' problems
        problems["monthly_limit"] = ["bad"]
    try:
        loaded = load_fields(_settings_schema, data)
    except ValidationError as error:
        problems.update(error.messages)
    if problems:
        return _refused(account_id, ValidationError(fields=problems), currency)
    terms = _terms_to_agree(account, loaded)
    if terms is not None and not hmac.compare_digest(request.form.get("agreed", "").encode(), _digest(terms).encode()):
        changed = "agreed" in request.form  # the terms changed since they were shown
        return _index(failed=account_id, form=request.form.to_dict(),
                      review={"terms": terms, "digest": _digest(terms), "changed": "yes" if changed else ""})
    try:  # where the buyer agreed from, read as the API's buyer route reads it
        saved = accounts.set_buyer_auto_top_up(buyer, account_id, data, ip=request.remote_addr,
                                               user_agent=request.headers.get("User-Agent"))
    except ValidationError as error:
        return _refused(account_id, error, currency)
    except AddonError as error:
        if error.status == 404:
            abort(404)
        form = {**request.form.to_dict(), "idempotency_key": new_key()}  # that key holds the refusal
        field = "payment_method" if error.code == "invalid_payment_method" else "general"
        return _index(error.status if error.status < 500 else 422, failed=account_id, form=form,
                      errors={field: [error.message]})
    if loaded["enabled"]:
        limit = saved["auto_top_up"]["monthly_limit"]
        flash(f"Auto top-up is on: it tops up at {saved['threshold']} credits"
              + (f", at most {limit} {currency} a month." if limit else "."))
    else:
        flash("Auto top-up is off.")
    return redirect(url_for(".index") + f"#account-{account_id}")
