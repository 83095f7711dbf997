"""Batch usage (``POST /addons/usage-records``): many usage records in one
request, each applied or refused on its own, in order, exactly as
``usage/add`` would apply or refuse it.

What the records share, so a batch costs far less than its records sent one by
one: the request (authentication, parsing), one transaction and its commit,
two reads that find (and, on PostgreSQL, lock) every named account, one read
of the records' stored idempotent results and one insert of the new ones, and
the webhook outbox's endpoint read (:func:`storage.transaction_cache`). What
each record keeps: it goes through :func:`ledger.record`, the one write of
``usage/add`` (the overdraft guard, grant allocations, signals, so webhooks and
top-up decisions, the ledger's idempotency key), and its ``idempotency_key``
answers its first result, as ``usage/add``'s key does (Stripe's rules: a
refusal such as 402 is stored too; a 422 is not).

All or nothing, as one request: the batch commits once, at the end.

- A record refused by the ledger (402, 404, 422 ``balance_limit_exceeded``,
  ``idempotency_key_reused``) or by its own validation wrote nothing: it is
  answered and the next record runs.
- Anything else raised while a record is applied aborts the whole batch: an
  error a signal subscriber raises (whatever its type; the ledger row it
  follows is already written, and there is no savepoint to undo one record
  alone), or a database error. The transaction rolls back, nothing is applied
  and no result is stored (the request's ``Idempotency-Key`` included), and
  the caller gets 500 ``internal_error`` (503 for the database): the whole
  batch may be sent again, as is.
- A process that dies mid-batch has committed nothing; one that dies after the
  commit but before answering has applied every record: a retry with the same
  keys replays them. So an acknowledged record is in the ledger exactly once,
  and no record is ever half-applied.

On PostgreSQL the named accounts are locked up front, in id order, so two
batches naming the same accounts in different orders queue instead of
deadlocking; a record's idempotency key held by a request in flight answers
that record 409 ``idempotency_key_in_use`` (retry it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from blinker import Signal
from marshmallow import ValidationError as SchemaError

from storage import db, dialect, sql, transaction

from . import fastload, idempotency, ledger
from .accounts import grant_terms
from .errors import (
    AccountNotFound,
    AddonError,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    ValidationError,
)
from .idempotency import Outcome
from .limits import BATCH_RECORDS
from .present import usage_record_body
from .schemas import UsageRecordSchema, refuse_unstorable

__all__ = ["SubscriberFailed", "load_record", "apply_records"]

_record_schema = UsageRecordSchema()

_REQUEST_KEY = "This key is the whole request's Idempotency-Key: give the record its own."

# Ids and (product, buyer) pairs per lookup: a whole batch in one statement (at most
# 2,001 parameters, within both drivers' limits).
_CHUNK = BATCH_RECORDS


class SubscriberFailed(RuntimeError):
    """A signal subscriber raised while a record of the batch was applied: the
    whole batch is rolled back (the API answers 500 ``internal_error``)."""

    def __init__(self, index: int):
        super().__init__(f"A signal subscriber failed on record {index}; nothing of the batch was applied.")
        self.index = index


def load_record(raw: Any) -> dict[str, Any]:
    """One record validated with :class:`UsageRecordSchema` (unknown fields and
    unstorable strings refused), or :class:`ValidationError`."""
    if not isinstance(raw, dict):
        raise ValidationError(fields={"_schema": ["Each record must be a JSON object."]})
    refuse_unstorable(raw)
    try:
        return fastload.load(_record_schema, raw)
    except SchemaError as error:
        raise ValidationError(fields=error.normalized_messages()) from None


@dataclass
class _Batch:
    """The state one batch shares between its records."""

    merchant_id: str
    actor: str | None
    accounts: dict[Any, str] = field(default_factory=dict)  # account id or (product, buyer) → account id
    stored: dict[str, idempotency.Stored] = field(default_factory=dict)
    new_results: list[tuple[str, str, Outcome]] = field(default_factory=list)


def apply_records(merchant_id: str, records: list[dict[str, Any] | AddonError], *,
                  actor: str | None = None, request_key: str | None = None) -> list[dict[str, Any]]:
    """Apply each loaded record (an :class:`AddonError` stands for a record that
    failed validation) in order, in one transaction (the caller's, or its own);
    returns each record's result (``{"status", "entry", "balance", "error"}``)
    in the same order. Raises only to abort the whole batch (see the module).
    ``request_key``, the whole request's idempotency key, names that request
    (one key space per merchant): a record carrying it is refused 422
    ``idempotency_key_reused``."""
    batch = _Batch(merchant_id, actor)
    records = [IdempotencyKeyReused(key=request_key, fields={"idempotency_key": [_REQUEST_KEY]})
               if request_key is not None and not isinstance(record, AddonError)
               and record.get("idempotency_key") == request_key else record for record in records]
    loaded = [record for record in records if not isinstance(record, AddonError)]
    with transaction():
        batch.accounts = _find_accounts(merchant_id, loaded)
        batch.stored = idempotency.claim_many(
            merchant_id, [record["idempotency_key"] for record in loaded if "idempotency_key" in record])
        results = [usage_record_body(error=record) if isinstance(record, AddonError) else _apply(batch, index, record)
                   for index, record in enumerate(records)]
        idempotency.store_many(merchant_id, batch.new_results)
    return results


def _apply(batch: _Batch, index: int, record: dict[str, Any]) -> dict[str, Any]:
    key = record.get("idempotency_key")
    if key is None:
        return _run(batch, index, record)[0].body
    request_hash = idempotency.fingerprint("usage-record", {k: v for k, v in record.items() if k != "idempotency_key"})
    stored = batch.stored.get(key)
    if stored is idempotency.IN_USE:
        return usage_record_body(error=IdempotencyKeyInUse(key=key))
    if stored is not None:
        try:
            return idempotency.replay_of(stored, request_hash, key).body
        except ValidationError as reused:
            return usage_record_body(error=reused)
    outcome, storable = _run(batch, index, record)
    if storable:
        batch.new_results.append((key, request_hash, outcome))
        batch.stored[key] = idempotency.Stored(request_hash, Outcome(outcome.status, outcome.body, replayed=True))
    return outcome.body


def _run(batch: _Batch, index: int, record: dict[str, Any]) -> tuple[Outcome, bool]:
    """One record through the ledger: its result, or its refusal (nothing
    written), and whether a key stores it (as ``usage/add``'s: refusals too,
    validation errors never)."""
    value = record["value"]
    try:
        change = ledger.record(_account_id(batch, record, create=value > 0), value,
                               "usage" if value < 0 else "adjustment", description=record["description"],
                               reference=record["reference"], metadata=record["metadata"],
                               idempotency_key=record.get("idempotency_key"), key_space=ledger.API_KEYS,
                               actor=batch.actor, grant=grant_terms(record))
    except Exception as error:
        if _raised_by_subscriber(error):
            raise SubscriberFailed(index) from error
        if not isinstance(error, AddonError) or error.status >= 500:
            raise
        return Outcome(error.status, usage_record_body(error=error)), not isinstance(error, ValidationError)
    return Outcome(200, usage_record_body(change)), True


def _account_id(batch: _Batch, record: Mapping[str, Any], *, create: bool) -> str:
    if "account_id" in record:
        found = batch.accounts.get(record["account_id"])
        if found is None:
            raise AccountNotFound(account_id=record["account_id"])
        return found
    pair = (record["product_id"], record["buyer_email"])
    found = batch.accounts.get(pair)
    if found is None:
        if not create:
            raise AccountNotFound()
        found = batch.accounts[pair] = ledger.open_account(batch.merchant_id, *pair)
    return found


def lookup_sql(named: str, count: int) -> str:
    """The read of ``count`` accounts of one merchant named by ``"pair"``
    (product, buyer) or by ``"id"`` (PostgreSQL: locked in id order). The names
    come as a ``VALUES`` list joined to the table, so each is one probe of a
    unique index (SQLite would scan every account of the merchant for a row-value
    ``IN``); parameters: the names, then the merchant id."""
    if named == "pair":
        values = ", ".join(["(?, ?)"] * count)
        return sql(f"SELECT a.id, a.product_id, a.buyer_email FROM (VALUES {values}) AS v JOIN credit_account a "
                   "ON a.product_id = v.column1 AND a.buyer_email = v.column2 WHERE a.merchant_id = ?")
    lock = " ORDER BY a.id FOR UPDATE OF a" if dialect() == "postgresql" else ""
    return sql(f"SELECT a.id FROM (VALUES {', '.join(['(?)'] * count)}) AS v JOIN credit_account a "
               f"ON a.id = v.column1 WHERE a.merchant_id = ?{lock}")


def _find_accounts(merchant_id: str, records: Iterable[Mapping[str, Any]]) -> dict[Any, str]:
    """Every account the records name that the merchant has, by id and by
    (product, buyer): the pairs resolved to ids, then every id read at once
    (PostgreSQL: locked, in id order, so batches never deadlock)."""
    ids = {record["account_id"] for record in records if "account_id" in record}
    pairs = list(dict.fromkeys((record["product_id"], record["buyer_email"])
                               for record in records if "account_id" not in record))
    found: dict[Any, str] = {}
    for start in range(0, len(pairs), _CHUNK):
        some = pairs[start:start + _CHUNK]
        rows = db.execute_sql(lookup_sql("pair", len(some)), (*(part for pair in some for part in pair), merchant_id))
        for account_id, product_id, buyer_email in rows.fetchall():
            found[(product_id, buyer_email)] = account_id
            ids.add(account_id)
    named = sorted(ids)
    for start in range(0, len(named), _CHUNK):
        some = named[start:start + _CHUNK]
        for (account_id,) in db.execute_sql(lookup_sql("id", len(some)), (*some, merchant_id)).fetchall():
            found[account_id] = account_id
    return found


_SEND = Signal.send.__code__


def _raised_by_subscriber(error: BaseException) -> bool:
    """True when ``error`` came out of a signal's receivers: the ledger sends
    signals only after writing its row, so the record is partly applied."""
    trace = error.__traceback__
    while trace is not None:
        if trace.tb_frame.f_code is _SEND:
            return True
        trace = trace.tb_next
    return False
