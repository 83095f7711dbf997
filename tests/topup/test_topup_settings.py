"""Auto top-up settings: PUT semantics, refusals, resets, and products that stop allowing top-ups."""

from __future__ import annotations

from datetime import timedelta

import pytest

import storage
from addon_plugin import errors, ledger, signals
from addon_plugin.topup import StripeGateway, set_auto_top_up
from storage import utcnow
from tests.helpers import THRESHOLD, account_row, create_product, top_ups


def test_switching_on_stores_the_settings_and_returns_the_account(funded_account_id, merchant_id, gateway):
    account = set_auto_top_up(funded_account_id, merchant_id=merchant_id, enabled=True, threshold=200,
                              payment_method="pm_card_visa", customer="cus_123")
    assert (account.auto_top_up_enabled, account.threshold, account.payment_method, account.customer) == (
        True, 200, "pm_card_visa", "cus_123")
    assert ledger.get_account(funded_account_id) == account
    assert top_ups(funded_account_id) == []  # 1000 is above 200


@pytest.mark.parametrize(("settings", "field"), [
    ({"enabled": None}, "enabled"),
    ({"enabled": "yes", "threshold": 1, "payment_method": "pm"}, "enabled"),
    ({"enabled": True, "payment_method": "pm_card_visa"}, "threshold"),
    ({"enabled": True, "threshold": 10}, "payment_method"),
    ({"enabled": True, "threshold": -1, "payment_method": "pm_card_visa"}, "threshold"),
    ({"enabled": True, "threshold": 1.5, "payment_method": "pm_card_visa"}, "threshold"),
    ({"enabled": True, "threshold": True, "payment_method": "pm_card_visa"}, "threshold"),
    ({"enabled": True, "threshold": 2**53, "payment_method": "pm_card_visa"}, "threshold"),
    ({"enabled": True, "threshold": 1, "payment_method": ""}, "payment_method"),
    ({"enabled": True, "threshold": 1, "payment_method": "p" * 256}, "payment_method"),
    ({"enabled": False, "customer": 7}, "customer"),
])
def test_invalid_settings_are_refused_with_the_field_and_change_nothing(
        auto_account_id, merchant_id, settings, field):
    with pytest.raises(errors.ValidationError) as refused:
        set_auto_top_up(auto_account_id, merchant_id=merchant_id, **settings)
    assert refused.value.status == 422 and field in refused.value.fields
    assert ledger.get_account(auto_account_id).threshold == THRESHOLD


def test_a_one_time_product_refuses_auto_top_up_but_keeps_a_threshold(app, merchant_id, gateway):
    one_time = create_product(merchant_id, top_up_allowed=False)
    account_id = ledger.open_account(merchant_id, one_time.id, "ann@example.com")
    with pytest.raises(errors.TopUpNotAllowed) as refused:
        set_auto_top_up(account_id, merchant_id=merchant_id, enabled=True, threshold=5, payment_method="pm_card_visa")
    assert (refused.value.status, refused.value.code) == (409, "top_up_not_allowed")
    assert not ledger.get_account(account_id).auto_top_up_enabled

    account = set_auto_top_up(account_id, merchant_id=merchant_id, enabled=False, threshold=5)
    assert (account.auto_top_up_enabled, account.threshold) == (False, 5)


def test_without_a_payment_gateway_auto_top_up_cannot_be_switched_on(app, funded_account_id, merchant_id):
    assert app.config["ADDONS_PAYMENT_GATEWAY"] is None
    with pytest.raises(errors.NoPaymentGateway) as refused:
        set_auto_top_up(funded_account_id, merchant_id=merchant_id, enabled=True, threshold=5,
                        payment_method="pm_card_visa")
    assert (refused.value.status, refused.value.code) == (409, "no_payment_gateway")


def test_a_gateway_that_needs_a_customer_refuses_settings_without_one(app, funded_account_id, merchant_id):
    app.config["ADDONS_PAYMENT_GATEWAY"] = StripeGateway("sk_test_123")
    with pytest.raises(errors.ValidationError) as refused:
        set_auto_top_up(funded_account_id, merchant_id=merchant_id, enabled=True, threshold=5,
                        payment_method="pm_card_visa")
    assert "customer" in refused.value.fields


def test_another_merchants_or_buyers_account_is_not_found(auto_account_id, merchant_id):
    with pytest.raises(errors.AccountNotFound):
        set_auto_top_up(auto_account_id, merchant_id="mer_other", enabled=False)
    with pytest.raises(errors.AccountNotFound):
        set_auto_top_up(auto_account_id, merchant_id=merchant_id, buyer_email="eve@example.com", enabled=False)
    account = set_auto_top_up(auto_account_id, merchant_id=merchant_id, buyer_email="BOB@example.com",
                              enabled=False)
    assert account.auto_top_up_enabled is False


