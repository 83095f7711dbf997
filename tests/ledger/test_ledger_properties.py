"""Property: after any sequence of adds, deducts, adjustments, replays and
refused overdraws, the balance is the sum of the ledger, never below
``-overdraft_limit``, and sequences run 1..n without gaps."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from addon_plugin import errors, ledger
from tests.helpers import create_product, ledger_sum, sequences

_amount = st.integers(min_value=1, max_value=500)
_operation = st.one_of(
    st.tuples(st.just("add"), _amount),
    st.tuples(st.just("deduct"), _amount),
    st.tuples(st.just("adjust"), st.integers(-500, 500).filter(bool)),
    st.tuples(st.just("replay"), st.integers(0, 20)),
    st.tuples(st.just("overdraw"), st.integers(1, 10**6)),
)
_emails = itertools.count()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=st.lists(_operation, max_size=30), overdraft_limit=st.sampled_from([0, 100]))
def test_the_balance_is_always_the_sum_of_its_ledger(merchant_id, operations, overdraft_limit):
    product = create_product(merchant_id, overdraft_limit=overdraft_limit)
    account_id = ledger.open_account(merchant_id, product.id, f"buyer{next(_emails)}@example.com")
    keyed: list[tuple[int, str, str]] = []
    expected = 0
    for step, (verb, number) in enumerate(operations):
        try:
            if verb == "replay":
                if not keyed:
                    continue
                delta, kind, key = keyed[number % len(keyed)]
                change = ledger.record(account_id, delta, kind, idempotency_key=key)
                assert change.replayed
                continue
            if verb == "overdraw":
                delta, kind = -(expected + overdraft_limit + number), "usage"
            elif verb in ("add", "deduct"):
                delta, kind = (number, "purchase") if verb == "add" else (-number, "usage")
            else:
                delta, kind = number, "adjustment"
            key = f"op-{step}"
            ledger.record(account_id, delta, kind, idempotency_key=key)
            keyed.append((delta, kind, key))
            expected += delta
        except errors.InsufficientCredits:
            assert expected + delta < -overdraft_limit
        balance = ledger.balance(account_id)
        assert balance == expected == ledger_sum(account_id)
        assert balance >= -overdraft_limit
    assert sequences(account_id) == list(range(1, len(keyed) + 1))
