"""The host's side of the plugin: Saleor-style hooks and Flask-Login-style loaders.

A host calls each hook inside its own application context, passing
``previous_value`` (what earlier plugins returned); a hook returns it unchanged
where it has nothing to add, and always when ``ADDONS_ACTIVE`` is false::

    types = plugin.get_product_types([{"id": "one_time", "label": "One-time"}])
    html = plugin.render_pricing_form("addon", "", product=addon, data=request.form, errors=errors)
    addon = plugin.save_pricing("addon", request.form, None, merchant=merchant_id, host_product_id="42")
    plugin.order_paid(order, None)
    plugin.order_refunded(order, None)

Hooks are thin: the pricing form is described by the API's own product schema,
products are saved by :mod:`addon_plugin.products`, each order's payment and
refund are recorded (and the order locked) by :mod:`addon_plugin.orders`, and
every credit moves through :mod:`addon_plugin.ledger`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple, TypeVar

from flask import current_app, has_request_context, request
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from marshmallow import ValidationError as SchemaError
from marshmallow import fields as mfields
from marshmallow import validate

import storage
from storage import transaction

from . import ledger, orders, products
from .emails import normalise_email
from .errors import AddonError, MerchantNotFound, ValidationError
from .limits import IDEMPOTENCY_KEY_LENGTH, REFERENCE_LENGTH, THRESHOLD_MESSAGE, is_threshold
from .plain import plain
from .present import product_body
from .schemas import ProductCreateSchema, coerce_form, refuse_unstorable
from .topup import set_auto_top_up

__all__ = ["HostHooks", "SignedInBuyer", "ADDON", "PRICING_FIELDS", "load_pricing"]

log = logging.getLogger(__name__)

#: The product type this plugin adds to the host's Pricing tab.
ADDON = {"id": "addon", "label": "Add on"}

#: The pricing form: field name → (label, help text), in display order. Types,
#: required flags and choices come from :class:`ProductCreateSchema`.
PRICING_FIELDS: dict[str, tuple[str, str]] = {
    "price": ("Price", "What the buyer pays for one bank of credits, e.g. 19.00."),
    "currency": ("Currency", "ISO 4217 currency code of the price."),
    "credit_amount": ("Credit Amount", "Credits the buyer receives for the price."),
    "top_up_allowed": ("Auto Top-Up", "One-time purchase: no automatic top-ups (buyers may buy again). "
                                      "Top-ups allowed: buyers may switch on auto top-up at their own threshold."),
    "overdraft_limit": ("Overdraft limit", "How far below zero usage may take a balance (0: none)."),
    "credit_expiry_days": ("Credits expire after (days)", "Optional: purchased credits expire this many days "
                                                          "after they are granted (blank: never)."),
    "name": ("Name", "Defaults to \"<credit amount> credits\"."),
}

#: The longest order id: it is the ``reference`` of the order's ledger entries.
_ORDER_ID_LENGTH = REFERENCE_LENGTH

_TOP_UP_CHOICES = [("false", "One-time purchase"), ("true", "Top-ups allowed")]
_schema = ProductCreateSchema()
_templates = Environment(loader=PackageLoader("addon_plugin", "templates"),
                         autoescape=select_autoescape(default=True))

F = TypeVar("F", bound=Callable[..., Any])


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """``obj[name]`` for a mapping, ``obj.name`` for an object (hosts pass either)."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _text(value: Any) -> str:
    """A value as a form field shows it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _field_type(field: mfields.Field) -> tuple[str, list[tuple[str, str]] | None]:
    """The form type and choices a schema field implies."""
    if isinstance(field, mfields.Boolean):
        return "choice", list(_TOP_UP_CHOICES)
    if isinstance(field, mfields.Integer):
        return "integer", None
    one_of = next((v for v in field.validators if isinstance(v, validate.OneOf)), None)
    if one_of is not None:
        return "choice", [(str(c), str(c)) for c in one_of.choices]
    return "text", None


def _pricing_values(product: Any, data: Mapping[str, Any] | None) -> dict[str, str]:
    """What each field shows: submitted ``data``, else the product, else defaults."""
    values = {"currency": current_app.config["ADDONS_DEFAULT_CURRENCY"], "top_up_allowed": "false",
              "overdraft_limit": "0"}
    if isinstance(product, storage.Product):
        product = product_body(product)
    if product is not None:
        values.update({name: _text(_get(product, name)) for name in PRICING_FIELDS
                       if _get(product, name) is not None})
    if data is not None:
        values.update({name: _text(data.get(name)) for name in PRICING_FIELDS if name in data})
    return values


def _decode_form(data: Mapping[str, Any]) -> dict[str, Any]:
    """The pricing fields of a submitted form (blank = not given, or null for a
    field that may be null, such as "Credits expire after"), typed for the schema."""
    picked = {}
    for name in PRICING_FIELDS:
        value = data.get(name)
        if isinstance(value, str):
            value = value.strip()
        if value is not None and value != "":
            picked[name] = value
        elif value == "" and _schema.fields[name].allow_none:
            picked[name] = None
    refuse_unstorable(picked)
    return coerce_form(_schema, picked)


def load_pricing(data: Mapping[str, Any]) -> dict[str, Any]:
    """A submitted pricing form (a form or a dict), loaded with the API's product
    schema; a bad field raises :class:`ValidationError` whose ``messages`` say,
    for a person, what to enter (:func:`addon_plugin.plain.plain`)."""
    try:
        return dict(_schema.load(_decode_form(data)))
    except SchemaError as error:
        raise ValidationError(fields=plain(error.normalized_messages())) from None


class SignedInBuyer(NamedTuple):
    """The buyer the host's session names: its merchant, lower-cased e-mail, and
    the gateway's customer the host knows for them (None if it gave none)."""

    merchant_id: str
    buyer_email: str
    customer: str | None = None


