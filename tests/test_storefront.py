"""The demo storefront, driven through Flask's test client: seeding, the Pricing
tab, checkout, "My credits", buyers and the developer page."""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from pathlib import Path

import pytest

import storage
from addon_plugin import ledger, products
from addon_plugin.topup import current_gateway

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from storefront import shop  # noqa: E402
from storefront.app import create_app  # noqa: E402


@pytest.fixture
def demo(database_url, tmp_path):
    """The storefront on a fresh instance folder (its plugin data in ``database_url``)."""
    from tests.helpers import empty_postgres

    if database_url.startswith("postgresql"):
        storage.bind(database_url)
        storage.migrate()
        empty_postgres()
    app = create_app({"TESTING": True, "STOREFRONT_WORKER": False, "ADDONS_DATABASE_URL": database_url},
                     instance_path=str(tmp_path / "instance"))
    with app.app_context():
        yield app
    shop.close()
    if not storage.db.is_closed():
        storage.db.close()


@pytest.fixture
def browser(demo):
    return demo.test_client()


@pytest.fixture
def merchant_id(demo) -> str:
    return shop.the_shop().addons_merchant_id


def product_named(name: str) -> shop.Product:
    return shop.Product.get(shop.Product.name == name)


def field_errors(html: str) -> dict[str, str]:
    """Error elements by id (``<id>-error``) → their text."""
    return dict(re.findall(r'class="(?:field|addon)-error" id="([\w-]+)-error">([^<]*)<', html))


def pay(browser, product: shop.Product, **form):
    data = {"email": "ann@example.com", "quantity": "1", "payment_method": "pm_card_visa", **form}
    return browser.post(f"/checkout/{product.id}", data=data)


def account_of(merchant_id: str, product: shop.Product, email: str = "ann@example.com") -> ledger.Account:
    addon = products.product_for_host(merchant_id, str(product.id))
    return ledger.get_account(ledger.find_account_id(merchant_id, addon.id, email))


# -- seeding -------------------------------------------------------------------------

def test_the_first_start_seeds_a_merchant_and_an_addon_and_prints_its_key(capsys, demo, merchant_id):
    printed = capsys.readouterr().out
    assert f"merchant_id {merchant_id}" in printed and re.search(r"API key \(shown once\): sk_\w+", printed)
    addon = products.product_for_host(merchant_id, str(product_named("Render credits").id))
    assert (addon.price_minor, addon.credit_amount, addon.top_up_allowed) == (1900, 100, True)


def test_a_second_start_seeds_nothing(demo, merchant_id, capsys, tmp_path):
    capsys.readouterr()
    again = create_app({"TESTING": True, "STOREFRONT_WORKER": False,
                        "ADDONS_DATABASE_URL": demo.config["ADDONS_DATABASE_URL"]},
                       instance_path=str(tmp_path / "instance"))
    assert capsys.readouterr().out == ""
    assert again.config["SECRET_KEY"] == demo.config["SECRET_KEY"]  # sessions survive restarts
    assert storage.Merchant.select().where(storage.Merchant.name == "Acme Video").count() == 1


# -- the Pricing tab ---------------------------------------------------------------------

def test_the_pricing_tab_offers_the_hosts_types_and_the_plugins_add_on(browser):
    item = product_named("Voice-over minutes")
    html = browser.get(f"/campaigns/{item.campaign_id}/products/{item.id}/edit?tab=pricing").text
    assert re.findall(r'id="payment-type-(\w+)"', html) == ["one_time", "subscription", "addon"]
    assert '<label class="choice" for="payment-type-addon">' in html
    assert 'id="payment-type-one_time" value="one_time" checked' in html
    for name in ("addon-price", "addon-credit-amount", "addon-top-up-allowed-false", "addon-top-up-allowed-true"):
        assert f'for="{name}"' in html  # every add-on field is labelled


def test_saving_bad_add_on_pricing_shows_each_error_and_saves_nothing(browser, merchant_id):
    item = product_named("Voice-over minutes")
    answer = browser.post(f"/campaigns/{item.campaign_id}/products/{item.id}/edit?tab=pricing",
                          data={"payment_type": "addon", "price": "0", "credit_amount": "ten", "currency": "USD",
                                "top_up_allowed": "false", "overdraft_limit": "0"})
    assert answer.status_code == 422
    errors = field_errors(answer.text)
    assert set(errors) == {"addon-price", "addon-credit-amount"}
    assert 'value="0"' in answer.text and 'value="ten"' in answer.text  # what was typed stays
    assert re.search(r'id="addon-price"[^>]*aria-describedby="addon-price-help addon-price-error"', answer.text)
    assert 'id="payment-type-addon" value="addon" checked' in answer.text
    assert products.product_for_host(merchant_id, str(item.id)) is None
    assert shop.Product.get_by_id(item.id).payment_type == "one_time"


