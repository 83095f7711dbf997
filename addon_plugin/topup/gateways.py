"""Payment gateways: the one small interface auto top-up charges through.

A gateway is any object with a ``charge`` method (see :class:`Gateway`), and
optionally ``lookup``. ``charge`` returns the charge id, or raises one of::

    GatewayError
    ├── Declined            the charge was refused (card_declined, authentication_required, …):
    │                       final for this top-up; retrying would hammer the card
    ├── ChargePending       the gateway accepted the charge but it has not settled (Stripe
    │                       ``processing``): credited only once ``lookup`` says it succeeded
    └── GatewayUnavailable  the outcome is unknown or the gateway is down (network, 5xx):
                            retried later with the same idempotency key

``lookup(idempotency_key)`` settles an outcome the plugin does not know: it
returns the id of a succeeded charge made with that key, None when the gateway
holds no charge for it, raises :class:`Declined` when that charge failed and
:class:`GatewayUnavailable` while it cannot tell.

The idempotency key is the whole exactly-once story: a gateway must answer a
repeat of a key with the first charge, never a second one.

Optional: ``owns(customer, payment_method) -> bool``, whether the payment
method belongs to that customer. The buyer's own route stores a payment method
the browser named only when the gateway confirms it, so a gateway without
``owns`` takes payment methods from the merchant's API and checkout only. Both shipped
gateways do: :class:`TestGateway` (Stripe's test tokens, in memory) and
:class:`StripeGateway` (PaymentIntents over ``requests``).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote

import requests
from flask import Flask

from ..state import current_app_object, get_state

__all__ = [
    "Gateway",
    "GatewayError",
    "Declined",
    "ChargePending",
    "GatewayUnavailable",
    "TOP_UP_KEY_PREFIX",
    "Charge",
    "TestGateway",
    "StripeGateway",
    "resolve_gateway",
    "current_gateway",
]


class GatewayError(Exception):
    """Base of the errors a gateway's ``charge`` raises."""

    def __init__(self, code: str, message: str = "") -> None:
        self.code = code
        self.message = message or code.replace("_", " ")
        super().__init__(f"{self.code}: {self.message}")


class Declined(GatewayError):
    """The gateway refused the charge; ``code`` says why (e.g. ``card_declined``)."""


class ChargePending(GatewayError):
    """The gateway accepted the charge ``charge_id`` but it has not settled yet
    (Stripe ``processing``): nothing is credited until ``lookup`` says it succeeded."""

    def __init__(self, charge_id: str, message: str = "The charge has not settled yet.") -> None:
        self.charge_id = charge_id
        super().__init__("charge_pending", message)


class GatewayUnavailable(GatewayError):
    """The gateway could not be reached or failed (network, 5xx): retry with the same key."""

    def __init__(self, message: str = "The payment gateway is unavailable.") -> None:
        super().__init__("gateway_unavailable", message)


@runtime_checkable
class Gateway(Protocol):
    """What auto top-up needs from a payment gateway."""

    #: True if ``charge`` needs a ``customer`` (auto top-up then refuses to switch on without one).
    requires_customer: bool

    def charge(self, *, amount: Decimal, currency: str, customer: str | None, payment_method: str,
               idempotency_key: str, description: str, metadata: Mapping[str, str]) -> str:
        """Charge ``amount`` (in ``currency``, ISO 4217) off-session; return the charge id.

        A repeat with the same ``idempotency_key`` returns the first charge's id.
        Raises :class:`Declined`, :class:`ChargePending` or :class:`GatewayUnavailable`.
        """
        ...

    # Optional: ``lookup(idempotency_key) -> str | None`` (see the module docstring).
    # Without it, a top-up whose outcome is unknown waits for the merchant to resolve it.


#: The idempotency key of an auto top-up's charge is this prefix and the top-up id.
TOP_UP_KEY_PREFIX = "addons-top-up-"


# -- the test gateway ----------------------------------------------------------

@dataclass(frozen=True)
class Charge:
    """A charge :class:`TestGateway` made."""

    id: str
    amount: Decimal
    currency: str
    customer: str | None
    payment_method: str
    idempotency_key: str
    description: str
    metadata: dict[str, str] = field(default_factory=dict)


