"""Auto top-up the buyer can trust (SPEC §12): consent records, the monthly
limit, the visible state on every account answer."""

from __future__ import annotations

from datetime import datetime

import pytest
from peewee import DatabaseError

import storage
from addon_plugin import ledger
from addon_plugin.topup import consent, execute, set_auto_top_up
from tests.helpers import THRESHOLD, bearer, run_concurrently, top_ups

ACCOUNTS = "/api/addons/accounts"
ON = {"enabled": True, "threshold": 200, "payment_method": "pm_card_visa", "customer": "cus_9"}
BROWSER = {"User-Agent": "Mozilla/5.0 (test)"}


def consents(account_id: str) -> list[storage.AutoTopUpConsent]:
    return list(storage.AutoTopUpConsent.select().where(storage.AutoTopUpConsent.account_id == account_id)
                .order_by(storage.AutoTopUpConsent.id))


def put(client, key, account_id, body, headers=None):
    return client.put(f"{ACCOUNTS}/{account_id}/auto-top-up", json=body,
                      headers={**(headers or bearer(key)), **BROWSER}, environ_base={"REMOTE_ADDR": "203.0.113.7"})


# -- consent records ----------------------------------------------------------------------------------

def test_the_merchant_route_writes_one_consent_record_with_the_rendered_terms(client, api_key, merchant,
                                                                               funded_account_id, gateway):
    answer = put(client, api_key, funded_account_id, {**ON, "monthly_limit": "57.00"})
    assert answer.status_code == 200, answer.json
    [record] = consents(funded_account_id)
    assert record.actor == merchant[1].id  # the API key's id
    assert (record.ip, record.user_agent) == ("203.0.113.7", "Mozilla/5.0 (test)")
    assert record.terms == consent.DEFAULT_TERMS_WITH_LIMIT.format(
        merchant="Acme Rockets", credits=100, price="19.00", currency="USD", threshold=200, monthly_limit="57.00")
    assert "Acme Rockets" in record.terms and "19.00 USD" in record.terms and "57.00 USD" in record.terms
    listed = client.get(f"{ACCOUNTS}/{funded_account_id}/consents", headers=bearer(api_key))
    assert listed.status_code == 200
    assert listed.json == {"next_cursor": None, "data": [consent.consent_body(record)]}
    body = listed.json["data"][0]
    assert (body["monthly_limit"], body["bank"], body["enabled"]) == (
        "57.00", {"credits": 100, "price": "19.00", "currency": "USD"}, True)
    assert answer.json["auto_top_up"]["monthly_limit"] == "57.00"


def test_the_same_settings_again_write_no_record_and_a_change_writes_one(client, api_key, funded_account_id,
                                                                          gateway):
    for _ in range(2):
        assert put(client, api_key, funded_account_id, ON).status_code == 200
    assert len(consents(funded_account_id)) == 1
    assert put(client, api_key, funded_account_id, {**ON, "threshold": 150}).status_code == 200
    assert put(client, api_key, funded_account_id, {**ON, "threshold": 150, "monthly_limit": "40"}).status_code == 200
    records = consents(funded_account_id)
    assert [(r.threshold, r.monthly_limit_minor) for r in records] == [(200, None), (150, None), (150, 4000)]
    assert "no monthly limit" in records[0].terms.lower() and "40.00 USD" in records[2].terms
    listed = client.get(f"{ACCOUNTS}/{funded_account_id}/consents?limit=2", headers=bearer(api_key)).json
    assert [r["id"] for r in listed["data"]] == [records[2].id, records[1].id]  # newest first
    rest = client.get(f"{ACCOUNTS}/{funded_account_id}/consents?limit=2&cursor={listed['next_cursor']}",
                      headers=bearer(api_key)).json
    assert [r["id"] for r in rest["data"]] == [records[0].id] and rest["next_cursor"] is None


def test_while_off_changes_write_no_record_and_switching_off_records_the_withdrawal(client, api_key,
                                                                                     funded_account_id, gateway):
    off = {"enabled": False, "threshold": 10}
    assert put(client, api_key, funded_account_id, off).status_code == 200
    assert put(client, api_key, funded_account_id, {**off, "threshold": 20, "monthly_limit": "9.00"}).status_code == 200
    assert consents(funded_account_id) == []
    assert put(client, api_key, funded_account_id, ON).status_code == 200
    assert put(client, api_key, funded_account_id, {"enabled": False}).status_code == 200
    on, withdrawn = consents(funded_account_id)
    assert (on.enabled, withdrawn.enabled) == (True, False)
    assert withdrawn.terms == consent.WITHDRAWAL_TERMS.format(merchant="Acme Rockets")