def test_saving_good_add_on_pricing_creates_the_add_on(browser, merchant_id):
    item = product_named("Voice-over minutes")
    url = f"/campaigns/{item.campaign_id}/products/{item.id}/edit?tab=pricing"
    answer = browser.post(url, data={"payment_type": "addon", "price": "12.50", "credit_amount": "60",
                                     "currency": "EUR", "top_up_allowed": "true", "overdraft_limit": "5",
                                     "name": "", "one_time_price": "9.00"})
    assert answer.status_code == 302 and answer.headers["Location"] == url
    addon = products.product_for_host(merchant_id, str(item.id))
    assert (addon.name, addon.price_minor, addon.currency, addon.credit_amount, addon.top_up_allowed,
            addon.overdraft_limit) == ("60 credits", 1250, "EUR", 60, True, 5)
    assert shop.Product.get_by_id(item.id).payment_type == "addon"
    page = browser.get(url).text
    assert "Pricing saved." in page and 'id="addon-price" value="12.50"' in page


def test_the_hosts_own_payment_types_are_validated_by_the_host(browser):
    item = product_named("Studio Pro")
    url = f"/campaigns/{item.campaign_id}/products/{item.id}/edit?tab=pricing"
    answer = browser.post(url, data={"payment_type": "one_time", "one_time_price": "-1"})
    assert answer.status_code == 422 and set(field_errors(answer.text)) == {"one_time_price"}
    assert browser.post(url, data={"payment_type": "one_time", "one_time_price": "49.00"}).status_code == 302
    assert shop.Product.get_by_id(item.id).payment_type == "one_time"


def test_an_inactive_plugin_leaves_only_the_hosts_types(demo, browser):
    demo.config["ADDONS_ACTIVE"] = False
    item = product_named("Studio Pro")
    html = browser.get(f"/campaigns/{item.campaign_id}/products/{item.id}/edit?tab=pricing").text
    assert re.findall(r'id="payment-type-(\w+)"', html) == ["one_time", "subscription"]
    assert "addon-price" not in html


# -- checkout and "My credits" -------------------------------------------------------------

def test_checkout_charges_the_test_card_and_grants_the_credits_once(demo, browser, merchant_id):
    renders = product_named("Render credits")
    answer = pay(browser, renders, quantity="2", checkout_id="chk-1")
    assert answer.status_code == 302 and answer.headers["Location"] == "/account"
    assert pay(browser, renders, quantity="2", checkout_id="chk-1").status_code == 302  # double submit
    account = account_of(merchant_id, renders)
    assert account.balance == 200 and not account.auto_top_up_enabled
    [order] = shop.Order.select()
    assert (order.total, order.currency, order.charge_id) == (38, "USD", "ch_test_000001")
    assert len(current_gateway().charges) == 1
    page = browser.get("/account").text
    assert "Paid 38.00 USD: 200 credits added." in page and "data-balance>200<" in page


def test_checkout_with_the_opt_in_switches_auto_top_up_on(browser, merchant_id):
    renders = product_named("Render credits")
    pay(browser, renders, auto_top_up="on", threshold="40")
    account = account_of(merchant_id, renders)
    assert (account.auto_top_up_enabled, account.threshold, account.payment_method) == (True, 40, "pm_card_visa")
    for _ in range(3):                                      # 100 → 25: at or below 40, so one bank is bought
        browser.post(f"/account/{account.id}/render")
    assert ledger.balance(account.id) == 125
    assert "On: tops up at 40 credits." in browser.get("/account").text


def test_a_declined_card_records_nothing(browser, merchant_id):
    answer = pay(browser, product_named("Render credits"), payment_method="pm_card_chargeDeclined")
    assert answer.status_code == 422
    assert field_errors(answer.text) == {"payment_method": "Your card was declined."}
    assert shop.Order.select().count() == 0 and storage.LedgerEntry.select().count() == 0


def test_bad_checkout_fields_are_shown_per_field_and_nothing_is_charged(browser):
    answer = pay(browser, product_named("Render credits"), email="ann", quantity="0", auto_top_up="on",
                 threshold="-3")
    assert answer.status_code == 422
    assert set(field_errors(answer.text)) == {"email", "quantity", "threshold"}
    assert re.search(r'id="email"[^>]*aria-describedby="email-error" aria-invalid="true"', answer.text)
    assert current_gateway().calls == 0 and shop.Order.select().count() == 0


def test_my_credits_asks_a_stranger_to_sign_in(browser):
    page = browser.get("/account").text
    assert '<label for="signin-email">Email</label>' in page and "data-balance" not in page


def test_my_credits_shows_the_balance_and_recent_usage(browser, merchant_id):
    renders = product_named("Render credits")
    pay(browser, renders)
    account = account_of(merchant_id, renders)
    browser.post(f"/account/{account.id}/render")
    page = browser.get("/account").text
    assert "data-balance>75<" in page and "Rendered one video" in page and "-25" in page


def test_a_buyer_cannot_use_another_buyers_account(browser, merchant_id):
    renders = product_named("Render credits")
    pay(browser, renders, email="bob@example.com")
    bobs = account_of(merchant_id, renders, "bob@example.com")
    browser.post("/signin", data={"email": "eve@example.com"})
    assert browser.post(f"/account/{bobs.id}/render").status_code == 404
    assert ledger.balance(bobs.id) == 100


