"""Marshmallow schemas: what the API (and the host's pricing form) accept and
return. One definition per shape, so the form, the API and the OpenAPI document
can never disagree.

Unknown fields are refused; credits are strict integers within ±(2**53 - 1)
(no bools, floats or numeric strings in JSON); money is a decimal string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC
from decimal import Decimal
from typing import Any

from flask import current_app
from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from . import errors
from .emails import normalise_email
from .limits import (
    BATCH_RECORDS,
    DESCRIPTION_LENGTH,
    EXTERNAL_ID_LENGTH,
    ID_LENGTH,
    IDEMPOTENCY_KEY_LENGTH,
    MAX_CREDITS,
    MAX_PAGE_SIZE,
    METADATA_KEY_LENGTH,
    METADATA_KEYS,
    METADATA_VALUE_LENGTH,
    REFERENCE_LENGTH,
)
from .money import CURRENCIES, parse_price

__all__ = [
    "UNSTORABLE",
    "UNSTORABLE_MESSAGE",
    "refuse_unstorable",
    "coerce_form",
    "load_fields",
    "Credits",
    "Metadata",
    "IdempotencyKey",
    "BuyerEmail",
    "ProductSchema",
    "ProductCreateSchema",
    "ProductUpdateSchema",
    "AutoTopUpSchema",
    "AccountSchema",
    "EntrySchema",
    "UsageBalanceSchema",
    "UsageAddSchema",
    "UsageResponseSchema",
    "UsageRecordSchema",
    "UsageRecordsSchema",
    "UsageRecordResultSchema",
    "UsageRecordsResultSchema",
    "ListQuerySchema",
    "AccountListQuerySchema",
    "AdjustmentCreateSchema",
    "AdjustmentSchema",
    "WriteSchema",
    "ApiKeySchema",
    "ApiKeyCreatedSchema",
    "ErrorSchema",
    "AutoTopUpSettingsSchema",
    "BuyerAutoTopUpSettingsSchema",
    "TopUpSchema",
    "TopUpResolveSchema",
    "AllocationSchema",
    "GrantSchema",
    "GrantCreateSchema",
    "GrantCreatedSchema",
    "GrantListQuerySchema",
    "GrantVoidSchema",
    "HoldSchema",
    "HoldCreateSchema",
    "HoldCaptureSchema",
    "HoldListQuerySchema",
    "UsageHoldSchema",
    "UsageHoldResponseSchema",
]

_CREDIT_RANGE = validate.Range(-MAX_CREDITS, MAX_CREDITS)
_INTEGER = re.compile(r"-?[0-9]{1,20}")  # ASCII only: int() would also read "٥" or "５"

#: What no database stores byte-for-byte: NUL (PostgreSQL refuses it) and
#: unpaired surrogates (not encodable as UTF-8).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
UNSTORABLE_MESSAGE = "Must not contain NUL characters or unpaired surrogates."


def _storable(value: Any) -> bool:
    """True if every string in ``value`` (keys too, however deep) can be stored."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if UNSTORABLE.search(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def refuse_unstorable(data: dict[str, Any]) -> None:
    """422 for any field holding a string that could not come back byte-for-byte
    (checked before a schema loads a body or a form, shared like :func:`coerce_form`)."""
    bad = [name for name, value in data.items() if not (_storable(name) and _storable(value))]
    if bad:
        raise errors.ValidationError(fields={
            name.encode("utf-8", "backslashreplace").decode(): [UNSTORABLE_MESSAGE] for name in bad})


def coerce_form(schema: Schema, data: dict[str, Any]) -> dict[str, Any]:
    """Form fields are strings: make strict integer fields' ASCII digit strings
    (optional leading minus, nothing else) ints; any other string stays a string,
    which the strict field refuses (shared by the API's form bodies, query
    strings and the host's pricing form)."""
    coerced = dict(data)
    for name, field in schema.load_fields.items():
        value = coerced.get(name)
        if isinstance(field, fields.Integer) and isinstance(value, str) and _INTEGER.fullmatch(value):
            coerced[name] = int(value)
    return coerced


