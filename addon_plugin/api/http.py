"""Request plumbing every view uses: the body (JSON or form), the merchant's
key, schema loading, idempotent writes and JSON responses.

A view reads like::

    merchant_id = authenticate()
    data = load(UsageAddSchema())
    return write(merchant_id, data, lambda: (body, 200))
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from flask import Response, current_app, request
from marshmallow import Schema
from marshmallow import ValidationError as SchemaError
from werkzeug.exceptions import HTTPException

from .. import idempotency, merchants
from ..errors import AuthenticationFailed, BadRequest, ValidationError
from ..schemas import UNSTORABLE, UNSTORABLE_MESSAGE, coerce_form, refuse_unstorable

__all__ = ["payload", "authenticate", "merchant_id", "actor", "load", "load_query", "idempotency_key", "write",
           "respond"]

_BRACKETED = re.compile(r"^([A-Za-z_]+)\[(.*)\]$")


class UnsupportedMediaType(BadRequest):
    """The body is neither JSON nor a form."""

    status = 415
    code = "unsupported_media_type"
    default_message = "Send application/json or application/x-www-form-urlencoded."


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _state() -> dict[str, Any]:
    """This request's parsed body and caller (kept on the request, never on ``g``,
    which can outlive a request)."""
    return request.environ.setdefault("addons.state", {})


def payload() -> dict[str, Any]:
    """The request body as a dict (parsed once): JSON object, or form fields
    with ``metadata[key]=value`` folded into a ``metadata`` dict."""
    state = _state()
    if "payload" in state:
        return state["payload"]
    raw = request.get_data(cache=True)
    mimetype = request.mimetype
    if not raw:
        data: dict[str, Any] = {}
    elif mimetype == "application/json" or mimetype.endswith("+json"):
        try:
            data = json.loads(raw, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            raise BadRequest("The body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise BadRequest("The JSON body must be an object.")
        state["form"] = False
    elif mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        data = {}
        for name, value in request.form.items(multi=False):
            bracketed = _BRACKETED.match(name)
            if bracketed:
                data.setdefault(bracketed.group(1), {})
                if isinstance(data[bracketed.group(1)], dict):
                    data[bracketed.group(1)][bracketed.group(2)] = value
            else:
                data[name] = value
        state["form"] = True
    else:
        raise UnsupportedMediaType()
    state["payload"] = data
    return data


def _presented_key() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    try:
        token = payload().get("auth_token")
    except (BadRequest, HTTPException):  # an unreadable body carries no key
        return None
    return token if isinstance(token, str) else None


def authenticate() -> str:
    """The merchant id of the request's API key (Bearer or ``auth_token``), else 401.

    Runs before the body is validated: a request without a valid key is 401
    whatever its body.
    """
    merchant, key_id = merchants.authenticate(_presented_key())
    _state().update(merchant_id=merchant, actor=key_id)
    return merchant


def merchant_id() -> str:
    """The authenticated merchant of this request."""
    if "merchant_id" not in _state():
        raise AuthenticationFailed()
    return _state()["merchant_id"]


def actor() -> str | None:
    """Who is making the change, for the ledger's ``actor`` (the API key id)."""
    return _state().get("actor")


def load(schema: Schema, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate ``data`` (default: the body) with ``schema``; 422 with per-field messages."""
    data = payload() if data is None else data
    refuse_unstorable(data)
    if _state().get("form"):
        data = coerce_form(schema, data)
    try:
        return schema.load(data)
    except SchemaError as error:
        raise ValidationError(fields=error.normalized_messages()) from None


def load_query(schema: Schema) -> dict[str, Any]:
    """Validate the query string with ``schema`` (integers given as digits)."""
    data = request.args.to_dict()
    refuse_unstorable(data)
    data = coerce_form(schema, data)
    try:
        return schema.load(data)
    except SchemaError as error:
        raise ValidationError(fields=error.normalized_messages()) from None


def respond(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response."""
    return current_app.response_class(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False), status,
        headers=headers, mimetype="application/json")


def idempotency_key(data: dict[str, Any]) -> str | None:
    """The request's idempotency key: the ``Idempotency-Key`` header, else the
    body's ``idempotency_key``."""
    key = request.headers.get("Idempotency-Key") or data.get("idempotency_key")
    if key is not None and not (isinstance(key, str) and 0 < len(key) <= 255):
        raise ValidationError(fields={"idempotency_key": ["Must be 1 to 255 characters."]})
    if key is not None and UNSTORABLE.search(key):
        raise ValidationError(fields={"idempotency_key": [UNSTORABLE_MESSAGE]})
    return key


def write(merchant: str, data: dict[str, Any], action: Callable[[], tuple[dict[str, Any], int]], *,
          redact: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Response:
    """Run a validated write idempotently (see :func:`idempotency_key`) and
    answer with its outcome; ``redact`` strips secrets from the stored replay."""
    key = idempotency_key(data)
    request_data = {k: v for k, v in data.items() if k != "idempotency_key"}
    request_hash = idempotency.fingerprint(request.method, request.url_rule.rule if request.url_rule else
                                           request.path, request.view_args, request_data)
    outcome = idempotency.run(merchant, key, request_hash, action, redact=redact)
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
    return respond(outcome.body, outcome.status, headers)