def test_the_buyer_route_records_the_buyer(app, client, merchant_id, product):
    app.config["ADDONS_PAYMENT_GATEWAY"] = "test"
    app.extensions["addons"].plugin.buyer_loader(lambda: (merchant_id, "bob@example.com", "cus_bob"))
    account_id = ledger.open_account(merchant_id, product.id, "bob@example.com")
    answer = client.put(f"/api/addons/me/accounts/{account_id}/auto-top-up", headers=BROWSER,
                        json={"enabled": True, "threshold": 30, "payment_method": "pm_card_visa",
                              "monthly_limit": "100"}, environ_base={"REMOTE_ADDR": "198.51.100.4"})
    assert answer.status_code == 200, answer.json
    [record] = consents(account_id)
    assert (record.actor, record.ip, record.user_agent, record.customer) == (
        "buyer", "198.51.100.4", "Mozilla/5.0 (test)", "cus_bob")
    assert "100.00 USD" in record.terms and answer.json["auto_top_up"]["monthly_limit"] == "100.00"


def test_the_checkout_opt_in_records_the_order_hook(app, merchant_id):
    app.config["ADDONS_PAYMENT_GATEWAY"] = "test"
    addon = storage.Product.create(id=storage.new_id("prod"), merchant=merchant_id, name="addon", price_minor=500,
                                   currency="EUR", credit_amount=50, top_up_allowed=True, host_product_id="host-7")
    order = {"id": "order_1", "merchant_id": merchant_id, "buyer_email": "bob@example.com",
             "lines": [{"id": "l1", "host_product_id": "host-7", "quantity": 1}], "payment_method": "pm_card_visa",
             "auto_top_up_threshold": 20, "auto_top_up_monthly_limit": "25.50", "ip_address": "192.0.2.1",
             "user_agent": "Checkout/1"}
    plugin = app.extensions["addons"].plugin
    plugin.order_paid(order, None)
    plugin.order_paid(order, None)  # a repeat changes nothing: no second record
    account_id = ledger.find_account_id(merchant_id, addon.id, "bob@example.com")
    [record] = consents(account_id)
    assert (record.actor, record.ip, record.user_agent, record.monthly_limit_minor) == (
        "hook:order_paid", "192.0.2.1", "Checkout/1", 2550)
    assert record.terms.startswith("You allow Acme Rockets") and "5.00 EUR" in record.terms


def test_a_bad_monthly_limit_is_refused_and_records_nothing(client, api_key, funded_account_id, gateway):
    for bad in ("-5", "1.234", "abc", "0", 12.5):
        answer = put(client, api_key, funded_account_id, {**ON, "monthly_limit": bad})
        assert answer.status_code == 422 and "monthly_limit" in answer.json["error"]["fields"], bad
    assert consents(funded_account_id) == []
    assert storage.CreditAccount.get_by_id(funded_account_id).auto_top_up_enabled is False


def test_consent_records_cannot_be_changed_or_deleted(client, api_key, funded_account_id, gateway):
    assert put(client, api_key, funded_account_id, ON).status_code == 200
    [record] = consents(funded_account_id)
    url = f"{ACCOUNTS}/{funded_account_id}/consents"
    for method in ("put", "patch", "delete", "post"):
        assert getattr(client, method)(url, headers=bearer(api_key), json={}).status_code == 405
        assert getattr(client, method)(f"{url}/{record.id}", headers=bearer(api_key), json={}).status_code == 404
    for attempt in (lambda: storage.AutoTopUpConsent.update(terms="edited").execute(),
                    lambda: storage.AutoTopUpConsent.delete().execute()):
        with pytest.raises(DatabaseError), storage.transaction():
            attempt()
    assert consents(funded_account_id)[0].terms == record.terms


def test_each_top_up_carries_the_consent_it_relied_on(auto_account_id, gateway, app):
    app.config["ADDONS_TOP_UP_MODE"] = "worker"
    [record] = consents(auto_account_id)
    ledger.record(auto_account_id, -600, "usage")
    assert execute.run_due() == 1
    [top_up] = top_ups(auto_account_id)
    assert top_up.status == "succeeded" and top_up.consent_id == record.id
    [charge] = gateway.charges.values()
    assert charge.metadata["consent_id"] == record.id
    from addon_plugin.present import top_up_body
    assert top_up_body(top_up)["consent_id"] == record.id


# -- the monthly limit ------------------------------------------------------------------------------

