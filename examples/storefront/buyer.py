"""The buyer's side the host owns: the shop, checkout, sign-in and the "studio"
where credits are spent. "My credits" is the plugin's buyer portal (mounted at
``ADDONS_PORTAL_PREFIX``).

Checkout charges the card itself (through the plugin's configured gateway, here
the ``"test"`` one), records the host's order, then calls ``order_paid``: the
plugin grants the credits and, if the buyer opted in, switches auto top-up on.
An opt-in first shows the exact terms (``accounts.auto_top_up_terms``) that the
consent record will keep, and pays only once the buyer agrees to them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from decimal import Decimal
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for

from addon_plugin import GatewayError, accounts, current_gateway, product_body, products
from addon_plugin.errors import AccountNotFound, HoldNotActive, HoldNotFound, InsufficientCredits

from . import shop
from .addons import TEST_CARDS, plugin

buyer = Blueprint("buyer", __name__)

#: What a render sets aside when it starts (a hold), and what it turns out to cost (the capture).
RENDER_RESERVE = 50
RENDER_COST = 37
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_AMOUNT = re.compile(r"[0-9]+(\.[0-9]+)?")


def _merchant_id() -> str:
    return shop.the_shop().addons_merchant_id


def _addon_for(item: shop.Product) -> dict[str, Any] | None:
    """The plugin's add-on behind a host product (the API's product resource), or None."""
    if item.payment_type != "addon":
        return None
    addon = products.product_for_host(_merchant_id(), str(item.id))
    return product_body(addon) if addon is not None else None


@buyer.get("/shop")
def shop_front() -> str:
    items = [(item, _addon_for(item)) for item in shop.Product.select().order_by(shop.Product.id)]
    return render_template("shop.html", items=items)


def _is_amount(text: str, price: str) -> bool:
    """A positive amount with no more decimal places than the add-on's price shows (its currency's)."""
    digits = len(price.partition(".")[2])
    whole, _, cents = text.partition(".")
    return (_AMOUNT.fullmatch(text) is not None and len(cents) <= digits and len(whole) <= 12
            and any(c != "0" for c in whole + cents))


def _checkout_errors(form: Any, addon: dict[str, Any]) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """The host's own checks of its checkout form: per-field errors and the typed values."""
    errors: dict[str, list[str]] = {}
    email = form.get("email", "").strip().lower()
    if not _EMAIL.fullmatch(email):
        errors["email"] = ["Enter an email address like you@example.com."]
    quantity = form.get("quantity", "").strip()
    if not quantity.isdigit() or not 1 <= int(quantity) <= 100:
        errors["quantity"] = ["Enter a whole number from 1 to 100."]
    card = form.get("payment_method", "")
    if card not in dict(TEST_CARDS):
        errors["payment_method"] = ["Choose a card."]
    threshold = limit = None
    if addon["top_up_allowed"] and form.get("auto_top_up") == "on":
        text = form.get("threshold", "").strip()
        if not text.isdigit() or len(text) > 15:
            errors["threshold"] = ["Enter a whole number of credits, 0 or more."]
        else:
            threshold = int(text)
        limit = form.get("monthly_limit", "").strip() or None
        if limit is not None and not _is_amount(limit, addon["price"]):
            errors["monthly_limit"] = [f"Enter an amount in {addon['currency']} above 0, like 50.00, "
                                       "or leave it empty for no limit."]
    values = {"email": email, "quantity": int(quantity) if "quantity" not in errors else 1,
              "payment_method": card, "threshold": threshold, "monthly_limit": limit}
    return errors, values


@buyer.route("/checkout/<int:product_id>", methods=["GET", "POST"])
def checkout(product_id: int):
    item = shop.Product.get_or_none(shop.Product.id == product_id)
    addon = _addon_for(item) if item else None
    if addon is None:
        abort(404)
    errors: dict[str, list[str]] = {}
    checkout_id = request.form.get("checkout_id") or uuid.uuid4().hex  # one per form: a double submit pays once
    if request.method == "POST":
        if shop.Order.select().where(shop.Order.checkout_id == checkout_id).exists():
            return redirect(url_for("addons_portal.index"))
        errors, values = _checkout_errors(request.form, addon)
        terms = None if errors or values["threshold"] is None else accounts.auto_top_up_terms(
            _merchant_id(), addon["id"], threshold=values["threshold"], monthly_limit=values["monthly_limit"])
        if terms is not None and not hmac.compare_digest(request.form.get("terms_digest", "").encode(),
                                                         _digest(terms).encode()):
            # Auto top-up is switched on here: show the exact terms first (nothing is charged yet).
            return render_template("checkout.html", item=item, addon=addon, cards=TEST_CARDS, errors={},
                                   form=request.form, checkout_id=checkout_id, terms=terms, terms_digest=_digest(terms))
        if not errors:
            order = _pay(item, addon, values, checkout_id, errors)
            if order is not None:
                session["buyer_email"] = values["email"]
                flash(f"Paid {order.total} {order.currency}: "
                      f"{addon['credit_amount'] * values['quantity']} credits added.")
                return redirect(url_for("addons_portal.index"))
    form = request.form if request.method == "POST" else {"email": session.get("buyer_email", ""), "quantity": "1"}
    return render_template("checkout.html", item=item, addon=addon, cards=TEST_CARDS, errors=errors,
                           form=form, checkout_id=checkout_id), (422 if errors else 200)


def _digest(terms: str) -> str:
    """What the review step sends back: the terms shown, so a change since (a new price) is shown again."""
    return hashlib.sha256(terms.encode()).hexdigest()