def test_omitted_optional_fields_are_cleared(auto_account_id, merchant_id):
    set_auto_top_up(auto_account_id, merchant_id=merchant_id, enabled=True, threshold=THRESHOLD,
                    payment_method="pm_card_visa", customer="cus_1")
    account = set_auto_top_up(auto_account_id, merchant_id=merchant_id, enabled=False)
    assert (account.threshold, account.payment_method, account.customer) == (None, None, None)


def _failed_and_blocked(account_id: str) -> None:
    storage.CreditAccount.update(top_up_failures=2, top_up_blocked_until=utcnow() + timedelta(hours=1)).where(
        storage.CreditAccount.id == account_id).execute()


def test_a_new_card_lifts_the_retry_block_but_keeps_the_failure_count(auto_account_id, merchant_id):
    _failed_and_blocked(auto_account_id)
    set_auto_top_up(auto_account_id, merchant_id=merchant_id, enabled=True, threshold=THRESHOLD,
                    payment_method="pm_card_visa", customer="cus_new")
    row = account_row(auto_account_id)
    assert (row.top_up_failures, row.top_up_blocked_until) == (2, None)


def test_a_new_threshold_lifts_neither(auto_account_id, merchant_id):
    _failed_and_blocked(auto_account_id)
    set_auto_top_up(auto_account_id, merchant_id=merchant_id, enabled=True, threshold=THRESHOLD + 1,
                    payment_method="pm_card_visa")
    row = account_row(auto_account_id)
    assert row.top_up_failures == 2 and row.top_up_blocked_until is not None


def test_switching_on_starts_the_failure_count_afresh_but_keeps_the_retry_block(auto_account_id, merchant_id):
    set_auto_top_up(auto_account_id, merchant_id=merchant_id, enabled=False, threshold=THRESHOLD,
                    payment_method="pm_card_visa")
    _failed_and_blocked(auto_account_id)
    set_auto_top_up(auto_account_id, merchant_id=merchant_id, enabled=True, threshold=THRESHOLD,
                    payment_method="pm_card_visa")
    row = account_row(auto_account_id)
    assert row.top_up_failures == 0 and row.top_up_blocked_until is not None


def test_the_same_settings_again_change_nothing(auto_account_id, merchant_id):
    _failed_and_blocked(auto_account_id)
    set_auto_top_up(auto_account_id, merchant_id=merchant_id, enabled=True, threshold=THRESHOLD,
                    payment_method="pm_card_visa")
    row = account_row(auto_account_id)
    assert row.top_up_failures == 2 and row.top_up_blocked_until is not None


def test_switching_on_at_or_below_the_threshold_decides_a_top_up_at_once(funded_account_id, merchant_id, gateway):
    account = set_auto_top_up(funded_account_id, merchant_id=merchant_id, enabled=True, threshold=1000,
                              payment_method="pm_card_visa")
    [top_up] = top_ups(funded_account_id)
    assert (top_up.status, top_up.banks, account.balance) == ("pending", 1, 1000)


def test_in_inline_mode_switching_on_below_the_threshold_charges_at_once(app, funded_account_id, merchant_id,
                                                                         gateway):
    app.config["ADDONS_TOP_UP_MODE"] = "inline"
    set_auto_top_up(funded_account_id, merchant_id=merchant_id, enabled=True, threshold=1050,
                    payment_method="pm_card_visa")
    assert ledger.balance(funded_account_id) == 1100 and gateway.calls == 1


def test_a_product_that_stops_allowing_top_ups_switches_them_off(app, auto_account_id, product, merchant_id,
                                                                 received):
    other_product = create_product(merchant_id)
    other = ledger.open_account(merchant_id, other_product.id, "bob@example.com")
    set_auto_top_up(other, merchant_id=merchant_id, enabled=True, threshold=1, payment_method="pm_card_visa")

    storage.Product.update(top_up_allowed=False).where(storage.Product.id == product.id).execute()
    signals.product_saved.send(app, product=storage.Product.get_by_id(product.id), created=False)

    assert not ledger.get_account(auto_account_id).auto_top_up_enabled
    assert ledger.get_account(other).auto_top_up_enabled
    [disabled] = received["auto_top_up_disabled"]
    assert (disabled["reason"], disabled["account"].id) == ("product_changed", auto_account_id)

    signals.product_saved.send(app, product=storage.Product.get_by_id(product.id), created=False)
    assert len(received["auto_top_up_disabled"]) == 1  # already off: said once


def test_switching_top_ups_off_through_the_products_service_switches_auto_top_up_off(
        auto_account_id, product, merchant_id, received):
    from addon_plugin import products

    products.update_product(merchant_id, product.id, {"name": "Renamed"})
    assert ledger.get_account(auto_account_id).auto_top_up_enabled
    products.update_product(merchant_id, product.id, {"top_up_allowed": False})
    assert not ledger.get_account(auto_account_id).auto_top_up_enabled
    assert [d["reason"] for d in received["auto_top_up_disabled"]] == ["product_changed"]
