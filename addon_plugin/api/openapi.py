"""The OpenAPI 3 document, generated with apispec from the same marshmallow
schemas the views validate with. Each view states its contract with
:func:`operation`; :func:`document` walks the app's URL map (the plugin's
blueprint and those given to :func:`document_blueprint`), so a route without
one is still listed.

Written for generated clients: a request body is required only when the view
refuses an empty one; a form body has its own schema (a form cannot send null)
and says how its object fields are sent (``metadata[key]=value``: deepObject);
the merchant's bearer key is the default security, overridden per operation
for the buyer's session and for public ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow.common import resolve_schema_instance
from flask import Flask
from marshmallow import Schema

from ..limits import IDEMPOTENCY_KEY_LENGTH
from ..schemas import ErrorSchema
from ..state import current_app_object, get_state

__all__ = ["operation", "document", "document_blueprint"]

_ERRORS = {
    400: "Malformed body", 401: "No, bad or revoked API key", 402: "Insufficient credits",
    404: "Not found (or another merchant's)", 405: "Method not allowed", 409: "Conflict",
    413: "Body too large", 415: "Unsupported media type", 422: "Validation failed",
    500: "A subscriber failed; nothing was applied", 503: "Database or plugin unavailable",
}


def operation(*, summary: str, tag: str, body: type[Schema] | Schema | None = None,
              body_required: bool | None = None, query: type[Schema] | Schema | None = None,
              response: type[Schema] | Schema | dict[str, Any] | None = None,
              status: int = 200, errors: tuple[int, ...] = (), public: bool = False,
              many: bool = False, form: bool = False, idempotent: bool | None = None,
              session: bool = False) -> Callable:
    """Attach the route's OpenAPI description to its view function.

    ``body_required`` (default: the body schema has a required field) says an
    empty body is refused; ``form``: the body may also be a form; ``many``: the
    answer is a list page of ``response`` (a schema, or a JSON Schema dict);
    ``idempotent`` (default: every method but GET) documents the
    ``Idempotency-Key`` header; ``session``: authenticated by the host's buyer
    session instead of an API key; ``public``: no authentication."""

    def decorate(view: Callable) -> Callable:
        # A function takes attributes; mypy's Callable declares none.
        view.openapi = dict(  # type: ignore[attr-defined]
            summary=summary, tag=tag, body=body, body_required=body_required, query=query, response=response,
            status=status, errors=errors, public=public, many=many, form=form, idempotent=idempotent,
            session=session, description=(view.__doc__ or "").strip())
        return view

    return decorate


def document_blueprint(app: Flask, name: str) -> None:
    """List the routes of the app's blueprint ``name`` too: a feature's own
    routes under the prefix (kept per app, in its :class:`~addon_plugin.state.AddonsState`)."""
    state = get_state(app)
    state.documented_blueprints.add(name)
    state.openapi = None  # built again with them


def _schema_name(schema: Any) -> str:
    cls = schema if isinstance(schema, type) else type(schema)
    return cls.__name__.lstrip("_").removesuffix("Schema") or cls.__name__


def _resolver(schema: Any) -> str:
    return _schema_name(schema)


def document(app: Flask | None = None) -> dict[str, Any]:
    """The OpenAPI document for the API mounted on ``app`` (cached per app)."""
    app = app or current_app_object()
    state = get_state(app)
    if state.openapi is None:
        state.openapi = _build(app)
    return state.openapi


def _build(app: Flask) -> dict[str, Any]:
    marshmallow = MarshmallowPlugin(schema_name_resolver=_resolver)
    spec = APISpec(
        title="Credit add-ons API", version="1", openapi_version="3.0.3", plugins=[marshmallow],
        info={"description": "Usage, balances, products, accounts, top-ups and webhooks of credit add-ons.",
              "license": {"name": "MIT", "url": "https://opensource.org/licenses/MIT"}},
        servers=[{"url": "/"}], security=[{"bearer": []}],
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer",
                                               "description": "A merchant API key (sk_...)."})
    spec.components.security_scheme("hostSession", {
        "type": "apiKey", "in": "cookie", "name": app.config["SESSION_COOKIE_NAME"],
        "description": "The host's own session of a signed-in buyer (the plugin's buyer_loader)."})
    spec.components.schema("Error", schema=ErrorSchema)
    prefix = app.config["ADDONS_URL_PREFIX"].rstrip("/")
    documented = get_state(app).documented_blueprints
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint.partition(".")[0] not in documented:
            continue
        view = app.view_functions[rule.endpoint]
        meta = getattr(view, "openapi", None)
        if meta is None:
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        operations = {}
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            operations[method.lower()] = _operation(meta, rule, method, spec, marshmallow)
        spec.path(path=path, operations=operations)
    spec_dict = spec.to_dict()
    spec_dict["x-prefix"] = prefix
    return spec_dict


_IDEMPOTENCY_KEY = {
    "in": "header", "name": "Idempotency-Key", "required": False,
    "description": "Makes the write safe to retry: the same key and body replay the first answer "
                   "(with `Idempotent-Replayed: true`) for at least 24 hours.",
    "schema": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_LENGTH},
}


def _operation(meta: dict[str, Any], rule, method: str, spec: APISpec,
               marshmallow: MarshmallowPlugin) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": meta["summary"], "tags": [meta["tag"]],
                          "operationId": rule.endpoint.split(".", 1)[1]}
    if meta["description"]:
        op["description"] = meta["description"]
    if meta["public"]:
        op["security"] = []  # the document's default is the bearer key
    elif meta["session"]:
        op["security"] = [{"hostSession": []}]
    params = [{"in": "path", "name": name, "required": True, "schema": {"type": "string"}}
              for name in rule.arguments]
    if meta["query"] is not None:
        params.append({"in": "query", "schema": meta["query"]})
    idempotent = meta["idempotent"] if meta["idempotent"] is not None else method != "GET"
    if idempotent:
        params.append(_IDEMPOTENCY_KEY)
    if params:
        op["parameters"] = params
    if meta["body"] is not None:
        body = resolve_schema_instance(meta["body"])
        content = {"application/json": {"schema": meta["body"]}}
        if meta["form"]:
            content["application/x-www-form-urlencoded"] = _form_body(body, spec, marshmallow)
        required = meta["body_required"]
        if required is None:
            required = any(field.required for field in body.load_fields.values())
        op["requestBody"] = {"required": required, "content": content}
    if meta["response"] is not None:
        schema: Any = meta["response"]
        if meta["many"]:
            schema = {"type": "object", "required": ["data", "next_cursor"], "properties": {
                "data": {"type": "array", "items": schema},
                "next_cursor": {"type": "string", "nullable": True,
                                "description": "Pass as `cursor` for the next page; null on the last."}}}
        ok = {"description": "OK", "content": {"application/json": {"schema": schema}}}
    else:
        ok = {"description": "OK"}
    responses: dict[str, Any] = {str(meta["status"]): ok}
    codes = set(meta["errors"]) | {500, 503}
    if not meta["public"]:
        codes.add(401)
    if meta["body"] is not None:
        codes |= {400, 413, 415, 422}
    if meta["query"] is not None:
        codes.add(422)
    if idempotent:
        codes |= {409, 422}  # idempotency_key_in_use, idempotency_key_reused
    for code in sorted(codes):
        responses[str(code)] = {"description": _ERRORS.get(code, "Error"),
                                "content": {"application/json": {"schema": "Error"}}}
    op["responses"] = responses
    return op


#: How a form sends an object field: one ``name[key]=value`` pair per entry.
_DEEP_OBJECT = {"style": "deepObject", "explode": True}


def _form_body(schema: Schema, spec: APISpec, marshmallow: MarshmallowPlugin) -> dict[str, Any]:
    """The form media type of a body schema: its fields as a form sends them
    (registered once as ``<Name>Form``), with the encoding of each object field."""
    name = f"{_schema_name(schema)}Form"
    assert marshmallow.converter is not None  # set when the plugin was registered with the spec
    json_schema = marshmallow.converter.schema2jsonschema(schema)
    properties = {field: _without_null(prop) for field, prop in json_schema["properties"].items()}
    if name not in spec.components.schemas:
        spec.components.schema(name, {
            **json_schema, "properties": properties,
            "description": f"The {_schema_name(schema)} body as a form: object fields as `name[key]=value`; "
                           "a form cannot send null (leave a field out instead)."})
    encoding = {field: dict(_DEEP_OBJECT) for field, prop in properties.items() if prop.get("type") == "object"}
    return {"schema": name, **({"encoding": encoding} if encoding else {})}


def _without_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A property as a form can send it: never null."""
    return {key: value for key, value in prop.items()
            if key != "nullable" and not (key == "default" and value is None)}
