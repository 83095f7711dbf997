"""Bad input on the two routes that change a balance: each is a 4xx with a
stable code, and the balance and the ledger stay as they were."""

from __future__ import annotations

import io
import json
from urllib.parse import urlencode

import pytest

import storage
from addon_plugin import ledger
from tests.helpers import ledger_sum, sequences

ADD = "/api/buyer-addon/usage/add"
_MISSING = object()

#: (id, field overrides on a valid body (``_MISSING`` removes the field), status, code)
FIELD_CASES = [
    ("zero", {"value": 0}, 422, "validation_error"),
    ("minus-zero", {"value": -0}, 422, "validation_error"),
    ("word", {"value": "abc"}, 422, "validation_error"),
    ("decimal-string", {"value": "1.5"}, 422, "validation_error"),
    ("digit-string", {"value": "-5"}, 422, "validation_error"),
    ("float", {"value": 1.5}, 422, "validation_error"),
    ("whole-float", {"value": -5.0}, 422, "validation_error"),
    ("true", {"value": True}, 422, "validation_error"),
    ("false", {"value": False}, 422, "validation_error"),
    ("null", {"value": None}, 422, "validation_error"),
    ("empty-string", {"value": ""}, 422, "validation_error"),
    ("list", {"value": [-5]}, 422, "validation_error"),
    ("object", {"value": {"amount": -5}}, 422, "validation_error"),
    ("10**30", {"value": -10**30}, 422, "validation_error"),
    ("2**53", {"value": -2**53}, 422, "validation_error"),
    ("missing-value", {"value": _MISSING}, 422, "validation_error"),
    ("unknown-field", {"kind": "purchase"}, 422, "validation_error"),
    ("description-null", {"description": None}, 422, "validation_error"),
    ("description-number", {"description": 5}, 422, "validation_error"),
    ("description-too-long", {"description": "x" * 1001}, 422, "validation_error"),
    ("description-nul", {"description": "a\x00b"}, 422, "validation_error"),
    ("description-lone-surrogate", {"description": "a\ud800b"}, 422, "validation_error"),
    ("reference-object", {"reference": {"a": 1}}, 422, "validation_error"),
    ("metadata-list", {"metadata": ["a"]}, 422, "validation_error"),
    ("metadata-nested", {"metadata": {"a": {"b": "c"}}}, 422, "validation_error"),
    ("metadata-number", {"metadata": {"a": 1}}, 422, "validation_error"),
    ("metadata-51-keys", {"metadata": {f"k{n}": "v" for n in range(51)}}, 422, "validation_error"),
    ("metadata-long-key", {"metadata": {"k" * 41: "v"}}, 422, "validation_error"),
    ("metadata-over-8kb", {"metadata": {f"k{n}": "v" * 400 for n in range(30)}}, 422, "validation_error"),
    ("metadata-nul-key", {"metadata": {"a\x00": "v"}}, 422, "validation_error"),
    ("idempotency-key-too-long", {"idempotency_key": "k" * 256}, 422, "validation_error"),
]

#: Only the usage route names the account by e-mail.
EMAIL_CASES = [
    ("email-missing", {"buyer_email": _MISSING}, 422, "validation_error"),
    ("email-empty", {"buyer_email": ""}, 422, "validation_error"),
    ("email-not-an-email", {"buyer_email": "bob"}, 422, "validation_error"),
    ("email-list", {"buyer_email": ["bob@example.com"]}, 422, "validation_error"),
    ("email-nul", {"buyer_email": "bob\x00@example.com"}, 422, "validation_error"),
    ("email-zero-width-space", {"buyer_email": "bob\u200b@example.com"}, 422, "validation_error"),
    ("email-inner-newline", {"buyer_email": "bob@example\n.com"}, 422, "validation_error"),  # outer: trimmed
    ("email-lone-surrogate", {"buyer_email": "\udc00bob@example.com"}, 422, "validation_error"),
    ("email-fullwidth-letters", {"buyer_email": "ｂｏｂ@example.com"}, 404, "account_not_found"),
    ("email-other-script", {"buyer_email": "боб@example.com"}, 404, "account_not_found"),
    ("email-too-long", {"buyer_email": "b" * 310 + "@example.com"}, 422, "validation_error"),
    ("product-too-long", {"product_id": "p" * 41}, 422, "validation_error"),
]