@dataclass(frozen=True)
class _Line:
    """An order line that bought an add-on."""

    id: str
    product: storage.Product
    quantity: int


class HostHooks:
    """Saleor-style hooks and host loaders, mixed into :class:`~addon_plugin.AddonPlugin`."""

    _merchant_loader: Callable[[], str | None] | None = None
    _buyer_loader: Callable[[], tuple[str, str] | tuple[str, str, str | None] | None] | None = None

    # -- loaders ---------------------------------------------------------------

    def merchant_loader(self, fn: F) -> F:
        """Register ``fn() -> merchant_id | None``: the signed-in merchant (a decorator)."""
        self._merchant_loader = fn
        return fn

    def buyer_loader(self, fn: F) -> F:
        """Register ``fn() -> (merchant_id, buyer_email[, customer]) | None``: the
        signed-in buyer (a decorator). ``customer`` is the gateway's customer of
        that buyer (Stripe's ``cus_…``): the buyer's own routes take it from here,
        never from the browser."""
        self._buyer_loader = fn
        return fn

    def payment_methods_loader(self, fn: F) -> F:
        """Register ``fn() -> [(payment_method, label), ...]``: the signed-in
        buyer's saved cards, offered by the buyer portal's auto top-up form (a
        decorator). Without it the portal offers the card already on file."""
        self._payment_methods_loader = fn
        return fn

    def current_payment_methods(self) -> list[tuple[str, str]]:
        """The signed-in buyer's cards from :meth:`payment_methods_loader` (none without one)."""
        loader = getattr(self, "_payment_methods_loader", None)
        return [(str(value), str(label)) for value, label in (loader() or ())] if loader else []

    def current_merchant_id(self) -> str | None:
        """The signed-in merchant's id, from the host's :meth:`merchant_loader`."""
        return self._merchant_loader() if self._merchant_loader else None

    def current_buyer(self) -> SignedInBuyer | None:
        """The signed-in buyer ``(merchant_id, buyer_email, customer)``, from :meth:`buyer_loader`."""
        buyer = self._buyer_loader() if self._buyer_loader else None
        if not buyer:
            return None
        if len(buyer) not in (2, 3):
            raise TypeError("buyer_loader must return (merchant_id, buyer_email[, customer]) or None, "
                            f"not {len(buyer)} values.")
        merchant_id, email, customer = (*buyer, None)[:3]
        return SignedInBuyer(str(merchant_id), normalise_email(email), str(customer) if customer else None)

    # -- hooks -----------------------------------------------------------------

    @staticmethod
    def _active() -> bool:
        return bool(current_app.config["ADDONS_ACTIVE"])

    def get_product_types(self, previous_value: list[dict[str, str]] | None) -> list[dict[str, str]] | None:
        """The host's product types plus ``{"id": "addon", "label": "Add on"}``."""
        if not self._active():
            return previous_value
        return [*(previous_value or []), dict(ADDON)]

    def get_pricing_form(self, product_type: str, previous_value: list[dict[str, Any]] | None, *,
                         product: Any = None, data: Mapping[str, Any] | None = None) -> Any:
        """For ``"addon"``: the Pricing tab's fields (``name``, ``label``, ``type``,
        ``required``, ``help_text``, ``choices``, ``value``), appended to
        ``previous_value``. ``product`` is the current add-on (row or mapping);
        ``data``, a submitted form, overrides the values it shows."""
        if not self._active() or product_type != ADDON["id"]:
            return previous_value
        values = _pricing_values(product, data)
        form = []
        for name, (label, help_text) in PRICING_FIELDS.items():
            field = _schema.fields[name]
            kind, choices = _field_type(field)
            form.append({"name": name, "label": label, "type": "decimal" if name == "price" else kind,
                         "required": field.required, "help_text": help_text, "choices": choices,
                         "value": values.get(name, "")})
        return [*(previous_value or []), *form]

    def render_pricing_form(self, product_type: str, previous_value: str = "", *, product: Any = None,
                            data: Mapping[str, Any] | None = None,
                            errors: Mapping[str, Any] | None = None) -> str:
        """:meth:`get_pricing_form` as an HTML fragment appended to ``previous_value``:
        every input labelled, help and ``errors`` (field → messages, as
        :attr:`ValidationError.messages`) tied to it by ``aria-describedby``."""
        if not self._active() or product_type != ADDON["id"]:
            return previous_value
        form = self.get_pricing_form(product_type, [], product=product, data=data)
        errors = dict(errors or {})
        field_errors = {f["name"]: _messages(errors.pop(f["name"], None)) for f in form}
        general = [m for value in errors.values() for m in _messages(value)]
        html = _templates.get_template("addons/pricing_form.html").render(
            fields=form, errors=field_errors, general_errors=general)
        return Markup(previous_value or "") + Markup(html)

    def save_pricing(self, product_type: str, data: Mapping[str, Any], previous_value: Any, *,
                     merchant: Any, host_product_id: str) -> Any:
        """For ``"addon"``: validate ``data`` (a form or a dict) with the API's
        product schema and create or update the add-on for ``host_product_id``;
        returns the ``storage.Product``. Invalid data raises
        :class:`~addon_plugin.errors.ValidationError` (``messages``: field → messages)."""
        if not self._active() or product_type != ADDON["id"]:
            return previous_value
        merchant_id = _known_merchant(_get(merchant, "id", merchant))
        loaded = load_pricing(data)
        loaded["host_product_id"] = str(host_product_id)
        with transaction():
            existing = products.product_for_host(merchant_id, str(host_product_id))
            if existing is None:
                return products.create_product(merchant_id, loaded)
            return products.update_product(merchant_id, existing.id, loaded)

    def order_paid(self, order: Any, previous_value: Any) -> Any:
        """Grant ``credit_amount × quantity`` credits for each add-on line (kind
        ``purchase``, reference = the order id); other lines are ignored. If the
        order carries ``payment_method`` and ``auto_top_up_threshold``, auto
        top-up is switched on for the add-ons that allow it (with the order's
        optional ``auto_top_up_monthly_limit``, a decimal string; the consent
        record names ``hook:order_paid`` and the order's ``ip_address`` and
        ``user_agent``, else the current request's). The order is applied
        once as a whole, even when called twice or concurrently: a repeat (even
        after a product changed) replays the first grant and changes no setting,
        and an order refunded before it was paid grants nothing."""
        if not self._active():
            return previous_value
        order_id, merchant_id, email = _order_identity(order)
        with transaction():
            seen = orders.report(merchant_id, order_id, "paid")
            if seen.paid or seen.refunded:
                return previous_value
            threshold = _opt_in_threshold(order)
            monthly_limit = _opt_in_monthly_limit(order) if threshold is not None else None
            lines = _addon_lines(order, merchant_id)
            granted = []
            for line in sorted(lines, key=lambda line: line.product.id):  # one lock order: no deadlocks
                account_id = ledger.open_account(merchant_id, line.product.id, email)
                ledger.purchase(account_id, line.product.credit_amount * line.quantity, order_id=order_id,
                                quantity=line.quantity, idempotency_key=_line_key(order_id, line.id),
                                key_space=ledger.HOOK_KEYS,
                                description=f"{line.quantity} × {line.product.name}", actor="hook:order_paid")
                granted.append((account_id, line.product))
        if threshold is not None:
            _opt_in(merchant_id, granted, threshold, _get(order, "payment_method"), _get(order, "customer"),
                    monthly_limit, _order_client(order))
        return previous_value

    def order_refunded(self, order: Any, previous_value: Any) -> Any:
        """Take back the credits the order granted that are still unspent (one
        ``refund`` entry per account), exactly once; never below zero. A refund
        of an order not yet paid is remembered: its payment will grant nothing."""
        if not self._active():
            return previous_value
        order_id, merchant_id, _ = _order_identity(order, need_buyer=False)
        with transaction():
            if orders.report(merchant_id, order_id, "refunded").refunded:
                return previous_value
            for account_id in ledger.order_accounts(merchant_id, order_id):  # order_paid's lock order
                ledger.refund_unspent(account_id, order_id, idempotency_key=_key("order_refunded", order_id),
                                      key_space=ledger.HOOK_KEYS,
                                      description=f"Refund of order {order_id}", actor="hook:order_refunded")
        return previous_value


