"""``POST /addons/usage-records``: usage in bulk (:mod:`addon_plugin.batch`).

Checks run in the order 401, 413 (``ADDONS_BATCH_MAX_CONTENT_LENGTH``), 400/415
(JSON only), 422 (the envelope: 1 to ``BATCH_RECORDS`` records); then each
record is validated, applied or refused on its own, and the answer is 200.
"""

from __future__ import annotations

from flask import Response, current_app, request
from marshmallow import ValidationError as SchemaError
from marshmallow import fields

from .. import batch
from ..errors import AddonError, ValidationError
from ..schemas import UsageRecordsResultSchema, UsageRecordsSchema, refuse_unstorable
from . import blueprint
from .http import UnsupportedMediaType, _state, actor, authenticate, idempotency_key, payload, write
from .openapi import operation


class _Envelope(UsageRecordsSchema):
    """The request as :class:`UsageRecordsSchema` states it, its records left
    raw: each is loaded on its own (:func:`batch.load_record`), so one bad
    record is refused alone."""

    records = fields.List(fields.Raw(), required=True,
                          validate=UsageRecordsSchema._declared_fields["records"].validate)


_envelope = _Envelope()


@blueprint.post("/addons/usage-records")
@operation(summary="Record usage in bulk", tag="usage", body=UsageRecordsSchema, response=UsageRecordsResultSchema,
           errors=(413, 415, 500))
def usage_records() -> Response:
    """Apply 1 to 1000 usage records in order, each as ``usage/add`` would
    (``account_id``, or ``product_id`` + ``buyer_email``; ``value``; optional
    ``description``, ``reference``, ``metadata``, ``idempotency_key``, and for
    ``value`` > 0 ``category`` and ``expires_at``); one refused record does not
    stop the others. Answers 200 with each record's ``status``, ``entry``,
    ``balance`` and ``error`` in request order. A record's ``idempotency_key``
    replays its first result; the request's ``Idempotency-Key`` replays the
    whole answer. A failing signal subscriber or database applies nothing (500/503)."""
    request.max_content_length = current_app.config["ADDONS_BATCH_MAX_CONTENT_LENGTH"]
    merchant_id = authenticate()
    data = payload()
    if _state().get("form"):
        raise UnsupportedMediaType("Send the records as application/json.")
    refuse_unstorable(dict.fromkeys(data))
    try:
        raw = _envelope.load(data)["records"]
    except SchemaError as error:
        raise ValidationError(fields=error.normalized_messages()) from None
    records: list[dict | AddonError] = []
    for item in raw:
        try:
            records.append(batch.load_record(item))
        except ValidationError as invalid:
            records.append(invalid)
    key = idempotency_key(data)
    return write(merchant_id, data, lambda: (
        {"data": batch.apply_records(merchant_id, records, actor=actor(), request_key=key)}, 200))