def load_fields(schema: Schema, data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a host's form or dict with an API schema as the API validates a
    form body: only the schema's fields are read (a host's form may carry
    others), digit strings count as integers, and a bad field raises
    :class:`~addon_plugin.errors.ValidationError` with its messages."""
    picked = {name: data[name] for name in schema.load_fields if name in data}
    refuse_unstorable(picked)
    try:
        return schema.load(coerce_form(schema, picked))
    except ValidationError as error:
        raise errors.ValidationError(fields=error.normalized_messages()) from None


def Credits(*, minimum: int = -MAX_CREDITS, nonzero: bool = False, **kwargs: Any) -> fields.Integer:
    """A credit count: a strict JSON integer within ±(2**53 - 1)."""
    validators: list[validate.Validator] = [validate.Range(minimum, MAX_CREDITS)]
    if nonzero:
        validators.append(validate.NoneOf([0], error="Must not be zero."))
        kwargs.setdefault("metadata", {"not": {"enum": [0]}})
    return fields.Integer(strict=True, validate=validators, **kwargs)


def _few_enough_keys(value: dict) -> None:
    if len(value) > METADATA_KEYS:
        raise ValidationError(f"At most {METADATA_KEYS} keys.")


def Metadata(**kwargs: Any) -> fields.Dict:
    """String keys and values within the metadata limits (:mod:`addon_plugin.limits`)."""
    return fields.Dict(
        keys=fields.String(validate=validate.Length(1, METADATA_KEY_LENGTH)),
        values=fields.String(validate=validate.Length(max=METADATA_VALUE_LENGTH)),
        validate=_few_enough_keys,
        metadata={"maxProperties": METADATA_KEYS},
        **kwargs,
    )


def IdempotencyKey(**kwargs: Any) -> fields.String:
    """A body's ``idempotency_key``: 1 to ``IDEMPOTENCY_KEY_LENGTH`` characters."""
    return fields.String(validate=validate.Length(1, IDEMPOTENCY_KEY_LENGTH), **kwargs)


_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")


def _decimal_string(value: str) -> None:
    if not _DECIMAL.fullmatch(value):
        raise ValidationError("Not a decimal number.")


def Price(**kwargs: Any) -> fields.String:
    """Money: a plain decimal string such as "19.00" (no sign, exponent or spaces)."""
    return fields.String(validate=_decimal_string, metadata={
        "pattern": "^[0-9]+(\\.[0-9]+)?$", "example": "19.00",
        "description": "Decimal string > 0 with at most the currency's minor-unit digits."}, **kwargs)


class BuyerEmail(fields.Email):
    """A buyer's e-mail, normalised (NFC, trimmed, lower-cased) before it is
    checked, so a decomposed or capitalised spelling names the same buyer."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return normalise_email(super()._deserialize(value, attr, data, **kwargs))


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("Must not be blank.")


class _Strict(Schema):
    class Meta:
        ordered = True


# -- products -----------------------------------------------------------------

class ProductSchema(_Strict):
    """An add-on product as the API shows it."""

    id = fields.String(required=True, metadata={"example": "prod_01jd3k5q8w2n7x4m6r9t0v1b2c"})
    name = fields.String(required=True)
    price = fields.String(required=True, metadata={"example": "19.00"})
    currency = fields.String(required=True, metadata={"example": "USD"})
    credit_amount = fields.Integer(required=True)
    top_up_allowed = fields.Boolean(required=True)
    overdraft_limit = fields.Integer(required=True)
    host_product_id = fields.String(required=True, allow_none=True)
    credit_expiry_days = fields.Integer(required=True, allow_none=True)


class ProductUpdateSchema(_Strict):
    """Fields a merchant may change; every one optional."""

    name = fields.String(validate=validate.Length(1, 200))
    price = Price()
    currency = fields.String(validate=validate.OneOf(sorted(CURRENCIES), error="Not an ISO 4217 currency code."))
    credit_amount = Credits(minimum=1)
    top_up_allowed = fields.Boolean(truthy={True, "true", "1", "on"}, falsy={False, "false", "0", "off"})
    overdraft_limit = Credits(minimum=0)
    host_product_id = fields.String(allow_none=True, validate=validate.Length(1, EXTERNAL_ID_LENGTH))
    credit_expiry_days = fields.Integer(strict=True, allow_none=True, validate=validate.Range(1, 36500), metadata={
        "description": "Purchased and topped-up credits expire this many days after they are granted "
                       "(null: never)."})
    idempotency_key = IdempotencyKey(load_only=True)

    @validates_schema(skip_on_field_errors=False)  # a form shows every bad field at once
    def _price_fits_currency(self, data: dict, **kwargs: Any) -> None:
        currency = data.get("currency") or self.default_currency()
        if "price" in data and currency is not None:
            try:
                parse_price(data["price"], currency)
            except ValueError as error:
                raise ValidationError(str(error), "price") from None

    def default_currency(self) -> str | None:
        """The currency of a price given without one: for a change, the product's
        own, which only :mod:`addon_plugin.products` knows (and checks)."""
        return None

    @post_load
    def _typed_price(self, data: dict, **kwargs: Any) -> dict:
        if "price" in data:
            data["price"] = Decimal(data["price"])
        return data


class ProductCreateSchema(ProductUpdateSchema):
    """A new add-on: price and credit_amount are required."""

    price = Price(required=True)
    credit_amount = Credits(minimum=1, required=True)

    def default_currency(self) -> str:
        return current_app.config["ADDONS_DEFAULT_CURRENCY"]


# -- accounts and the ledger ------------------------------------------------------

class TopUpFailureSchema(_Strict):
    """The account's latest failed top-up: why, and when."""

    code = fields.String(required=True, metadata={"example": "card_declined"})
    message = fields.String(required=True)
    at = fields.String(required=True, allow_none=True, metadata={"format": "date-time"})


