"""``GET /api/openapi.json``: a valid OpenAPI 3 document covering every route,
usable by a generated client (bodies required only when they are, forms with the
encoding of their object fields, security stated), clean under Redocly's
recommended rules, and a schemathesis run proving the API keeps to it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from urllib.parse import urlencode

import pytest
import schemathesis
from openapi_spec_validator import validate

from addon_plugin.api.openapi import document as build_document
from tests.helpers import make_app
from tests.schemathesis_walk import CHECKS, walk


@pytest.fixture
def document(client) -> dict:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def test_the_document_is_public_and_valid(document):
    validate(document)
    assert document["openapi"].startswith("3.")


def test_every_route_is_documented(app, document):
    rules = [rule for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/")]  # webhooks' too
    assert len(rules) >= 11
    for rule in rules:
        assert hasattr(app.view_functions[rule.endpoint], "openapi"), f"{rule.rule} has no @operation"
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in document["paths"].get(path, {}), f"{method} {path} is not documented"


def _operations(document: dict):
    """``(path, method, operation)`` for every operation of the document."""
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            yield path, method, operation


def _component(document: dict, schema: dict) -> dict:
    """The schema a ``$ref`` points at (or the schema itself)."""
    ref = schema.get("$ref")
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def test_the_bearer_scheme_and_error_shape_are_documented(document):
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "A merchant API key (sk_...)."}
    assert document["security"] == [{"bearer": []}]  # the default: every operation that does not say otherwise
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    for path, method, operation in _operations(document):
        if path.endswith("/openapi.json"):
            assert operation["security"] == [], "public: it must say so, or the default bearer applies"
            assert "401" not in operation["responses"]
            continue
        if "/addons/me/" in path:  # the buyer's own pages
            assert operation["security"] == [{"hostSession": []}], f"{method} {path}"
        else:
            assert "security" not in operation, f"{method} {path}"
        assert "401" in operation["responses"]
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, f"{method} {path} {status}"


def test_every_success_answer_has_a_schema(document):
    for path, method, operation in _operations(document):
        ok = next(response for status, response in operation["responses"].items() if status.startswith("2"))
        assert "schema" in ok.get("content", {}).get("application/json", {}), f"{method} {path}"
    answer = document["paths"]["/api/openapi.json"]["get"]["responses"]["200"]["content"]["application/json"]
    assert answer["schema"]["required"] == ["openapi", "info", "paths"]


def test_a_body_is_required_exactly_when_an_empty_one_is_refused(app, client, auth, document, merchant_id):
    """Each operation is called with no body at all, as a generated client calls it
    when the document says the body is optional: refused (422; 415 on the buyer's
    JSON-only route) exactly when the document marks the body required."""
    app.extensions["addons"].plugin.buyer_loader(lambda: (merchant_id, "bob@example.com"))
    checked = set()
    for path, method, operation in _operations(document):
        if "requestBody" not in operation:
            continue
        response = client.open(re.sub(r"\{\w+\}", "missing", path), method=method.upper(), headers=auth)
        refused = response.status_code in (415, 422)
        assert refused == operation["requestBody"]["required"], \
            f"{method} {path}: {response.status_code} {response.get_data(as_text=True)[:200]}"
        checked.add((method, path, refused))
    assert ("post", "/api/addons/api-keys", False) in checked
    assert ("patch", "/api/addons/products/{product_id}", False) in checked
    assert ("post", "/api/buyer-addon/usage", True) in checked


def test_form_bodies_say_how_their_object_fields_are_sent(document):
    """A form has its own schema with the JSON body's fields (never null: a form
    cannot send one) and, for each object field, ``metadata[key]=value``: deepObject."""
    forms = 0
    for path, method, operation in _operations(document):
        content = operation.get("requestBody", {}).get("content", {})
        assert set(content) <= {"application/json", "application/x-www-form-urlencoded"}, f"{method} {path}"
        media = content.get("application/x-www-form-urlencoded")
        if media is None:
            continue
        forms += 1
        form = _component(document, media["schema"])
        body = _component(document, content["application/json"]["schema"])
        assert media["schema"] != content["application/json"]["schema"], f"{method} {path}: one schema for both"
        assert list(form["properties"]) == list(body["properties"]) and form.get("required") == body.get("required")
        objects = {name for name, prop in form["properties"].items() if prop.get("type") == "object"}
        assert media.get("encoding", {}) == {name: {"style": "deepObject", "explode": True} for name in objects}
        for name, prop in form["properties"].items():
            assert prop.get("type") != "array", f"{method} {path}: a form sends the first {name} only"
            assert "$ref" not in prop, f"{method} {path}: {name} would need an encoding of its own"
            assert not prop.get("nullable") and prop.get("default", "") is not None, f"{method} {path}: {name}"
    assert forms == 3  # usage, usage/add, usage/hold
    usage_add = document["paths"]["/api/buyer-addon/usage/add"]["post"]["requestBody"]["content"]
    assert usage_add["application/x-www-form-urlencoded"]["encoding"] == {
        "metadata": {"style": "deepObject", "explode": True}}


def _as_form(media: dict, body: dict) -> str:
    """``body`` serialised as the document's form media type says, as a generated
    client does: an object field in its style (``form``, exploded, by default)."""
    pairs = []
    for name, value in body.items():
        encoding = media.get("encoding", {}).get(name, {"style": "form", "explode": True})
        if isinstance(value, dict):
            assert encoding["explode"]
            deep = encoding["style"] == "deepObject"
            pairs += [(f"{name}[{key}]" if deep else key, item) for key, item in value.items()]
        else:
            pairs.append((name, str(value)))
    return urlencode(pairs)


def test_a_form_sent_as_the_document_says_is_understood(client, api_key, document, product, funded_account_id):
    media = document["paths"]["/api/buyer-addon/usage/add"]["post"]["requestBody"]["content"][
        "application/x-www-form-urlencoded"]
    body = {"auth_token": api_key, "product_id": product.id, "buyer_email": "bob@example.com", "value": -5,
            "reference": "job-1", "metadata": {"job": "render-7", "region": "eu"}}
    response = client.post("/api/buyer-addon/usage/add", data=_as_form(media, body),
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200, response.get_json()
    entry = response.get_json()["data"]["entry"]
    assert (entry["delta"], entry["reference"], entry["metadata"]) == (-5, "job-1", body["metadata"])


#: Redocly's CLI, pinned: its next releases need Node.js 22, newer than some machines' Node.js 20.
REDOCLY = "@redocly/cli@2.77.0"


@pytest.mark.skipif(shutil.which("npx") is None, reason="npx (Node.js) is not installed: Redocly's linter cannot run")
def test_redocly_recommended_rules_find_no_error(tmp_path):
    app = make_app(f"sqlite:///{tmp_path}/addons.sqlite3", str(tmp_path))
    path = tmp_path / "openapi.json"
    path.write_text(json.dumps(build_document(app)))
    env = {**os.environ, "REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true"}
    result = subprocess.run(["npx", "--yes", REDOCLY, "lint", "--extends=recommended", str(path)],
                            capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


def test_writes_document_the_idempotency_key(document):
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            names = [p.get("name") for p in operation.get("parameters", [])]
            documented = "Idempotency-Key" in names
            # Every write but the read-only balance route (the buyer's own PUT too, in a
            # key space of the buyer's own).
            expected = method != "get" and not path.endswith("/buyer-addon/usage")
            assert documented == expected, f"{method} {path}"


# -- schemathesis ---------------------------------------------------------------------

def test_the_api_keeps_to_its_document(app, auth, real_ids):
    """Valid and invalid requests to every operation, with a valid key: no 5xx,
    and every answer (status, content type, headers, body) as documented."""
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    operations, failures = walk(schema, real_ids, lambda case: case.call_and_validate(headers=auth, checks=CHECKS))
    assert operations >= 2 * 12
    assert not failures, "\n\n".join(failures)