def test_top_ups_up_to_the_monthly_limit_succeed_and_the_next_month_resumes(app, clock, merchant_id, gateway,
                                                                             funded_account_id, received, monkeypatch):
    clock.now = datetime(2026, 3, 30, 12, 0)
    monkeypatch.setattr(ledger, "utcnow", clock)
    app.config["ADDONS_TOP_UP_MODE"] = "worker"
    # Each top-up buys one bank: 100 credits for 19.00 USD; the limit allows two (38.00), not three.
    set_auto_top_up(funded_account_id, merchant_id=merchant_id, enabled=True, threshold=THRESHOLD,
                    payment_method="pm_card_visa", monthly_limit="40.00")
    ledger.record(funded_account_id, -510, "usage")  # 490: one bank lifts it to 590
    assert execute.run_due() == 1
    ledger.record(funded_account_id, -100, "usage")  # 490 again
    assert execute.run_due() == 1
    assert len(gateway.charges) == 2
    calls = gateway.calls
    ledger.record(funded_account_id, -100, "usage")  # a third would take the month to 57.00
    assert execute.run_due() == 0 and gateway.calls == calls  # no gateway call
    refused = top_ups(funded_account_id)[-1]
    assert (refused.status, refused.failure_code) == ("failed", "monthly_limit_reached")
    [failure] = received["top_up_failed"]
    assert failure["failure"]["code"] == "monthly_limit_reached" and "40.00 USD" in failure["failure"]["message"]
    row = storage.CreditAccount.get_by_id(funded_account_id)
    assert row.top_up_failures == 0 and row.auto_top_up_enabled  # not a decline
    ledger.record(funded_account_id, -10, "usage")  # nothing more is decided this month
    assert len(top_ups(funded_account_id)) == 3
    state = ledger.get_account(funded_account_id)
    assert state.balance == 480

    clock.now = datetime(2026, 4, 1, 0, 0)  # the next UTC month: the worker ends the block and tops up
    from addon_plugin.topup import decide
    assert decide.retry_due() == 1
    assert execute.run_due() == 1
    assert top_ups(funded_account_id)[-1].status == "succeeded" and len(gateway.charges) == 3


def test_a_new_limit_lifts_the_limit_block_and_a_new_card_does_not(app, clock, merchant_id, gateway,
                                                                   funded_account_id, monkeypatch):
    monkeypatch.setattr(ledger, "utcnow", clock)
    app.config["ADDONS_TOP_UP_MODE"] = "worker"
    set_auto_top_up(funded_account_id, merchant_id=merchant_id, enabled=True, threshold=THRESHOLD,
                    payment_method="pm_card_visa", monthly_limit="10.00")
    ledger.record(funded_account_id, -600, "usage")
    assert [t.failure_code for t in top_ups(funded_account_id)] == ["monthly_limit_reached"]
    set_auto_top_up(funded_account_id, merchant_id=merchant_id, enabled=True, threshold=THRESHOLD,
                    payment_method="pm_card_mastercard", monthly_limit="10.00")  # a new card: still blocked
    assert len(top_ups(funded_account_id)) == 1
    set_auto_top_up(funded_account_id, merchant_id=merchant_id, enabled=True, threshold=THRESHOLD,
                    payment_method="pm_card_visa", monthly_limit="100.00")  # a new limit decides at once
    assert [t.status for t in top_ups(funded_account_id)] == ["failed", "pending"]


# -- the visible state -------------------------------------------------------------------------------

def test_a_decline_shows_in_the_very_next_usage_answer(app, client, api_key, merchant_id, product, clock,
                                                       funded_account_id, gateway):
    app.config["ADDONS_TOP_UP_MODE"] = "inline"
    set_auto_top_up(funded_account_id, merchant_id=merchant_id, enabled=True, threshold=THRESHOLD,
                    payment_method="pm_card_chargeDeclined")
    body = {"product_id": product.id, "buyer_email": "bob@example.com"}
    used = client.post("/api/buyer-addon/usage/add", json={**body, "value": -600}, headers=bearer(api_key))
    assert used.status_code == 200
    answer = client.post("/api/buyer-addon/usage", json=body, headers=bearer(api_key)).json["data"]["auto_top_up"]
    [top_up] = top_ups(funded_account_id)
    assert answer["consecutive_failures"] == 1
    assert answer["last_failure"]["code"] == "card_declined" and answer["last_failure"]["message"]
    assert answer["last_failure"]["at"] == storage.isoformat(top_up.completed_at)
    blocked = storage.CreditAccount.get_by_id(funded_account_id).top_up_blocked_until
    assert answer["retry_at"] == storage.isoformat(blocked) and blocked > clock()
    assert answer["last_top_up"] == {"id": top_up.id, "status": "failed", "credits": 200, "amount": "38.00",
                                     "currency": "USD", "at": storage.isoformat(top_up.completed_at)}