class LastTopUpSchema(_Strict):
    """The account's latest top-up, whatever its status."""

    id = fields.String(required=True)
    status = fields.String(required=True)
    credits = fields.Integer(required=True)
    amount = fields.String(required=True, metadata={"example": "19.00"})
    currency = fields.String(required=True, metadata={"example": "USD"})
    at = fields.String(required=True, allow_none=True, metadata={
        "format": "date-time", "description": "When it completed (or, in flight, was decided)."})


class AutoTopUpSchema(_Strict):
    enabled = fields.Boolean()
    payment_method = fields.String(allow_none=True)
    customer = fields.String(allow_none=True)
    monthly_limit = fields.String(allow_none=True, metadata={
        "example": "50.00", "description": "The most its top-ups may charge in a UTC month; null: no limit."})
    consecutive_failures = fields.Integer(metadata={"description": "Declines since the last success."})
    last_failure = fields.Nested(TopUpFailureSchema, allow_none=True)
    retry_at = fields.String(allow_none=True, metadata={
        "format": "date-time", "description": "No top-up is tried before this; null: none is held back."})
    last_top_up = fields.Nested(LastTopUpSchema, allow_none=True)


class ForecastSchema(_Strict):
    """How fast the account uses credits and when they run out at that rate."""

    credits_per_day = fields.Float(required=True, metadata={
        "description": "Usage credits a day over ADDONS_FORECAST_WINDOW, rounded to 2 decimals."})
    depletes_at = fields.String(required=True, allow_none=True, metadata={"format": "date-time"})


class BalancesSchema(_Strict):
    """Spendable credits by category (both 0 while the balance is in debt)."""

    paid = fields.Integer(required=True)
    promotional = fields.Integer(required=True)


class NextExpirySchema(_Strict):
    """The soonest expiry of a spendable grant, and the credits that expire then."""

    at = fields.String(required=True, metadata={"format": "date-time"})
    credits = fields.Integer(required=True)


class AccountSchema(_Strict):
    """A buyer's credit account for one product."""

    id = fields.String(required=True)
    product_id = fields.String(required=True)
    buyer_email = fields.String(required=True)
    balance = fields.Integer(required=True)
    available = fields.Integer(required=True, metadata={
        "description": "The balance less the credits active holds reserve: what may be spent."})
    held = fields.Integer(required=True, metadata={"description": "Credits reserved by active holds."})
    threshold = fields.Integer(required=True, allow_none=True)
    auto_top_up = fields.Nested(AutoTopUpSchema, required=True)
    balances = fields.Nested(BalancesSchema, required=True)
    next_expiry = fields.Nested(NextExpirySchema, required=True, allow_none=True)
    forecast = fields.Nested(ForecastSchema, required=True, allow_none=True, metadata={
        "description": "null when there was no usage in the forecast window."})


