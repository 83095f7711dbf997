"""The buyer portal through Flask's test client: who may see it, what it shows
(balances, expiries, chart, plain activity, top-ups, notices) and its auto
top-up form (CSRF, validation in plain words, only the buyer's own account)."""

from __future__ import annotations

import re
from datetime import timedelta

import storage
from addon_plugin import accounts, ledger
from addon_plugin.pages import words
from addon_plugin.topup import set_auto_top_up
from tests.helpers import create_product
from tests.pages.forms import field_errors, key_of, token

PORTAL = "/credits/"


def _settings(account_id: str) -> tuple:
    row = storage.CreditAccount.get_by_id(account_id)
    return row.auto_top_up_enabled, row.threshold, row.payment_method


def test_a_stranger_gets_401_and_no_ones_data(client, account_id, signed_in):
    signed_in["buyer"] = None
    answer = client.get(PORTAL)
    assert answer.status_code == 401 and "bob@example.com" not in answer.text and "Sign in" in answer.text
    assert client.post(f"/credits/accounts/{account_id}/auto-top-up", data={"enabled": "on"}).status_code == 401


def test_a_stranger_is_sent_to_the_hosts_sign_in_when_it_has_one(app, client, account_id, signed_in):
    signed_in["buyer"] = None
    app.config["ADDONS_SIGN_IN_URL"] = "/login"
    answer = client.get(PORTAL)
    assert answer.status_code == 302 and answer.headers["Location"] == "/login?next=%2Fcredits%2F"


def test_the_portal_shows_the_balance_split_and_what_expires_when(client, merchant_id, account_id, clock):
    expires = clock.now + timedelta(days=10)
    accounts.adjust(merchant_id, account_id, {"value": 50, "description": "Welcome bonus",
                                              "expires_at": expires.isoformat() + "Z"})
    page = client.get(PORTAL).text
    assert 'data-balance>1050<' in page
    assert "data-paid>1000 credits<" in page and "data-promotional>50 credits<" in page
    assert f"50 promotional credits expire on {expires:%d %b %Y}" in page


def test_activity_is_in_plain_words_without_kinds_ids_or_actors(client, merchant_id, account_id):
    accounts.record_usage(merchant_id, {"product_id": storage.CreditAccount.get_by_id(account_id).product_id,
                                        "buyer_email": "bob@example.com", "value": -30,
                                        "description": "Rendered one video"}, actor="key_123")
    accounts.adjust(merchant_id, account_id, {"value": 5, "description": "Sorry for the outage"})
    activity = client.get(PORTAL).text.split("data-activity", 1)[1]
    for said in ("Bought credits", "Rendered one video", "Added by the shop: Sorry for the outage"):
        assert said in activity
    for internal in ("hook:order_paid", "key_123", "order_1", "purchase<", "adjustment", "entry_", "acct_"):
        assert internal not in activity


def test_the_chart_is_server_drawn_svg_with_a_text_alternative(client, merchant_id, account_id):
    accounts.record_usage(merchant_id, {"product_id": storage.CreditAccount.get_by_id(account_id).product_id,
                                        "buyer_email": "bob@example.com", "value": -30})
    page = client.get(PORTAL).text
    svg = re.search(r"<svg.*?</svg>", page, re.S)[0]
    assert 'role="img"' in svg and "<title id=" in svg and "<desc id=" in svg and "<rect" in svg
    assert "Used: 30 credits in 30 days; Added: 1000 credits in 30 days" in page
    assert page.count('data-label="Day"') == 30  # the table alternative: one row per day
    assert "<script" not in page


def test_a_top_up_shows_with_the_amount_charged(client, merchant_id, account_id):
    set_auto_top_up(account_id, merchant_id=merchant_id, enabled=True, threshold=990, payment_method="pm_card_visa")
    accounts.record_usage(merchant_id, {"product_id": storage.CreditAccount.get_by_id(account_id).product_id,
                                        "buyer_email": "bob@example.com", "value": -20})
    top_ups = client.get(PORTAL).text.split("data-top-ups", 1)[1]
    assert "19.00 USD" in top_ups and ">100<" in top_ups and "Paid" in top_ups
    assert "topup_" not in top_ups


