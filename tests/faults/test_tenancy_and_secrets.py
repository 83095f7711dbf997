"""Fault suite, scenario 7: tenancy and secrets, against a real gunicorn server
over loopback, on SQLite and PostgreSQL.

Every route that names an object (enumerated from the OpenAPI document, so a
new route is covered as soon as it is documented) answers another merchant's
key (on the buyer's routes: another signed-in buyer) 404 and changes nothing.
API keys and webhook secrets never appear after their creation: not in any
answer, not in the server's or the worker's logs (captured at DEBUG), not in
the idempotency records, not in the OpenAPI document; and both are compared in
constant time.
"""

from __future__ import annotations

import ast
import hmac
import inspect
import json
import re
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import requests

import storage
import webhooks
from addon_plugin import merchants
from tests.helpers import bearer

from . import apiwalk
from .harness import ROOT, Server, Worker
from .receiver import Receiver

pytestmark = [pytest.mark.faults, pytest.mark.slow]

ENDPOINTS = "/api/addons/webhook-endpoints"


@pytest.fixture
def env(env) -> dict[str, str]:
    return {**env, "ADDONS_WEBHOOK_RETRY_SCHEDULE": "[0]"}


# -- tenancy ----------------------------------------------------------------------------------------

def _requests_naming_ids(doc: dict, op: apiwalk.Operation, ids: dict[str, str]) -> list[tuple[str, dict, Any]]:
    """(path, query, body) variants of ``op`` that name merchant A's objects:
    by path, by a body field (each id field on its own) or by a query filter."""
    body = apiwalk.fill(apiwalk.valid_body(op), ids)
    variants = []
    if op.path_params:
        variants.append((apiwalk.url_path(op, ids), {}, body))
    path = op.path if not op.path_params else apiwalk.url_path(op, ids)
    for name in apiwalk.body_properties(doc, op):
        if name in apiwalk.ID_NAMES:
            assert name in ids, f"{op}: no object for the body field {name!r}; add one to the walk's ids"
            named = {k: v for k, v in body.items() if name != "invoice_id" or k not in ("product_id", "buyer_email")}
            variants.append((path, {}, {**named, name: ids[name]}))
    for name in apiwalk.query_params(op):
        if name in apiwalk.ID_NAMES:
            variants.append((path, {name: ids[name]}, body))
    return variants


