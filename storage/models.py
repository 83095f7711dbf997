"""Every table of the plugin. No business logic lives here.

Design overview: a merchant owns API keys, add-on products and buyers; a credit
account joins one buyer to one product and carries the current ``balance``;
every change to that balance is one append-only ``LedgerEntry`` written in the
same transaction as the balance update.

Invariant (kept by ``addon_plugin.ledger``, the only writer of balances): an
account's ``balance`` equals the sum of its entries' ``delta``, and its entries'
``sequence`` run 1..``last_sequence`` without gaps.

Money is stored as integer minor units (``price_minor``) with its currency;
credits are integers. Times are naive UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime

from peewee import (
    SQL,
    BigIntegerField,
    BooleanField,
    CharField,
    CompositeKey,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

from .database import db

__all__ = [
    "utcnow",
    "isoformat",
    "SecretField",
    "BaseModel",
    "Merchant",
    "ApiKey",
    "Product",
    "Buyer",
    "CreditAccount",
    "LedgerEntry",
    "IdempotencyRecord",
    "SchemaVersion",
    "WebhookEndpoint",
    "WebhookEvent",
    "WebhookDelivery",
    "WebhookAttempt",
    "TOP_UP_IN_FLIGHT",
    "TOP_UP_TO_CHARGE",
    "TOP_UP_TO_LOOK_UP",
    "TopUp",
    "Order",
    "CreditGrant",
    "GrantAllocation",
    "CreditHold",
    "ALL_MODELS",
]


def utcnow() -> datetime:
    """The current time, naive UTC (how every timestamp is stored)."""
    return datetime.now(UTC).replace(tzinfo=None)


def isoformat(moment: datetime | str | None) -> str | None:
    """A stored time (naive UTC; a string as raw SQLite rows give it) as ISO 8601
    with ``Z``, e.g. ``2026-01-31T12:00:00.123456Z``: how every time is shown."""
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds") + "Z"


class _Unlogged(str):
    """A parameter that Peewee's query log (logger ``peewee``, DEBUG) shows as
    ``'<secret>'``: the log prints each statement's parameters with ``repr``.
    The database drivers bind it as the string it is."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'<secret>'"


class SecretField(CharField):
    """A column holding a secret: written and compared as usual, but its values
    never appear in the query log, whatever level a host logs at."""

    def db_value(self, value):
        value = super().db_value(value)
        return None if value is None else _Unlogged(value)


class BaseModel(Model):
    class Meta:
        database = db
        legacy_table_names = False


class Merchant(BaseModel):
    """A seller on the host platform; everything else is scoped to one."""

    id = CharField(primary_key=True, max_length=40)
    name = CharField(max_length=200)
    created_at = DateTimeField(default=utcnow)


class ApiKey(BaseModel):
    """A merchant's API key. Only a SHA-256 of its secret part is stored."""

    id = CharField(primary_key=True, max_length=40)
    merchant = ForeignKeyField(Merchant, backref="api_keys", on_delete="CASCADE")
    secret_hash = SecretField(max_length=64)
    created_at = DateTimeField(default=utcnow)
    revoked_at = DateTimeField(null=True)


class Product(BaseModel):
    """An add-on: ``credit_amount`` credits (one bank) for ``price``."""

    id = CharField(primary_key=True, max_length=40)
    merchant = ForeignKeyField(Merchant, backref="products", on_delete="CASCADE")
    name = CharField(max_length=200)
    price_minor = BigIntegerField()
    currency = CharField(max_length=3)
    credit_amount = BigIntegerField()
    top_up_allowed = BooleanField(default=False)
    overdraft_limit = BigIntegerField(default=0)
    host_product_id = CharField(max_length=255, null=True)
    credit_expiry_days = IntegerField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "addon_product"
        indexes = ((("merchant", "host_product_id"), True),)


class Buyer(BaseModel):
    """A buyer of one merchant, known by lower-cased e-mail."""

    id = CharField(primary_key=True, max_length=40)
    merchant = ForeignKeyField(Merchant, backref="buyers", on_delete="CASCADE")
    email = CharField(max_length=320)
    host_customer_id = CharField(max_length=255, null=True)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("merchant", "email"), True),)


