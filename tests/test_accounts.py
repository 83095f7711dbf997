"""The accounts service a host calls: the API's resources, and writes under the
API's schemas and idempotency rules (a refusal replayed is raised again)."""

from __future__ import annotations

from datetime import timedelta

import pytest

import storage
from addon_plugin import GatewayUnavailable, SignedInBuyer, accounts, ledger, merchants, worker
from addon_plugin.errors import (
    AccountNotFound,
    AddonError,
    HoldNotActive,
    HoldNotFound,
    IdempotencyKeyReused,
    InsufficientCredits,
    InvalidPaymentMethod,
    TopUpNotUnresolved,
    ValidationError,
)
from addon_plugin.idempotency import buyer_key_space
from addon_plugin.topup import TestGateway

ACCOUNTS = "/api/addons/accounts"


class DownGateway(TestGateway):
    """No charge gets through, nor any answer: a top-up is left ``unresolved``."""

    def charge(self, **kwargs) -> str:
        raise GatewayUnavailable("Connection refused.")


def entries(account_id: str) -> list[storage.LedgerEntry]:
    return list(storage.LedgerEntry.select().where(storage.LedgerEntry.account == account_id))


def test_reads_answer_what_the_api_answers(client, auth, merchant_id, funded_account_id):
    assert accounts.get_account(merchant_id, funded_account_id) == client.get(
        f"{ACCOUNTS}/{funded_account_id}", headers=auth).get_json()
    assert accounts.list_accounts(merchant_id, buyer_email="BOB@example.com") == client.get(
        ACCOUNTS, headers=auth).get_json()
    assert accounts.list_entries(merchant_id, funded_account_id, limit=1) == client.get(
        f"{ACCOUNTS}/{funded_account_id}/ledger", query_string={"limit": 1}, headers=auth).get_json()
    assert merchants.list_api_keys(merchant_id) == client.get("/api/addons/api-keys", headers=auth).get_json()


def test_reads_refuse_what_the_api_refuses(merchant_id, account_id):
    other = merchants.create_merchant("Other")[0].id
    with pytest.raises(AccountNotFound):
        accounts.get_account(other, account_id)
    with pytest.raises(AccountNotFound):
        accounts.list_entries(other, account_id)
    with pytest.raises(ValidationError) as caught:
        accounts.list_accounts(merchant_id, limit=501, cursor="not a cursor")
    assert set(caught.value.messages) == {"limit"}


def test_an_adjustment_from_a_form_is_validated_by_the_apis_schema_and_stores_nothing(merchant_id, account_id):
    with pytest.raises(ValidationError) as caught:
        accounts.adjust(merchant_id, account_id, {"value": "1.5", "description": " ", "idempotency_key": "k1"})
    assert set(caught.value.messages) == {"value", "description"}
    change = accounts.adjust(merchant_id, account_id, {"value": "50", "description": "Goodwill",
                                                       "idempotency_key": "k1", "csrf_token": "the host's own"},
                             actor="host:admin")
    assert change["balance"] == 50 and change["entry"]["delta"] == 50 and change["entry"]["actor"] == "host:admin"


def test_an_adjustment_with_a_key_is_applied_once(merchant_id, account_id):
    data = {"value": 50, "description": "Goodwill", "idempotency_key": "adj-1"}
    first = accounts.adjust(merchant_id, account_id, data)
    assert accounts.adjust(merchant_id, account_id, data) == first
    assert len(entries(account_id)) == 1
    with pytest.raises(IdempotencyKeyReused):
        accounts.adjust(merchant_id, account_id, {**data, "value": 60})


def test_a_refusal_is_stored_and_raised_again_on_a_replay(merchant_id, account_id):
    data = {"value": -10, "description": "Too much", "idempotency_key": "adj-2"}
    with pytest.raises(InsufficientCredits) as first:
        accounts.adjust(merchant_id, account_id, data)
    accounts.adjust(merchant_id, account_id, {"value": 100, "description": "Top it up"})
    with pytest.raises(InsufficientCredits) as replayed:            # the stored refusal, not a new attempt
        accounts.adjust(merchant_id, account_id, data)
    assert (replayed.value.status, replayed.value.message) == (402, first.value.message)
    assert [entry.delta for entry in entries(account_id)] == [100]


def test_the_api_and_the_host_share_the_merchants_key_space(client, auth, merchant_id, account_id):
    accounts.adjust(merchant_id, account_id, {"value": 5, "description": "Host", "idempotency_key": "shared"})
    answer = client.post(f"{ACCOUNTS}/{account_id}/adjustments", headers=auth,
                         json={"value": 5, "description": "Host", "idempotency_key": "shared"})
    assert answer.status_code == 422 and answer.get_json()["error"]["code"] == "idempotency_key_reused"


