"""The buyer portal through Flask's test client: who may see it, what it shows
(balances, expiries, chart, plain activity, top-ups, notices) and its auto
top-up form (CSRF, validation in plain words, only the buyer's own account)."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape as html_unescape

import pytest

import storage
from addon_plugin import accounts, holds, ledger
from addon_plugin.pages import words
from addon_plugin.pages.common import when
from addon_plugin.topup import consent, monthly, set_auto_top_up
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
    state = {"enabled": True, "retry_at": None, "last_failure": None, "monthly_limit": None,
             "last_top_up": {"status": "unresolved", "amount": "19.00", "currency": "USD", "credits": 100}}
    notice = words.top_up_notice(state, when=when)
    assert notice["tone"] == "warning" and "not be charged twice" in notice["todo"]
    state["last_top_up"] = {**state["last_top_up"], "status": "succeeded"}
    assert words.top_up_notice(state, when=when) is None
    assert words.top_up_notice({**state, "last_top_up": None}, when=when) is None


def _switch_on(client, account_id: str, **fields: str):
    """Post the auto top-up form switching on: the answer (the terms to agree to, or a refusal)."""
    page = client.get(PORTAL).text
    action = f"/credits/accounts/{account_id}/auto-top-up"
    form = {"csrf_token": token(client, PORTAL), "idempotency_key": key_of(page, action), "enabled": "on",
            "threshold": "200", "payment_method": "pm_card_visa", **fields}
    return client.post(action, data=form)


def _review(html: str) -> dict[str, str]:
    """The terms form's hidden fields (what agreeing posts), and the terms shown (``terms``)."""
    review = re.search(r"<form[^>]*data-review>(.*?)</form>", html, re.S)[1]
    fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', review))
    fields["terms"] = html_unescape(re.search(r"<blockquote[^>]*data-terms>(.*?)</blockquote>", review, re.S)[1])
    return fields


def _agree(html: str) -> dict[str, str]:
    return {name: value for name, value in _review(html).items() if name != "terms"}


def test_switching_on_shows_the_exact_terms_first_and_records_them_when_agreed(client, account_id, product):
    action = f"/credits/accounts/{account_id}/auto-top-up"
    shown = _switch_on(client, account_id, monthly_limit="50")
    assert shown.status_code == 200 and _settings(account_id) == (False, None, None)
    review = _review(shown.text)
    assert review["terms"] == consent.terms_for(product, threshold=200, monthly_limit="50")
    assert "Acme Rockets" in review["terms"] and "50.00 USD in any calendar month" in review["terms"]
    headers = {"User-Agent": "Mozilla/5.0 (portal test)"}
    assert client.post(action, data=_agree(shown.text), headers=headers).status_code == 302
    assert client.post(action, data=_agree(shown.text), headers=headers).status_code == 302  # a double submit
    assert _settings(account_id) == (True, 200, "pm_card_visa")
    [record] = storage.AutoTopUpConsent.select()
    assert record.terms == review["terms"]  # byte for byte what the buyer read
    assert (record.actor, record.ip, record.user_agent, record.monthly_limit_minor) == (
        "buyer", "127.0.0.1", "Mozilla/5.0 (portal test)", 5000)
    page = client.get(PORTAL).text
    assert "On: tops up at 200 credits, at most 50.00 USD a month." in page
    agreed = re.search(r"<details data-agreed>.*?<blockquote>(.*?)</blockquote>", page, re.S)[1]
    assert html_unescape(agreed) == record.terms


def test_saving_the_same_settings_again_needs_no_new_agreement(client, account_id):
    shown = _switch_on(client, account_id, monthly_limit="50.00")
    assert client.post(f"/credits/accounts/{account_id}/auto-top-up", data=_agree(shown.text)).status_code == 302
    again = _switch_on(client, account_id, monthly_limit="50")
    assert again.status_code == 302 and storage.AutoTopUpConsent.select().count() == 1


def test_terms_that_changed_since_they_were_shown_are_shown_again(client, account_id, product):
    shown = _switch_on(client, account_id)
    storage.Product.update(price_minor=2500).where(storage.Product.id == product.id).execute()
    again = client.post(f"/credits/accounts/{account_id}/auto-top-up", data=_agree(shown.text))
    assert again.status_code == 200 and "The terms changed since you read them" in again.text
    assert "25.00 USD" in _review(again.text)["terms"]
    assert _settings(account_id) == (False, None, None) and storage.AutoTopUpConsent.select().count() == 0


def test_switching_off_needs_no_agreement(client, merchant_id, account_id):
    set_auto_top_up(account_id, merchant_id=merchant_id, enabled=True, threshold=10, payment_method="pm_card_visa")
    answer = client.post(f"/credits/accounts/{account_id}/auto-top-up", data={
        "csrf_token": token(client, PORTAL), "threshold": "10", "payment_method": "pm_card_visa"})
    assert answer.status_code == 302 and _settings(account_id)[0] is False
    assert [row.actor for row in storage.AutoTopUpConsent.select().order_by(storage.AutoTopUpConsent.created_at)] \
        == ["host", "buyer"]


