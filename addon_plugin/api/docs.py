"""``GET {prefix}/openapi.json``: the generated OpenAPI document (public)."""

from __future__ import annotations

from flask import Response

from . import blueprint
from .http import respond
from .openapi import document, operation


@blueprint.get("/openapi.json")
@operation(summary="This API's OpenAPI 3 document", tag="meta", public=True)
def openapi_json() -> Response:
    """The OpenAPI 3 document of every route, generated from the schemas."""
    return respond(document())