def test_a_declined_top_up_is_a_clear_notice_with_what_to_do(client, merchant_id, account_id):
    set_auto_top_up(account_id, merchant_id=merchant_id, enabled=True, threshold=990,
                    payment_method="pm_card_chargeDeclined")
    accounts.record_usage(merchant_id, {"product_id": storage.CreditAccount.get_by_id(account_id).product_id,
                                        "buyer_email": "bob@example.com", "value": -20})
    page = client.get(PORTAL).text
    notice = re.search(r'<div class="addons-notice error" role="alert" data-notice>(.*?)</div>', page, re.S)[1]
    assert "Your last automatic top-up failed" in notice and "your bank declined the card" in notice
    assert "19.00 USD" in notice and "No money was taken" in notice and "What to do:" in notice
    assert "card_declined" not in notice


def test_an_unresolved_top_up_says_nothing_is_charged_twice():
    notice = words.top_up_notice({"status": "unresolved", "amount": "19.00", "currency": "USD", "credits": 100},
                                 auto_on=True)
    assert notice["tone"] == "warning" and "not be charged twice" in notice["todo"]
    assert words.top_up_notice({"status": "succeeded", "amount": "1", "currency": "USD", "credits": 1},
                               auto_on=True) is None


def test_the_buyer_switches_auto_top_up_on_with_a_token_once(client, account_id):
    action = f"/credits/accounts/{account_id}/auto-top-up"
    page = client.get(PORTAL).text
    form = {"csrf_token": token(client, PORTAL), "idempotency_key": key_of(page, action), "enabled": "on",
            "threshold": "200", "payment_method": "pm_card_visa"}
    assert client.post(action, data=form).status_code == 302
    assert client.post(action, data=form).status_code == 302  # a double submit
    assert _settings(account_id) == (True, 200, "pm_card_visa")
    assert "On: tops up at 200 credits." in client.get(PORTAL).text


def test_a_post_without_a_valid_token_is_400_and_changes_nothing(client, account_id):
    action = f"/credits/accounts/{account_id}/auto-top-up"
    form = {"enabled": "on", "threshold": "200", "payment_method": "pm_card_visa"}
    for bad in ({}, {"csrf_token": "forged"}):
        answer = client.post(action, data={**form, **bad})
        assert answer.status_code == 400 and "did not come from this site" in answer.text
    assert _settings(account_id) == (False, None, None)


def test_bad_settings_are_refused_in_plain_words(client, account_id):
    action = f"/credits/accounts/{account_id}/auto-top-up"
    answer = client.post(action, data={"csrf_token": token(client, PORTAL), "enabled": "on", "threshold": "lots",
                                       "payment_method": "pm_card_visa"})
    assert answer.status_code == 422
    assert field_errors(answer.text) == {f"att-{account_id}-threshold": "Enter a whole number of credits, 0 or more, "
                                                                        "like 20."}
    assert re.search(rf'id="att-{account_id}-threshold"[^>]*aria-describedby="att-{account_id}-threshold-error" '
                     'aria-invalid="true"', answer.text)
    assert _settings(account_id) == (False, None, None)


def test_a_buyer_sees_and_changes_only_their_own_accounts(client, merchant_id, account_id, signed_in):
    other = create_product(merchant_id, name="Voice minutes")
    eves = ledger.open_account(merchant_id, other.id, "eve@example.com")
    ledger.record(eves, 70, "purchase", reference="order_2")
    page = client.get(PORTAL).text
    assert "Voice minutes" not in page and "eve@example.com" not in page
    answer = client.post(f"/credits/accounts/{eves}/auto-top-up", data={
        "csrf_token": token(client, PORTAL), "enabled": "on", "threshold": "5", "payment_method": "pm_card_visa"})
    assert answer.status_code == 404 and _settings(eves) == (False, None, None)


def test_another_merchants_buyer_with_the_same_email_sees_nothing_here(client, other_merchant_id, account_id,
                                                                       signed_in):
    signed_in["buyer"] = (other_merchant_id, "bob@example.com")
    page = client.get(PORTAL).text
    assert "You have no credits yet." in page and "data-balance" not in page
