"""The ledger: changes, refusals, idempotency and the invariant, on both databases."""

from __future__ import annotations

import contextlib

import pytest

import storage
from addon_plugin import errors, ledger
from tests.helpers import create_product, ledger_sum, sequences


def entries(account_id: str) -> int:
    return storage.LedgerEntry.select().where(storage.LedgerEntry.account == account_id).count()


def test_a_change_writes_one_entry_and_updates_the_balance(funded_account_id):
    change = ledger.record(funded_account_id, -25, "usage", description="25 renders",
                           reference="job-1", metadata={"job": "1"}, actor="key_x")
    assert change.account.balance == 975
    assert change.previous_balance == 1000
    assert change.entry.delta == -25 and change.entry.balance_after == 975
    assert change.entry.sequence == 2 and change.entry.kind == "usage"
    row = storage.LedgerEntry.get_by_id(change.entry.id)
    assert (row.description, row.reference, row.actor) == ("25 renders", "job-1", "key_x")
    assert ledger.balance(funded_account_id) == 975 == ledger_sum(funded_account_id)


def test_deducting_more_than_the_balance_is_refused_and_writes_nothing(funded_account_id):
    with pytest.raises(errors.InsufficientCredits) as refused:
        ledger.record(funded_account_id, -1001, "usage")
    assert refused.value.context["balance"] == 1000
    assert refused.value.status == 402 and refused.value.code == "insufficient_credits"
    assert ledger.balance(funded_account_id) == 1000
    assert entries(funded_account_id) == 1


def test_overdraft_limit_lets_the_balance_go_that_far_below_zero_and_no_further(merchant_id):
    product = create_product(merchant_id, overdraft_limit=50)
    account_id = ledger.open_account(merchant_id, product.id, "eve@example.com")
    assert ledger.record(account_id, -50, "usage").account.balance == -50
    with pytest.raises(errors.InsufficientCredits):
        ledger.record(account_id, -1, "usage")
    assert ledger.balance(account_id) == -50 == ledger_sum(account_id)


def test_adding_credits_is_allowed_even_below_a_lowered_overdraft_limit(merchant_id):
    product = create_product(merchant_id, overdraft_limit=100)
    account_id = ledger.open_account(merchant_id, product.id, "eve@example.com")
    ledger.record(account_id, -100, "usage")
    storage.Product.update(overdraft_limit=0).where(storage.Product.id == product.id).execute()
    assert ledger.record(account_id, 10, "adjustment").account.balance == -90


def test_the_balance_cannot_pass_the_json_safe_maximum(account_id):
    ledger.record(account_id, ledger.MAX_CREDITS, "adjustment")
    with pytest.raises(errors.BalanceLimitExceeded):
        ledger.record(account_id, 1, "adjustment")
    assert ledger.balance(account_id) == ledger.MAX_CREDITS


@pytest.mark.parametrize("delta", [0, True, False, 1.0, 1.5, "5", None, 2**53, -(2**53), 10**30, 2**64])
def test_bad_amounts_are_refused_before_anything_is_written(account_id, delta):
    with pytest.raises(errors.InvalidAmount) as refused:
        ledger.record(account_id, delta, "adjustment")
    assert refused.value.code == "invalid_value" and "delta" in refused.value.fields
    assert entries(account_id) == 0


@pytest.mark.parametrize("kind, delta", [("usage", 5), ("purchase", -5), ("top_up", -1), ("refund", 3)])
def test_a_delta_of_the_wrong_sign_for_its_kind_is_refused(account_id, kind, delta):
    with pytest.raises(errors.InvalidAmount):
        ledger.record(account_id, delta, kind)
    assert entries(account_id) == 0


def test_an_unknown_kind_is_refused(account_id):
    with pytest.raises(errors.ValidationError) as refused:
        ledger.record(account_id, 5, "gift")
    assert "kind" in refused.value.messages


@pytest.mark.parametrize("details", [
    {"metadata": {"k": 1}},
    {"metadata": {str(i): "v" for i in range(51)}},
    {"metadata": {"k" * 41: "v"}},
    {"metadata": {"k": "v" * 501}},
    {"description": "d" * 1001},
    {"reference": 42},
    {"idempotency_key": ""},
    {"idempotency_key": "k" * 256},
])
def test_bad_details_are_refused(account_id, details):
    with pytest.raises(errors.ValidationError):
        ledger.record(account_id, 5, "adjustment", **details)
    assert entries(account_id) == 0


