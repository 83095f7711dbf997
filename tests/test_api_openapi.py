"""``GET /api/openapi.json``: a valid OpenAPI 3 document covering every route,
and a schemathesis run proving the API keeps to it."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from addon_plugin import merchants


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


def test_the_bearer_scheme_and_error_shape_are_documented(document):
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "A merchant API key (sk_...)."}
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path.endswith("/openapi.json"):
                assert "security" not in operation
                continue
            scheme = "hostSession" if "/addons/me/" in path else "bearer"  # the buyer's own pages
            assert operation["security"] == [{scheme: []}], f"{method} {path}"
            assert "401" in operation["responses"]
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, f"{method} {path} {status}"


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

#: Checks that need no knowledge beyond the document itself.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]

#: Examples per operation and generation mode: bounded and derandomised, so the run is fast and repeatable.
EXAMPLES = settings(max_examples=25, derandomize=True, deadline=None, database=None, print_blob=False,
                    suppress_health_check=list(HealthCheck))


@pytest.fixture
def real_ids(merchant, product, funded_account_id) -> dict[str, str]:
    """Ids of real objects, so generated requests reach past the 404s. The key
    id is a spare key's: revoking it must not lock the run out."""
    return {"product_id": product.id, "account_id": funded_account_id,
            "key_id": merchants.create_api_key(merchant[0].id).id}


def _aim_at_real_objects(case, real_ids: dict[str, str]) -> None:
    """Point generated bodies at the real product (and, on the usage routes, at
    bob's account) so that success answers are checked as well as refusals."""
    body = case.body
    if not isinstance(body, dict):
        return
    if "/buyer-addon/" in case.operation.path and case.operation.schema is not None and "invoice_id" not in body:
        case.body = {**body, "product_id": real_ids["product_id"], "buyer_email": "bob@example.com"}
    elif isinstance(body.get("product_id"), str):
        case.body = {**body, "product_id": real_ids["product_id"]}


def test_the_api_keeps_to_its_document(app, auth, real_ids):
    """Valid and invalid requests to every operation, with a valid key: no 5xx,
    and every answer (status, content type, headers, body) as documented."""
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    failures, operations = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        ids = {name: value for name, value in real_ids.items() if f"{{{name}}}" in operation.path}
        for mode in GenerationMode:
            operations += 1

            @EXAMPLES
            @given(case=operation.as_strategy(mode, path_parameters=ids or None))
            def check(case) -> None:
                _aim_at_real_objects(case, real_ids)
                case.call_and_validate(headers=auth, checks=CHECKS)

            try:
                check()
            except Exception as error:  # collect them all, then fail once
                failures.append(f"{operation.label} ({mode}): {error}")
    assert operations >= 2 * 12
    assert not failures, "\n\n".join(failures)
