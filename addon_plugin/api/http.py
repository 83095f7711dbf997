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
from urllib.parse import parse_qsl

from flask import Response, current_app, request
from marshmallow import Schema
from marshmallow import ValidationError as SchemaError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from .. import fastload, idempotency, merchants
from ..errors import AuthenticationFailed, BadRequest, ValidationError
from ..limits import IDEMPOTENCY_KEY_LENGTH, is_idempotency_key
from ..schemas import UNSTORABLE, UNSTORABLE_MESSAGE, coerce_form, refuse_unstorable

__all__ = ["payload", "authenticate", "merchant_id", "actor", "load", "load_query", "idempotency_key", "write",
           "respond"]

_BRACKETED = re.compile(r"^([A-Za-z_]+)\[(.*)\]$", re.DOTALL)  # a key may hold a line break, as in JSON


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
    _refuse_cut_off(raw)
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
        for name, value in _form_fields(raw, mimetype):
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


def _refuse_cut_off(raw: bytes) -> None:
    """413 for a streamed (chunked) body longer than the limit. Werkzeug refuses
    a ``Content-Length`` over it, but hands back the first ``max_content_length``
    bytes of a longer stream without complaint: a form cut there could even be
    valid, its last value cut short."""
    limit = request.max_content_length
    if (limit is not None and request.content_length is None and len(raw) >= limit
            and request.environ["wsgi.input"].read(1)):
        raise RequestEntityTooLarge()


def _form_fields(raw: bytes, mimetype: str) -> list[tuple[str, str]]:
    """The form's fields, the first value of each name only, decoded strictly:
    a name or value that is not UTF-8 (raw or percent-encoded) is a 400, so what
    is stored is what was sent. (Werkzeug's ``request.form`` would keep such a
    value percent-encoded, replace its bytes with U+FFFD, or drop the whole form.)"""
    try:
        if mimetype == "multipart/form-data":
            fields = _multipart_fields(raw, request.mimetype_params.get("boundary", ""))
        else:
            fields = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, LookupError):  # LookupError: a part declared an unknown charset
        raise BadRequest("The form is not valid UTF-8.") from None
    first: dict[str, str] = {}
    for name, value in fields:
        first.setdefault(name, value)
    return list(first.items())


def _multipart_fields(raw: bytes, boundary: str) -> list[tuple[str, str]]:
    """Every text field of a ``multipart/form-data`` body; files are refused."""
    if not boundary or not boundary.isascii():
        raise BadRequest("The multipart body has no ASCII boundary.")
    decoder = MultipartDecoder(boundary.encode("ascii"))
    decoder.receive_data(raw)
    decoder.receive_data(None)
    fields: list[tuple[str, str]] = []
    chunks: list[bytes] = []
    part: Field | None = None
    try:
        event = decoder.next_event()
        while not isinstance(event, (Epilogue, NeedData)):
            if isinstance(event, File):
                raise BadRequest("Files are not accepted: send every field as text.")
            if isinstance(event, Field):
                if event.name is None:
                    raise BadRequest("A multipart field has no name.")
                part, chunks = event, []
            elif isinstance(event, Data) and part is not None:
                chunks.append(event.data)
                if not event.more_data:
                    charset = parse_options_header(part.headers.get("content-type", ""))[1].get("charset", "utf-8")
                    fields.append((part.name, b"".join(chunks).decode(charset)))
            event = decoder.next_event()
    except UnicodeDecodeError:
        raise
    except ValueError:
        raise BadRequest("The multipart body cannot be parsed.") from None
    return fields


def _presented_key() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    try:
        field = payload().get("auth_token")
    except (BadRequest, HTTPException):  # an unreadable body carries no key
        return None
    return field if isinstance(field, str) else None


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


def client() -> tuple[str | None, str | None]:
    """The request's client address and user agent, as a consent record keeps
    them (the address as the WSGI server or the host's proxy fix reports it)."""
    return request.remote_addr, request.headers.get("User-Agent")


def load(schema: Schema, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate ``data`` (default: the body) with ``schema``; 422 with per-field messages."""
    data = payload() if data is None else data
    refuse_unstorable(data)
    if _state().get("form"):
        data = coerce_form(schema, data)
    try:
        return fastload.load(schema, data)
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
    """The request's idempotency key: the ``Idempotency-Key`` header (when sent,
    even empty), else the body's ``idempotency_key``; None when neither is there.
    An empty or blank key is a 422, never "no key": a client that meant to send
    one must not have its request applied twice."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        key = data.get("idempotency_key")
    if key is None:
        return None
    if not is_idempotency_key(key) or not key.strip():
        raise ValidationError(fields={"idempotency_key": [
            f"Must be 1 to {IDEMPOTENCY_KEY_LENGTH} characters, not all blank."]})
    if UNSTORABLE.search(key):
        raise ValidationError(fields={"idempotency_key": [UNSTORABLE_MESSAGE]})
    return key


def write(merchant: str, data: dict[str, Any], action: idempotency.Action, *,
          redact: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
          key_space: str = idempotency.MERCHANT_KEYS) -> Response:
    """Run a validated write idempotently (see :func:`idempotency_key`) and
    answer with its outcome; ``redact`` strips secrets from the stored replay;
    ``key_space`` gives a caller (a signed-in buyer) its own keys within the
    merchant's, so nobody else's stored reply can be replayed to them."""
    key = idempotency_key(data)
    request_data = {k: v for k, v in data.items() if k != "idempotency_key"}
    request_hash = idempotency.fingerprint(request.method, request.url_rule.rule if request.url_rule else
                                           request.path, request.view_args, request_data)
    outcome = idempotency.run(merchant, key, request_hash, action, key_space=key_space, redact=redact)
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
    return respond(outcome.body, outcome.status, headers)