class AllocationSchema(_Strict):
    """Credits an entry moved to or from one grant, signed like its ``delta``;
    ``grant_id`` null is the part of a deduction no grant covered (debt)."""

    grant_id = fields.String(required=True, allow_none=True)
    amount = fields.Integer(required=True)


class EntrySchema(_Strict):
    """One ledger entry."""

    id = fields.String(required=True)
    sequence = fields.Integer(required=True)
    delta = fields.Integer(required=True)
    balance_after = fields.Integer(required=True)
    kind = fields.String(required=True)
    description = fields.String(required=True)
    reference = fields.String(required=True, allow_none=True)
    metadata = fields.Dict(required=True, keys=fields.String(), values=fields.String())
    idempotency_key = fields.String(required=True, allow_none=True)
    actor = fields.String(required=True, allow_none=True)
    created_at = fields.String(required=True, metadata={"format": "date-time"})
    allocations = fields.List(fields.Nested(AllocationSchema), required=True, metadata={
        "description": "The grants this entry drew on (or created), in order; they sum to delta. "
                       "Empty for entries written before grants existed."})


def _naive_utc(data: dict) -> dict:
    if data.get("expires_at") is not None:
        data["expires_at"] = data["expires_at"].astimezone(UTC).replace(tzinfo=None)
    return data


class _GrantTerms(_Strict):
    """``category`` and ``expires_at`` of the grant a positive ``value`` creates."""

    category = fields.String(validate=validate.OneOf(["paid", "promotional"]), metadata={
        "description": "The grant's category when value > 0 (default promotional)."})
    expires_at = fields.AwareDateTime(default_timezone=UTC, metadata={
        "description": "When the grant expires (must be in the future; default never). Only when value > 0."})

    @validates_schema
    def _terms_only_when_adding(self, data: dict, **kwargs: Any) -> None:
        if data.get("value", 0) < 0:
            bad = {name: ["Only for a positive value."] for name in ("category", "expires_at") if name in data}
            if bad:
                raise ValidationError(bad)

    @post_load
    def _utc(self, data: dict, **kwargs: Any) -> dict:
        return _naive_utc(data)


class AdjustmentCreateSchema(_GrantTerms):
    """A manual correction: ``value`` credits (either sign) and the reason for it."""

    value = Credits(nonzero=True, required=True)
    description = fields.String(required=True, validate=[validate.Length(1, DESCRIPTION_LENGTH), _not_blank],
                                metadata={"description": "Why the balance is corrected."})
    reference = fields.String(validate=validate.Length(max=REFERENCE_LENGTH), allow_none=True, load_default=None)
    metadata = Metadata(load_default=dict)
    idempotency_key = IdempotencyKey()


class AdjustmentSchema(_Strict):
    """An adjustment's answer: its ledger entry and the balance right after it."""

    entry = fields.Nested(EntrySchema, required=True)
    balance = fields.Integer(required=True)


# -- the PayKickstart-style usage endpoints ----------------------------------------

class UsageBalanceSchema(_Strict):
    """Names the add-on account: ``product_id`` + ``buyer_email``, or ``invoice_id``."""

    product_id = fields.String(validate=validate.Length(1, ID_LENGTH))
    buyer_email = BuyerEmail(validate=validate.Length(max=320))
    invoice_id = fields.String(validate=validate.Length(1, REFERENCE_LENGTH))
    auth_token = fields.String(load_only=True, metadata={"description": "The API key, if not sent as a Bearer token."})

    @validates_schema
    def _names_an_account(self, data: dict, **kwargs: Any) -> None:
        if "invoice_id" not in data and not ("product_id" in data and "buyer_email" in data):
            raise ValidationError("Give product_id and buyer_email, or invoice_id.", "buyer_email")

    @post_load
    def _without_auth_token(self, data: dict, **kwargs: Any) -> dict:
        data.pop("auth_token", None)
        return data


