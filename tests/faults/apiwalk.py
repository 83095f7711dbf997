"""Walking the API from its own OpenAPI document, for the hostile-input and
tenancy scenarios: every operation, the ids it names, a valid request for it and
every string a client sends it; plus snapshots of the database that prove a
refused request changed nothing, and the round trip of stored strings through
the ledger list and the webhook payload.

Enumerating from the document means a new route is covered as soon as it is
documented: a route naming an id this module does not know, or a write with no
valid body here, fails the tests that walk it, saying what to add.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
from peewee import BooleanField, DatabaseError, DateTimeField, IntegerField

import storage

#: A valid JSON body for every operation that is not a GET, by ``operationId``.
#: ``"{name}"`` values are replaced by :func:`fill` (ids, the receiver's URL).
VALID_BODIES: dict[str, dict[str, Any]] = {
    "usage_balance": {"product_id": "{product_id}", "buyer_email": "bob@example.com"},
    "usage_add": {"product_id": "{product_id}", "buyer_email": "bob@example.com", "value": 1,
                  "description": "d", "reference": "r", "metadata": {"k": "v"}},
    "usage_records": {"records": [{"product_id": "{product_id}", "buyer_email": "bob@example.com", "value": 1,
                                   "description": "d", "reference": "r", "metadata": {"k": "v"}}]},
    "create_adjustment": {"value": 1, "description": "d", "reference": "r", "metadata": {"k": "v"}},
    "put_auto_top_up": {"enabled": False, "threshold": 5, "payment_method": "pm_card_visa", "customer": "cus_1"},
    "create_api_key": {},
    "revoke_api_key": {},
    "redeliver_webhook": {},
    "create_product": {"name": "n", "price": "19.00", "currency": "USD", "credit_amount": 100,
                       "top_up_allowed": True, "overdraft_limit": 0},
    "update_product": {"name": "n"},
    # Endpoints made by the walk want one rare event type, so they do not
    # multiply the deliveries every later change writes.
    "create_webhook_endpoint": {"url": "{receiver_url}", "description": "d", "event_types": ["auto_top_up.disabled"]},
    "update_webhook_endpoint": {"description": "d"},
    "delete_webhook_endpoint": {},
    "rotate_webhook_secret": {},
    "me_auto_top_up": {"enabled": False},
    "create_grant": {"amount": 5, "category": "promotional", "priority": 50, "description": "d", "reference": "r",
                     "metadata": {"k": "v"}},
    "void_grant": {"description": "d"},
    "resolve_top_up": {"outcome": "succeeded", "charge_id": "ch_walk_1"},
    "create_hold": {"value": 1, "expires_in": 3600, "description": "d", "reference": "r", "metadata": {"k": "v"}},
    "usage_hold": {"product_id": "{product_id}", "buyer_email": "bob@example.com", "value": 1,
                   "description": "d", "reference": "r", "metadata": {"k": "v"}},
    "capture_hold": {"value": 1},
    "release_hold": {},
}

#: Body fields an answer does not echo under their own name, and why.
NOT_ECHOED: dict[tuple[str, str], str] = {
    ("void_grant", "description"): "it describes the void entry; the answer is the grant, with its own description",
    ("usage_records", "idempotency_key"): "the whole request's key; each entry carries its own record's key",
    ("usage_records", "Idempotency-Key"): "the whole request's key; each entry carries its own record's key",
}

#: Ids that name one merchant's objects, wherever they appear (path or body).
ID_NAMES = ("product_id", "account_id", "key_id", "endpoint_id", "delivery_id", "invoice_id", "top_up_id",
            "grant_id", "hold_id")


def grant_of(account_id: str) -> str:
    """The id of the account's first grant (the walk's ``grant_id``)."""
    return storage.CreditGrant.select().where(storage.CreditGrant.account == account_id).order_by(
        storage.CreditGrant.id).first().id


def hold_of(account_id: str) -> str:
    """A new hold of 1 credit on the account, for a day (the walk's ``hold_id``)."""
    from addon_plugin import holds

    return holds.place(account_id, 1, expires_in=86400)["id"]


@dataclass(frozen=True)
class Operation:
    """One documented method on one path."""

    method: str
    path: str
    spec: dict[str, Any]

    @property
    def id(self) -> str:
        return self.spec["operationId"]

    @property
    def session(self) -> bool:
        """Authenticated by the host's buyer session (``/addons/me/…``), not by an API key."""
        return {"hostSession": []} in self.spec.get("security", [])

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.path}"