def test_usage_deducts_as_the_usage_api_does(merchant_id, product, funded_account_id):
    data = {"product_id": product.id, "buyer_email": "Bob@Example.com", "value": -25,
            "description": "One render", "idempotency_key": "job-1"}
    answer = accounts.record_usage(merchant_id, data, actor="host")
    assert answer["success"] is True and answer["data"]["balance"] == 975
    assert answer["data"]["entry"]["kind"] == "usage" and answer["data"]["account_id"] == funded_account_id
    assert accounts.record_usage(merchant_id, data) == answer      # once per key
    with pytest.raises(InsufficientCredits):
        accounts.record_usage(merchant_id, {**data, "value": -5000, "idempotency_key": "job-2"})
    with pytest.raises(AccountNotFound):
        accounts.record_usage(merchant_id, {**data, "buyer_email": "nobody@example.com", "idempotency_key": "j3"})


def _visible_state(account_id: str) -> dict:
    """The account's visible auto top-up state as it stands (the switch-on decided a top-up at once)."""
    from addon_plugin import topup_state
    return topup_state.state(account_id)


def test_auto_top_up_settings_answer_the_account(app, merchant_id, account_id):
    app.config["ADDONS_PAYMENT_GATEWAY"] = "test"
    answer = accounts.set_auto_top_up(merchant_id, account_id, enabled=True, threshold=10,
                                      payment_method="pm_card_visa")
    assert answer["id"] == account_id and answer["threshold"] == 10
    assert answer["auto_top_up"] == {"enabled": True, "payment_method": "pm_card_visa", "customer": None,
                                     **_visible_state(account_id)}


@pytest.mark.parametrize("write", ["adjust", "record_usage"])
def test_a_key_whose_stored_answer_expired_still_answers_its_first_entry(
        app, monkeypatch, merchant_id, product, funded_account_id, write):
    """The ledger keeps the merchant's keys for good, for the host as for the API."""
    def send(value: int, key: str) -> dict:
        if write == "adjust":
            return accounts.adjust(merchant_id, funded_account_id, {"value": value, "description": "Fix",
                                                                    "idempotency_key": key})
        return accounts.record_usage(merchant_id, {"product_id": product.id, "buyer_email": "bob@example.com",
                                                   "value": value, "idempotency_key": key})["data"]

    first = send(-10, "job-1")
    send(-30, "job-2")
    later = storage.utcnow() + timedelta(seconds=app.config["ADDONS_IDEMPOTENCY_TTL"] + 1)
    monkeypatch.setattr(storage, "utcnow", lambda: later)
    again = send(-10, "job-1")
    # The usage answer's spendable credits and forecast: today's, the grants and the usage days are not rewound.
    today = ("balances", "next_expiry", "forecast")
    assert {k: v for k, v in again.items() if k not in today} == {k: v for k, v in first.items() if k not in today}
    assert first["balance"] == 990
    if write == "record_usage":
        assert (first["balances"]["paid"], again["balances"]["paid"]) == (990, 960)
    assert ledger.balance(funded_account_id) == 960 and len(entries(funded_account_id)) == 3
    with pytest.raises(IdempotencyKeyReused):
        send(-11, "job-1")


def test_after_expiry_the_api_replays_the_hosts_entry_rather_than_applying_it_again(
        client, auth, app, monkeypatch, merchant_id, funded_account_id):
    data = {"value": -10, "description": "Fix"}
    first = accounts.adjust(merchant_id, funded_account_id, {**data, "idempotency_key": "job-1"})
    later = storage.utcnow() + timedelta(seconds=app.config["ADDONS_IDEMPOTENCY_TTL"] + 1)
    monkeypatch.setattr(storage, "utcnow", lambda: later)
    answer = client.post(f"{ACCOUNTS}/{funded_account_id}/adjustments", json=data,
                         headers={**auth, "Idempotency-Key": "job-1"})
    assert answer.status_code == 201 and answer.headers["Idempotent-Replayed"] == "true"
    assert answer.get_json() == first and ledger.balance(funded_account_id) == 990


def test_a_buyers_change_keeps_the_buyer_routes_rules(app, merchant_id, account_id):
    app.config["ADDONS_PAYMENT_GATEWAY"] = "test"
    bob = SignedInBuyer(merchant_id, "bob@example.com", "cus_bob")
    on = {"enabled": True, "threshold": 10, "payment_method": "pm_card_visa", "idempotency_key": "on-1"}
    answer = accounts.set_buyer_auto_top_up(bob, account_id, {**on, "customer": "cus_someone_else"})
    assert answer["auto_top_up"] == {"enabled": True, "payment_method": "pm_card_visa", "customer": "cus_bob",
                                     **_visible_state(account_id)}
    assert accounts.set_buyer_auto_top_up(bob, account_id, on) == answer
    with pytest.raises(InvalidPaymentMethod):                      # the gateway's owns() said no
        accounts.set_buyer_auto_top_up(bob, account_id, {**on, "payment_method": "pm_1OtherBuyersCard",
                                                         "idempotency_key": "on-2"})
    with pytest.raises(AccountNotFound):
        accounts.set_buyer_auto_top_up(SignedInBuyer(merchant_id, "ann@example.com"), account_id, {"enabled": False})
    accounts.adjust(merchant_id, account_id, {"value": 5, "description": "Goodwill", "idempotency_key": "on-1"})
    assert {(record.key_space, record.key) for record in storage.IdempotencyRecord.select()} == {
        (buyer_key_space("bob@example.com"), "on-1"), ("api", "on-1")}     # one key, two callers' own spaces


