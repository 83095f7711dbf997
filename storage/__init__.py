"""Storage: Peewee models, the database binding, transactions and migrations.

Holds every table and no business logic; knows nothing of Flask or HTTP.
"""

from .database import after_transaction, bind, db, dialect, on_commit, transaction, transaction_cache, unbind
from .dialects import Statements, sql
from .ids import new_id
from .models import (
    ALL_MODELS,
    TOP_UP_IN_FLIGHT,
    TOP_UP_TO_CHARGE,
    TOP_UP_TO_LOOK_UP,
    ApiKey,
    Buyer,
    CreditAccount,
    CreditGrant,
    GrantAllocation,
    IdempotencyRecord,
    LedgerEntry,
    Merchant,
    Order,
    Product,
    SchemaVersion,
    TopUp,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    isoformat,
    utcnow,
)
from .schema import current_version, migrate

__all__ = [
    "ALL_MODELS",
    "ApiKey",
    "Buyer",
    "CreditAccount",
    "CreditGrant",
    "GrantAllocation",
    "IdempotencyRecord",
    "LedgerEntry",
    "Merchant",
    "Order",
    "Product",
    "SchemaVersion",
    "Statements",
    "TOP_UP_IN_FLIGHT",
    "TOP_UP_TO_CHARGE",
    "TOP_UP_TO_LOOK_UP",
    "TopUp",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
    "after_transaction",
    "bind",
    "current_version",
    "db",
    "dialect",
    "isoformat",
    "migrate",
    "new_id",
    "on_commit",
    "sql",
    "transaction",
    "transaction_cache",
    "unbind",
    "utcnow",
]