def unresolved_top_up(account_id: str) -> str:
    """The id of a new ``unresolved`` top-up of the account (for the resolve route), written directly."""
    account = storage.CreditAccount.get_by_id(account_id)
    return storage.TopUp.create(id=storage.new_id("topup"), account=account_id, merchant=account.merchant_id,
                                status="unresolved", banks=1, credits=100, amount_minor=1900, currency="USD",
                                payment_method="pm_card_visa", next_attempt_at=storage.utcnow()).id


def document(base_url: str) -> dict[str, Any]:
    """The server's OpenAPI document."""
    response = requests.get(f"{base_url}/api/openapi.json", timeout=10)
    assert response.status_code == 200
    return response.json()


def sign_in(session: requests.Session, base_url: str, merchant_id: str, email: str) -> requests.Session:
    """Sign a buyer in to the fault suite's host app: ``session`` then carries
    the host's session cookie, which the buyer routes (``/addons/me/…``) read."""
    answer = session.post(f"{base_url}/fault-suite/sign-in", json={"merchant_id": merchant_id,
                                                                   "buyer_email": email}, timeout=10)
    assert answer.status_code == 200, answer.text
    return session


def operations(doc: dict[str, Any]) -> list[Operation]:
    """Every documented operation, in document order."""
    return [Operation(method, path, spec) for path, methods in doc["paths"].items()
            for method, spec in methods.items()]


def resolve(doc: dict[str, Any], schema: dict[str, Any] | str) -> dict[str, Any]:
    """``schema`` with its ``$ref`` (or apispec's bare component name) followed."""
    if isinstance(schema, str):
        return doc["components"]["schemas"][schema]
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def body_properties(doc: dict[str, Any], op: Operation) -> dict[str, dict[str, Any]]:
    """The JSON body's documented properties (empty if the operation takes no body)."""
    content = op.spec.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return {}
    return resolve(doc, content["application/json"]["schema"]).get("properties", {})


def query_params(op: Operation) -> dict[str, dict[str, Any]]:
    return {p["name"]: p.get("schema", {}) for p in op.spec.get("parameters", []) if p["in"] == "query"}


def valid_body(op: Operation) -> dict[str, Any] | None:
    """The valid body for ``op`` (None for a GET); fails for a write this module does not know."""
    if op.method == "get":
        return None
    assert op.id in VALID_BODIES, f"{op}: add a valid body for {op.id!r} to VALID_BODIES"
    return VALID_BODIES[op.id]


def fill(value: Any, names: dict[str, str]) -> Any:
    """``value`` with every ``"{name}"`` string replaced from ``names``."""
    if isinstance(value, str) and re.fullmatch(r"{\w+}", value):
        return names[value[1:-1]]
    if isinstance(value, dict):
        return {k: fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, names) for v in value]
    return value


def url_path(op: Operation, names: dict[str, str]) -> str:
    """The operation's path with its parameters filled (percent-encoded) from ``names``."""
    for param in op.path_params:
        assert param in names, f"{op}: no object for the path parameter {param!r}; add it to the walk's ids"
    return re.sub(r"{(\w+)}", lambda m: quote(names[m.group(1)], safe=""), op.path)


@dataclass(frozen=True)
class StringField:
    """A place a client puts a string: a body property (``metadata`` keys and
    values, list items too), a query or path parameter, or a header."""

    where: str  # body | body-key | body-value | body-item | query | path | header
    name: str

    def __str__(self) -> str:
        return f"{self.where}:{self.name}"


def string_fields(doc: dict[str, Any], op: Operation) -> Iterator[StringField]:
    """Every string the operation documents, wherever it goes."""
    for name, schema in body_properties(doc, op).items():
        if schema.get("readOnly"):
            continue
        if schema.get("type") == "string":
            yield StringField("body", name)
        elif schema.get("type") == "object" and schema.get("additionalProperties", {}).get("type") == "string":
            yield StringField("body-key", name)
            yield StringField("body-value", name)
        elif schema.get("type") == "array" and schema.get("items", {}).get("type") == "string":
            yield StringField("body-item", name)
    for parameter in op.spec.get("parameters", []):
        if "schema" not in parameter or parameter["schema"].get("type") != "string":
            continue
        where = {"query": "query", "path": "path", "header": "header"}[parameter["in"]]
        yield StringField(where, parameter["name"])


# -- the database, as the test sees it ---------------------------------------------------