def test_an_unresolved_top_up_is_listed_and_resolved_as_the_api_does(
        app, client, auth, merchant_id, auto_account_id):
    app.config.update(ADDONS_PAYMENT_GATEWAY=DownGateway(), ADDONS_TOP_UP_RETRY_SCHEDULE=[])
    ledger.record(auto_account_id, -600, "usage")                     # 400: below the threshold of 500
    worker.run_once()
    listed = accounts.list_top_ups(merchant_id, auto_account_id)
    assert listed == client.get(f"{ACCOUNTS}/{auto_account_id}/top-ups", headers=auth).get_json()
    [top_up] = listed["data"]
    assert top_up["status"] == "unresolved"
    data = {"outcome": "succeeded", "charge_id": "ch_found_1", "idempotency_key": "resolve-1"}
    resolved = accounts.resolve_top_up(merchant_id, top_up["id"], data)
    assert (resolved["status"], resolved["charge_id"]) == ("succeeded", "ch_found_1")
    assert accounts.resolve_top_up(merchant_id, top_up["id"], data) == resolved    # a replay
    with pytest.raises(TopUpNotUnresolved):
        accounts.resolve_top_up(merchant_id, top_up["id"], {"outcome": "failed"})
    assert ledger.balance(auto_account_id) == 400 + resolved["credits"]              # credited once


def test_an_error_body_gives_back_its_error():
    error = AddonError.from_dict(InsufficientCredits("The balance is 3.").to_dict(), 402)
    assert isinstance(error, InsufficientCredits) and (error.status, error.message) == (402, "The balance is 3.")
    invalid_url = AddonError.from_dict({"error": {"code": "invalid_url", "message": "m", "fields": {}}}, 422)
    assert type(invalid_url).__name__ == "InvalidUrl" and isinstance(invalid_url, ValidationError)
    unknown = AddonError.from_dict({"error": {"code": "brand_new", "message": "m", "fields": {"a": ["b"]}}}, 409)
    assert (type(unknown), unknown.code, unknown.status, unknown.fields) == (AddonError, "brand_new", 409, {"a": ["b"]})


def test_holds_are_placed_captured_and_released_as_the_api_does(client, auth, merchant_id, funded_account_id):
    data = {"value": 50, "description": "Render", "idempotency_key": "hold-1"}
    hold = accounts.place_hold(merchant_id, funded_account_id, data)
    assert accounts.place_hold(merchant_id, funded_account_id, data) == hold  # a replay: one hold
    assert accounts.get_hold(merchant_id, hold["id"]) == client.get(
        f"/api/addons/holds/{hold['id']}", headers=auth).get_json()
    assert ledger.get_account(funded_account_id).available == 950
    captured = accounts.capture_hold(merchant_id, hold["id"], {"value": 37, "idempotency_key": "cap-1"})
    assert accounts.capture_hold(merchant_id, hold["id"], {"value": 37, "idempotency_key": "cap-1"}) == captured
    assert (captured["status"], captured["captured_amount"], ledger.balance(funded_account_id)) == (
        "captured", 37, 963)
    other = accounts.place_hold(merchant_id, funded_account_id, {"value": 10})
    assert accounts.release_hold(merchant_id, other["id"])["status"] == "released"
    assert [h["id"] for h in accounts.list_holds(merchant_id, funded_account_id, status="captured")["data"]] == [
        hold["id"]]
    with pytest.raises(HoldNotActive):
        accounts.release_hold(merchant_id, hold["id"])


def test_holds_refuse_what_the_api_refuses_and_store_nothing(merchant_id, funded_account_id):
    stranger, _ = merchants.create_merchant("Other Rockets")
    with pytest.raises(AccountNotFound):
        accounts.place_hold(stranger.id, funded_account_id, {"value": 5})
    with pytest.raises(ValidationError):
        accounts.place_hold(merchant_id, funded_account_id, {"value": 0})
    with pytest.raises(InsufficientCredits):
        accounts.place_hold(merchant_id, funded_account_id, {"value": 1001})
    assert storage.CreditHold.select().count() == 0
    hold = accounts.place_hold(merchant_id, funded_account_id, {"value": 5})
    with pytest.raises(HoldNotFound):
        accounts.capture_hold(stranger.id, hold["id"])
    with pytest.raises(ValidationError):
        accounts.capture_hold(merchant_id, hold["id"], {"value": 6})
    assert accounts.get_hold(merchant_id, hold["id"])["status"] == "held"