class CreditAccount(BaseModel):
    """One buyer's credits for one product, with the buyer's auto top-up settings.

    ``merchant_id`` and ``buyer_email`` are copies (both immutable) so the usage
    path finds and updates an account in one statement without joins.
    """

    id = CharField(primary_key=True, max_length=40)
    merchant = ForeignKeyField(Merchant, backref="accounts", on_delete="CASCADE")
    merchant_id: str  # the key's column, which peewee adds (declared for type checkers)
    product = ForeignKeyField(Product, backref="accounts", on_delete="CASCADE")
    product_id: str  # the key's column, which peewee adds (declared for type checkers)
    buyer = ForeignKeyField(Buyer, backref="accounts", on_delete="CASCADE")
    buyer_email = CharField(max_length=320)
    balance = BigIntegerField(default=0)
    last_sequence = BigIntegerField(default=0)
    threshold = BigIntegerField(null=True)
    auto_top_up_enabled = BooleanField(default=False)
    payment_method = CharField(max_length=255, null=True)
    customer = CharField(max_length=255, null=True)
    top_up_failures = IntegerField(default=0)
    top_up_blocked_until = DateTimeField(null=True)
    #: When its soonest-expiring active grant expires (None: none expires). A
    #: cheap guard: a read or change at or after it writes the expiry first.
    next_expiry_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)
    #: Credits reserved by the account's active holds (``available`` = balance - held).
    held = BigIntegerField(default=0)
    #: When its soonest active hold expires (None: none is active); a read or
    #: change at or after it marks the expired holds first.
    next_hold_expiry_at = DateTimeField(null=True)
    # Auto top-up the buyer can trust (migration 10): the most its succeeded top-ups may
    # charge in a UTC month (None: no limit), the consent record top-ups rely on, and when
    # balance.forecast_low was sent for the current approach (None: not sent).
    monthly_limit_minor = BigIntegerField(null=True)
    consent_id = CharField(max_length=40, null=True)
    forecast_warned_at = DateTimeField(null=True)

    class Meta:
        indexes = (
            (("product", "buyer_email"), True),
            (("merchant", "buyer_email"), False),
        )


# The worker finds the accounts whose retry block has passed (few ever have one).
CreditAccount.add_index(CreditAccount.index(
    CreditAccount.top_up_blocked_until, name="credit_account_retry_at",
    where=SQL("top_up_blocked_until IS NOT NULL"),
))
# The worker finds the accounts whose soonest grant expiry has come.
CreditAccount.add_index(CreditAccount.index(
    CreditAccount.next_expiry_at, name="credit_account_next_expiry_at",
    where=SQL("next_expiry_at IS NOT NULL"),
))
# The worker finds the accounts whose soonest hold expiry has come.
CreditAccount.add_index(CreditAccount.index(
    CreditAccount.next_hold_expiry_at, name="credit_account_next_hold_expiry_at",
    where=SQL("next_hold_expiry_at IS NOT NULL"),
))


class LedgerEntry(BaseModel):
    """One balance change; append-only. ``balance_after`` is the balance it left."""

    id = CharField(primary_key=True, max_length=40)
    account = ForeignKeyField(CreditAccount, backref="entries", on_delete="CASCADE", index=False)
    sequence = BigIntegerField()
    delta = BigIntegerField()
    balance_after = BigIntegerField()
    kind = CharField(max_length=20)
    description = TextField(default="")
    reference = TextField(null=True)
    metadata = TextField(default="{}")
    idempotency_key = CharField(max_length=300, null=True)
    actor = CharField(max_length=100, null=True)
    created_at = DateTimeField(default=utcnow)
    #: The one credit grant the entry created, drew on or took from; an entry
    #: touching several grants (or debt) has ``GrantAllocation`` rows instead.
    grant_id = CharField(max_length=40, null=True)
    #: Who issued ``idempotency_key`` (``api``, ``hook`` or ``host``; NULL without
    #: a key): keys of different spaces never match, whatever their text.
    key_space = CharField(max_length=10, null=True)

    class Meta:
        # The (account, sequence) index also serves the account foreign key.
        indexes = ((("account", "sequence"), True),)


LedgerEntry.add_index(LedgerEntry.index(LedgerEntry.account, LedgerEntry.key_space, LedgerEntry.idempotency_key,
                                        unique=True).where(LedgerEntry.idempotency_key.is_null(False)))
LedgerEntry.add_index(LedgerEntry.index(LedgerEntry.reference).where(LedgerEntry.reference.is_null(False)))