class _UsageChange(_GrantTerms):
    """What one usage record changes, on ``usage/add`` and in a batch alike."""

    value = Credits(nonzero=True, required=True)
    description = fields.String(validate=validate.Length(max=DESCRIPTION_LENGTH), load_default="")
    reference = fields.String(validate=validate.Length(max=REFERENCE_LENGTH), allow_none=True, load_default=None)
    metadata = Metadata(load_default=dict)
    idempotency_key = IdempotencyKey()


class UsageAddSchema(UsageBalanceSchema, _UsageChange):
    """``value`` < 0 deducts (kind usage), > 0 adds (kind adjustment, a grant:
    ``category`` default promotional, optional ``expires_at``)."""


class _UsageData(AccountSchema):
    """The account as the usage endpoints show it: its id is ``account_id``."""

    class Meta(AccountSchema.Meta):
        exclude = ("id",)

    account_id = fields.String(required=True)
    entry = fields.Nested(EntrySchema, metadata={"description": "Only in the answer to usage/add."})


class UsageResponseSchema(_Strict):
    success = fields.Boolean(required=True)
    data = fields.Nested(_UsageData, required=True)


# -- common ------------------------------------------------------------------------

class ListQuerySchema(_Strict):
    """``limit`` 1–500 (default 50) and an opaque ``cursor`` from ``next_cursor``."""

    limit = fields.Integer(strict=True, validate=validate.Range(1, MAX_PAGE_SIZE), load_default=50)
    cursor = fields.String(validate=validate.Length(1, 100))


class AccountListQuerySchema(ListQuerySchema):
    """``GET /addons/accounts`` filters, all optional, plus ``limit`` and ``cursor``."""

    buyer_email = BuyerEmail(validate=validate.Length(max=320))
    product_id = fields.String(validate=validate.Length(1, ID_LENGTH))


class WriteSchema(_Strict):
    """A write with no fields of its own: only the optional ``idempotency_key``."""

    idempotency_key = IdempotencyKey()


# -- API keys ------------------------------------------------------------------------

class ApiKeySchema(_Strict):
    """An API key as lists show it: never its secret."""

    id = fields.String(required=True)
    created_at = fields.String(required=True, metadata={"format": "date-time"})
    revoked_at = fields.String(required=True, allow_none=True, metadata={"format": "date-time"})


class ApiKeyCreatedSchema(_Strict):
    """A new key. ``key`` is in this answer only (an idempotent replay leaves it out)."""

    id = fields.String(required=True)
    key = fields.String(metadata={"example": "sk_01jd3k5q8w2n7x4m6r9t0v1b2c_..."})
    created_at = fields.String(required=True, metadata={"format": "date-time"})


class _ErrorBody(_Strict):
    code = fields.String(required=True, metadata={"example": "insufficient_credits"})
    message = fields.String(required=True)
    # The body's key is "fields"; marshmallow takes declared fields off the class, so nothing is shadowed.
    fields = fields.Dict(required=True,  # type: ignore[assignment]
                         metadata={"description": "Each bad field and its messages."})


class ErrorSchema(_Strict):
    """Every failure: ``{"error": {"code", "message", "fields"}}``."""

    error = fields.Nested(_ErrorBody, required=True)


# -- batch usage (POST /addons/usage-records) --------------------------------------

class UsageRecordSchema(_UsageChange):
    """One record of a batch: the account by ``account_id``, or by ``product_id``
    + ``buyer_email`` (opened for a new buyer when ``value`` > 0), and the change
    as on ``usage/add``; its ``idempotency_key`` is the record's own."""

    account_id = fields.String(validate=validate.Length(1, ID_LENGTH))
    product_id = fields.String(validate=validate.Length(1, ID_LENGTH))
    buyer_email = BuyerEmail(validate=validate.Length(max=320))

    @validates_schema
    def _names_one_account(self, data: dict, **kwargs: Any) -> None:
        by_id, by_buyer = "account_id" in data, "product_id" in data or "buyer_email" in data
        if by_id == by_buyer or (by_buyer and not ("product_id" in data and "buyer_email" in data)):
            raise ValidationError("Give account_id, or product_id and buyer_email.", "account_id")


