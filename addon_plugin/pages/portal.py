"""The buyer portal: each of the signed-in buyer's accounts, its balance by
category and expiries, a 30-day chart, activity in plain words, top-ups and
the auto top-up settings (through the buyer's own idempotent service)."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, g, redirect, render_template, request, url_for

from .. import accounts
from ..errors import AddonError, ValidationError
from ..plain import plain
from ..present import product_body
from ..products import get_product
from . import csrf, reports, words
from .charts import bar_chart
from .common import make_blueprint, new_key, plugin, refuse_inactive, sign_in

__all__ = ["portal"]

portal = make_blueprint("addons_portal")


@portal.before_request
def _signed_in_buyer() -> Any:
    """Only a signed-in buyer, and only with a valid token on a write."""
    if request.endpoint and request.endpoint.endswith(".static"):
        return None  # the stylesheet is public: the sign-in answer uses it too
    refuse_inactive()
    g.addons_buyer = plugin().current_buyer()
    if g.addons_buyer is None:
        return sign_in()
    csrf.protect()
    return None


def _account_view(account: dict[str, Any], form: dict[str, Any] | None = None,
                  errors: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """What one account's section shows."""
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
    return {"account": account, "product": product, "activity": [(entry, words.activity(entry)) for entry in entries],
            "top_ups": [(top_up, words.top_up_status(top_up)) for top_up in top_ups],
            "notice": words.top_up_notice(top_ups[0] if top_ups else None, auto_on=account["auto_top_up"]["enabled"]),
            "expiring": sorted(expiring, key=lambda grant: grant["expires_at"]), "chart": chart, "cards": cards,
            "form": form or {"idempotency_key": new_key()}, "errors": errors or {}}


def _index(status: int = 200, *, failed: str | None = None, form: dict[str, Any] | None = None,
           errors: dict[str, list[str]] | None = None) -> Any:
    buyer = g.addons_buyer
    found = reversed(accounts.list_accounts(buyer.merchant_id, buyer_email=buyer.buyer_email, limit=500)["data"])
    views = [_account_view(account, form, errors) if account["id"] == failed else _account_view(account)
             for account in found]
    return render_template("addons/portal/index.html", buyer=buyer, views=views), status


@portal.get("/")
def index() -> Any:
    return _index()


@portal.post("/accounts/<account_id>/auto-top-up")
def auto_top_up(account_id: str) -> Any:
    """Save the buyer's auto top-up settings; only their own account (else 404)."""
    buyer = g.addons_buyer
    enabled = request.form.get("enabled") == "on"
    data: dict[str, Any] = {"enabled": enabled, "idempotency_key": request.form.get("idempotency_key") or None}
    threshold = request.form.get("threshold", "").strip()
    card = request.form.get("payment_method", "").strip()
    if threshold or enabled:
        data["threshold"] = threshold or None
    if card and (enabled or threshold):
        data["payment_method"] = card
    try:
        accounts.set_buyer_auto_top_up(buyer, account_id, {k: v for k, v in data.items() if v is not None})
    except ValidationError as error:
        return _index(422, failed=account_id, form=request.form.to_dict(), errors=plain(error.messages))
    except AddonError as error:
        if error.status == 404:
            abort(404)
        form = {**request.form.to_dict(), "idempotency_key": new_key()}  # that key holds the refusal
        field = "payment_method" if error.code == "invalid_payment_method" else "general"
        return _index(error.status if error.status < 500 else 422, failed=account_id, form=form,
                      errors={field: [error.message]})
    flash(f"Auto top-up is {'on: it tops up at ' + threshold + ' credits' if enabled else 'off'}.")
    return redirect(url_for(".index") + f"#account-{account_id}")
