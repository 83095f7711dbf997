"""One shape per resource: every presenter's output is exactly what its schema
documents (schema.validate finds nothing, and the keys are the schema's fields,
nested ones too), so the OpenAPI document and the answers can never drift."""

from __future__ import annotations

from typing import Any

import pytest
from marshmallow import Schema, fields

import storage
from addon_plugin import errors, ledger, merchants, present, schemas
from webhooks import endpoints, events
from webhooks import present as webhook_present
from webhooks.api import AttemptSchema, DeliverySchema, EndpointSchema, EndpointWithSecretSchema


def drift(schema: Schema, body: dict[str, Any], *, omitted: tuple[str, ...] = ()) -> list[str]:
    """Where ``body`` and ``schema`` disagree: validation errors, and keys one has
    that the other lacks (``omitted``: optional fields this body leaves out)."""
    problems = [f"invalid: {schema.validate(body)}"] if schema.validate(body) else []
    documented = {name for name, field in schema.fields.items() if not field.load_only} - set(omitted)
    if set(body) != documented:
        problems.append(f"{type(schema).__name__}: undocumented {sorted(set(body) - documented)}, "
                        f"missing {sorted(documented - set(body))}")
    for name, field in schema.fields.items():
        value = body.get(name)
        inner = field.inner if isinstance(field, fields.List) else field
        if isinstance(inner, fields.Nested) and value is not None:
            for item in value if isinstance(field, fields.List) else [value]:
                problems += drift(inner.schema, item)
    return problems


@pytest.fixture
def change(funded_account_id) -> ledger.Change:
    return ledger.record(funded_account_id, -3, "usage", description="3 calls", reference="run_1",
                         metadata={"job": "nightly"}, idempotency_key="k1", actor="api_key:x")


@pytest.fixture
def top_up(funded_account_id) -> storage.TopUp:
    account = storage.CreditAccount.get_by_id(funded_account_id)
    return storage.TopUp.create(id=storage.new_id("topup"), account=funded_account_id, merchant=account.merchant_id,
                                status="pending", banks=1, credits=100, amount_minor=1900, currency="USD",
                                payment_method="pm_card_visa", next_attempt_at=storage.utcnow())


@pytest.fixture
def endpoint(app, merchant_id) -> tuple[endpoints.Endpoint, str]:
    app.config["ADDONS_WEBHOOK_ALLOW_PRIVATE_URLS"] = True
    return endpoints.create_endpoint(merchant_id, "https://merchant.example/hook", ["balance.updated"], "main")


def test_account_entry_and_usage_presenters_match_their_schemas(funded_account_id, change):
    account = ledger.get_account(funded_account_id)
    row = storage.LedgerEntry.get_by_id(change.entry.id)
    assert drift(schemas.AccountSchema(), present.account_body(account)) == []
    assert drift(schemas.AccountSchema(), present.account_body(storage.CreditAccount.get_by_id(account.id))) == []
    assert drift(schemas.EntrySchema(), present.entry_body(change.entry)) == []
    assert drift(schemas.EntrySchema(), present.entry_body(row)) == []
    assert present.entry_body(row) == present.entry_body(change.entry)
    assert drift(schemas.AdjustmentSchema(), present.adjustment_body(change)) == []
    assert drift(schemas.UsageResponseSchema(), present.usage_body(change.account, change.entry)) == []
    assert drift(schemas.UsageResponseSchema()._declared_fields["data"].schema,
                 present.usage_body(account)["data"], omitted=("entry",)) == []


def test_product_api_key_top_up_and_error_presenters_match_their_schemas(merchant_id, product, top_up):
    assert drift(schemas.ProductSchema(), present.product_body(product)) == []
    new_key = merchants.create_api_key(merchant_id)
    assert drift(schemas.ApiKeyCreatedSchema(), present.new_api_key_body(new_key)) == []
    assert drift(schemas.ApiKeySchema(), present.api_key_body(merchants.revoke_api_key(new_key.id, merchant_id))) == []
    assert drift(schemas.TopUpSchema(), present.top_up_body(top_up)) == []
    assert drift(schemas.ErrorSchema(), errors.AccountNotFound(account_id="acct_x").to_dict()) == []


def test_a_webhook_event_carries_the_api_entry_resource(funded_account_id, change):
    body = events.build_body("balance.updated", change.account, change.entry)
    assert body["data"]["entry"] == present.entry_body(change.entry)
    assert drift(schemas.EntrySchema(), body["data"]["entry"]) == []


def test_webhook_presenters_match_their_schemas(endpoint, merchant_id, funded_account_id):
    row, secret = endpoint
    assert drift(EndpointSchema(), webhook_present.endpoint_body(row)) == []
    assert drift(EndpointWithSecretSchema(), webhook_present.endpoint_body(row, secret)) == []
    ledger.record(funded_account_id, 5, "adjustment")
    delivery = storage.WebhookDelivery.get()
    storage.WebhookAttempt.create(id=storage.new_id("att"), delivery=delivery.id, number=1, status_code=500,
                                  duration_ms=12, error=None, response_excerpt="oops")
    found = endpoints.get_delivery(merchant_id, delivery.id)
    assert len(found.attempts) == 1
    assert drift(DeliverySchema(), webhook_present.delivery_body(found)) == []
    assert drift(AttemptSchema(), webhook_present.attempt_body(found.attempts[0])) == []


def test_grant_presenters_match_their_schemas(funded_account_id, change):
    grant = storage.CreditGrant.get(storage.CreditGrant.account == funded_account_id)
    assert drift(schemas.GrantSchema(), present.grant_body(grant)) == []
    given = ledger.record(funded_account_id, 5, "adjustment")
    created = storage.CreditGrant.get_by_id(given.entry.allocations[0].grant_id)
    assert drift(schemas.GrantCreatedSchema(), present.grant_created_body(created, given)) == []