def _pay(item: shop.Product, addon: dict[str, Any], values: dict[str, Any], checkout_id: str,
         errors: dict[str, list[str]]) -> shop.Order | None:
    """Charge the card, record the host's order, then tell the plugin it is paid."""
    amount = Decimal(addon["price"]) * values["quantity"]
    try:
        charge_id = current_gateway().charge(
            amount=amount, currency=addon["currency"], customer=None, payment_method=values["payment_method"],
            idempotency_key=f"checkout-{checkout_id}", description=f"{values['quantity']} × {addon['name']}",
            metadata={"host_product_id": str(item.id)})
    except GatewayError as error:
        errors["payment_method"] = [error.message]
        return None
    with shop.db.atomic():
        order = shop.Order.create(checkout_id=checkout_id, buyer_email=values["email"], total=amount,
                                  currency=addon["currency"],
                                  payment_method=values["payment_method"], charge_id=charge_id)
        line = shop.OrderLine.create(order=order, product=item, quantity=values["quantity"])
    # The hook: grants credit_amount × quantity once per (order, line); the opt-in switches auto top-up on.
    paid = {"id": f"order-{order.id}", "merchant_id": _merchant_id(), "buyer_email": values["email"],
            "lines": [{"id": str(line.id), "host_product_id": str(item.id), "quantity": line.quantity}]}
    if values["threshold"] is not None:
        paid.update(payment_method=values["payment_method"], auto_top_up_threshold=values["threshold"],
                    auto_top_up_monthly_limit=values["monthly_limit"])
    plugin.order_paid(paid, None)
    return order


@buyer.route("/signin", methods=["GET", "POST"])
def signin():
    """The host's sign-in (the plugin's pages send strangers here: ``ADDONS_SIGN_IN_URL``).
    The demo trusts the email; a real host checks a password or sends a link."""
    next_url = request.values.get("next", "")
    if not next_url.startswith("/") or next_url.startswith("//"):
        next_url = url_for("addons_portal.index")
    error = None
    if request.method == "POST":
        email = request.form.get("email", "").strip().lower()
        if _EMAIL.fullmatch(email):
            session["buyer_email"] = email
            return redirect(next_url)
        error = "Enter an email address like you@example.com."
    return render_template("signin.html", next_url=next_url, error=error), 422 if error else 200


@buyer.post("/signout")
def signout():
    session.pop("buyer_email", None)
    return redirect(url_for("home"))


@buyer.get("/studio")
def studio():
    """The merchant's SaaS, in miniature: where the buyer spends credits."""
    signed_in = plugin.current_buyer()
    if signed_in is None:
        return redirect(url_for(".signin", next=url_for(".studio")))
    merchant_id, email, _ = signed_in
    found = [(row, product_body(products.get_product(merchant_id, row["product_id"])),
              accounts.list_holds(merchant_id, row["id"], status="held")["data"])
             for row in accounts.list_accounts(merchant_id, buyer_email=email, limit=500)["data"]]
    return render_template("studio.html", accounts=found, reserve=RENDER_RESERVE, cost=RENDER_COST)


def _own_account(account_id: str) -> dict[str, Any]:
    """The signed-in buyer's account (404 for anyone else's)."""
    signed_in = plugin.current_buyer()
    if signed_in is None:
        abort(404)
    try:
        found = accounts.get_account(signed_in.merchant_id, account_id)
    except AccountNotFound:
        abort(404)
    if found["buyer_email"] != signed_in.buyer_email:
        abort(404)
    return found


@buyer.post("/studio/<account_id>/render")
def render_video(account_id: str):
    """Start a render: reserve what it may cost with a hold, as the merchant's
    SaaS does with ``POST /api/buyer-addon/usage/hold`` (here the same service,
    in process: ``accounts.place_hold``). A parallel job cannot spend the reserved credits."""
    _own_account(account_id)
    try:
        accounts.place_hold(_merchant_id(), account_id, {
            "value": RENDER_RESERVE, "expires_in": 3600, "description": "Rendered one video",
            "reference": f"render-{uuid.uuid4().hex[:12]}"})
        flash(f"Rendering: {RENDER_RESERVE} credits set aside until it finishes.")
    except InsufficientCredits:
        flash(f"Not enough credits to start a render: it sets aside {RENDER_RESERVE}.")
    return redirect(url_for(".studio"))


def _own_hold(hold_id: str) -> dict[str, Any]:
    try:
        hold = accounts.get_hold(_merchant_id(), hold_id)
    except HoldNotFound:
        abort(404)
    _own_account(hold["account_id"])
    return hold


@buyer.post("/studio/renders/<hold_id>/finish")
def finish_render(hold_id: str):
    """The render finished: capture what it cost (``POST /api/addons/holds/<id>/capture``
    with ``{"value": 37}``); the rest of the hold goes back to the buyer."""
    hold = _own_hold(hold_id)
    try:
        accounts.capture_hold(_merchant_id(), hold_id, {"value": min(RENDER_COST, hold["amount"])},
                              actor="storefront")
        flash(f"Rendered a video: it cost {RENDER_COST} credits; the other {hold['amount'] - RENDER_COST} went back.")
    except HoldNotActive:
        flash("That render is no longer running.")
    except InsufficientCredits:
        flash("The credits set aside are no longer there: the render could not be paid for.")
    return redirect(url_for(".studio"))


@buyer.post("/studio/renders/<hold_id>/cancel")
def cancel_render(hold_id: str):
    """Stop a render: release its hold (``POST /api/addons/holds/<id>/release``)."""
    _own_hold(hold_id)
    try:
        accounts.release_hold(_merchant_id(), hold_id)
        flash("Render cancelled: the credits set aside went back.")
    except HoldNotActive:
        flash("That render is no longer running.")
    return redirect(url_for(".studio"))