#: (id, raw body, content type, status, code)
RAW_CASES = [
    ("1e309", '{{"value": 1e309{rest}}}', "application/json", 422, "validation_error"),
    ("-1e309", '{{"value": -1e309{rest}}}', "application/json", 422, "validation_error"),
    ("NaN", '{{"value": NaN{rest}}}', "application/json", 400, "bad_request"),
    ("Infinity", '{{"value": -Infinity{rest}}}', "application/json", 400, "bad_request"),
    ("malformed", '{{"value": -5,,{rest}}}', "application/json", 400, "bad_request"),
    ("truncated", '{{"value": -5{rest}', "application/json", 400, "bad_request"),
    ("json-array", '[{{"value": -5{rest}}}]', "application/json", 400, "bad_request"),
    ("json-string", '"value=-5"', "application/json", 400, "bad_request"),
    ("text-plain", '{{"value": -5{rest}}}', "text/plain", 415, "unsupported_media_type"),
    ("xml", "<value>-5</value>", "application/xml", 415, "unsupported_media_type"),
    ("no-content-type", '{{"value": -5{rest}}}', None, 415, "unsupported_media_type"),
    ("empty-body", "", "application/json", 422, "validation_error"),
    ("deeply-nested", '{{"metadata": ' + "[" * 100_000 + "]" * 100_000 + "{rest}}}", "application/json",
     413, "payload_too_large"),
    ("200-kB", '{{"value": -5, "description": "' + "x" * 200_000 + '"{rest}}}', "application/json",
     413, "payload_too_large"),
    ("nesting-under-limit", '{{"metadata": ' + "[" * 20_000 + "]" * 20_000 + "{rest}}}", "application/json",
     400, "bad_request"),
]


@pytest.fixture(params=["usage", "adjustment"])
def route(request, product, funded_account_id):
    """``(path, valid body)`` for each balance-changing route."""
    if request.param == "usage":
        return ADD, {"product_id": product.id, "buyer_email": "bob@example.com", "value": -5}
    return (f"/api/addons/accounts/{funded_account_id}/adjustments",
            {"value": -5, "description": "correction"})


def _unchanged(account_id: str) -> None:
    assert ledger.balance(account_id) == 1000 == ledger_sum(account_id)
    assert sequences(account_id) == [1]
    assert storage.IdempotencyRecord.select().count() == 0