def _fingerprint_sql() -> str:
    """One statement: per table, its row count and an aggregate of every column
    (latest time, sum of numbers and flags, total length of text)."""
    selects = []
    for n, model in enumerate(storage.ALL_MODELS):
        columns = ["count(*)"]
        for field in model._meta.sorted_fields:
            column = f'"{field.column_name}"'
            if isinstance(field, DateTimeField):
                columns.append(f"max({column})")
            elif isinstance(field, BooleanField):
                columns.append(f"sum(CASE WHEN {column} THEN 1 ELSE 0 END)")
            elif isinstance(field, IntegerField):  # BigIntegerField too
                columns.append(f"sum({column})")
            else:
                columns.append(f"sum(length({column}))")
        selects.append(f'(SELECT {", ".join(columns)} FROM "{model._meta.table_name}") AS t{n}')
    return "SELECT * FROM " + ", ".join(selects)


_FINGERPRINT = _fingerprint_sql()


def _fingerprint_row() -> tuple:
    if storage.dialect() == "sqlite":
        return storage.db.execute_sql(_FINGERPRINT).fetchone()
    # PostgreSQL takes ~15 ms to plan the statement and under 1 ms to run it: prepare it once per connection.
    try:
        return storage.db.execute_sql("EXECUTE fault_suite_fingerprint").fetchone()
    except DatabaseError:
        storage.db.execute_sql("PREPARE fault_suite_fingerprint AS " + _FINGERPRINT)
        return storage.db.execute_sql("EXECUTE fault_suite_fingerprint").fetchone()


def fingerprint() -> dict[str, tuple]:
    """A cheap summary of every table (one round trip): any insert, delete,
    balance change or update (every mutable table has ``updated_at``) shows."""
    row = _fingerprint_row()
    summary, offset = {}, 0
    for model in storage.ALL_MODELS:
        width = 1 + len(model._meta.sorted_fields)
        summary[model._meta.table_name] = tuple(str(v) for v in row[offset:offset + width])
        offset += width
    return summary


def dump() -> dict[str, list[tuple]]:
    """Every row of every table (for small databases)."""
    return {model._meta.table_name: sorted(model.select().tuples(), key=repr) for model in storage.ALL_MODELS}


#: Refusals made before the request executed: they store nothing at all,
#: not even an idempotent result, so the request may be corrected and retried.
REFUSED_BEFORE_EXECUTING = {400, 401, 405, 413, 415}


def changed_by_refusal(response: Any, keyed: bool, before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    """The tables a refused request changed and must not have (empty if none).

    A refusal that executed (402, 404, 409, a 422 other than
    ``validation_error``) may store its idempotent result, if the request had a
    key; nothing else, ever."""
    code = response.json().get("error", {}).get("code") if response.status_code >= 400 else None
    executed = response.status_code not in REFUSED_BEFORE_EXECUTING and code != "validation_error"
    allowed = {"idempotency_record"} if executed and keyed else set()
    return [table for table in before if table not in allowed and before[table] != after[table]]


def keyed(headers: Any, body: Any) -> bool:
    """Whether a request carries an idempotency key (header or body field)."""
    in_body = isinstance(body, dict) and "idempotency_key" in body
    return in_body or any(name.lower() == "idempotency-key" for name in (headers or {}))


# -- stored strings, back out -------------------------------------------------------------

def ledger_pages(base_url: str, headers: dict[str, str], account_id: str) -> list[dict[str, Any]]:
    """Every entry of the account, through the paginated ledger list."""
    entries, cursor = [], None
    while True:
        params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        page = requests.get(f"{base_url}/api/addons/accounts/{account_id}/ledger", params=params,
                            headers=headers, timeout=10)
        assert page.status_code == 200, page.text
        entries += page.json()["data"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return entries


def check_round_trip(expected: dict[str, dict[str, Any]], listed: list[dict[str, Any]],
                     delivered: list[dict[str, Any]]) -> tuple[int, int]:
    """Each accepted entry's strings (``expected``: entry id → the fields sent)
    come back equal, code point for code point, from the ledger list and from
    every ``balance.updated`` webhook body (whose entry has no ``idempotency_key``).
    Returns (listed, delivered) matches."""
    by_id = {entry["id"]: entry for entry in listed}
    webhooks: dict[str, list[dict]] = {}
    for body in delivered:
        entry = body.get("data", {}).get("entry")
        if body.get("type") == "balance.updated" and entry:
            webhooks.setdefault(entry["id"], []).append(entry)
    for entry_id, sent in expected.items():
        assert entry_id in by_id, f"accepted entry {entry_id} is not in the ledger list"
        assert entry_id in webhooks, f"accepted entry {entry_id} was never delivered"
        for name, value in sent.items():
            assert by_id[entry_id][name] == value, (entry_id, name, value, by_id[entry_id][name])
            for copy in webhooks[entry_id]:
                if name != "idempotency_key":
                    assert copy[name] == value, (entry_id, name, value, copy[name])
    return len(expected), sum(len(webhooks[entry_id]) for entry_id in expected)