@pytest.mark.parametrize("limit", ["lots", "0", "-5", "12.345", "1e3"])
def test_a_bad_monthly_limit_is_refused_in_plain_words(client, account_id, limit):
    answer = _switch_on(client, account_id, monthly_limit=limit)
    assert answer.status_code == 422
    assert field_errors(answer.text) == {f"att-{account_id}-limit": (
        "Enter the most automatic top-ups may charge in a month, in USD, above 0 with at most 2 decimal places, "
        "like 50.00; or leave it empty for no limit.")}
    assert re.search(rf'id="att-{account_id}-limit"[^>]*aria-describedby="att-{account_id}-limit-help '
                     f'att-{account_id}-limit-error" aria-invalid="true"', answer.text)
    assert _settings(account_id) == (False, None, None) and storage.AutoTopUpConsent.select().count() == 0


def test_the_terms_form_needs_a_valid_token_too(client, account_id):
    shown = _switch_on(client, account_id)
    agreed = {name: value for name, value in _agree(shown.text).items() if name != "csrf_token"}
    answer = client.post(f"/credits/accounts/{account_id}/auto-top-up", data=agreed)
    assert answer.status_code == 400 and _settings(account_id) == (False, None, None)


def test_the_headline_is_available_with_the_held_credits_said(client, account_id):
    assert "data-held" not in client.get(PORTAL).text
    holds.place(account_id, 50, description="Render")
    page = client.get(PORTAL).text
    assert "data-available>950<" in page and "data-balance>1000<" in page
    assert re.search(r"<p data-held><strong>50</strong> credits are set aside for work in", page)


def test_a_monthly_limit_that_stops_a_top_up_says_so_and_when_it_resumes(client, merchant_id, account_id):
    set_auto_top_up(account_id, merchant_id=merchant_id, enabled=True, threshold=990, payment_method="pm_card_visa",
                    monthly_limit="10.00")
    accounts.record_usage(merchant_id, {"product_id": storage.CreditAccount.get_by_id(account_id).product_id,
                                        "buyer_email": "bob@example.com", "value": -20})
    page = client.get(PORTAL).text
    notice = re.search(r'<div class="addons-notice warning" role="status" data-notice>(.*?)</div>', page, re.S)[1]
    resumes = monthly.next_month(storage.utcnow())
    assert "Your monthly limit stopped an automatic top-up" in notice and "limit of 10.00 USD" in notice
    assert "No money was taken" in notice and "Raise or remove the monthly limit" in notice
    assert f"start again on {resumes:%d %b %Y}, 00:00 UTC" in notice and "monthly_limit_reached" not in notice


def test_a_declined_card_says_when_it_is_tried_again(client, merchant_id, account_id):
    set_auto_top_up(account_id, merchant_id=merchant_id, enabled=True, threshold=990,
                    payment_method="pm_card_chargeDeclined")
    accounts.record_usage(merchant_id, {"product_id": storage.CreditAccount.get_by_id(account_id).product_id,
                                        "buyer_email": "bob@example.com", "value": -20})
    retry_at = accounts.get_account(merchant_id, account_id)["auto_top_up"]["retry_at"]
    notice = re.search(r"data-notice>(.*?)</div>", client.get(PORTAL).text, re.S)[1]
    assert retry_at and f"we try this card again on {when(retry_at)}" in notice


def test_the_last_top_up_and_the_forecast_are_shown(client, merchant_id, account_id):
    set_auto_top_up(account_id, merchant_id=merchant_id, enabled=True, threshold=990, payment_method="pm_card_visa")
    accounts.record_usage(merchant_id, {"product_id": storage.CreditAccount.get_by_id(account_id).product_id,
                                        "buyer_email": "bob@example.com", "value": -20})
    account = accounts.get_account(merchant_id, account_id)
    page = client.get(PORTAL).text
    last = " ".join(re.search(r"<p data-last-top-up>(.*?)</p>", page, re.S)[1].split())
    assert last.startswith("Last top-up: 100 credits for 19.00 USD on ")
    forecast = re.search(r"<p data-forecast>(.*?)</p>", page)[1]
    assert forecast == (f"At this rate (about {account['forecast']['credits_per_day']:g} credits a day) your "
                        f"credits last until {when(account['forecast']['depletes_at'], '%d %b %Y')}.")


def test_the_buyer_switches_auto_top_up_on_with_a_token_once(client, account_id):
    action = f"/credits/accounts/{account_id}/auto-top-up"
    shown = _switch_on(client, account_id)
    assert client.post(action, data=_agree(shown.text)).status_code == 302
    assert client.post(action, data=_agree(shown.text)).status_code == 302  # a double submit
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