def _refused(response, status: int, code: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/json"
    assert response.get_json()["error"]["code"] == code


def test_the_valid_body_works(client, auth, route, funded_account_id):
    path, body = route
    assert client.post(path, json=body, headers=auth).status_code in (200, 201)
    assert ledger.balance(funded_account_id) == 995


@pytest.mark.parametrize("overrides, status, code", [c[1:] for c in FIELD_CASES], ids=[c[0] for c in FIELD_CASES])
def test_bad_fields_are_refused(client, auth, route, funded_account_id, overrides, status, code):
    path, body = route
    body = {k: v for k, v in {**body, **overrides}.items() if v is not _MISSING}
    if path != ADD and "buyer_email" in overrides:
        pytest.skip("e-mails name the account on the usage route only")
    response = client.post(path, data=json.dumps(body), content_type="application/json", headers=auth)
    _refused(response, status, code)
    _unchanged(funded_account_id)


@pytest.mark.parametrize("overrides, status, code", [c[1:] for c in EMAIL_CASES], ids=[c[0] for c in EMAIL_CASES])
def test_bad_emails_are_refused(client, auth, product, funded_account_id, overrides, status, code):
    body = {"product_id": product.id, "buyer_email": "bob@example.com", "value": -5, **overrides}
    body = {k: v for k, v in body.items() if v is not _MISSING}
    response = client.post(ADD, data=json.dumps(body), content_type="application/json", headers=auth)
    _refused(response, status, code)
    _unchanged(funded_account_id)
    assert storage.CreditAccount.select().count() == 1


@pytest.mark.parametrize("raw, content_type, status, code", [c[1:] for c in RAW_CASES],
                         ids=[c[0] for c in RAW_CASES])
def test_bad_bodies_are_refused(client, auth, route, funded_account_id, raw, content_type, status, code):
    path, body = route
    rest = "".join(f", {json.dumps(k)}: {json.dumps(v)}" for k, v in body.items() if k != "value")
    data = raw.format(rest=rest).encode()
    headers = {**auth, **({"Content-Type": content_type} if content_type else {})}
    response = client.post(path, data=data, headers=headers)
    _refused(response, status, code)
    _unchanged(funded_account_id)


def test_invalid_utf8_is_400(client, auth, route, funded_account_id):
    path, _ = route
    response = client.post(path, data=b'{"value": -5, "description": "\xff\xfe"}', content_type="application/json",
                           headers=auth)
    _refused(response, 400, "bad_request")
    _unchanged(funded_account_id)


def test_a_form_value_that_is_not_an_integer_is_refused(client, api_key, product, funded_account_id):
    for value in ("1.5", "abc", "", "true", "1e3", "0", "9" * 30):
        response = client.post(ADD, data={"auth_token": api_key, "product_id": product.id,
                                          "buyer_email": "bob@example.com", "value": value})
        _refused(response, 422, "validation_error")
    _unchanged(funded_account_id)


#: Integers a form must not carry: other scripts' digits (which ``int()`` reads), a plus
#: sign, padding, the minus sign U+2212, digit separators. Only ``-?[0-9]+`` is an integer.
NOT_ASCII_INTEGERS = ["-\u0665", "\u0665", "-\uff15", "-\u06f5", "-\U0001d7d3", "+5", " -5", "-5 ", "\u22125", "-1_0"]


@pytest.mark.parametrize("value", NOT_ASCII_INTEGERS)
def test_form_integers_are_ascii_digits_only(client, auth, route, funded_account_id, value):
    path, body = route
    form = {**body, "value": value}
    _refused(client.post(path, data=form, headers=auth), 422, "validation_error")
    _unchanged(funded_account_id)


@pytest.mark.parametrize("value", NOT_ASCII_INTEGERS)
def test_query_integers_are_ascii_digits_only(client, auth, funded_account_id, value):
    _refused(client.get("/api/addons/accounts", query_string={"limit": value.replace("-", "")}, headers=auth),
             422, "validation_error")


def test_a_nul_in_an_id_is_404_not_500(client, auth, funded_account_id):
    for path in (f"/api/addons/accounts/{funded_account_id}%00", "/api/addons/products/a%00b",
                 f"/api/addons/accounts/{funded_account_id}%00/ledger"):
        _refused(client.get(path, headers=auth), 404, "not_found")


def test_bad_query_strings_are_422(client, auth, funded_account_id):
    for query in ({"limit": "0"}, {"limit": "501"}, {"limit": "abc"}, {"limit": "1.5"}, {"limit": "-1"},
                  {"cursor": "!!"}, {"cursor": "a\x00"}, {"buyer_email": "\x00@x.com"}, {"colour": "red"}):
        response = client.get("/api/addons/accounts", query_string=query, headers=auth)
        _refused(response, 422, "validation_error")


def test_unknown_routes_and_methods_answer_json(client, auth, funded_account_id):
    _refused(client.get("/api/addons/nothing-here", headers=auth), 404, "not_found")
    _refused(client.put(f"/api/addons/accounts/{funded_account_id}/adjustments", headers=auth), 405,
             "method_not_allowed")
    _refused(client.delete("/api/addons/products", headers=auth), 405, "method_not_allowed")


def test_every_405_names_the_allowed_methods(app, client, auth):
    """RFC 9110: a 405 carries ``Allow``; on every route of the API, for every method it refuses."""
    checked = 0
    for path, operations in app.test_client().get("/api/openapi.json").get_json()["paths"].items():
        allowed = {method.upper() for method in operations}
        for method in {"GET", "POST", "PUT", "PATCH", "DELETE"} - allowed:
            response = client.open(path.replace("{", "").replace("}", ""), method=method, headers=auth)
            _refused(response, 405, "method_not_allowed")
            header = {m.strip() for m in response.headers.get("Allow", "").split(",")}
            assert allowed <= header and method not in header, f"{method} {path}: Allow {header}"
            checked += 1
    assert checked > 50


def test_a_form_that_is_not_utf8_is_400_not_stored_mangled(client, auth, api_key, product, funded_account_id):
    """Werkzeug's own form parser would keep ``%FF`` as text, replace raw bytes
    with U+FFFD, or drop the whole form: each is refused instead."""
    fields = f"product_id={product.id}&buyer_email=bob%40example.com&value=-5".encode()
    for body in (fields + b"&description=%FF%FE", fields + b"&description=\xff", fields + b"&metadata%5B%C0%AF%5D=v",
                 fields + b"&desc\xe9ription=x"):
        response = client.post(ADD, data=body, content_type="application/x-www-form-urlencoded", headers=auth)
        _refused(response, 400, "bad_request")
    multipart = (b'--b\r\nContent-Disposition: form-data; name="description"\r\n\r\n\xff\xfe\r\n--b--\r\n')
    _refused(client.post(ADD, data=multipart, content_type="multipart/form-data; boundary=b", headers=auth),
             400, "bad_request")
    _unchanged(funded_account_id)


def test_a_multipart_file_is_refused(client, auth, product, funded_account_id):
    data = {"product_id": product.id, "buyer_email": "bob@example.com", "value": "-5",
            "description": (io.BytesIO(b"from a file"), "notes.txt")}
    _refused(client.post(ADD, data=data, content_type="multipart/form-data", headers=auth), 400, "bad_request")
    _unchanged(funded_account_id)


def test_form_strings_come_back_exactly(client, api_key, product, funded_account_id):
    """Line breaks in values and in ``metadata[...]`` keys (urlencoded; a multipart
    part's name is a header, so there the key stays on one line)."""
    fields = {"auth_token": api_key, "product_id": product.id, "buyer_email": "bob@example.com", "value": "-1",
              "description": "a\r\nX-Injected: yes"}
    for content_type, key in (("application/x-www-form-urlencoded", "line\r\nbreak"), ("multipart/form-data", "k")):
        data = {**fields, f"metadata[{key}]": "v\n\u00e9"}
        if content_type != "multipart/form-data":
            data = urlencode(data)
        response = client.post(ADD, content_type=content_type, data=data)
        assert response.status_code == 200, response.get_json()
        entry = response.get_json()["data"]["entry"]
        assert (entry["description"], entry["metadata"]) == ("a\r\nX-Injected: yes", {key: "v\n\u00e9"})


@pytest.mark.parametrize("over", [0, 1, 100])
def test_a_streamed_body_over_the_limit_is_413_not_cut_off(client, auth, product, funded_account_id, over):
    """Chunked (no Content-Length): the limit holds as for a declared length. Cut at
    the limit, this form would still be valid, with ``reference`` cut short."""
    limit = 64 * 1024
    head = f"product_id={product.id}&buyer_email=bob%40example.com&value=-5".encode()
    head += b"&value=-5" * ((limit - 150 - len(head)) // 9) + b"&reference="  # repeats: the first value wins
    body = head + b"r" * (limit - len(head) + over)
    response = client.post(ADD, input_stream=io.BytesIO(body), headers={**auth, "Transfer-Encoding": "chunked"},
                           content_type="application/x-www-form-urlencoded",
                           environ_overrides={"wsgi.input_terminated": True})
    if over == 0:
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["data"]["entry"]["reference"] == "r" * (limit - len(head))
        return
    _refused(response, 413, "payload_too_large")
    _unchanged(funded_account_id)