# -- orders --------------------------------------------------------------------

def _messages(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [m for inner in value.values() for m in _messages(inner)]
    if isinstance(value, (list, tuple)):
        return [m for inner in value for m in _messages(inner)]
    return [str(value)]


def _key(*parts: str) -> str:
    """An idempotency key from parts, one key per list of parts whatever they hold
    (a JSON list: order ``A:B`` line ``C`` is not order ``A`` line ``B:C``);
    hashed when it would pass the idempotency key's length. The hooks' keys live in
    their own key space (``ledger.HOOK_KEYS``): no API client can send one."""
    key = json.dumps(parts, separators=(",", ":"))
    return key if len(key) <= IDEMPOTENCY_KEY_LENGTH else "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _line_key(order_id: str, line_id: str) -> str:
    return _key("order_paid", order_id, line_id)


def _order_identity(order: Any, *, need_buyer: bool = True) -> tuple[str, str, str]:
    """``(order id, merchant id, buyer email)``, or a ValidationError naming what is missing."""
    values = {name: _get(order, name) for name in ("id", "merchant_id", "buyer_email")}
    values["buyer_email"] = normalise_email(str(values["buyer_email"] or ""))
    required = ("id", "merchant_id", "buyer_email") if need_buyer else ("id", "merchant_id")
    missing = {name: ["Missing."] for name in required if values[name] in (None, "")}
    if missing:
        raise ValidationError("The order is missing fields.", fields=missing)
    order_id = str(values["id"])
    if len(order_id) > _ORDER_ID_LENGTH:
        raise ValidationError(fields={"id": [f"Must be at most {_ORDER_ID_LENGTH} characters."]})
    refuse_unstorable({"id": order_id})
    return order_id, _known_merchant(values["merchant_id"]), values["buyer_email"]


def _known_merchant(merchant_id: Any) -> str:
    """The id of a merchant the plugin knows, or :class:`MerchantNotFound`: a host
    passing a wrong id hears of it instead of seeing nothing happen."""
    merchant_id = str(merchant_id)
    if not storage.Merchant.select().where(storage.Merchant.id == merchant_id).exists():
        raise MerchantNotFound(merchant_id=merchant_id)
    return merchant_id


def _opt_in_threshold(order: Any) -> int | None:
    """The auto top-up threshold the buyer chose at checkout, if they opted in."""
    threshold = _get(order, "auto_top_up_threshold")
    if threshold is None or not _get(order, "payment_method"):
        return None
    if not is_threshold(threshold):
        raise ValidationError(fields={"auto_top_up_threshold": [THRESHOLD_MESSAGE]})
    return threshold


_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")


def _opt_in_monthly_limit(order: Any) -> str | None:
    """The monthly limit the buyer chose at checkout (a decimal string), if any;
    its digits are checked against the product's currency when it is set."""
    limit = _get(order, "auto_top_up_monthly_limit")
    if limit is None:
        return None
    if isinstance(limit, Decimal) and limit.is_finite():
        limit = str(limit)
    if not isinstance(limit, str) or not _DECIMAL.fullmatch(limit):
        raise ValidationError(fields={"auto_top_up_monthly_limit": ["Must be a decimal string such as \"50.00\"."]})
    return limit


def _order_client(order: Any) -> tuple[str | None, str | None]:
    """Where the buyer agreed from: the order's ``ip_address`` and ``user_agent``,
    else the current request's (a hook called while serving the checkout)."""
    ip, user_agent = _get(order, "ip_address"), _get(order, "user_agent")
    if (ip is None or user_agent is None) and has_request_context():
        ip = ip if ip is not None else request.remote_addr
        user_agent = user_agent if user_agent is not None else request.headers.get("User-Agent")
    return (None if ip is None else str(ip)), (None if user_agent is None else str(user_agent))


def _addon_lines(order: Any, merchant_id: str) -> list[_Line]:
    """The order's add-on lines, all checked before anything is granted."""
    lines, problems = [], {}
    for index, line in enumerate(_get(order, "lines") or ()):
        product_id, host_product_id = _get(line, "product_id"), _get(line, "host_product_id")
        if product_id is not None:
            product = storage.Product.get_or_none((storage.Product.id == str(product_id))
                                                  & (storage.Product.merchant == merchant_id))
        elif host_product_id is not None:
            product = products.product_for_host(merchant_id, str(host_product_id))
        else:
            product = None
        if product is None:
            continue  # not an add-on: the host's own product
        line_id, quantity = _get(line, "id"), _get(line, "quantity")
        problem = {}
        if line_id in (None, ""):
            problem["id"] = ["Missing: credits are granted once per (order, line id)."]
        if type(quantity) is not int or quantity < 1:
            problem["quantity"] = ["Must be an integer >= 1."]
        if problem:
            problems[index] = problem
        else:
            lines.append(_Line(str(line_id), product, quantity))
    if problems:
        raise ValidationError("Some add-on lines are invalid.", fields={"lines": problems})
    return lines


def _opt_in(merchant_id: str, granted: list[tuple[str, storage.Product]], threshold: int, payment_method: str,
            customer: str | None, monthly_limit: str | None, client: tuple[str | None, str | None]) -> None:
    """Switch auto top-up on for the bought add-ons that allow it. The credits
    are already granted: a refusal (no gateway, say) is logged, never raised."""
    for account_id, product in granted:
        if not product.top_up_allowed:
            continue
        try:
            set_auto_top_up(account_id, merchant_id=merchant_id, enabled=True, threshold=threshold,
                            payment_method=payment_method, customer=customer, monthly_limit=monthly_limit,
                            actor="hook:order_paid", ip=client[0], user_agent=client[1])
        except AddonError as error:
            log.warning("auto top-up opt-in for %s refused: %s", account_id, error.code)
