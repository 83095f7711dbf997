"""The derived loader (:mod:`addon_plugin.fastload`) is the schema, faster: for
any input, it either declines (None) or loads exactly what ``schema.load``
loads, and it declines nothing plain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError

from addon_plugin import schemas
from addon_plugin.fastload import fast_loader
from addon_plugin.schemas import AdjustmentCreateSchema, UsageAddSchema, UsageBalanceSchema, UsageRecordSchema

SCHEMAS = [UsageAddSchema(), UsageRecordSchema(), UsageBalanceSchema(), AdjustmentCreateSchema()]

_text = st.one_of(st.text(max_size=8), st.text(min_size=250, max_size=260), st.just(""), st.just("  "),
                  st.just("a\x00b"), st.text(alphabet="ab", min_size=1001, max_size=1001))
_values = st.one_of(
    _text, st.none(), st.booleans(), st.integers(-2**54, 2**54), st.sampled_from([0, -1, 1, 2**53 - 1, -(2**53)]),
    st.floats(allow_nan=False), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=42), st.one_of(st.text(max_size=3), st.integers()), max_size=3),
    st.sampled_from(["Bob@Example.com", "b@x.com", "not-an-email", " B@X.COM ", "paid", "promotional",
                     "prod_1", "acct_1", "order_1", "2099-01-01T00:00:00+00:00", "2000-01-01T00:00:00Z",
                     "2099-01-01T00:00:00"]),
)
_names = st.sampled_from(["value", "description", "reference", "metadata", "idempotency_key", "product_id",
                          "buyer_email", "invoice_id", "auth_token", "account_id", "category", "expires_at",
                          "surprise"])


def _schema_load(schema, data: Any) -> dict | None:
    try:
        return schema.load(data)
    except ValidationError:
        return None


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: type(s).__name__)
@settings(max_examples=400, deadline=None)
@given(data=st.dictionaries(_names, _values, max_size=7))
def test_the_derived_loader_loads_what_the_schema_loads_or_declines(schema, data):
    fast = fast_loader(schema)(data)
    if fast is not None:
        assert fast == schema.load(data)


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: type(s).__name__)
@settings(max_examples=300, deadline=None)
@given(value=st.integers(-(2**53 - 1), 2**53 - 1).filter(bool), description=st.text(max_size=20),
       reference=st.one_of(st.none(), st.text(max_size=20)),
       metadata=st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), max_size=3),
       key=st.text(min_size=1, max_size=20), days=st.integers(1, 900), naming=st.integers(0, 2))
def test_plain_valid_bodies_take_the_fast_way(schema, value, description, reference, metadata, key, days, naming):
    """Every plain valid body is loaded by the derived loader, not declined."""
    data: dict[str, Any] = {"value": value, "description": description or "why", "reference": reference,
                            "metadata": metadata, "idempotency_key": key}
    if value > 0 and naming:
        data["expires_at"] = (datetime.now(UTC) + timedelta(days=days)).isoformat()
    names = [{"product_id": "prod_1", "buyer_email": "Bob@Example.com"}, {"account_id": "acct_1"},
             {"invoice_id": "order_1"}]
    data = {**data, **names[naming]}
    data = {name: item for name, item in data.items() if name in schema.load_fields}
    expected = _schema_load(schema, data)
    fast = fast_loader(schema)(data)
    assert fast == expected


def _every_schema() -> list[Schema]:
    """Every schema the API may load a body with (each instantiable without arguments)."""
    found = []
    for value in vars(schemas).values():
        if isinstance(value, type) and issubclass(value, Schema) and value.__module__ == schemas.__name__:
            try:
                found.append(value())
            except TypeError:
                continue
    return found


@pytest.mark.parametrize("schema", _every_schema(), ids=lambda s: type(s).__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_for_every_schema_the_derived_loader_loads_what_it_loads_or_declines(schema, data):
    """Not only the usage schemas: http.load puts every body through the derived loader."""
    names = st.sampled_from([*schema.load_fields, "surprise"])
    body = data.draw(st.dictionaries(names, _values, max_size=7))
    fast = fast_loader(schema)(body)
    if fast is not None:
        assert fast == schema.load(body)
