"""Fault suite, scenario 6: hostile input against a real gunicorn server over
loopback, on SQLite and PostgreSQL.

Every request below is answered without a 5xx; a refused one changes nothing
(no balance, no ledger entry, no idempotency record, no other row: the
database's fingerprint is compared before and after); a string that was
accepted comes back code point for code point from the answer, the ledger list
and the webhook payload (delivered by a real ``flask addons worker`` process to
a real receiver), and never as a header of a webhook request.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections import Counter
from typing import Any
from urllib.parse import quote, quote_from_bytes

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import storage
from addon_plugin import merchants
from addon_plugin.emails import normalise_email
from tests.helpers import ledger_sum, sequences
from tests.schemathesis_walk import CHECKS, EXAMPLES, walk

from . import apiwalk
from .harness import Server, Worker
from .receiver import Receiver, register

pytestmark = [pytest.mark.faults, pytest.mark.slow]

#: Strings that try to end a header line, smuggle one, or confuse a terminal or parser.
INJECTIONS = [
    "line\r\nX-Injected: yes", "\r\n\r\nHTTP/1.1 200 OK\r\nX-Injected: yes\r\n\r\n", "a\nb", "a\rb", "\r\n",
    "tab\there", "nel\x85 ls\u2028 ps\u2029", "esc\x1b[31mred", "bell\x07 del\x7f", "%0d%0aX-Injected:%20yes",
    "\\r\\nX-Injected: yes", "nul\x00here", "\x00", "emoji \U0001f600 rtl \u202e bom \ufeff", "e\u0301 vs \u00e9",
    " spaces around ", "<script>alert(1)</script>", "{{7*7}} ${7*7}",
]

#: SQL metacharacters and classic injections: quotes, comments, escapes, LIKE
#: wildcards, tautologies, stacked and UNION queries, a sleep, driver placeholders.
SQL = [
    "'", '"', "`", "\\", "%_", "--", "/* */", "' OR '1'='1' --", "'; DROP TABLE ledger_entry; --",
    "' UNION SELECT secret FROM webhook_endpoint --", "'; SELECT pg_sleep(3); --", "$1 %s ? :name %(x)s",
    "\\'; --", "\u02bc OR \u02bc1\u02bc=\u02bc1",
]

USAGE = "/api/buyer-addon/usage"
ADD = "/api/buyer-addon/usage/add"


@pytest.fixture
def env(env) -> dict[str, str]:
    """The suite's environment (the test's database, webhooks to 127.0.0.1), one attempt per delivery."""
    return {**env, "ADDONS_WEBHOOK_RETRY_SCHEDULE": "[0]"}


def _clean_log(path) -> None:
    """No unhandled error, traceback or crashed worker in a server's or worker's log."""
    text = path.read_text(errors="replace") if path.exists() else ""
    for sign in ("Traceback", "unhandled error", "WORKER TIMEOUT", "Worker exiting", "was sent SIG"):
        assert sign not in text, f"the log holds {sign!r}:\n{text[-3000:]}"


@pytest.fixture
def server(env, tmp_path):
    """The host app under gunicorn (2 workers); its log is checked for unhandled
    errors when the test ends. gunicorn's request line limit is raised to its
    maximum (8 KB) so that the longest documented query, percent-encoded,
    reaches the app (gunicorn's default, 4 KB, answers 414 itself)."""
    log = tmp_path / "server.log"
    server = Server(env, log_path=log, args=("--limit-request-line", "8190")).start()
    yield server
    server.stop()
    _clean_log(log)


@pytest.fixture
def receiver():
    with Receiver() as receiver:
        yield receiver


def _register(server: Server, auth: dict[str, str], receiver: Receiver) -> str:
    return register(server.url, auth, receiver)


def _deliver(env: dict[str, str], receiver: Receiver, tmp_path) -> list[dict[str, Any]]:
    """Run a real worker once; every request the receiver got (each verified)."""
    assert Worker(env, "--once", log=tmp_path / "worker.log").run() == 0
    _clean_log(tmp_path / "worker.log")
    with receiver.changed:
        got = list(receiver.requests)
    assert all(request["verified"] for request in got)
    for request in got:  # nothing a client stored ever becomes a header
        assert "x-injected" not in request["headers"]
        assert not any(c in value for value in request["headers"].values() for c in "\r\n\x00")
    return [request["body"] for request in got]


def _answered_in_json(response: requests.Response) -> None:
    """No 5xx; JSON, an error in the documented shape; no smuggled header."""
    assert response.status_code < 500, response.text[:500]
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    body = response.json()
    if response.status_code >= 400:
        assert set(body) == {"error"} and {"code", "message", "fields"} <= set(body["error"]), body
    assert "X-Injected" not in response.headers


# -- schemathesis, over HTTP -----------------------------------------------------------------

#: 80 examples per operation (40 per generation mode; the quick in-process run
#: has 25 per mode), still derandomised: about 25 s per database on 2 cores.
MORE_EXAMPLES = settings(EXAMPLES, max_examples=40)


def test_schemathesis_over_http_finds_no_5xx_and_refusals_change_nothing(server, merchant_id, auth, real_ids):
    """Positive and negative requests to every operation of the served document:
    each answer as documented, no 5xx, and a refused one leaves the database's
    fingerprint as it was (a refusal after execution may store its replay only)."""
    schema = schemathesis.openapi.from_url(f"{server.url}/api/openapi.json")
    # One client (a fresh session per request costs ~3 ms more), with bob signed in
    # to the host, so that the buyer's own routes are reached too.
    session = apiwalk.sign_in(requests.Session(), server.url, merchant_id, "bob@example.com")
    statuses: Counter[int] = Counter()
    untouched = 0
    started = time.monotonic()

    def check(case) -> None:
        nonlocal untouched
        before = apiwalk.fingerprint()
        response = case.call_and_validate(session=session, headers=auth, checks=CHECKS, timeout=10)
        statuses[response.status_code] += 1
        if response.status_code >= 400:
            changed = apiwalk.changed_by_refusal(response, apiwalk.keyed(case.headers, case.body), before,
                                                 apiwalk.fingerprint())
            assert not changed, f"refused with {response.status_code} but changed the database: {response.text[:300]}"
            untouched += 1

    operations, failures = walk(schema, real_ids, check, MORE_EXAMPLES)
    sent = sum(statuses.values())
    print(f"\n  schemathesis over HTTP: {operations} operation-modes, {sent} requests in "
          f"{time.monotonic() - started:.1f}s; statuses {dict(sorted(statuses.items()))}; "
          f"{untouched} refusals changed nothing; 5xx: {sum(n for s, n in statuses.items() if s >= 500)}")
    assert operations >= 2 * 20
    assert not failures, "\n\n".join(failures)
    assert not any(status >= 500 for status in statuses)


# -- a fuzzer on the form-encoded PayKickstart endpoints --------------------------------------

_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
_HOSTILE = st.one_of(st.sampled_from(INJECTIONS + SQL), _TEXT)
#: Not UTF-8: a lone continuation byte, a truncated sequence, an encoded surrogate, an overlong "/".
_NOT_UTF8 = st.sampled_from([b"\xff", b"\xfe\xff", b"a\xc3", b"\xed\xa0\x80", b"\xc0\xaf"]).map(lambda b: b"x" + b)
_VALUES = st.one_of(st.integers(-3, 3).map(str), _HOSTILE, st.sampled_from(
    ["1e3", " 5", "+2", "-0", "\u0663", "9" * 30, "", "0x10", "1.0", "-1 ", "\t-1", "1_000"]))
_NAMES = st.one_of(_TEXT, st.sampled_from([
    "product_id", "buyer_email", "value", "description", "reference", "idempotency_key", "invoice_id",
    "auth_token", "metadata", "metadata[]", "metadata[a][b]", "metadata[a", "description[x]", "value[]"]))
#: Field names a multipart request carries as they are (others would need escaping in its headers).
_SAFE_NAME = re.compile(r"[\w\[\] .-]*", re.ASCII)


@st.composite
def paykickstart_forms(draw, product_id: str) -> tuple[str, list[tuple[str, str | bytes]], str, str]:
    """``(path, fields, auth, encoding)``: often a valid request carrying hostile
    strings, mixed with arbitrary fields, values and bytes that are not UTF-8."""
    path = draw(st.sampled_from([ADD, ADD, USAGE]))
    pairs: list[tuple[str, str | bytes]] = []
    if draw(st.sampled_from([True, True, True, False])):
        pairs += [("product_id", product_id),
                  ("buyer_email", draw(st.sampled_from(["bob@example.com", "BOB@Example.COM", "new@example.com"]))),
                  ("value", draw(st.sampled_from(["-1", "1", "2", "-2", "5"])))]
        for name in draw(st.lists(st.sampled_from(["description", "reference", "idempotency_key"]), unique=True)):
            pairs.append((name, draw(_HOSTILE)))
        for _ in range(draw(st.integers(0, 3))):
            pairs.append((f"metadata[{draw(_HOSTILE)}]", draw(_HOSTILE)))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 3]))):
        field = (draw(_NAMES), draw(st.one_of(_VALUES, _NOT_UTF8)))
        pairs.insert(draw(st.integers(0, len(pairs))), field)
    auth = draw(st.sampled_from(["bearer"] * 3 + ["form"] * 4 + ["other", "revoked", "garbage", "none"]))
    return path, pairs, auth, draw(st.sampled_from(["urlencoded", "urlencoded", "multipart"]))