class IdempotencyRecord(BaseModel):
    """The stored result of a write request, per (merchant, key space, key), for
    replays. ``key`` is the client's key exactly as sent; ``key_space`` is whose
    it is (``api``: the merchant's API keys; ``buyer:<sha256 of the e-mail>``: a
    signed-in buyer), so no caller is ever replayed another's answer."""

    merchant = ForeignKeyField(Merchant, on_delete="CASCADE", index=False)
    key_space = CharField(max_length=100)
    key = CharField(max_length=255)
    request_hash = CharField(max_length=64)
    response_status = IntegerField()
    response_body = TextField()
    created_at = DateTimeField(default=utcnow, index=True)

    class Meta:
        primary_key = CompositeKey("merchant", "key_space", "key")


class SchemaVersion(BaseModel):
    """Which schema migrations have been applied."""

    version = IntegerField(primary_key=True)
    applied_at = DateTimeField(default=utcnow)


class WebhookEndpoint(BaseModel):
    """A merchant's webhook URL, the event types it wants ([] = all) and its secrets.

    ``secret`` signs every delivery; after a rotation ``previous_secret`` signs
    too, until ``previous_secret_expires_at``. Secrets are stored as given: the
    HMAC needs them (Standard Webhooks is symmetric); they never reach the query log.
    """

    id = CharField(primary_key=True, max_length=40)
    merchant = ForeignKeyField(Merchant, backref="webhook_endpoints", on_delete="CASCADE")
    url = TextField()
    description = TextField(default="")
    event_types = TextField(default="[]")
    secret = SecretField(max_length=100)
    previous_secret = SecretField(max_length=100, null=True)
    previous_secret_expires_at = DateTimeField(null=True)
    enabled = BooleanField(default=True)
    disabled_reason = CharField(max_length=40, null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class WebhookEvent(BaseModel):
    """One event, its body serialised once: every delivery and retry sends these bytes.

    ``id`` is the ``webhook-id`` header.
    """

    id = CharField(primary_key=True, max_length=40)
    # Not indexed: nothing reads events by merchant (deleting a merchant scans).
    merchant = ForeignKeyField(Merchant, backref="webhook_events", on_delete="CASCADE", index=False)
    type = CharField(max_length=40)
    payload = TextField()
    created_at = DateTimeField(default=utcnow, index=True)


class WebhookDelivery(BaseModel):
    """The outbox row: one event owed to one endpoint.

    ``status`` is ``pending`` until an attempt succeeds (``succeeded``) or the
    last one fails (``failed``). A worker leases a row (``lease_token``,
    ``lease_expires_at``) while it makes an attempt; a lease that expired is free.
    """

    id = CharField(primary_key=True, max_length=40)
    event = ForeignKeyField(WebhookEvent, backref="deliveries", on_delete="CASCADE", index=False)
    event_id: str  # the key's column, which peewee adds (declared for type checkers)
    endpoint = ForeignKeyField(WebhookEndpoint, backref="deliveries", on_delete="CASCADE", index=False)
    endpoint_id: str  # the key's column, which peewee adds (declared for type checkers)
    status = CharField(max_length=12, default="pending")
    attempt_count = IntegerField(default=0)
    next_attempt_at = DateTimeField(null=True)
    lease_token = CharField(max_length=40, null=True)
    lease_expires_at = DateTimeField(null=True)
    last_attempt_at = DateTimeField(null=True)
    completed_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        # (event, endpoint) also serves the event foreign key; (endpoint, id)
        # the endpoint's and lists newest first.
        indexes = (
            (("event", "endpoint"), True),
            (("endpoint", "id"), False),
        )


# What a worker claims from: only pending rows, by due time.
WebhookDelivery.add_index(WebhookDelivery.index(WebhookDelivery.next_attempt_at)
                          .where(WebhookDelivery.status == "pending"))


class WebhookAttempt(BaseModel):
    """One HTTP attempt of a delivery: what came back, how long it took."""

    id = CharField(primary_key=True, max_length=40)
    delivery = ForeignKeyField(WebhookDelivery, backref="attempts", on_delete="CASCADE", index=False)
    delivery_id: str  # the key's column, which peewee adds (declared for type checkers)
    number = IntegerField()
    status_code = IntegerField(null=True)
    duration_ms = IntegerField()
    error = TextField(null=True)
    response_excerpt = TextField(null=True)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        # Also serves the delivery foreign key. Unique: no attempt is recorded twice.
        indexes = ((("delivery", "number"), True),)


#: Top-up statuses still to be charged: due at ``next_attempt_at``.
TOP_UP_TO_CHARGE = ("pending", "charging")
#: Top-up statuses whose outcome the gateway's lookup settles: next asked at ``next_attempt_at``.
TOP_UP_TO_LOOK_UP = ("unresolved", "pending_settlement")
#: Top-up statuses that count as "in flight" and block a new top-up: at most
#: one row per account (a unique partial index) may have one of them.
TOP_UP_IN_FLIGHT = TOP_UP_TO_CHARGE + TOP_UP_TO_LOOK_UP


class TopUp(BaseModel):
    """An automatic top-up: ``banks`` banks bought for ``amount_minor`` (in
    ``currency``'s minor units), crediting ``credits``.

    ``status`` is ``pending`` (decided, due at ``next_attempt_at``), ``charging``
    (leased by a worker holding ``lease`` until ``next_attempt_at``),
    ``unresolved`` (the outcome is unknown) or ``pending_settlement`` (the gateway
    accepted a charge that has not settled), both looked up again at
    ``next_attempt_at``; then ``succeeded``, ``failed`` or ``canceled``.
    ``payment_method`` and ``customer`` are the account's when the first attempt
    is claimed, kept so every attempt sends the gateway the same charge.
    """

    id = CharField(primary_key=True, max_length=40)
    account = ForeignKeyField(CreditAccount, backref="top_ups", on_delete="CASCADE", index=False)
    account_id: str  # the key's column, which peewee adds (declared for type checkers)
    merchant = ForeignKeyField(Merchant, on_delete="CASCADE")
    merchant_id: str  # the key's column, which peewee adds (declared for type checkers)
    status = CharField(max_length=32)
    banks = IntegerField()
    credits = BigIntegerField()
    amount_minor = BigIntegerField()
    currency = CharField(max_length=3)
    payment_method = CharField(max_length=255)
    customer = CharField(max_length=255, null=True)
    charge_id = CharField(max_length=255, null=True)
    failure_code = CharField(max_length=64, null=True)
    failure_message = TextField(null=True)
    attempts = IntegerField(default=0)
    next_attempt_at = DateTimeField(null=True)
    lease = CharField(max_length=40, null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)
    completed_at = DateTimeField(null=True)
    consent_id = CharField(max_length=40, null=True)  # the consent record it relied on

    class Meta:
        table_name = "top_up"
        indexes = (
            (("account", "id"), False),
            (("status", "next_attempt_at"), False),
        )


TopUp.add_index(TopUp.index(
    TopUp.account, unique=True, name="top_up_one_in_flight",
    where=SQL("status IN ({})".format(", ".join(f"'{s}'" for s in TOP_UP_IN_FLIGHT))),
))

# The decline budget and the daily limit count an account's recent outcomes.
TopUp.add_index(TopUp.index(TopUp.account, TopUp.completed_at, name="top_up_account_completed"))
# An account's latest failed top-up (its visible ``last_failure``).
TopUp.add_index(TopUp.index(TopUp.account, TopUp.id, name="top_up_account_failed", where=SQL("status = 'failed'")))


class Order(BaseModel):
    """An order the host reported through its hooks: when it was paid, when
    refunded (either may come first). What it granted are its ``purchase``
    ledger entries, whose ``reference`` is ``order_id``."""

    merchant = ForeignKeyField(Merchant, on_delete="CASCADE", index=False)
    order_id = CharField(max_length=255)
    paid_at = DateTimeField(null=True)
    refunded_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "addon_order"
        primary_key = CompositeKey("merchant", "order_id")


class CreditGrant(BaseModel):
    """A lot of credits that entered an account: ``amount`` as granted,
    ``remaining`` still spendable. ``status`` is ``active`` (remaining > 0),
    ``depleted``, ``expired`` or ``voided``; only active grants are drawn on."""

    id = CharField(primary_key=True, max_length=40)
    account = ForeignKeyField(CreditAccount, backref="grants", on_delete="CASCADE", index=False)
    account_id: str  # the key's column, which peewee adds (declared for type checkers)
    category = CharField(max_length=12)
    amount = BigIntegerField()
    remaining = BigIntegerField()
    priority = IntegerField(default=50)
    expires_at = DateTimeField(null=True)
    status = CharField(max_length=12)
    source = CharField(max_length=12)
    reference = TextField(null=True)
    description = TextField(default="")
    metadata = TextField(default="{}")
    created_at = DateTimeField(default=utcnow)
    expiry_warned_at = DateTimeField(null=True)

    class Meta:
        table_name = "credit_grant"


# An account's spendable grants: one range of this index, in consumption order.
CreditGrant.add_index(CreditGrant.index(
    CreditGrant.account, CreditGrant.priority, CreditGrant.expires_at, CreditGrant.id,
    name="credit_grant_spendable", where=SQL("status = 'active'"),
))
# An account's grants newest first (the list), and an order's grants (exact refunds).
CreditGrant.add_index(CreditGrant.index(CreditGrant.account, CreditGrant.id, name="credit_grant_account_id"))
CreditGrant.add_index(CreditGrant.index(
    CreditGrant.account, CreditGrant.reference, name="credit_grant_reference",
    where=SQL("reference IS NOT NULL"),
))
# What the worker warns about: active grants that expire and were not warned of yet.
CreditGrant.add_index(CreditGrant.index(
    CreditGrant.expires_at, name="credit_grant_to_warn",
    where=SQL("status = 'active' AND expires_at IS NOT NULL AND expiry_warned_at IS NULL"),
))


class GrantAllocation(BaseModel):
    """Which grant a ledger entry moved credits of, and how many (signed like
    the entry's delta); ``grant`` None is the debt part of a deduction. Only
    for entries that touch several grants or debt: an entry with one grant
    names it in its own ``grant_id`` (one row less on the hot path)."""

    entry = ForeignKeyField(LedgerEntry, on_delete="CASCADE", index=False)
    position = IntegerField()
    grant = ForeignKeyField(CreditGrant, null=True, on_delete="CASCADE", index=False)
    amount = BigIntegerField()

    class Meta:
        table_name = "grant_allocation"
        primary_key = CompositeKey("entry", "position")


class CreditHold(BaseModel):
    """Credits reserved for work whose cost is known at its end: ``held`` until
    captured (one ``usage`` entry, ``entry_id``), released, or past
    ``expires_at`` (then ``expired``, and it no longer counts)."""

    id = CharField(primary_key=True, max_length=40)
    account = ForeignKeyField(CreditAccount, backref="holds", on_delete="CASCADE", index=False)
    account_id: str  # the key's column, which peewee adds (declared for type checkers)
    amount = BigIntegerField()
    status = CharField(max_length=12)
    captured_amount = BigIntegerField(null=True)
    entry_id = CharField(max_length=40, null=True)
    expires_at = DateTimeField()
    description = TextField(default="")
    reference = TextField(null=True)
    metadata = TextField(default="{}")
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "credit_hold"


# The active holds of an account, soonest expiry first: one range of this index.
CreditHold.add_index(CreditHold.index(CreditHold.account, CreditHold.expires_at, name="credit_hold_active",
                                      where=SQL("status = 'held'")))
# An account's holds newest first (the list).
CreditHold.add_index(CreditHold.index(CreditHold.account, CreditHold.id, name="credit_hold_account_id"))
class AutoTopUpConsent(BaseModel):
    """What a buyer agreed to when auto top-up was switched on or what it may
    charge changed: the settings, the bank, the exact terms text, who and from
    where. Append-only: the database refuses UPDATE and DELETE (triggers), and
    no foreign key cascades it away with its account."""

    id = CharField(primary_key=True, max_length=40)
    account_id = CharField(max_length=40)
    merchant_id = CharField(max_length=40)
    enabled = BooleanField()
    threshold = BigIntegerField(null=True)
    payment_method = CharField(max_length=255, null=True)
    customer = CharField(max_length=255, null=True)
    monthly_limit_minor = BigIntegerField(null=True)
    bank_credits = BigIntegerField()
    bank_price_minor = BigIntegerField()
    currency = CharField(max_length=3)
    terms = TextField()
    actor = CharField(max_length=100)
    ip = CharField(max_length=64, null=True)
    user_agent = TextField(null=True)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "auto_top_up_consent"
        indexes = ((("account_id", "id"), False),)


class UsageDay(BaseModel):
    """The credits of an account's ``usage`` entries in one UTC day (``day``:
    days since 1970-01-01), kept in the entry's transaction: the depletion
    forecast reads a primary-key range of these, never the ledger."""

    account = ForeignKeyField(CreditAccount, on_delete="CASCADE", index=False)
    day = IntegerField(index=True)
    credits = BigIntegerField()

    class Meta:
        table_name = "usage_day"
        primary_key = CompositeKey("account", "day")


ALL_MODELS = [
    Merchant,
    ApiKey,
    Product,
    Buyer,
    CreditAccount,
    LedgerEntry,
    IdempotencyRecord,
    SchemaVersion,
    WebhookEndpoint,
    WebhookEvent,
    WebhookDelivery,
    WebhookAttempt,
    TopUp,
    Order,
    CreditGrant,
    GrantAllocation,
    CreditHold,
    AutoTopUpConsent,
    UsageDay,
]