class UsageRecordsSchema(_Strict):
    """``{"records": [...]}``: 1 to ``BATCH_RECORDS`` usage records, applied in order."""

    records = fields.List(fields.Nested(UsageRecordSchema), required=True,
                          validate=validate.Length(1, BATCH_RECORDS))
    idempotency_key = IdempotencyKey(metadata={"description": "The whole request's key (or the Idempotency-Key "
                                                              "header); each record may carry its own."})


class UsageRecordResultSchema(_Strict):
    """One record's outcome: ``status`` as ``usage/add`` would answer it, with its
    ``entry`` and the ``balance`` right after it, or the ``error`` that refused it."""

    status = fields.Integer(required=True, metadata={"example": 200})
    entry = fields.Nested(EntrySchema, required=True, allow_none=True)
    balance = fields.Integer(required=True, allow_none=True)
    error = fields.Nested(_ErrorBody, required=True, allow_none=True)


class UsageRecordsResultSchema(_Strict):
    """Each record's outcome, in request order."""

    data = fields.List(fields.Nested(UsageRecordResultSchema), required=True)


# -- auto top-up ---------------------------------------------------------------------

class BuyerAutoTopUpSettingsSchema(_Strict):
    """``PUT /addons/me/…/auto-top-up``: the buyer's own settings, replaced as a
    whole. No ``customer``: the host names it (``buyer_loader``), never the browser."""

    enabled = fields.Boolean(required=True, truthy={True}, falsy={False})
    threshold = Credits(minimum=0, allow_none=True, load_default=None,
                        metadata={"description": "Top up when the balance is at or below this."})
    payment_method = fields.String(validate=validate.Length(1, EXTERNAL_ID_LENGTH), allow_none=True, load_default=None,
                                   metadata={"example": "pm_card_visa"})
    monthly_limit = fields.String(validate=_decimal_string, allow_none=True, load_default=None, metadata={
        "pattern": "^[0-9]+(\\.[0-9]+)?$", "example": "50.00",
        "description": "The most automatic top-ups may charge in a UTC month, in the product's currency "
                       "(decimal string > 0); null or omitted: no limit."})
    idempotency_key = IdempotencyKey(load_only=True)

    @validates_schema
    def _complete_when_enabled(self, data: dict, **kwargs: Any) -> None:
        if data.get("enabled"):
            missing = {name: ["Required when enabled is true."]
                       for name in ("threshold", "payment_method") if data.get(name) is None}
            if missing:
                raise ValidationError(missing)


class AutoTopUpSettingsSchema(BuyerAutoTopUpSettingsSchema):
    """``PUT …/auto-top-up``: replaces the settings; an omitted optional field is cleared."""

    customer = fields.String(validate=validate.Length(1, EXTERNAL_ID_LENGTH), allow_none=True, load_default=None,
                             metadata={"description": "The gateway's customer (required by Stripe)."})


# -- credit grants -------------------------------------------------------------------

class GrantSchema(_Strict):
    """A grant: credits that entered an account, drawn on in consumption order."""

    id = fields.String(required=True, metadata={"example": "grant_01jd3k5q8w2n7x4m6r9t0v1b2c"})
    account_id = fields.String(required=True)
    category = fields.String(required=True, validate=validate.OneOf(["paid", "promotional"]))
    amount = fields.Integer(required=True, metadata={"description": "As granted."})
    remaining = fields.Integer(required=True)
    priority = fields.Integer(required=True, metadata={"description": "0-100; lower is drawn first."})
    expires_at = fields.String(required=True, allow_none=True, metadata={"format": "date-time"})
    status = fields.String(required=True, validate=validate.OneOf(["active", "depleted", "expired", "voided"]))
    source = fields.String(required=True, validate=validate.OneOf(
        ["purchase", "top_up", "adjustment", "grant", "migration"]))
    reference = fields.String(required=True, allow_none=True)
    description = fields.String(required=True)
    metadata = fields.Dict(required=True, keys=fields.String(), values=fields.String())
    created_at = fields.String(required=True, metadata={"format": "date-time"})