def _encode(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _post_form(session: requests.Session, url: str, pairs: list, headers: dict, encoding: str) -> requests.Response:
    if encoding == "multipart" and all(_SAFE_NAME.fullmatch(name) for name, _ in pairs):
        return session.post(url, files=[(name, (None, _encode(value))) for name, value in pairs],
                            headers=headers, timeout=10)
    body = "&".join(f"{quote(name, safe='')}={quote_from_bytes(_encode(value), safe='')}" for name, value in pairs)
    return session.post(url, data=body, timeout=10,
                        headers={**headers, "Content-Type": "application/x-www-form-urlencoded"})


def _sent(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """What an accepted usage/add stored, as the form said it (the first value of a name wins)."""
    first: dict[str, str] = {}
    for name, value in pairs:
        first.setdefault(name, value)
    metadata = {name[len("metadata["):-1]: value for name, value in first.items()
                if name.startswith("metadata[") and name.endswith("]")}
    return {"description": first.get("description", ""), "reference": first.get("reference"),
            "metadata": metadata, "idempotency_key": first.get("idempotency_key")}


def _accounts(merchant_id: str) -> list[str]:
    return [a.id for a in storage.CreditAccount.select().where(storage.CreditAccount.merchant == merchant_id)]


def _ledgers(server: Server, auth: dict[str, str], merchant_id: str) -> list[dict[str, Any]]:
    """Every entry of every account of the merchant, through the ledger list;
    and each account's balance is still the sum of its ledger, without gaps."""
    entries = []
    for account_id in _accounts(merchant_id):
        listed = apiwalk.ledger_pages(server.url, auth, account_id)
        account = storage.CreditAccount.get_by_id(account_id)
        assert account.balance == ledger_sum(account_id) == sum(e["delta"] for e in listed)
        assert sequences(account_id) == list(range(1, len(listed) + 1))
        entries += listed
    return entries


def test_form_fuzzer_on_the_paykickstart_endpoints(server, env, merchant, auth, product, funded_account_id,
                                                   receiver, tmp_path):
    """Hypothesis sends form-encoded (and multipart) requests to ``/usage`` and
    ``/usage/add``: arbitrary fields and values, ``metadata[...]`` keys, bytes
    that are not UTF-8, ``auth_token`` good, foreign, revoked, garbage or absent."""
    merchant_row, key = merchant
    _register(server, auth, receiver)
    other_key = merchants.create_merchant("Other Rockets")[1].key
    revoked = merchants.create_api_key(merchant_row.id)
    merchants.revoke_api_key(revoked.id)
    tokens = {"form": key.key, "other": other_key, "revoked": revoked.key}
    session = requests.Session()
    statuses: Counter[int] = Counter()
    expected: dict[str, dict[str, Any]] = {}
    replays = [0]

    # Writes the fuzzer makes whatever Hypothesis draws: one valid form per storable
    # hostile string, in its description, reference and metadata, with form auth.
    stored_on_purpose = [
        (ADD, [("product_id", product.id), ("buyer_email", "bob@example.com"), ("value", "-1"),
               ("description", text), ("reference", text), (f"metadata[k{n}]", text),
               ("idempotency_key", f"on-purpose-{n}")], "form", encoding)
        for n, text in enumerate(t for t in INJECTIONS + SQL if _storable(t))
        for encoding in ("urlencoded", "multipart")]

    def fuzz(form, garbage: str) -> None:
        path, pairs, auth_kind, encoding = form
        pairs = list(pairs)
        if auth_kind in tokens or auth_kind == "garbage":
            pairs.append(("auth_token", tokens.get(auth_kind, garbage)))
        before = apiwalk.fingerprint()
        response = _post_form(session, f"{server.url}{path}", pairs, auth if auth_kind == "bearer" else {}, encoding)
        statuses[response.status_code] += 1
        _answered_in_json(response)
        after = apiwalk.fingerprint()
        if any(isinstance(v, bytes) for _, v in pairs):  # not UTF-8: refused, never stored mangled
            assert response.status_code in (400, 401), response.text
        if response.status_code >= 400:
            assert not apiwalk.changed_by_refusal(response, apiwalk.keyed({}, dict(pairs)), before, after)
            return
        if path == USAGE:  # a read
            assert before == after
            return
        entry = response.json()["data"]["entry"]
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        replays[0] += replayed
        grown = int(after["ledger_entry"][0]) - int(before["ledger_entry"][0])
        assert grown == (0 if replayed else 1)
        sent = _sent(pairs)
        assert {name: entry[name] for name in sent} == sent
        assert entry["delta"] == int(next(value for name, value in pairs if name == "value"))
        if not replayed:
            expected[entry["id"]] = sent

    for form in stored_on_purpose:
        fuzz = example(form=form, garbage="")(fuzz)
    fuzz = given(form=paykickstart_forms(product.id), garbage=_HOSTILE)(fuzz)
    settings(max_examples=400, derandomize=True, deadline=None, database=None, print_blob=False,
             suppress_health_check=list(HealthCheck))(fuzz)()
    listed = _ledgers(server, auth, merchant_row.id)
    matched, delivered = apiwalk.check_round_trip(expected, listed, _deliver(env, receiver, tmp_path))
    print(f"\n  form fuzzer: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}, "
          f"{replays[0]} replays; {len(expected)} entries written, each matched in the ledger list ({matched}) "
          f"and in {delivered} webhook bodies; 5xx: 0")
    assert not any(status >= 500 for status in statuses)
    # The forms written on purpose are all stored; how many more Hypothesis adds shifts whenever
    # any project module changes (>= 6.131 mines their constants), so only they are counted.
    assert {dict(pairs)["idempotency_key"] for _, pairs, _, _ in stored_on_purpose} <= {
        sent["idempotency_key"] for sent in expected.values()}
    assert statuses[401] > 0 and statuses[422] > 0


# -- SQL metacharacters in every string field ---------------------------------------------------

def _walk_objects(server: Server, auth: dict[str, str], merchant_id: str, product_id: str,
                  receiver: Receiver) -> dict[str, str]:
    """Objects for every id the document names. The endpoint and key the walk
    may change, rotate or delete are spares; the receiver's endpoint is not touched."""
    main = _register(server, auth, receiver)
    requests.post(f"{server.url}{ADD}", headers=auth, timeout=10,  # a delivery to redeliver
                  json={"product_id": product_id, "buyer_email": "bob@example.com", "value": -1})
    spare = requests.post(f"{server.url}/api/addons/webhook-endpoints", headers=auth, timeout=10,
                          json={"url": receiver.url, "event_types": ["auto_top_up.disabled"]}).json()["id"]
    return {"endpoint_id": spare, "key_id": merchants.create_api_key(merchant_id).id, "receiver_url": receiver.url,
            "delivery_id": storage.WebhookDelivery.get(storage.WebhookDelivery.endpoint == main).id}


def _placed(op: apiwalk.Operation, field: apiwalk.StringField, text: str, names: dict[str, str],
            base: dict[str, Any] | None) -> tuple[str, dict, dict, Any]:
    """(path, query, headers, body) of the valid request with ``text`` put in ``field``."""
    names, query, headers = dict(names), {}, {}
    body = json.loads(json.dumps(apiwalk.fill(base, names))) if base is not None else None
    if field.where == "path":
        names[field.name] = text
    elif field.where == "query":
        query[field.name] = text
    elif field.where == "header":
        headers[field.name] = text
    elif field.where == "body-key":
        body[field.name] = {text: "v"}
    elif field.where == "body-value":
        body[field.name] = {"k": text}
    elif field.where == "body-item":
        body[field.name] = [text]
    else:
        body[field.name] = text
    return apiwalk.url_path(op, names), query, headers, body


def _echoed(found: Any, name: str) -> list[Any]:
    """Every value under the key ``name`` anywhere in a JSON answer."""
    if isinstance(found, dict):
        return ([found[name]] if name in found else []) + [v for item in found.values() for v in _echoed(item, name)]
    if isinstance(found, list):
        return [v for item in found for v in _echoed(item, name)]
    return []


def test_sql_metacharacters_in_every_string_field(server, env, merchant, auth, product, funded_account_id,
                                                  receiver, tmp_path):
    """Each SQL metacharacter and classic injection in turn in every string the
    document lists (body fields, metadata keys and values, list items, query and
    path parameters, the Idempotency-Key header) of every operation, the rest
    of the request valid."""
    merchant_row = merchant[0]
    doc = apiwalk.document(server.url)
    names = {"product_id": product.id, "account_id": funded_account_id,
             "top_up_id": apiwalk.unresolved_top_up(funded_account_id), "grant_id": apiwalk.grant_of(funded_account_id),
             "hold_id": apiwalk.hold_of(funded_account_id),
             **_walk_objects(server, auth, merchant_row.id, product.id, receiver)}
    session = apiwalk.sign_in(requests.Session(), server.url, merchant_row.id, "bob@example.com")  # for /me
    statuses, expected = Counter(), {}
    fields_walked, slowest, n = set(), 0.0, 0
    before = apiwalk.fingerprint()  # nothing else writes: each request's "after" is the next one's "before"
    for op in apiwalk.operations(doc):
        base = apiwalk.valid_body(op)
        for field in apiwalk.string_fields(doc, op):
            fields_walked.add(f"{op.id} {field}")
            for text in SQL:
                n += 1
                if field.name.lower().replace("-", "_") == "idempotency_key":
                    text = f"{text}{n}"  # keys stay unique, so every write executes
                if field.where == "header" and not text.isascii():
                    continue  # an HTTP header is Latin-1
                path, query, headers, body = _placed(op, field, text, names, base)
                started = time.monotonic()
                response = session.request(op.method, f"{server.url}{path}", params=query, json=body,
                                           headers={**auth, **headers}, timeout=10)
                slowest = max(slowest, time.monotonic() - started)
                statuses[response.status_code] += 1
                _answered_in_json(response)
                after = apiwalk.fingerprint()
                before, refused_before = after, before
                if field.where == "path":
                    assert response.status_code in (404, 405), (op, text, response.text)
                if response.status_code >= 400:
                    changed = apiwalk.changed_by_refusal(response, apiwalk.keyed(headers, body), refused_before, after)
                    assert not changed, (str(op), str(field), text, response.status_code, changed)
                    continue
                answer = response.json()
                if (op.id, field.name) in apiwalk.NOT_ECHOED:
                    pass
                elif field.where in ("body", "query", "header"):
                    key = "idempotency_key" if field.where == "header" else field.name
                    wanted = normalise_email(text) if field.name == "buyer_email" else text
                    for value in _echoed(answer, key):
                        assert value == wanted, (str(op), str(field), text, value)
                elif field.where in ("body-key", "body-value"):
                    assert body[field.name] in _echoed(answer, field.name), (str(op), str(field), text)
                data = answer.get("data")
                entry = answer.get("entry") or (data.get("entry") if isinstance(data, dict) else None)
                if entry:
                    sent = {"description": body.get("description", ""), "reference": body.get("reference"),
                            "metadata": body.get("metadata", {}),
                            "idempotency_key": body.get("idempotency_key", headers.get("Idempotency-Key"))}
                    assert {name: entry[name] for name in sent} == sent
                    expected[entry["id"]] = sent
    listed = _ledgers(server, auth, merchant_row.id)
    matched, delivered = apiwalk.check_round_trip(expected, listed, _deliver(env, receiver, tmp_path))
    tables = storage.db.get_tables()
    print(f"\n  SQL metacharacters: {len(SQL)} strings x {len(fields_walked)} fields of "
          f"{len(apiwalk.operations(doc))} operations = {sum(statuses.values())} requests; statuses "
          f"{dict(sorted(statuses.items()))}; slowest {slowest:.2f}s; {len(expected)} entries round-tripped "
          f"through the ledger list ({matched}) and {delivered} webhook bodies; {len(tables)} tables intact")
    assert not any(status >= 500 for status in statuses)
    assert slowest < 2.5  # "pg_sleep(3)" never ran
    assert {model._meta.table_name for model in storage.ALL_MODELS} <= set(tables)
    assert len(fields_walked) >= 50 and len(expected) >= len(SQL)


# -- header injection ------------------------------------------------------------------------------

def _storable(text: str) -> bool:
    return "\x00" not in text


def test_header_injection_strings_are_stored_exactly_or_refused(server, env, merchant, auth, api_key, product,
                                                                funded_account_id, receiver, tmp_path):
    """CR/LF, NUL and friends in every string a balance change stores (JSON and
    form, usage and adjustments) and in a webhook endpoint's description and URL:
    stored and given back exactly, or refused with 422 and nothing stored; never
    a header, neither in the API's answers nor in a webhook request."""
    merchant_row = merchant[0]
    _register(server, auth, receiver)
    session, statuses, expected, n = requests.Session(), Counter(), {}, 0
    before = apiwalk.fingerprint()
    for text in INJECTIONS:
        for field in ("description", "reference", "metadata key", "metadata value", "idempotency_key"):
            for route in ("usage JSON", "usage form", "adjustment"):
                n += 1
                body: dict[str, Any] = {"value": 1, "description": "d"}
                if route != "adjustment":
                    body.update(product_id=product.id, buyer_email="bob@example.com")
                if field == "metadata key":
                    body["metadata"] = {text: "v"}
                elif field == "metadata value":
                    body["metadata"] = {"k": text}
                else:
                    body[field] = text + (str(n) if field == "idempotency_key" else "")
                valid = _storable(text) and not (field == "metadata key" and not 1 <= len(text) <= 40) \
                    and not (route == "adjustment" and field == "description" and not text.strip())
                if route == "usage form":
                    pairs = [(name, str(value)) for name, value in body.items() if name != "metadata"]
                    pairs += [(f"metadata[{k}]", v) for k, v in body.get("metadata", {}).items()]
                    response = _post_form(session, f"{server.url}{ADD}", pairs + [("auth_token", api_key)], {},
                                          "urlencoded")
                else:
                    path = ADD if route == "usage JSON" else f"/api/addons/accounts/{funded_account_id}/adjustments"
                    response = session.post(f"{server.url}{path}", json=body, headers=auth, timeout=10)
                statuses[response.status_code] += 1
                _answered_in_json(response)
                after = apiwalk.fingerprint()
                before, refused_before = after, before
                if not valid:
                    assert response.status_code == 422, (route, field, text, response.text)
                    assert response.json()["error"]["code"] == "validation_error"
                    assert refused_before == after, (route, field, text)
                    continue
                assert response.status_code in (200, 201), (route, field, text, response.text)
                answer = response.json()
                entry = answer["entry"] if "entry" in answer else answer["data"]["entry"]
                sent = {"description": body["description"], "reference": body.get("reference"),
                        "metadata": body.get("metadata", {}), "idempotency_key": body.get("idempotency_key")}
                assert {name: entry[name] for name in sent} == sent, (route, field, text)
                expected[entry["id"]] = sent

    # A webhook endpoint's description is stored as given; its URL holds no
    # control character or space (a URL has none: RFC 3986).
    other = Receiver().start()
    endpoints: dict[str, str] = {}
    try:
        for text in INJECTIONS:
            described = session.post(f"{server.url}/api/addons/webhook-endpoints", headers=auth, timeout=10,
                                     json={"url": receiver.url, "description": text,
                                           "event_types": ["auto_top_up.disabled"]})
            statuses[described.status_code] += 1
            _answered_in_json(described)
            if not _storable(text):
                assert described.status_code == 422
            else:
                assert described.status_code == 201, described.text
                got = session.get(f"{server.url}/api/addons/webhook-endpoints/{described.json()['id']}",
                                  headers=auth, timeout=10)
                assert got.json()["description"] == text
            url = f"{other.url}/{text}"
            located = session.post(f"{server.url}/api/addons/webhook-endpoints", json={"url": url},
                                   headers=auth, timeout=10)
            statuses[located.status_code] += 1
            _answered_in_json(located)
            if any(c.isspace() or not c.isprintable() for c in text):
                assert located.status_code == 422, (text, located.text)
                assert located.json()["error"]["code"] in ("invalid_url", "validation_error")
            else:
                assert located.status_code == 201, (text, located.text)
                assert located.json()["url"] == url
                endpoints[located.json()["id"]] = url
        # One more change, so that every endpoint the URLs made has something to deliver.
        session.post(f"{server.url}{ADD}", headers=auth, timeout=10,
                     json={"product_id": product.id, "buyer_email": "bob@example.com", "value": 1})
        delivered = _deliver(env, receiver, tmp_path)
        with other.changed:
            to_urls = list(other.requests)
    finally:
        other.stop()
    for request in to_urls:  # their signatures are for other secrets: only the headers matter here
        assert "x-injected" not in request["headers"]
        assert not any(c in value for value in request["headers"].values() for c in "\r\n\x00")
    listed = _ledgers(server, auth, merchant_row.id)
    matched, copies = apiwalk.check_round_trip(expected, listed, delivered)
    print(f"\n  header injection: {len(INJECTIONS)} strings, {sum(statuses.values())} requests, statuses "
          f"{dict(sorted(statuses.items()))}; {len(expected)} entries stored exactly (ledger list {matched}, "
          f"webhook bodies {copies}); {len(endpoints)} endpoints with a hostile path got {len(to_urls)} "
          f"requests; no injected header anywhere")
    assert len(to_urls) >= len(endpoints) > 0


# -- oversized bodies and deep nesting ----------------------------------------------------------------

LIMIT = 64 * 1024  # ADDONS_MAX_CONTENT_LENGTH's default
BATCH_LIMIT = 1024 * 1024  # ADDONS_BATCH_MAX_CONTENT_LENGTH's default


def _padded(body: dict[str, Any], size: int) -> bytes:
    """``body`` as JSON, padded with spaces to exactly ``size`` bytes."""
    raw = json.dumps(body).encode()
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


def _raw_exchange(port: int, head: str, body: bytes, timeout: float = 5) -> tuple[int, bytes]:
    """Send a request by hand; (status, answer body) as soon as the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode() + b"\r\n\r\n" + body)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < int(
                answer.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0]):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return int(answer.split()[1]), answer.split(b"\r\n\r\n", 1)[1]


def test_oversized_bodies_are_413_and_change_nothing(server, merchant, auth, api_key, product, funded_account_id):
    """One byte over the limit on every operation that takes a body (from the
    document); exactly at the limit still served; 10 MB; a chunked stream (whose
    first 64 KB alone would be a valid form); a Content-Length of 100 MB with
    hardly any body (answered at once, not waited for)."""
    doc = apiwalk.document(server.url)
    names = {"product_id": product.id, "account_id": funded_account_id, "receiver_url": "http://127.0.0.1:9/",
             "key_id": merchants.create_api_key(merchant[0].id).id, "endpoint_id": "ep_none", "delivery_id": "dlv_none",
             "top_up_id": "topup_none", "grant_id": apiwalk.grant_of(funded_account_id),
             "hold_id": apiwalk.hold_of(funded_account_id)}
    session = apiwalk.sign_in(requests.Session(), server.url, merchant[0].id, "bob@example.com")  # for /me
    results = []
    before = apiwalk.fingerprint()
    json_headers = {**auth, "Content-Type": "application/json"}

    def check(name: str, response_status: int, wanted: int, took: float) -> None:
        results.append(f"{name}: {response_status} in {took:.2f}s")
        assert response_status == wanted, results[-1]
        assert took < 5, results[-1]
        assert apiwalk.fingerprint() == before, f"{name} changed the database"

    bodied = [op for op in apiwalk.operations(doc) if "requestBody" in op.spec]
    for op in bodied:
        limit = BATCH_LIMIT if op.id == "usage_records" else LIMIT
        started = time.monotonic()
        response = session.request(op.method, f"{server.url}{apiwalk.url_path(op, names)}", headers=json_headers,
                                   data=_padded(apiwalk.fill(apiwalk.valid_body(op), names), limit + 1), timeout=10)
        _answered_in_json(response)
        check(f"{op} {limit + 1} B", response.status_code, 413, time.monotonic() - started)
        assert response.json()["error"]["code"] == "payload_too_large"

    at_limit = {"product_id": product.id, "buyer_email": "bob@example.com", "value": -1}
    response = session.post(f"{server.url}{ADD}", data=_padded(at_limit, LIMIT), headers=json_headers, timeout=10)
    results.append(f"usage/add at exactly {LIMIT} B: {response.status_code}")
    assert response.status_code == 200, response.text
    before = apiwalk.fingerprint()

    started = time.monotonic()
    response = session.post(f"{server.url}{ADD}", data=b'{"description": "' + b"x" * 10_000_000 + b'"}',
                            headers=json_headers, timeout=10)
    check("usage/add 10 MB", response.status_code, 413, time.monotonic() - started)

    head = f"product_id={product.id}&buyer_email=bob%40example.com&value=-5".encode()
    head += b"&value=-5" * ((LIMIT - 150 - len(head)) // 9) + b"&reference="
    cut = head + b"r" * (LIMIT - len(head) + 500)  # cut at the limit, a valid form with a shorter reference

    def stream(data: bytes, piece: int = 4096):
        for start in range(0, len(data), piece):
            yield data[start:start + piece]

    started = time.monotonic()
    response = session.post(f"{server.url}{ADD}", data=stream(cut), timeout=10,
                            headers={**auth, "Content-Type": "application/x-www-form-urlencoded"})
    check("usage/add form, chunked, 500 B over", response.status_code, 413, time.monotonic() - started)
    started = time.monotonic()
    response = session.post(f"{server.url}{ADD}", data=stream(b'{"description": "' + b"x" * 1_000_000 + b'"}'),
                            headers=json_headers, timeout=10)
    check("usage/add JSON, chunked, 1 MB", response.status_code, 413, time.monotonic() - started)

    started = time.monotonic()
    status, answer = _raw_exchange(server.port, (
        f"POST {ADD} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {api_key}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000000"), b'{"value": -1')
    check("usage/add claiming 100 MB, sending 12 B", status, 413, time.monotonic() - started)
    assert json.loads(answer)["error"]["code"] == "payload_too_large"

    started = time.monotonic()  # the key itself is in the oversized form: no readable key, so 401
    response = session.post(f"{server.url}{ADD}", data={"auth_token": api_key, "product_id": product.id,
                                                        "buyer_email": "bob@example.com", "value": "-1",
                                                        "description": "x" * 1_000_000}, timeout=10)
    check("usage/add form with auth_token, 1 MB", response.status_code, 401, time.monotonic() - started)
    print(f"\n  oversized bodies ({len(bodied)} operations take one): " + "; ".join(results))


@pytest.mark.parametrize("limit", [LIMIT, 4 * 1024 * 1024], ids=["default-limit", "4MB-limit"])
def test_deep_json_nesting_is_400_or_413_never_500(env, tmp_path, merchant, auth, product, funded_account_id,
                                                   limit):
    """100 000 and 1 000 000 nested arrays (and objects) at the top, in
    ``metadata`` and in ``value``: 413 when over the limit, else 400; the
    server's workers survive (a valid request still works) and nothing changed."""
    log = tmp_path / "server.log"
    server = Server({**env, "ADDONS_MAX_CONTENT_LENGTH": str(limit)}, log_path=log).start()
    try:
        doc = apiwalk.document(server.url)
        session, statuses = requests.Session(), Counter()
        before = apiwalk.fingerprint()
        valid = {"product_id": product.id, "buyer_email": "bob@example.com", "value": -1}
        adjustment = next(op for op in apiwalk.operations(doc) if op.id == "create_adjustment")
        targets = [f"{server.url}{ADD}",
                   f"{server.url}{apiwalk.url_path(adjustment, {'account_id': funded_account_id})}",
                   f"{server.url}/api/addons/products", f"{server.url}/api/addons/webhook-endpoints"]
        shapes = []
        for depth in (1000, 30_000, 100_000, 1_000_000):
            arrays = b"[" * depth + b"]" * depth
            objects = b'{"a":' * depth + b"1" + b"}" * depth
            shapes += [(f"{depth} arrays", arrays), (f"{depth} objects", objects),
                       (f"{depth} arrays in metadata", b'{"value": -1, "metadata": ' + arrays + b"}"),
                       (f"{depth} arrays in value", b'{"value": ' + arrays + b"}")]
        for name, body in shapes:
            for url in targets:
                started = time.monotonic()
                response = session.post(url, data=body, headers={**auth, "Content-Type": "application/json"},
                                        timeout=30)
                statuses[response.status_code] += 1
                _answered_in_json(response)
                wanted = 413 if len(body) > limit else 400
                assert response.status_code == wanted, (name, url, response.text[:200])
                assert time.monotonic() - started < 10
        assert apiwalk.fingerprint() == before
        alive = session.post(f"{server.url}{ADD}", json=valid, headers=auth, timeout=10)
        assert alive.status_code == 200
    finally:
        server.stop()
    _clean_log(log)
    print(f"\n  deep nesting, limit {limit} B: {len(shapes)} bodies x {len(targets)} routes, statuses "
          f"{dict(sorted(statuses.items()))}; workers alive after, nothing changed")