def test_an_unknown_account_is_refused(app):
    with pytest.raises(errors.AccountNotFound):
        ledger.record("acct_missing", 5, "adjustment")
    with pytest.raises(errors.AccountNotFound):
        ledger.balance("acct_missing")


def test_the_same_idempotency_key_and_request_applies_once(funded_account_id):
    first = ledger.record(funded_account_id, -10, "usage", idempotency_key="job-7", metadata={"a": "b"})
    again = ledger.record(funded_account_id, -10, "usage", idempotency_key="job-7", metadata={"a": "b"})
    assert again.replayed and not first.replayed
    assert again.entry == first.entry
    assert ledger.balance(funded_account_id) == 990 and entries(funded_account_id) == 2


def test_the_same_idempotency_key_with_a_different_request_is_an_error(funded_account_id):
    ledger.record(funded_account_id, -10, "usage", idempotency_key="job-7")
    with pytest.raises(errors.IdempotencyKeyReused):
        ledger.record(funded_account_id, -11, "usage", idempotency_key="job-7")
    assert ledger.balance(funded_account_id) == 990


def test_idempotency_keys_are_per_account(merchant_id, product):
    a = ledger.open_account(merchant_id, product.id, "a@example.com")
    b = ledger.open_account(merchant_id, product.id, "b@example.com")
    ledger.record(a, 5, "adjustment", idempotency_key="same")
    assert not ledger.record(b, 5, "adjustment", idempotency_key="same").replayed


def test_sequences_run_one_to_n_without_gaps_even_after_refusals(funded_account_id):
    for delta in (-100, -2000, -100, 50, -5000, -1):
        with contextlib.suppress(errors.InsufficientCredits):
            ledger.record(funded_account_id, delta, "usage" if delta < 0 else "adjustment")
    assert sequences(funded_account_id) == [1, 2, 3, 4, 5]
    assert ledger.balance(funded_account_id) == ledger_sum(funded_account_id) == 849


def test_open_account_is_get_or_create_and_normalises_the_email(merchant_id, product):
    first = ledger.open_account(merchant_id, product.id, "  Bob@Example.COM ")
    assert ledger.open_account(merchant_id, product.id, "bob@example.com") == first
    assert ledger.get_account(first).buyer_email == "bob@example.com"
    assert ledger.find_account_id(merchant_id, product.id, "BOB@example.com") == first


def test_open_account_refuses_another_merchants_product(app, product):
    from addon_plugin import merchants

    other, _ = merchants.create_merchant("Other")
    with pytest.raises(errors.ProductNotFound):
        ledger.open_account(other.id, product.id, "bob@example.com")
    assert storage.CreditAccount.select().count() == 0


def test_a_stored_string_comes_back_byte_for_byte(account_id):
    text = "naïve 🚀 \u202e‮ <b>&amp;</b> '; DROP TABLE ledger_entry; -- \t\r\n\x7f"
    change = ledger.record(account_id, 5, "adjustment", description=text, reference=text[:40],
                           metadata={"ключ": text})
    row = storage.LedgerEntry.get_by_id(change.entry.id)
    assert row.description == text and row.reference == text[:40]
    assert ledger._entry_from_row(
        storage.db.execute_sql(f"SELECT {ledger._ENTRY_COLUMNS} FROM ledger_entry "
                               f"WHERE id = {storage.db.param}", (change.entry.id,)).fetchone()
    ).metadata == {"ключ": text}


@pytest.mark.parametrize("details", [{"description": "a\x00b"}, {"reference": "\x00"}, {"metadata": {"k": "\x00"}}])
def test_nul_characters_are_refused_on_every_database(account_id, details):
    """PostgreSQL cannot store NUL in text; refusing it everywhere keeps the promise
    that a stored string comes back byte-for-byte."""
    with pytest.raises(errors.ValidationError):
        ledger.record(account_id, 5, "adjustment", **details)
    assert entries(account_id) == 0
