"""Objects → the resources' JSON shapes: the one representation of each resource,
used by the API, the accounts service, the hooks, the signals (so the webhooks)
and hosts alike.

Outside ``api/`` so the domain never imports the HTTP layer. The schemas in
``addon_plugin.schemas`` document each shape and do not build it; a test checks
that every presenter's output is exactly its schema's fields."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import storage
from storage import isoformat

from . import account_extras, grants, ledger
from .errors import AddonError
from .ledger import Account, Change, Entry
from .money import from_minor

if TYPE_CHECKING:
    from .merchants import NewKey

__all__ = ["account_body", "entry_body", "usage_body", "usage_record_body", "product_body", "adjustment_body",
           "api_key_body", "new_api_key_body", "top_up_body", "grant_body", "grant_created_body",
           "hold_body"]

grant_body = grants.grant_body


def account_body(account: Account | storage.CreditAccount) -> dict[str, Any]:
    """An account resource, with its spendable credits by category and next
    expiry, its visible auto top-up state and its depletion forecast."""
    if isinstance(account, storage.CreditAccount):
        if account.next_expiry_at is not None or account.next_hold_expiry_at is not None:
            account = ledger.get_account(account.id)  # may be due: the ledger writes it before reporting
        else:
            account = Account(account.id, account.merchant_id, account.product_id, account.buyer_email,
                              account.balance, account.threshold, account.auto_top_up_enabled,
                              account.payment_method, account.customer, account.held)
    auto_top_up_state, forecast = account_extras.read(account)
    return {
        "id": account.id,
        "product_id": account.product_id,
        "buyer_email": account.buyer_email,
        "balance": account.balance,
        "available": account.available,
        "held": account.held,
        "threshold": account.threshold,
        "auto_top_up": {"enabled": account.auto_top_up_enabled, "payment_method": account.payment_method,
                        "customer": account.customer, **auto_top_up_state},
        **grants.summary(account.id),
        "forecast": forecast,
    }


def entry_body(entry: Entry | storage.LedgerEntry,
               allocations: list[tuple[str | None, int]] | None = None) -> dict[str, Any]:
    """A ledger entry resource (``allocations``: a stored entry's, if already read)."""
    metadata = entry.metadata
    if isinstance(metadata, str):
        import json
        metadata = json.loads(metadata)
    if isinstance(entry, Entry):
        allocations = [(a.grant_id, a.amount) for a in entry.allocations]
    elif allocations is None:
        allocations = grants.allocations_of([(entry.id, entry.grant_id, entry.delta)])[entry.id]
    return {
        "id": entry.id,
        "sequence": entry.sequence,
        "delta": entry.delta,
        "balance_after": entry.balance_after,
        "kind": entry.kind,
        "description": entry.description,
        "reference": entry.reference,
        "metadata": metadata,
        "idempotency_key": entry.idempotency_key,
        "actor": entry.actor,
        "created_at": isoformat(entry.created_at),
        "allocations": [{"grant_id": grant_id, "amount": amount} for grant_id, amount in allocations],
    }


def usage_body(account: Account, entry: Entry | None = None) -> dict[str, Any]:
    """The PayKickstart-style answer: ``{"success": true, "data": {...}}``."""
    body = account_body(account)
    data = {"account_id": body.pop("id"), **body}
    if entry is not None:
        data["entry"] = entry_body(entry)
    return {"success": True, "data": data}


def usage_record_body(change: Change | None = None, error: AddonError | None = None) -> dict[str, Any]:
    """One record's outcome in a batch: its entry and the balance right after it
    (as ``usage/add`` answers them), or the error that refused it."""
    if change is not None:
        return {"status": 200, "entry": entry_body(change.entry), "balance": change.account.balance, "error": None}
    assert error is not None
    return {"status": error.status, "entry": None, "balance": None, "error": error.to_dict()["error"]}


def product_body(product: storage.Product) -> dict[str, Any]:
    """A product resource (price as a decimal string)."""
    return {
        "id": product.id,
        "name": product.name,
        "price": str(from_minor(product.price_minor, product.currency)),
        "currency": product.currency,
        "credit_amount": product.credit_amount,
        "top_up_allowed": product.top_up_allowed,
        "overdraft_limit": product.overdraft_limit,
        "host_product_id": product.host_product_id,
        "credit_expiry_days": product.credit_expiry_days,
    }


def adjustment_body(change: Change) -> dict[str, Any]:
    """A manual adjustment's answer: its entry and the balance right after it."""
    return {"entry": entry_body(change.entry), "balance": change.account.balance}


def grant_created_body(grant: storage.CreditGrant, change: Change) -> dict[str, Any]:
    """A grant given by hand: the grant, its entry and the balance right after it."""
    return {"grant": grant_body(grant), "entry": entry_body(change.entry), "balance": change.account.balance}


def api_key_body(key: storage.ApiKey) -> dict[str, Any]:
    """An API key resource: id and times, never the secret."""
    return {"id": key.id, "created_at": isoformat(key.created_at), "revoked_at": isoformat(key.revoked_at)}


def new_api_key_body(key: NewKey) -> dict[str, Any]:
    """A key just created: the only answer that holds ``key``."""
    return {"id": key.id, "key": key.key, "created_at": isoformat(key.created_at)}


def top_up_body(top_up: storage.TopUp) -> dict[str, Any]:
    """An automatic top-up, as merchants reconcile it against the gateway (amount
    a decimal string; ``next_attempt_at`` only while it is in flight)."""
    return {
        "id": top_up.id,
        "account_id": top_up.account_id,
        "status": top_up.status,
        "banks": top_up.banks,
        "credits": top_up.credits,
        "amount": str(from_minor(top_up.amount_minor, top_up.currency)),
        "currency": top_up.currency,
        "payment_method": top_up.payment_method,
        "customer": top_up.customer,
        "charge_id": top_up.charge_id,
        "failure_code": top_up.failure_code,
        "failure_message": top_up.failure_message,
        "attempts": top_up.attempts,
        "next_attempt_at": isoformat(top_up.next_attempt_at) if top_up.status in storage.TOP_UP_IN_FLIGHT else None,
        "created_at": isoformat(top_up.created_at),
        "updated_at": isoformat(top_up.updated_at),
        "completed_at": isoformat(top_up.completed_at),
        "consent_id": top_up.consent_id,
    }


def hold_body(hold: storage.CreditHold) -> dict[str, Any]:
    """A spend hold resource (``expired`` from ``expires_at`` on, even before
    anything has marked it)."""
    import json
    from datetime import datetime

    expires_at = hold.expires_at
    if isinstance(expires_at, str):
        expires_at = datetime.fromisoformat(expires_at)
    expired = hold.status == "held" and expires_at <= ledger.utcnow()
    return {
        "id": hold.id,
        "account_id": hold.account_id,
        "amount": hold.amount,
        "status": "expired" if expired else hold.status,
        "captured_amount": hold.captured_amount,
        "entry_id": hold.entry_id,
        "expires_at": isoformat(expires_at),
        "description": hold.description,
        "reference": hold.reference,
        "metadata": json.loads(hold.metadata),
        "created_at": isoformat(hold.created_at),
    }
