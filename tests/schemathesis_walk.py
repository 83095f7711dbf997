"""The schemathesis walk shared by the in-process API test (``tests/api/test_api_openapi.py``)
and the fault suite's run over HTTP: every documented operation, in every generation
mode, with generated requests aimed at real objects so success answers are checked
as well as refusals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

#: Checks that need no knowledge beyond the document itself.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]

#: Examples per operation and generation mode: bounded and derandomised, so the run is fast and repeatable.
EXAMPLES = settings(max_examples=25, derandomize=True, deadline=None, database=None, print_blob=False,
                    suppress_health_check=list(HealthCheck))


def aim_at_real_objects(case: Any, real_ids: dict[str, str]) -> None:
    """Point generated bodies at the real product (and, on the usage routes, at
    bob's account) so that success answers are checked as well as refusals."""
    body = case.body
    if not isinstance(body, dict):
        return
    if "/buyer-addon/" in case.operation.path and case.operation.schema is not None and "invoice_id" not in body:
        case.body = {**body, "product_id": real_ids["product_id"], "buyer_email": "bob@example.com"}
    elif isinstance(body.get("product_id"), str):
        case.body = {**body, "product_id": real_ids["product_id"]}


def walk(schema: Any, real_ids: dict[str, str], check_case: Callable[[Any], None],
         examples: settings = EXAMPLES) -> tuple[int, list[str]]:
    """Run ``check_case(case)`` on the generated cases of every operation of
    ``schema`` in every generation mode, path ids taken from ``real_ids``. Returns
    how many operation-modes were walked and every failure (collected, so the test
    fails once with all of them)."""
    failures, walked = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        ids = {name: value for name, value in real_ids.items() if f"{{{name}}}" in operation.path}
        for mode in GenerationMode:
            walked += 1

            @examples
            @given(case=operation.as_strategy(mode, path_parameters=ids or None))
            def check(case) -> None:
                aim_at_real_objects(case, real_ids)
                check_case(case)

            try:
                check()
            except Exception as error:  # collect them all, then fail once
                causes = "".join(f"\n  {cause!r}" for cause in getattr(error, "exceptions", ()))
                failures.append(f"{operation.label} ({mode}): {error}{causes}")
    return walked, failures
