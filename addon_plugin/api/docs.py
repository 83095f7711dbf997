"""``GET {prefix}/openapi.json``: the generated OpenAPI document (public)."""

from __future__ import annotations

from flask import Response

from . import blueprint
from .http import respond
from .openapi import document, operation

#: What the answer is, for clients and validators (the OpenAPI schema itself is not repeated here).
_DOCUMENT = {"type": "object", "required": ["openapi", "info", "paths"], "description": "An OpenAPI 3.0 document.",
             "properties": {"openapi": {"type": "string", "example": "3.0.3"}, "info": {"type": "object"},
                            "paths": {"type": "object"}, "components": {"type": "object"}}}


@blueprint.get("/openapi.json")
@operation(summary="This API's OpenAPI 3 document", tag="meta", public=True, response=_DOCUMENT)
def openapi_json() -> Response:
    """The OpenAPI 3 document of every route, generated from the schemas."""
    return respond(document())