class GrantCreateSchema(_Strict):
    """A grant given by hand: ``amount`` credits, promotional unless said otherwise."""

    amount = Credits(minimum=1, required=True)
    category = fields.String(validate=validate.OneOf(["paid", "promotional"]), load_default="promotional")
    expires_at = fields.AwareDateTime(default_timezone=UTC, allow_none=True, load_default=None,
                                      metadata={"description": "Must be in the future; null or omitted: never."})
    priority = fields.Integer(strict=True, validate=validate.Range(0, 100), load_default=50,
                              metadata={"description": "Lower is drawn first."})
    description = fields.String(validate=validate.Length(max=DESCRIPTION_LENGTH), load_default="")
    reference = fields.String(validate=validate.Length(max=REFERENCE_LENGTH), allow_none=True, load_default=None)
    metadata = Metadata(load_default=dict)
    idempotency_key = IdempotencyKey()

    @post_load
    def _utc(self, data: dict, **kwargs: Any) -> dict:
        return _naive_utc(data)


class GrantCreatedSchema(_Strict):
    """A new grant, the ``adjustment`` entry that created it and the balance after it."""

    grant = fields.Nested(GrantSchema, required=True)
    entry = fields.Nested(EntrySchema, required=True)
    balance = fields.Integer(required=True)


class GrantListQuerySchema(ListQuerySchema):
    """``GET …/grants`` filters, both optional, plus ``limit`` and ``cursor``."""

    status = fields.String(validate=validate.OneOf(["active", "depleted", "expired", "voided"]))
    category = fields.String(validate=validate.OneOf(["paid", "promotional"]))


class GrantVoidSchema(_Strict):
    """Voiding a grant: an optional reason (the ``void`` entry's description)."""

    description = fields.String(validate=validate.Length(max=DESCRIPTION_LENGTH), load_default="")
    idempotency_key = IdempotencyKey()


class TopUpSchema(_Strict):
    """An automatic top-up, as a merchant reconciles it against the gateway."""

    id = fields.String(metadata={"example": "topup_01jd3k5q8w2n7x4m6r9t0v1b2c"})
    account_id = fields.String()
    status = fields.String(validate=validate.OneOf(
        ["pending", "charging", "unresolved", "pending_settlement", "succeeded", "failed", "canceled"]),
        metadata={"description": "unresolved: the gateway never answered (lookup, or resolve it); "
                                 "pending_settlement: charged, not yet settled (credited once it succeeds)."})
    banks = fields.Integer()
    credits = fields.Integer()
    amount = fields.String(metadata={"example": "19.00"})
    currency = fields.String(metadata={"example": "USD"})
    payment_method = fields.String()
    customer = fields.String(allow_none=True)
    charge_id = fields.String(allow_none=True, metadata={"description": "The gateway's charge (PaymentIntent) id."})
    failure_code = fields.String(allow_none=True, metadata={"example": "card_declined"})
    failure_message = fields.String(allow_none=True)
    attempts = fields.Integer(metadata={"description": "Calls made to the gateway."})
    next_attempt_at = fields.String(allow_none=True, metadata={
        "format": "date-time", "description": "The next charge attempt, or the next lookup at the gateway."})
    created_at = fields.String(metadata={"format": "date-time"})
    updated_at = fields.String(metadata={"format": "date-time"})
    completed_at = fields.String(allow_none=True, metadata={"format": "date-time"})
    consent_id = fields.String(allow_none=True, metadata={"description": "The consent record it relied on."})


class ConsentBankSchema(_Strict):
    """The bank the buyer agreed to buy: its credits and price."""

    credits = fields.Integer(required=True)
    price = fields.String(required=True, metadata={"example": "19.00"})
    currency = fields.String(required=True, metadata={"example": "USD"})


class ConsentSchema(_Strict):
    """A consent record: what the buyer agreed to when auto top-up was switched
    on (or off), or what it may charge changed. Never changed or deleted."""

    id = fields.String(required=True, metadata={"example": "consent_01jd3k5q8w2n7x4m6r9t0v1b2c"})
    account_id = fields.String(required=True)
    enabled = fields.Boolean(required=True)
    threshold = fields.Integer(required=True, allow_none=True)
    payment_method = fields.String(required=True, allow_none=True)
    customer = fields.String(required=True, allow_none=True)
    monthly_limit = fields.String(required=True, allow_none=True, metadata={"example": "50.00"})
    bank = fields.Nested(ConsentBankSchema, required=True)
    terms = fields.String(required=True, metadata={"description": "The exact text agreed to."})
    actor = fields.String(required=True, metadata={
        "description": "Who made the change: an API key id, buyer, hook:order_paid or host."})
    ip = fields.String(required=True, allow_none=True)
    user_agent = fields.String(required=True, allow_none=True)
    created_at = fields.String(required=True, metadata={"format": "date-time"})