class TestGateway:
    """A gateway whose payment methods behave like Stripe's test tokens.

    ``pm_card_visa`` succeeds; ``pm_card_chargeDeclined`` declines with
    ``card_declined``; ``pm_card_authenticationRequired`` with
    ``authentication_required``; anything else with ``invalid_payment_method``.
    Charges are kept in :attr:`charges` and declines in :attr:`declines`, keyed
    by idempotency key, so a repeated key returns the first charge and
    :meth:`lookup` can answer; :attr:`calls` counts every charge call and
    :attr:`lookups` every lookup. Every ``pm_card_*`` token belongs to every customer
    (:meth:`owns`).
    """

    __test__ = False  # not a pytest test class
    requires_customer = False

    DECLINES = {
        "pm_card_chargeDeclined": ("card_declined", "Your card was declined."),
        "pm_card_authenticationRequired": (
            "authentication_required", "This payment needs the cardholder to authenticate."),
    }

    def __init__(self) -> None:
        self.charges: dict[str, Charge] = {}
        self.declines: dict[str, tuple[str, str]] = {}
        self.calls = 0
        self.lookups = 0
        self._lock = threading.Lock()

    def owns(self, customer: str | None, payment_method: str) -> bool:
        """Every ``pm_card_*`` test token belongs to every customer; nothing else exists."""
        return payment_method.startswith("pm_card_")

    def charge(self, *, amount: Decimal, currency: str, customer: str | None, payment_method: str,
               idempotency_key: str, description: str, metadata: Mapping[str, str]) -> str:
        """Charge like Stripe would in test mode (see the class docstring)."""
        with self._lock:
            self.calls += 1
            if idempotency_key in self.charges:
                return self.charges[idempotency_key].id
            decline = self.DECLINES.get(payment_method)
            if decline is None and payment_method != "pm_card_visa":
                decline = ("invalid_payment_method", f"No such payment method: {payment_method!r}.")
            if decline is not None:
                self.declines[idempotency_key] = decline
                raise Declined(*decline)
            charge = Charge(f"ch_test_{len(self.charges) + 1:06d}", amount, currency, customer,
                            payment_method, idempotency_key, description, dict(metadata))
            self.charges[idempotency_key] = charge
            return charge.id

    def lookup(self, idempotency_key: str) -> str | None:
        """The charge made with that key; :class:`Declined` if it was declined; None if none was tried."""
        with self._lock:
            self.lookups += 1
            if idempotency_key in self.charges:
                return self.charges[idempotency_key].id
            if idempotency_key in self.declines:
                raise Declined(*self.declines[idempotency_key])
            return None


# -- Stripe ------------------------------------------------------------------------

