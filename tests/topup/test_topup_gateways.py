"""Payment gateways: the test gateway's tokens, Stripe's PaymentIntents adapter, resolving config."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from urllib.parse import parse_qsl

import pytest
import requests
import responses

import storage
from addon_plugin.topup import (
    ChargePending,
    Declined,
    GatewayUnavailable,
    StripeGateway,
    TestGateway,
    execute,
    resolve_gateway,
    settle,
)
from addon_plugin.topup.gateways import stripe_amount
from tests.helpers import top_up_entries, top_ups

API = "https://stripe.test"
INTENTS = f"{API}/v1/payment_intents"
SEARCH = f"{INTENTS}/search"
CHARGE = dict(amount=Decimal("19.00"), currency="USD", customer="cus_1", payment_method="pm_card_visa",
              idempotency_key="addons-top-up-topup_1", description="Automatic top-up: 100 credits",
              metadata={"top_up_id": "topup_1", "account_id": "acct_1"})


# -- the test gateway -------------------------------------------------------------

def test_the_test_gateway_charges_pm_card_visa_once_per_idempotency_key():
    gateway = TestGateway()
    first = gateway.charge(**CHARGE)
    assert gateway.charge(**CHARGE) == first
    assert gateway.charge(**{**CHARGE, "idempotency_key": "another"}) != first
    assert gateway.calls == 3 and len(gateway.charges) == 2
    assert gateway.charges[CHARGE["idempotency_key"]].amount == Decimal("19.00")


@pytest.mark.parametrize(("payment_method", "code"), [
    ("pm_card_chargeDeclined", "card_declined"),
    ("pm_card_authenticationRequired", "authentication_required"),
    ("pm_card_mastercard_typo", "invalid_payment_method"),
])
def test_the_test_gateway_declines_like_stripes_test_tokens(payment_method, code):
    gateway = TestGateway()
    with pytest.raises(Declined) as declined:
        gateway.charge(**{**CHARGE, "payment_method": payment_method})
    assert declined.value.code == code and declined.value.message
    assert gateway.charges == {}


def test_the_test_gateway_looks_up_what_it_did_with_a_key():
    gateway = TestGateway()
    charge_id = gateway.charge(**CHARGE)
    with pytest.raises(Declined):
        gateway.charge(**{**CHARGE, "idempotency_key": "declined", "payment_method": "pm_card_chargeDeclined"})
    assert gateway.lookup(CHARGE["idempotency_key"]) == charge_id
    with pytest.raises(Declined) as declined:
        gateway.lookup("declined")
    assert declined.value.code == "card_declined"
    assert gateway.lookup("never-sent") is None
    assert (gateway.calls, gateway.lookups) == (2, 3)


# -- amounts ------------------------------------------------------------------------

@pytest.mark.parametrize(("amount", "currency", "minor"), [
    (Decimal("19.00"), "USD", 1900),
    (Decimal("0.5"), "eur", 50),
    (Decimal("500"), "JPY", 500),      # zero-decimal: whole yen
    (Decimal("1500"), "KRW", 1500),
    (Decimal("1.250"), "KWD", 1250),   # three decimals
])
def test_stripe_amounts_are_in_the_currencys_smallest_unit(amount, currency, minor):
    assert stripe_amount(amount, currency) == minor


def test_an_amount_finer_than_the_currency_allows_is_refused():
    with pytest.raises(ValueError):
        stripe_amount(Decimal("500.5"), "JPY")


# -- Stripe ---------------------------------------------------------------------------

def stripe() -> StripeGateway:
    return StripeGateway("sk_test_abc", api_base=API)


def _intent(status: str = "succeeded") -> dict:
    return {"id": "pi_123", "object": "payment_intent", "status": status}


def _found(*intents: dict) -> dict:
    """A search answer holding ``intents`` (each a PaymentIntent of top-up ``topup_1``)."""
    data = [{"object": "payment_intent", "metadata": {"top_up_id": "topup_1"}, **intent} for intent in intents]
    return {"object": "search_result", "data": data, "has_more": False, "next_page": None}


def _error(code: str, type_: str = "card_error", message: str = "Your card was declined.") -> dict:
    return {"error": {"type": type_, "code": code, "message": message}}


@responses.activate
def test_stripe_creates_a_confirmed_off_session_payment_intent():
    responses.post(INTENTS, json=_intent())
    assert stripe().charge(**CHARGE) == "pi_123"

    [call] = responses.calls
    request = call.request
    assert request.headers["Authorization"] == "Bearer sk_test_abc"
    assert request.headers["Idempotency-Key"] == "addons-top-up-topup_1"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert dict(parse_qsl(request.body)) == {
        "amount": "1900", "currency": "usd", "customer": "cus_1", "payment_method": "pm_card_visa",
        "confirm": "true", "off_session": "true", "description": "Automatic top-up: 100 credits",
        "metadata[top_up_id]": "topup_1", "metadata[account_id]": "acct_1",
    }


@responses.activate
def test_stripe_sends_zero_decimal_currencies_in_whole_units():
    responses.post(INTENTS, json=_intent())
    stripe().charge(**{**CHARGE, "amount": Decimal("500"), "currency": "JPY"})
    body = dict(parse_qsl(responses.calls[0].request.body))
    assert (body["amount"], body["currency"]) == ("500", "jpy")


@pytest.mark.parametrize(("status", "body", "code"), [
    (402, _error("card_declined"), "card_declined"),
    (402, _error("authentication_required", message="Authentication required."), "authentication_required"),
    (400, _error("resource_missing", "invalid_request_error", "No such PaymentMethod."), "resource_missing"),
    (200, _intent("requires_action"), "authentication_required"),
    (200, _intent("requires_payment_method"), "payment_failed"),
])
@responses.activate
def test_stripe_refusals_are_declines_with_stripes_code(status, body, code):
    responses.post(INTENTS, json=body, status=status)
    with pytest.raises(Declined) as declined:
        stripe().charge(**CHARGE)
    assert declined.value.code == code


@responses.activate
def test_a_processing_payment_intent_is_a_pending_charge_not_a_success():
    responses.post(INTENTS, json=_intent("processing"))
    with pytest.raises(ChargePending) as pending:
        stripe().charge(**CHARGE)
    assert pending.value.charge_id == "pi_123"


@responses.activate
def test_stripe_lookup_searches_payment_intents_by_the_top_up_id_in_their_metadata():
    responses.get(SEARCH, json=_found({"id": "pi_9", "status": "succeeded"}))
    assert stripe().lookup("addons-top-up-topup_1") == "pi_9"
    [call] = responses.calls
    assert call.request.headers["Authorization"] == "Bearer sk_test_abc"
    assert call.request.params == {"query": "metadata['top_up_id']:'topup_1'"}


@pytest.mark.parametrize(("found", "code"), [
    (_found({"id": "pi_9", "status": "requires_payment_method",
             "last_payment_error": {"code": "card_declined", "message": "Your card was declined."}}), "card_declined"),
    (_found({"id": "pi_9", "status": "canceled"}), "payment_failed"),
    (_found({"id": "pi_9", "status": "requires_action"}), "authentication_required"),
])
@responses.activate
def test_stripe_lookup_of_a_failed_payment_intent_is_a_decline(found, code):
    responses.get(SEARCH, json=found)
    with pytest.raises(Declined) as declined:
        stripe().lookup("addons-top-up-topup_1")
    assert declined.value.code == code


@responses.activate
def test_stripe_lookup_finding_nothing_is_none():
    responses.get(SEARCH, json=_found())
    assert stripe().lookup("addons-top-up-topup_1") is None


@pytest.mark.parametrize("reply", [
    {"json": _found({"id": "pi_9", "status": "processing"})},  # it cannot tell yet
    {"json": _error("api_error", "api_error", "Something went wrong."), "status": 500},
    {"json": _error("feature_unavailable", "invalid_request_error", "Search is unavailable."), "status": 400},
    {"body": requests.exceptions.ReadTimeout("read timed out")},
    {"body": "<html>Bad gateway</html>", "status": 502},
])
@responses.activate
def test_stripe_lookup_that_cannot_tell_is_unavailable(reply):
    responses.get(SEARCH, **reply)
    with pytest.raises(GatewayUnavailable):
        stripe().lookup("addons-top-up-topup_1")


@pytest.mark.parametrize("reply", [
    {"json": _error("api_error", "api_error", "Something went wrong."), "status": 500},
    {"body": "<html>Bad gateway</html>", "status": 502},
    {"json": _error("rate_limit", "invalid_request_error", "Too many requests."), "status": 429},
    {"json": _error("idempotency_key_in_use", "idempotency_error", "In use."), "status": 409},
    {"body": requests.exceptions.ReadTimeout("read timed out")},
    {"body": requests.exceptions.ConnectionError("connection refused")},
])
@responses.activate
def test_stripe_outages_are_retryable(reply):
    responses.post(INTENTS, **reply)
    with pytest.raises(GatewayUnavailable):
        stripe().charge(**CHARGE)


def _stripe_account(app, account_id: str) -> None:
    app.config.update(ADDONS_PAYMENT_GATEWAY="stripe", ADDONS_STRIPE_API_KEY="sk_test_abc",
                      ADDONS_STRIPE_API_BASE=API)
    storage.CreditAccount.update(customer="cus_1").where(storage.CreditAccount.id == account_id).execute()


@pytest.mark.parametrize("outage", [
    {"json": _error("api_error", "api_error", "Something went wrong."), "status": 500},
    {"body": requests.exceptions.ReadTimeout("read timed out")},
])
@responses.activate
def test_a_top_up_retries_stripe_outages_with_the_same_idempotency_key(app, auto_account_id, outage):
    _stripe_account(app, auto_account_id)
    responses.post(INTENTS, **outage)
    responses.post(INTENTS, json=_intent())
    from addon_plugin import ledger

    ledger.record(auto_account_id, -510, "usage")
    [top_up] = top_ups(auto_account_id)
    execute.run_due(top_up.next_attempt_at)
    assert storage.TopUp.get_by_id(top_up.id).status == "pending"
    execute.run_due(top_up.next_attempt_at + timedelta(seconds=30))

    top_up = storage.TopUp.get_by_id(top_up.id)
    assert (top_up.status, top_up.charge_id, top_up.attempts) == ("succeeded", "pi_123", 2)
    keys = [call.request.headers["Idempotency-Key"] for call in responses.calls]
    assert keys == [execute.charge_key(top_up.id)] * 2
    assert dict(parse_qsl(responses.calls[1].request.body))["customer"] == "cus_1"
    assert len(top_up_entries(auto_account_id)) == 1 and ledger.balance(auto_account_id) == 590


@responses.activate
def test_the_stripe_payment_intent_names_the_consent_record_it_relied_on(app, auto_account_id):
    _stripe_account(app, auto_account_id)
    responses.post(INTENTS, json=_intent())
    from addon_plugin import ledger

    ledger.record(auto_account_id, -510, "usage")
    [top_up] = top_ups(auto_account_id)
    execute.run_due(top_up.next_attempt_at)
    consent_id = storage.CreditAccount.get_by_id(auto_account_id).consent_id
    assert consent_id and storage.TopUp.get_by_id(top_up.id).consent_id == consent_id
    assert dict(parse_qsl(responses.calls[0].request.body))["metadata[consent_id]"] == consent_id


@responses.activate
def test_a_processing_stripe_charge_is_credited_once_its_lookup_finds_it_succeeded(app, auto_account_id):
    _stripe_account(app, auto_account_id)
    responses.post(INTENTS, json=_intent("processing"))
    from addon_plugin import ledger

    ledger.record(auto_account_id, -510, "usage")
    [top_up] = top_ups(auto_account_id)
    execute.run_due(top_up.next_attempt_at)
    assert (storage.TopUp.get_by_id(top_up.id).status, ledger.balance(auto_account_id)) == ("pending_settlement", 490)

    responses.get(SEARCH, json={"object": "search_result", "has_more": False, "data": [
        {"id": "pi_123", "status": "succeeded", "metadata": {"top_up_id": top_up.id}}]})
    assert settle.look_up_due(top_up.next_attempt_at + timedelta(seconds=300)) == 1
    top_up = storage.TopUp.get_by_id(top_up.id)
    assert (top_up.status, top_up.charge_id) == ("succeeded", "pi_123")
    assert len(top_up_entries(auto_account_id)) == 1 and ledger.balance(auto_account_id) == 590
    assert responses.calls[-1].request.params == {"query": f"metadata['top_up_id']:'{top_up.id}'"}


@responses.activate
def test_a_stripe_decline_fails_the_top_up(app, auto_account_id):
    _stripe_account(app, auto_account_id)
    responses.post(INTENTS, json=_error("card_declined"), status=402)
    from addon_plugin import ledger

    ledger.record(auto_account_id, -510, "usage")
    execute.run_due()
    [top_up] = top_ups(auto_account_id)
    assert (top_up.status, top_up.failure_code, top_up.failure_message) == (
        "failed", "card_declined", "Your card was declined.")


# -- who owns a payment method ---------------------------------------------------------

@pytest.mark.parametrize(("payment_method", "owned"), [
    ("pm_card_visa", True), ("pm_card_chargeDeclined", True), ("pm_1Nabc", False), ("card_visa", False),
])
def test_every_test_token_belongs_to_every_customer(payment_method, owned):
    assert TestGateway().owns("cus_anyone", payment_method) is owned
    assert TestGateway().owns(None, payment_method) is owned


def _payment_method(customer: str | None) -> dict:
    return {"id": "pm_1", "object": "payment_method", "type": "card", "customer": customer}


@pytest.mark.parametrize(("reply", "owned"), [
    ({"json": _payment_method("cus_1")}, True),
    ({"json": {**_payment_method(None), "customer": {"id": "cus_1", "object": "customer"}}}, True),  # expanded
    ({"json": _payment_method("cus_other")}, False),
    ({"json": _payment_method(None)}, False),  # attached to nobody
    ({"json": _error("resource_missing", "invalid_request_error", "No such PaymentMethod."), "status": 404}, False),
    ({"json": _error("parameter_invalid", "invalid_request_error", "Invalid id."), "status": 400}, False),
])
@responses.activate
def test_stripe_owns_retrieves_the_payment_method_and_compares_its_customer(reply, owned):
    responses.get(f"{API}/v1/payment_methods/pm_1", **reply)
    assert stripe().owns("cus_1", "pm_1") is owned
    [call] = responses.calls
    assert call.request.headers["Authorization"] == "Bearer sk_test_abc"


@responses.activate
def test_stripe_owns_quotes_the_id_into_one_path_segment():
    responses.get(f"{API}/v1/payment_methods/pm_x%2F..%2F..%2Fv1%2Fcustomers%2Fcus_1%3Fa%3Db",
                  json=_payment_method("cus_1"))
    assert stripe().owns("cus_1", "pm_x/../../v1/customers/cus_1?a=b") is True


@responses.activate
def test_stripe_owns_nothing_for_no_customer_without_asking():
    assert stripe().owns(None, "pm_1") is False
    assert len(responses.calls) == 0


@pytest.mark.parametrize("reply", [
    {"json": _error("api_error", "api_error", "Something went wrong."), "status": 500},
    {"json": _error("rate_limit", "invalid_request_error", "Too many requests."), "status": 429},
    {"json": _error("authentication_error", "invalid_request_error", "Bad key."), "status": 401},
    {"body": "<html>Bad gateway</html>", "status": 200},
    {"body": requests.exceptions.ConnectionError("connection refused")},
])
@responses.activate
def test_stripe_owns_raises_unavailable_when_stripe_cannot_tell(reply):
    responses.get(f"{API}/v1/payment_methods/pm_1", **reply)
    with pytest.raises(GatewayUnavailable):
        stripe().owns("cus_1", "pm_1")


# -- configuration -------------------------------------------------------------------

class CustomGateway:
    requires_customer = False

    def charge(self, **kwargs) -> str:
        return "custom_1"


CUSTOM = CustomGateway()


def test_a_gateway_is_named_by_object_short_name_or_dotted_path():
    assert resolve_gateway(None) is None
    assert resolve_gateway(CUSTOM) is CUSTOM
    assert isinstance(resolve_gateway("test"), TestGateway)
    stripe_gateway = resolve_gateway("stripe", {"ADDONS_STRIPE_API_KEY": "sk_x", "ADDONS_STRIPE_API_BASE": API})
    assert isinstance(stripe_gateway, StripeGateway) and stripe_gateway.api_base == API
    assert resolve_gateway(f"{__name__}:CUSTOM") is CUSTOM
    assert resolve_gateway(f"{__name__}.CUSTOM") is CUSTOM
    assert isinstance(resolve_gateway(f"{__name__}.CustomGateway"), CustomGateway)


@pytest.mark.parametrize("value", ["nonsense", "no_such_module.Gateway", f"{__name__}.Missing", object()])
def test_a_bad_gateway_setting_fails_loudly(value):
    with pytest.raises(ValueError):
        resolve_gateway(value)


def test_the_stripe_gateway_needs_an_api_key():
    with pytest.raises(ValueError, match="ADDONS_STRIPE_API_KEY"):
        resolve_gateway("stripe", {})


def test_a_bad_gateway_or_mode_fails_when_the_app_starts(tmp_path):
    from tests.helpers import make_app

    url = f"sqlite:///{tmp_path}/addons.sqlite3"
    with pytest.raises(ValueError, match="ADDONS_PAYMENT_GATEWAY"):
        make_app(url, str(tmp_path), ADDONS_PAYMENT_GATEWAY="no_such_module.Gateway")
    with pytest.raises(ValueError, match="ADDONS_TOP_UP_MODE"):
        make_app(url, str(tmp_path), ADDONS_TOP_UP_MODE="sometimes")
    app = make_app(url, str(tmp_path), ADDONS_PAYMENT_GATEWAY="test")
    from addon_plugin.topup import current_gateway

    assert current_gateway(app) is current_gateway(app)  # one gateway per app and setting
