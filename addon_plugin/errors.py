"""Every error the plugin raises, as one tree.

Each class carries the stable ``code`` and HTTP ``status`` the API answers
with, so a view never translates errors by hand::

    AddonError
    ├── ValidationError (ValueError)          422 validation_error
    │   ├── InvalidAmount                     422 invalid_value
    │   ├── IdempotencyKeyReused              422 idempotency_key_reused
    │   ├── AmbiguousInvoice                  422 ambiguous_invoice
    │   └── InvalidPaymentMethod              422 invalid_payment_method
    ├── BadRequest                            400 bad_request
    ├── AuthenticationFailed                  401 unauthorized
    ├── InsufficientCredits                   402 insufficient_credits
    ├── CrossOriginRequest                    403 cross_origin_request
    ├── NotFound (LookupError)                404 not_found
    │   ├── AccountNotFound                   404 account_not_found
    │   ├── ProductNotFound                   404 product_not_found
    │   ├── MerchantNotFound                  404 merchant_not_found
    │   ├── ApiKeyNotFound                    404 api_key_not_found
    │   ├── TopUpNotFound                     404 top_up_not_found
    │   └── HoldNotFound                      404 hold_not_found
    ├── Conflict                              409 conflict
    │   ├── IdempotencyKeyInUse               409 idempotency_key_in_use
    │   ├── TopUpNotAllowed                   409 top_up_not_allowed
    │   ├── TopUpNotUnresolved                409 top_up_not_unresolved
    │   ├── HoldNotActive                     409 hold_not_active
    │   └── NoPaymentGateway                  409 no_payment_gateway
    ├── BalanceLimitExceeded                  422 balance_limit_exceeded
    └── ServiceUnavailable                    503 service_unavailable
        ├── PluginInactive                    503 plugin_inactive
        ├── DatabaseUnavailable               503 database_unavailable
        └── PaymentGatewayUnavailable         503 payment_gateway_unavailable
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AddonError",
    "ValidationError",
    "InvalidAmount",
    "IdempotencyKeyReused",
    "AmbiguousInvoice",
    "InvalidPaymentMethod",
    "BadRequest",
    "AuthenticationFailed",
    "InsufficientCredits",
    "CrossOriginRequest",
    "NotFound",
    "AccountNotFound",
    "ProductNotFound",
    "MerchantNotFound",
    "ApiKeyNotFound",
    "TopUpNotFound",
    "HoldNotFound",
    "Conflict",
    "IdempotencyKeyInUse",
    "TopUpNotAllowed",
    "TopUpNotUnresolved",
    "HoldNotActive",
    "NoPaymentGateway",
    "BalanceLimitExceeded",
    "ServiceUnavailable",
    "PluginInactive",
    "DatabaseUnavailable",
    "PaymentGatewayUnavailable",
]


class AddonError(Exception):
    """Base of every error the plugin raises on purpose."""

    status: int = 500
    code: str = "internal_error"
    default_message: str = "Something went wrong."

    def __init__(self, message: str | None = None, *, fields: dict[str, Any] | None = None, **context: Any):
        self.message = message or self.default_message
        self.fields = fields or {}
        self.context = context
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        """The API's error body: ``{"error": {"code", "message", "fields"}}``."""
        return {"error": {"code": self.code, "message": self.message, "fields": self.fields}}

    @classmethod
    def from_dict(cls, body: dict[str, Any], status: int) -> AddonError:
        """The error an API error body stands for (a stored refusal replayed to a
        host): the class with that ``code``, its message, fields and ``status``."""
        error = body["error"]
        classes: list[type[AddonError]] = [cls]
        by_code: dict[str, type[AddonError]] = {}
        while classes:
            klass = classes.pop()
            by_code.setdefault(klass.code, klass)
            classes.extend(klass.__subclasses__())
        klass = by_code.get(error["code"], cls)
        found = klass.__new__(klass)
        AddonError.__init__(found, error["message"], fields=error.get("fields"))  # not a subclass's own signature
        found.code, found.status = error["code"], status
        return found


class ValidationError(AddonError, ValueError):
    """Input failed validation; ``messages`` maps each bad field to its messages."""

    status = 422
    code = "validation_error"
    default_message = "The request has invalid fields."

    @property
    def messages(self) -> dict[str, Any]:
        return self.fields


class InvalidAmount(ValidationError):
    """A credit amount that is not a non-zero integer within ±(2**53 - 1)."""

    code = "invalid_value"
    default_message = "value must be a non-zero integer within ±9007199254740991."


class IdempotencyKeyReused(ValidationError):
    """The idempotency key was already used for a different request."""

    code = "idempotency_key_reused"
    default_message = "This idempotency key was already used with a different request."