def test_another_merchants_ids_are_404_on_every_route_and_change_nothing(server, merchant, auth, product,
                                                                         funded_account_id):
    """Merchant B's key against each of merchant A's ids on every route of the
    document that takes one (on the buyer's own routes: a buyer of B with the
    same e-mail, and another buyer of A, each signed in to the host): 404
    ``*_not_found`` (a filter: an empty list), and every row of every table as
    it was; A's own key (or signed-in buyer) gets the same reads."""
    merchant_a = merchant[0]
    endpoint = requests.post(f"{server.url}{ENDPOINTS}", json={"url": "http://127.0.0.1:9/hook"}, headers=auth,
                             timeout=10).json()["id"]
    changed = requests.post(f"{server.url}/api/buyer-addon/usage/add", headers=auth, timeout=10,
                            json={"product_id": product.id, "buyer_email": "bob@example.com", "value": -1})
    assert changed.status_code == 200
    ids = {"product_id": product.id, "account_id": funded_account_id, "endpoint_id": endpoint,
           "key_id": merchants.create_api_key(merchant_a.id).id, "invoice_id": "order_1",
           "delivery_id": storage.WebhookDelivery.get(storage.WebhookDelivery.endpoint == endpoint).id,
           "top_up_id": apiwalk.unresolved_top_up(funded_account_id), "receiver_url": "http://127.0.0.1:9/hook",
           "grant_id": apiwalk.grant_of(funded_account_id),
           "hold_id": apiwalk.hold_of(funded_account_id)}
    merchant_b = merchants.create_merchant("Other Rockets")
    b_auth = bearer(merchant_b[1].key)
    doc = apiwalk.document(server.url)
    # A's own key and signed-in buyer (bob), for the controls; strangers: merchant B's key, and for the
    # buyer's routes a buyer of B with the same e-mail and another buyer of A.
    own = apiwalk.sign_in(requests.Session(), server.url, merchant_a.id, "bob@example.com")
    strangers = {"merchant B": apiwalk.sign_in(requests.Session(), server.url, merchant_b[0].id, "bob@example.com"),
                 "another buyer of A": apiwalk.sign_in(requests.Session(), server.url, merchant_a.id,
                                                       "eve@example.com")}
    tried, routes, controls = 0, set(), 0
    for op in apiwalk.operations(doc):
        for path, query, body in _requests_naming_ids(doc, op, ids):
            routes.add(str(op))
            for who, session in strangers.items():
                if who != "merchant B" and not op.session:
                    continue  # an API key belongs to a merchant, not to a buyer
                tried += 1
                before = apiwalk.dump()
                response = session.request(op.method, f"{server.url}{path}", params=query, json=body,
                                           headers=b_auth, timeout=10)
                assert apiwalk.dump() == before, f"{op} {query or body} by {who} changed merchant A's rows"
                if query:
                    assert response.status_code == 200 and response.json()["data"] == [], (str(op), who, query)
                else:
                    assert response.status_code == 404, (str(op), who, body, response.text)
                    assert response.json()["error"]["code"].endswith("not_found"), response.text
            if op.method == "get":  # the control: the same read by A (key or buyer) finds the object
                found = own.get(f"{server.url}{path}", params=query, headers=auth, timeout=10)
                assert found.status_code == 200, (str(op), found.text)
                if query:  # the filter matches A's objects
                    assert found.json()["data"] != [], (str(op), query)
                controls += 1

    # Lists that take no id: B's (and B's buyer's) never show one of A's objects.
    lists = [op for op in apiwalk.operations(doc) if op.method == "get" and not op.path_params
             and "next_cursor" in json.dumps(op.spec["responses"]["200"])]
    for op in lists:
        listed = strangers["merchant B"].get(f"{server.url}{op.path}", headers=b_auth, timeout=10)
        assert listed.status_code == 200
        assert not any(value in listed.text for value in ids.values()), (str(op), listed.text)

    # One idempotency key space per merchant: B reusing A's key gets no replay of A's answer.
    shared = {"Idempotency-Key": "shared-key"}
    body = {"product_id": product.id, "buyer_email": "bob@example.com", "value": -1}
    first = own.post(f"{server.url}/api/buyer-addon/usage/add", json=body, headers={**auth, **shared}, timeout=10)
    before = apiwalk.dump()
    reused = strangers["merchant B"].post(f"{server.url}/api/buyer-addon/usage/add", json=body,
                                          headers={**b_auth, **shared}, timeout=10)
    assert first.status_code == 200 and reused.status_code == 404
    assert "Idempotent-Replayed" not in reused.headers and funded_account_id not in reused.text
    assert {k: v for k, v in apiwalk.dump().items() if k != "idempotency_record"} == \
        {k: v for k, v in before.items() if k != "idempotency_record"}
    print(f"\n  tenancy: {tried} requests by merchant B (or, on the buyer's routes, a buyer of B or another "
          f"buyer of A) naming merchant A's ids over {len(routes)} routes (of {len(apiwalk.operations(doc))} "
          f"documented): all 404 or empty, no row changed; {controls} reads repeated by A found the objects; "
          f"{len(lists)} lists showed B none of A's objects; a reused idempotency key replayed nothing")
    assert len(routes) >= 15


# -- secrets -------------------------------------------------------------------------------------------