# One string each, split (SIM905 off here): as 21 separate literals the codes join Hypothesis'
# pool of the project's constants and shift what the derandomised form fuzzer generates.
#: Currencies Stripe takes in whole units, and those it takes in thousandths.
STRIPE_ZERO_DECIMAL = frozenset(
    "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split())  # noqa: SIM905
STRIPE_THREE_DECIMAL = frozenset("BHD JOD KWD OMR TND".split())  # noqa: SIM905


def stripe_amount(amount: Decimal, currency: str) -> int:
    """``amount`` in the smallest unit Stripe expects for ``currency`` (JPY 500 → 500, USD 19.00 → 1900)."""
    code = currency.upper()
    digits = 0 if code in STRIPE_ZERO_DECIMAL else 3 if code in STRIPE_THREE_DECIMAL else 2
    minor = amount.scaleb(digits)
    if minor != minor.to_integral_value():
        raise ValueError(f"{amount} {code} has more decimals than Stripe accepts ({digits}).")
    return int(minor)


class StripeGateway:
    """Charges with Stripe PaymentIntents, off-session, confirmed at once.

    ``POST {api_base}/v1/payment_intents`` (form-encoded) with the amount in the
    currency's smallest unit, ``confirm=true``, ``off_session=true`` and an
    ``Idempotency-Key`` header. Card errors (HTTP 402, or a PaymentIntent that
    needs action) are :class:`Declined` with Stripe's code; a ``processing``
    PaymentIntent is :class:`ChargePending`; network errors, 409 (a request with
    that key still running), 429 and 5xx are :class:`GatewayUnavailable`; other
    refusals (400, 401, 403, 404) are :class:`Declined` with Stripe's error code,
    since repeating them cannot help. :meth:`lookup` finds a top-up's
    PaymentIntent by the ``top_up_id`` in its metadata.
    """

    requires_customer = True

    #: PaymentIntent statuses of a charge that failed, and the code used when its last error names none.
    FAILED_STATUSES = {"requires_payment_method": "payment_failed", "canceled": "payment_failed",
                       "requires_action": "authentication_required",
                       "requires_confirmation": "authentication_required"}

    def __init__(self, api_key: str, *, api_base: str = "https://api.stripe.com",
                 timeout: tuple[float, float] = (5, 30), session: requests.Session | None = None) -> None:
        if not api_key:
            raise ValueError("Missing configuration for the stripe gateway: ADDONS_STRIPE_API_KEY.")
        self.api_key = api_key
        self.api_base = api_base.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> StripeGateway:
        """A gateway from ``ADDONS_STRIPE_API_KEY`` and ``ADDONS_STRIPE_API_BASE``."""
        return cls(config.get("ADDONS_STRIPE_API_KEY") or "",
                   api_base=config.get("ADDONS_STRIPE_API_BASE") or "https://api.stripe.com")

    def owns(self, customer: str | None, payment_method: str) -> bool:
        """Retrieve the PaymentMethod (``GET /v1/payment_methods/<id>``) and
        compare its customer; a method Stripe does not know belongs to nobody.
        Raises :class:`GatewayUnavailable` when Stripe cannot tell."""
        if not customer:
            return False  # a method attached to no customer cannot be charged off-session
        url = f"{self.api_base}/v1/payment_methods/{quote(payment_method, safe='')}"
        try:
            response = self.session.get(url, headers={"Authorization": f"Bearer {self.api_key}"},
                                        timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as error:
            raise GatewayUnavailable(f"Stripe did not answer: {error.__class__.__name__}.") from error
        if response.status_code in (400, 404):  # malformed or unknown id: no such payment method
            return False
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict):
            raise GatewayUnavailable(f"Stripe answered {response.status_code} to a payment method lookup.")
        owner = body.get("customer")
        if isinstance(owner, dict):  # expanded
            owner = owner.get("id")
        return owner == customer

    def charge(self, *, amount: Decimal, currency: str, customer: str | None, payment_method: str,
               idempotency_key: str, description: str, metadata: Mapping[str, str]) -> str:
        """Create and confirm a PaymentIntent; its id is the charge id."""
        form = [
            ("amount", str(stripe_amount(amount, currency))),
            ("currency", currency.lower()),
            ("payment_method", payment_method),
            ("confirm", "true"),
            ("off_session", "true"),
            ("description", description),
        ]
        if customer:
            form.append(("customer", customer))
        form += [(f"metadata[{key}]", value) for key, value in metadata.items()]
        headers = {"Authorization": f"Bearer {self.api_key}", "Idempotency-Key": idempotency_key}
        try:
            response = self.session.post(f"{self.api_base}/v1/payment_intents", data=form,
                                         headers=headers, timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as error:  # connection refused, timeout, …
            raise GatewayUnavailable(f"Stripe did not answer: {error.__class__.__name__}.") from error
        return self._charge_id(response)

    @staticmethod
    def _charge_id(response: requests.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise GatewayUnavailable(f"Stripe answered {response.status_code} without a JSON object.")
        if response.status_code == 200:
            status, intent_id = body.get("status"), body.get("id")
            if status == "succeeded" and intent_id:
                return intent_id
            if status == "processing" and intent_id:
                raise ChargePending(intent_id)
            if status in ("requires_action", "requires_confirmation"):
                raise Declined("authentication_required", "This payment needs the cardholder to authenticate.")
            raise Declined("payment_failed", f"The PaymentIntent is {status!r}.")
        error = body.get("error")
        if not isinstance(error, dict):
            error = {}
        if response.status_code in (409, 429) or response.status_code >= 500:
            raise GatewayUnavailable(f"Stripe answered {response.status_code}: {error.get('message', '')}".strip())
        code = error.get("code") or error.get("type") or f"http_{response.status_code}"
        raise Declined(code, error.get("message") or f"Stripe answered {response.status_code}.")

    def lookup(self, idempotency_key: str) -> str | None:
        """The PaymentIntent of the top-up whose charge used ``idempotency_key``,
        found with Stripe's search API by the ``top_up_id`` in its metadata.

        Succeeded: its id. Failed (``requires_payment_method``, ``canceled``, or
        ``requires_action`` off-session): :class:`Declined` with its last payment
        error's code. None found: None. Still ``processing``, or Stripe did not
        answer: :class:`GatewayUnavailable`. Search trails new PaymentIntents by
        about a minute, far less than the time a top-up takes to become unresolved.
        """
        if not idempotency_key.startswith(TOP_UP_KEY_PREFIX):
            raise GatewayUnavailable(f"Only auto top-up charges can be looked up, not {idempotency_key!r}.")
        top_up_id = idempotency_key[len(TOP_UP_KEY_PREFIX):]
        query = f"metadata['top_up_id']:'{top_up_id}'"  # our ids: letters, digits and "_"
        try:
            response = self.session.get(f"{self.api_base}/v1/payment_intents/search", params={"query": query},
                                        headers={"Authorization": f"Bearer {self.api_key}"},
                                        timeout=self.timeout, allow_redirects=False)
            body = response.json()
        except (requests.RequestException, ValueError) as error:
            raise GatewayUnavailable(f"Stripe did not answer the search: {error.__class__.__name__}.") from error
        if response.status_code != 200 or not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise GatewayUnavailable(f"Stripe answered the search with {response.status_code}.")
        intents = [intent for intent in body["data"] if isinstance(intent, dict)
                   and (intent.get("metadata") or {}).get("top_up_id") == top_up_id]
        by_status = {intent.get("status"): intent for intent in intents}
        if "succeeded" in by_status and by_status["succeeded"].get("id"):
            return by_status["succeeded"]["id"]
        if not intents:
            return None
        if "processing" in by_status:
            raise GatewayUnavailable("The PaymentIntent is still processing.")
        for status, default_code in self.FAILED_STATUSES.items():
            if status in by_status:
                last_error = by_status[status].get("last_payment_error") or {}
                raise Declined(last_error.get("code") or default_code,
                               last_error.get("message") or f"The PaymentIntent is {status!r}.")
        raise GatewayUnavailable(f"The PaymentIntent is {intents[0].get('status')!r}.")


# -- configuration -----------------------------------------------------------

_SHORT_NAMES: dict[str, Callable[[Mapping[str, Any]], Gateway]] = {
    "test": lambda config: TestGateway(),
    "stripe": StripeGateway.from_config,
}


def resolve_gateway(value: Any, config: Mapping[str, Any] | None = None) -> Gateway | None:
    """The gateway ``ADDONS_PAYMENT_GATEWAY`` names: None, a gateway object, a
    short name (``"test"``, ``"stripe"``), or a dotted path (``"pkg.mod:attr"``
    or ``"pkg.mod.attr"``) to a gateway object or to a class made with no arguments."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        if value in _SHORT_NAMES:
            return _SHORT_NAMES[value](config or {})
        module_name, sep, attr = value.partition(":") if ":" in value else value.rpartition(".")
        if not (module_name and sep and attr):
            raise ValueError(f"ADDONS_PAYMENT_GATEWAY={value!r}: use 'test', 'stripe' or a dotted path.")
        try:
            value = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"ADDONS_PAYMENT_GATEWAY={value!r} cannot be imported: {error}") from error
    if isinstance(value, type):
        value = value()
    if not callable(getattr(value, "charge", None)):
        raise ValueError(f"ADDONS_PAYMENT_GATEWAY: {value!r} has no charge() method.")
    return value


_resolve_lock = threading.Lock()


def current_gateway(app: Flask | None = None) -> Gateway | None:
    """The app's gateway (default: the current app's), resolved from
    ``ADDONS_PAYMENT_GATEWAY`` once per value (so ``"test"`` gives one
    :class:`TestGateway` per app, whose charges tests can inspect)."""
    app = app or current_app_object()
    value = app.config.get("ADDONS_PAYMENT_GATEWAY")
    state = get_state(app)
    with _resolve_lock:
        cached = state.gateway
        if cached is None or (cached[0] is not value and cached[0] != value):
            cached = state.gateway = (value, resolve_gateway(value, app.config))
    return cached[1]