class TopUpResolveSchema(_Strict):
    """``POST …/top-ups/<id>/resolve``: what the merchant found at the gateway."""

    outcome = fields.String(required=True, validate=validate.OneOf(["succeeded", "failed"]),
                            metadata={"description": "succeeded: the charge was made (credit it); "
                                                     "failed: no money was taken."})
    charge_id = fields.String(validate=validate.Length(1, EXTERNAL_ID_LENGTH), metadata={
        "example": "pi_3PqZ2b2eZvKYlo2C1a2b3c4d", "description": "The gateway's charge id; only with succeeded."})
    idempotency_key = IdempotencyKey(load_only=True)

    @validates_schema
    def _charge_id_with_success(self, data: dict, **kwargs: Any) -> None:
        if data.get("outcome") == "succeeded" and "charge_id" not in data:
            raise ValidationError({"charge_id": ["Required when outcome is succeeded."]})
        if data.get("outcome") == "failed" and "charge_id" in data:
            raise ValidationError({"charge_id": ["Only with outcome succeeded."]})


# -- spend holds ---------------------------------------------------------------------

_HOLD_STATUSES = ["held", "captured", "released", "expired"]


class HoldSchema(_Strict):
    """Credits reserved for work whose cost is known at its end."""

    id = fields.String(required=True, metadata={"example": "hold_01jd3k5q8w2n7x4m6r9t0v1b2c"})
    account_id = fields.String(required=True)
    amount = fields.Integer(required=True, metadata={"description": "Credits reserved."})
    status = fields.String(required=True, validate=validate.OneOf(_HOLD_STATUSES), metadata={
        "description": "held until captured, released, or past expires_at (expired: it no longer counts)."})
    captured_amount = fields.Integer(required=True, allow_none=True, metadata={"description": "Null until captured."})
    entry_id = fields.String(required=True, allow_none=True, metadata={
        "description": "The capture's usage ledger entry, or null."})
    expires_at = fields.String(required=True, metadata={"format": "date-time"})
    description = fields.String(required=True)
    reference = fields.String(required=True, allow_none=True)
    metadata = fields.Dict(required=True, keys=fields.String(), values=fields.String())
    created_at = fields.String(required=True, metadata={"format": "date-time"})


class _HoldTerms(_Strict):
    """What a hold reserves, and for how long."""

    value = Credits(minimum=1, required=True, metadata={"description": "Credits to reserve."})
    expires_in = fields.Integer(strict=True, validate=validate.Range(1, 86400), load_default=900, metadata={
        "description": "Seconds until the hold expires unless captured or released (default 900)."})
    description = fields.String(validate=validate.Length(max=DESCRIPTION_LENGTH), load_default="")
    reference = fields.String(validate=validate.Length(max=REFERENCE_LENGTH), allow_none=True, load_default=None)
    metadata = Metadata(load_default=dict)
    idempotency_key = IdempotencyKey()


class HoldCreateSchema(_HoldTerms):
    """``POST …/accounts/<id>/holds``: reserve ``value`` credits."""


class UsageHoldSchema(UsageBalanceSchema, _HoldTerms):
    """``POST /buyer-addon/usage/hold``: the account as on the usage endpoints, and the hold."""


class UsageHoldResponseSchema(_Strict):
    success = fields.Boolean(required=True)
    data = fields.Nested(HoldSchema, required=True)


class HoldCaptureSchema(_Strict):
    """Capture a hold: ``value`` credits of it (1..amount; default all); the rest is released."""

    value = Credits(minimum=1, metadata={"description": "Credits the work cost (default: the whole hold)."})
    idempotency_key = IdempotencyKey()


class HoldListQuerySchema(ListQuerySchema):
    """``GET …/holds`` filter, optional, plus ``limit`` and ``cursor``."""

    status = fields.String(validate=validate.OneOf(_HOLD_STATUSES))