def _forms(secret: str) -> list[str]:
    """The ways a secret could leak: whole, and the part that is the secret itself
    (an API key's after its id, a webhook secret's base64)."""
    if secret.startswith("whsec_"):
        return [secret, secret.removeprefix("whsec_")]
    return [secret, secret.split("_", 2)[2]]  # sk_<key id>_<secret>: the secret may hold "_" itself


def _scan(where: str, text: str, secrets: dict[str, str]) -> list[str]:
    return [f"{name} in {where}" for name, secret in secrets.items() for form in _forms(secret) if form in text]


def _dump_text(exclude: set[tuple[str, str]]) -> str:
    """Every stored value of every table as text, but the columns in ``exclude``."""
    parts = []
    for model in storage.ALL_MODELS:
        table = model._meta.table_name
        fields = [f for f in model._meta.sorted_fields if (table, f.column_name) not in exclude]
        for row in model.select(*fields).tuples():
            parts.append(repr(row))
    return "\n".join(parts)


def test_secrets_never_appear_after_creation(app, env, tmp_path, merchant, auth, api_key, product, funded_account_id):
    """Keys and webhook secrets are created (with idempotency keys, then replayed),
    a secret rotated, every documented read, a few writes and refusals made,
    webhooks delivered by a real worker, a key revoked; then every answer since
    creation, the server's and the worker's logs (gunicorn at debug, the app's
    logging at DEBUG), every stored row (but the endpoint's own secret columns),
    the receiver's requests and the OpenAPI document are searched for each secret."""
    server_log, worker_log = tmp_path / "server.log", tmp_path / "worker.log"
    debug = {**env, "FAULT_HOST_LOG_LEVEL": "DEBUG"}
    server = Server(debug, log_level="debug", log_path=server_log).start()
    answers: list[tuple[str, requests.Response]] = []  # every answer after the secrets' creation
    session = requests.Session()

    def call(method: str, path: str, **kwargs) -> requests.Response:
        response = session.request(method, f"{server.url}{path}", timeout=10, **kwargs)
        answers.append((f"{method.upper()} {path}", response))
        return response

    with Receiver() as receiver:
        try:
            created = session.post(f"{server.url}/api/addons/api-keys", headers={**auth, "Idempotency-Key": "key-1"},
                                   timeout=10)
            assert created.status_code == 201
            second_key = created.json()["key"]
            endpoint = session.post(f"{server.url}{ENDPOINTS}", json={"url": receiver.url, "description": "main"},
                                    headers={**auth, "Idempotency-Key": "endpoint-1"}, timeout=10)
            assert endpoint.status_code == 201
            endpoint_id, first_secret = endpoint.json()["id"], endpoint.json()["secret"]
            rotated = session.post(f"{server.url}{ENDPOINTS}/{endpoint_id}/rotate-secret",
                                   headers={**auth, "Idempotency-Key": "rotate-1"}, timeout=10)
            assert rotated.status_code == 200
            receiver.secret = rotated.json()["secret"]
            secrets = {"API key": api_key, "second API key": second_key, "webhook secret": first_secret,
                       "rotated webhook secret": receiver.secret}

            # Replays of the three creations: the same objects, without their secrets.
            replays = [call("post", "/api/addons/api-keys", headers={**auth, "Idempotency-Key": "key-1"}),
                       call("post", ENDPOINTS, json={"url": receiver.url, "description": "main"},
                            headers={**auth, "Idempotency-Key": "endpoint-1"}),
                       call("post", f"{ENDPOINTS}/{endpoint_id}/rotate-secret",
                            headers={**auth, "Idempotency-Key": "rotate-1"})]
            for replay in replays:
                assert replay.headers.get("Idempotent-Replayed") == "true", replay.text
                assert "key" not in replay.json() and "secret" not in replay.json(), replay.text

            # Changes that make webhooks; the worker delivers them (its own process, logging at DEBUG).
            call("post", "/api/buyer-addon/usage/add", headers=auth,
                 json={"product_id": product.id, "buyer_email": "bob@example.com", "value": -3})
            call("post", "/api/buyer-addon/usage", data={"auth_token": second_key, "product_id": product.id,
                                                         "buyer_email": "bob@example.com"})
            call("post", f"/api/addons/accounts/{funded_account_id}/adjustments", headers=auth,
                 json={"value": 5, "description": "goodwill"})
            call("patch", f"{ENDPOINTS}/{endpoint_id}", json={"description": "renamed"}, headers=auth)
            call("patch", f"/api/addons/products/{product.id}", json={"name": "Renamed"}, headers=auth)
            assert Worker(debug, "--once", log=worker_log).run() == 0
            assert receiver.requests and all(r["verified"] for r in receiver.requests)

            # Every documented read, with the merchant's ids (and bob signed in, for his own routes).
            apiwalk.sign_in(session, server.url, merchant[0].id, "bob@example.com")
            doc = apiwalk.document(server.url)
            key_id = created.json()["id"]
            delivery_id = storage.WebhookDelivery.get(storage.WebhookDelivery.endpoint == endpoint_id).id
            ids = {"product_id": product.id, "account_id": funded_account_id, "endpoint_id": endpoint_id,
                   "key_id": key_id, "delivery_id": delivery_id, "grant_id": apiwalk.grant_of(funded_account_id),
                   "hold_id": apiwalk.hold_of(funded_account_id)}
            reads = [op for op in apiwalk.operations(doc) if op.method == "get"]
            for op in reads:
                assert call("get", apiwalk.url_path(op, ids), headers=auth).status_code == 200, str(op)

            # Refusals: a key with one character changed, malformed and invalid bodies, a wrong method.
            tampered = second_key[:-1] + ("A" if second_key[-1] != "A" else "B")
            assert call("get", "/api/addons/products", headers=bearer(tampered)).status_code == 401
            assert call("post", "/api/buyer-addon/usage", data={"auth_token": tampered}).status_code == 401
            assert call("post", "/api/addons/api-keys", headers=auth, json={"key": second_key}).status_code == 422
            assert call("post", ENDPOINTS, headers=auth, json={"url": "ftp://x", "secret": first_secret}).status_code \
                == 422
            assert call("post", "/api/buyer-addon/usage/add", headers={**auth, "Content-Type": "application/json"},
                        data=b"{not json").status_code == 400
            assert call("put", "/api/addons/api-keys", headers=auth).status_code == 405
            assert call("delete", f"/api/addons/api-keys/{key_id}", headers=auth).status_code == 200
            assert call("get", "/api/addons/products", headers=bearer(second_key)).status_code == 401
            with receiver.changed:
                sent = list(receiver.requests)
        finally:
            server.stop()

    found: list[str] = []
    for label, response in answers:
        text = response.text + json.dumps(dict(response.headers))
        found += _scan(f"the answer to {label}", text, secrets)
    logs = {"server log": server_log.read_text(errors="replace"), "worker log": worker_log.read_text(errors="replace")}
    for name, text in logs.items():
        found += _scan(name, text, secrets)
    records = [row for row in storage.IdempotencyRecord.select().tuples()]
    found += _scan("the idempotency records", repr(records), secrets)
    stored = _dump_text({("webhook_endpoint", "secret"), ("webhook_endpoint", "previous_secret")})
    found += _scan("the database (but webhook_endpoint.secret and previous_secret)", stored, secrets)
    found += _scan("webhook requests", repr([(r["headers"], r["body"]) for r in sent]), secrets)
    document_text = json.dumps(doc)
    found += _scan("the OpenAPI document", document_text, secrets)

    # The document's own examples are no usable credential.
    examples = set(re.findall(r"(?:sk|whsec)_[A-Za-z0-9+/=_.\-]*", document_text))
    stored_secrets = {s for row in storage.WebhookEndpoint.select() for s in (row.secret, row.previous_secret) if s}
    for example in examples:
        assert example not in stored_secrets
        if example.startswith("sk_"):
            with app.test_request_context(), pytest.raises(Exception, match="API key"):
                merchants.authenticate(example)

    # The capture is real: DEBUG records from the app and gunicorn, the worker's deliveries.
    assert "DEBUG peewee" in logs["server log"] and "[DEBUG]" in logs["server log"]
    assert "webhook delivery" in logs["worker log"] and "DEBUG peewee" in logs["worker log"]
    print(f"\n  secrets: {len(secrets)} secrets searched in {len(answers)} answers, "
          f"{len(logs['server log']) // 1024} KB of server log and {len(logs['worker log']) // 1024} KB of "
          f"worker log (DEBUG), {len(records)} idempotency records, {len(stored) // 1024} KB of stored rows, "
          f"{len(sent)} webhook requests and the OpenAPI document ({len(examples)} credential-like examples, "
          f"none usable): {len(found)} found")
    assert not found, "\n".join(found)