# -- the auditor's questions: twice, concurrently, answer lost, crash between steps -------------------

def test_the_same_switch_on_sent_concurrently_writes_one_record(app, merchant_id, funded_account_id, gateway):
    def switch_on(index: int) -> None:
        set_auto_top_up(funded_account_id, merchant_id=merchant_id, enabled=True, threshold=THRESHOLD,
                        payment_method="pm_card_visa", monthly_limit="30.00")

    assert run_concurrently(switch_on, 6, app=app) == []
    [record] = consents(funded_account_id)
    assert storage.CreditAccount.get_by_id(funded_account_id).consent_id == record.id


def test_a_replayed_request_writes_no_second_record(client, api_key, funded_account_id, gateway):
    first = put(client, api_key, funded_account_id, ON, headers={**bearer(api_key), "Idempotency-Key": "s-1"})
    again = put(client, api_key, funded_account_id, ON, headers={**bearer(api_key), "Idempotency-Key": "s-1"})
    assert first.status_code == again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert len(consents(funded_account_id)) == 1


def test_a_change_that_fails_after_the_record_leaves_neither(app, merchant_id, funded_account_id, gateway,
                                                              monkeypatch):
    from addon_plugin.topup import decide

    def crash(*args, **kwargs):
        raise RuntimeError("the process died here")

    monkeypatch.setattr(decide, "decide", crash)  # after the record and the settings were written
    with pytest.raises(RuntimeError):
        set_auto_top_up(funded_account_id, merchant_id=merchant_id, enabled=True, threshold=THRESHOLD,
                        payment_method="pm_card_visa")
    row = storage.CreditAccount.get_by_id(funded_account_id)
    assert consents(funded_account_id) == [] and (row.auto_top_up_enabled, row.consent_id) == (False, None)


@pytest.mark.parametrize("bad", ["-1", "1e3", 12.5, "1.001"])
def test_a_bad_checkout_limit_refuses_the_order_before_anything_is_granted(app, merchant_id, bad):
    from addon_plugin.errors import ValidationError

    app.config["ADDONS_PAYMENT_GATEWAY"] = "test"
    storage.Product.create(id=storage.new_id("prod"), merchant=merchant_id, name="addon", price_minor=500,
                           currency="USD", credit_amount=50, top_up_allowed=True, host_product_id="host-7")
    order = {"id": "order_1", "merchant_id": merchant_id, "buyer_email": "bob@example.com",
             "lines": [{"id": "l1", "host_product_id": "host-7", "quantity": 1}], "payment_method": "pm_card_visa",
             "auto_top_up_threshold": 20, "auto_top_up_monthly_limit": bad}
    if bad == "1.001":  # well-formed, but USD has 2 decimals: the opt-in is refused (logged), the credits granted
        app.extensions["addons"].plugin.order_paid(order, None)
        assert storage.AutoTopUpConsent.select().count() == 0
        assert storage.CreditAccount.get().auto_top_up_enabled is False
        return
    with pytest.raises(ValidationError):
        app.extensions["addons"].plugin.order_paid(order, None)
    assert storage.LedgerEntry.select().count() == 0 and storage.AutoTopUpConsent.select().count() == 0


def test_the_terms_shown_before_switching_on_are_the_terms_recorded(merchant_id, product, funded_account_id,
                                                                    gateway):
    shown = consent.terms_for(product, threshold=THRESHOLD, monthly_limit="57.00")
    set_auto_top_up(funded_account_id, merchant_id=merchant_id, enabled=True, threshold=THRESHOLD,
                    payment_method="pm_card_visa", monthly_limit="57.00")
    [record] = consents(funded_account_id)
    assert record.terms == shown and record.actor == "host"


def test_a_custom_terms_setting_is_rendered_and_a_bad_one_fails_at_start_up(app, merchant_id, product,
                                                                            funded_account_id, gateway):
    app.config["ADDONS_AUTO_TOP_UP_TERMS"] = "{merchant}: {credits} for {price} {currency} at {threshold}; " \
                                             "cap {monthly_limit}"
    set_auto_top_up(funded_account_id, merchant_id=merchant_id, enabled=True, threshold=THRESHOLD,
                    payment_method="pm_card_visa")
    assert consents(funded_account_id)[0].terms == "Acme Rockets: 100 for 19.00 USD at 500; cap none"
    for bad in ("{merchant} {card}", "{merchant", "  "):
        app.config["ADDONS_AUTO_TOP_UP_TERMS"] = bad
        with pytest.raises(ValueError, match="ADDONS_AUTO_TOP_UP_TERMS"):
            consent.check_terms(app)