class AmbiguousInvoice(ValidationError):
    """The invoice bought several add-ons; ``product_id`` must say which."""

    code = "ambiguous_invoice"
    default_message = "That invoice bought several add-ons: give product_id too."


class InvalidPaymentMethod(ValidationError):
    """The gateway does not confirm that the payment method belongs to the buyer's customer."""

    code = "invalid_payment_method"
    default_message = "That payment method is not one of yours."


class BadRequest(AddonError):
    """The body could not be read (malformed JSON, wrong shape)."""

    status = 400
    code = "bad_request"
    default_message = "The request body could not be read."


class AuthenticationFailed(AddonError):
    """No API key, an unknown one, or a revoked one."""

    status = 401
    code = "unauthorized"
    default_message = "A valid API key is required."


class InsufficientCredits(AddonError):
    """The change would take the balance below ``-overdraft_limit``."""

    status = 402
    code = "insufficient_credits"
    default_message = "The balance is too low for this deduction."


class CrossOriginRequest(AddonError):
    """A buyer-facing write sent from another origin (CSRF protection)."""

    status = 403
    code = "cross_origin_request"
    default_message = "This request must come from the shop's own pages."


class NotFound(AddonError, LookupError):
    """The object does not exist, or belongs to another merchant."""

    status = 404
    code = "not_found"
    default_message = "Not found."


class AccountNotFound(NotFound):
    """No credit account for that buyer and product (or that id)."""

    code = "account_not_found"
    default_message = "No add-on account for that buyer and product."


class ProductNotFound(NotFound):
    """No add-on product with that id for this merchant."""

    code = "product_not_found"
    default_message = "No add-on product with that id."


class GrantNotFound(NotFound):
    """No credit grant with that id on this merchant's accounts."""

    code = "grant_not_found"
    default_message = "No credit grant with that id."


class MerchantNotFound(NotFound):
    """No merchant with that id."""

    code = "merchant_not_found"
    default_message = "No merchant with that id."


class ApiKeyNotFound(NotFound):
    """No API key with that id for this merchant."""

    code = "api_key_not_found"
    default_message = "No API key with that id."


class TopUpNotFound(NotFound):
    """No top-up with that id for this merchant."""

    code = "top_up_not_found"
    default_message = "No top-up with that id."


class HoldNotFound(NotFound):
    """No spend hold with that id on this merchant's accounts."""

    code = "hold_not_found"
    default_message = "No hold with that id."


class Conflict(AddonError):
    """The request conflicts with the current state."""

    status = 409
    code = "conflict"
    default_message = "The request conflicts with the current state."


class IdempotencyKeyInUse(Conflict):
    """A request with this idempotency key is still being processed."""

    code = "idempotency_key_in_use"
    default_message = "A request with this idempotency key is still in flight; retry later."


class TopUpNotAllowed(Conflict):
    """The product is a one-time purchase: auto top-up cannot be switched on."""

    code = "top_up_not_allowed"
    default_message = "This add-on is a one-time purchase; auto top-up is not allowed."


class TopUpNotUnresolved(Conflict):
    """Only an ``unresolved`` top-up can be resolved; this one is not (``status`` says what it is)."""

    code = "top_up_not_unresolved"
    default_message = "This top-up is not unresolved: its outcome is already known or still being worked out."


class HoldNotActive(Conflict):
    """The hold was already captured, released, or has expired (``status`` says which)."""

    code = "hold_not_active"
    default_message = "This hold is no longer held: it was captured, released, or has expired."


class NoPaymentGateway(Conflict):
    """No payment gateway is configured, so nothing can be charged."""

    code = "no_payment_gateway"
    default_message = "No payment gateway is configured (ADDONS_PAYMENT_GATEWAY)."


class BalanceLimitExceeded(AddonError):
    """The change would take the balance beyond 2**53 - 1 credits."""

    status = 422
    code = "balance_limit_exceeded"
    default_message = "The balance would exceed 9007199254740991 credits."


class ServiceUnavailable(AddonError):
    """The plugin cannot serve requests right now."""

    status = 503
    code = "service_unavailable"
    default_message = "The service is unavailable; retry later."


class PluginInactive(ServiceUnavailable):
    """``ADDONS_ACTIVE`` is false."""

    code = "plugin_inactive"
    default_message = "The add-ons plugin is not active."


class DatabaseUnavailable(ServiceUnavailable):
    """The database did not answer."""

    code = "database_unavailable"
    default_message = "The database is unavailable; retry later."


class PaymentGatewayUnavailable(ServiceUnavailable):
    """The payment gateway did not answer a question the request depends on."""

    code = "payment_gateway_unavailable"
    default_message = "The payment gateway is unavailable; retry later."