# -- constant-time comparisons ----------------------------------------------------------------------

#: Names of values that are, or are made from, a secret.
_SECRETIVE = re.compile(r"secret|signature|digest|api_key|token|password", re.IGNORECASE)


def _comparisons_of_secrets(path: Path) -> list[str]:
    """``==``/``!=`` comparisons in a module with a secret-looking operand."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
            operands = [node.left, *node.comparators]
            if any(not isinstance(operand, ast.Constant) and _SECRETIVE.search(ast.unparse(operand))
                   for operand in operands):  # a literal such as "secret" is a field's name
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return found


def _calls_compare_digest(function: Any) -> bool:
    """Whether the function's own code calls ``hmac.compare_digest``."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    return any(isinstance(node, ast.Call) and ast.unparse(node.func) == "hmac.compare_digest"
               for node in ast.walk(tree))


def test_keys_and_webhook_signatures_are_compared_in_constant_time(client, merchant, api_key, monkeypatch):
    """By inspection: ``hmac.compare_digest`` (spied on) makes the comparison for a
    good key and for a wrong one, and for a good and a bad webhook signature; the
    code comparing them calls it, and no module compares a secret with ``==``."""
    calls: list[tuple] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    stored = storage.ApiKey.get_by_id(merchant[1].id).secret_hash
    assert client.get("/api/addons/products", headers=bearer(api_key)).status_code == 200
    assert any(stored in call for call in calls), "a good key was not compared with compare_digest"
    compared = len(calls)
    wrong = api_key[:-4] + ("AAAA" if not api_key.endswith("AAAA") else "BBBB")  # the right form, the wrong secret
    assert client.get("/api/addons/products", headers=bearer(wrong)).status_code == 401
    assert len(calls) > compared and stored in calls[-1], "a wrong key was not compared with compare_digest"
    api_key_calls = len(calls)

    secret, body = webhooks.generate_secret(), b'{"type": "balance.updated"}'
    headers = webhooks.signature_headers("msg_1", int(time.time()), body, [secret])
    calls.clear()
    webhooks.verify(body, headers, secret)
    good = len(calls)
    with pytest.raises(webhooks.WebhookVerificationError):
        webhooks.verify(body, headers, webhooks.generate_secret())
    assert good > 0 and len(calls) > good, "webhook signatures are not compared with compare_digest"

    from addon_plugin.merchants import authenticate
    from webhooks.signing import verify
    assert _calls_compare_digest(authenticate) and _calls_compare_digest(verify)
    modules = sorted(p for package in ("addon_plugin", "webhooks", "storage") for p in (ROOT / package).rglob("*.py"))
    plain = [line for module in modules for line in _comparisons_of_secrets(module)]
    print(f"\n  constant time: compare_digest made {api_key_calls} API key comparisons (good and wrong key) and "
          f"{len(calls)} webhook signature comparisons (good and bad); {len(modules)} modules scanned, "
          f"{len(plain)} == comparisons of a secret")
    assert not plain, "\n".join(plain)