# -- the merchant's buyers page ----------------------------------------------------------------

def test_a_manual_adjustment_needs_a_reason_and_is_recorded_once(browser, merchant_id):
    renders = product_named("Render credits")
    pay(browser, renders)
    account = account_of(merchant_id, renders)
    assert "ann@example.com" in browser.get("/buyers").text
    bad = browser.post(f"/buyers/{account.id}", data={"value": "1.5", "description": " ", "idempotency_key": "k"})
    assert bad.status_code == 422 and set(field_errors(bad.text)) == {"value", "description"}
    good = {"value": "-30", "description": "Refund of a failed render", "idempotency_key": "adj-1"}
    assert browser.post(f"/buyers/{account.id}", data=good).status_code == 302
    assert browser.post(f"/buyers/{account.id}", data=good).status_code == 302  # a double submit
    [entry] = storage.LedgerEntry.select().where(storage.LedgerEntry.kind == "adjustment")
    assert (entry.delta, entry.description, entry.actor) == (-30, "Refund of a failed render", "storefront:merchant")
    page = browser.get(f"/buyers/{account.id}").text
    assert "Refund of a failed render" in page and "data-balance>70<" in page


def test_the_merchant_gives_a_promotional_grant_that_expires(browser, merchant_id):
    renders = product_named("Render credits")
    pay(browser, renders)
    account = account_of(merchant_id, renders)
    bad = browser.post(f"/buyers/{account.id}", data={"value": "50", "description": "Welcome",
                                                      "expires_in_days": "0", "idempotency_key": "adj-3"})
    assert bad.status_code == 422 and "expires_in_days" in field_errors(bad.text)
    good = {"value": "50", "description": "Welcome", "expires_in_days": "30", "idempotency_key": "adj-4"}
    assert browser.post(f"/buyers/{account.id}", data=good).status_code == 302
    grant = storage.CreditGrant.get(storage.CreditGrant.category == "promotional")
    assert (grant.amount, grant.status) == (50, "active")
    assert timedelta(days=29) < grant.expires_at - storage.utcnow() <= timedelta(days=30)
    page = browser.get(f"/buyers/{account.id}").text
    assert "promotional" in page and grant.expires_at.strftime("%Y-%m-%d") in page


def test_an_adjustment_past_the_overdraft_limit_is_refused(browser, merchant_id):
    renders = product_named("Render credits")
    pay(browser, renders)
    account = account_of(merchant_id, renders)
    answer = browser.post(f"/buyers/{account.id}", data={"value": "-101", "description": "Too much",
                                                         "idempotency_key": "adj-2"})
    assert answer.status_code == 422 and "value" in field_errors(answer.text)
    assert ledger.balance(account.id) == 100
    [fresh_key] = re.findall(r'name="idempotency_key" value="(\w+)"', answer.text)
    assert fresh_key != "adj-2"   # the refusal is kept for adj-2: a corrected try is a new request
    corrected = browser.post(f"/buyers/{account.id}", data={"value": "-60", "description": "Less",
                                                            "idempotency_key": fresh_key})
    assert corrected.status_code == 302 and ledger.balance(account.id) == 40


# -- the developer page --------------------------------------------------------------------------

def test_an_api_key_is_shown_once_and_works_until_revoked(browser):
    created = browser.post("/developer/api-keys")
    [key] = re.findall(r"<code data-new-key>(sk_[\w-]+)</code>", created.text)
    assert key not in browser.get("/developer").text
    headers = {"Authorization": f"Bearer {key}"}
    assert browser.get("/api/addons/products", headers=headers).status_code == 200
    key_id = "key_" + key.split("_")[1]
    assert browser.post(f"/developer/api-keys/{key_id}/revoke").status_code == 302
    assert browser.get("/api/addons/products", headers=headers).status_code == 401


def test_a_webhook_endpoint_shows_its_secret_once_and_logs_deliveries(browser, merchant_id):
    bad = browser.post("/developer/webhooks", data={"url": "ftp://example.com/hook"})
    assert bad.status_code == 422 and "url" in field_errors(bad.text)
    created = browser.post("/developer/webhooks", data={"url": "http://localhost/demo/webhook-receiver",
                                                        "event_types": ["addon.purchased"]})
    [secret] = re.findall(r"<code data-new-secret>(whsec_[\w+/=]+)</code>", created.text)
    developer = browser.get("/developer").text
    assert secret not in developer
    [endpoint_id] = re.findall(r"/developer/webhooks/(ep_\w+)", developer)
    pay(browser, product_named("Render credits"))
    log = browser.get(f"/developer/webhooks/{endpoint_id}").text
    assert log.count("data-delivery=") == 1 and "<code>addon.purchased</code>" in log
    [delivery_id] = re.findall(r'data-delivery="(\w+)"', log)
    assert browser.post(f"/developer/deliveries/{delivery_id}/redeliver").status_code == 302
    assert storage.WebhookDelivery.get_by_id(delivery_id).status == "pending"


def test_the_webhook_receiver_answers_2xx(browser):
    assert browser.post("/demo/webhook-receiver", data=b"{}").status_code == 204
