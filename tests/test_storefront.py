"""The demo storefront, driven through Flask's test client: seeding, the Pricing
tab, checkout, sign-in, the studio, and the plugin's pages mounted on it (the
pages themselves are tested in tests/pages/)."""

from __future__ import annotations

import html
import re
import sys
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


def pay(browser, product: shop.Product, *, agree: bool = True, **form):
    """Post the checkout form; with the auto top-up opt-in, agree to the terms it shows first (``agree``)."""
    data = {"email": "ann@example.com", "quantity": "1", "payment_method": "pm_card_visa", **form}
    answer = browser.post(f"/checkout/{product.id}", data=data)
    review = re.search(r'name="checkout_id" value="(\w+)".*name="terms_digest" value="(\w+)"', answer.text, re.S)
    if agree and review:
        answer = browser.post(f"/checkout/{product.id}",
                              data={**data, "checkout_id": review.group(1), "terms_digest": review.group(2)})
    return answer


def start_render(browser, account_id: str) -> str:
    """Start a render in the studio: the id of the hold it placed."""
    assert browser.post(f"/studio/{account_id}/render").status_code == 302
    hold = storage.CreditHold
    return hold.select().where((hold.account == account_id) & (hold.status == "held")).order_by(hold.id.desc()).get().id


def render(browser, account_id: str) -> None:
    """A whole render: reserve 50 credits, then capture the 37 it cost."""
    assert browser.post(f"/studio/renders/{start_render(browser, account_id)}/finish").status_code == 302


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
    assert answer.status_code == 302 and answer.headers["Location"] == "/credits/"
    assert pay(browser, renders, quantity="2", checkout_id="chk-1").status_code == 302  # double submit
    account = account_of(merchant_id, renders)
    assert account.balance == 200 and not account.auto_top_up_enabled
    [order] = shop.Order.select()
    assert (order.total, order.currency, order.charge_id) == (38, "USD", "ch_test_000001")
    assert len(current_gateway().charges) == 1
    page = browser.get("/credits/").text
    assert "Paid 38.00 USD: 200 credits added." in page and "data-balance>200<" in page


def test_checkout_with_the_opt_in_switches_auto_top_up_on(browser, merchant_id):
    renders = product_named("Render credits")
    pay(browser, renders, auto_top_up="on", threshold="40", monthly_limit="50")
    account = account_of(merchant_id, renders)
    assert (account.auto_top_up_enabled, account.threshold, account.payment_method) == (True, 40, "pm_card_visa")
    assert storage.CreditAccount.get_by_id(account.id).monthly_limit_minor == 5000
    [record] = storage.AutoTopUpConsent.select()
    assert record.actor == "hook:order_paid" and "will not exceed 50.00 USD" in record.terms
    render(browser, account.id)  # 100 → 63
    render(browser, account.id)  # its hold takes available to 13, at or below 40: a bank is bought first; → 126
    assert ledger.balance(account.id) == 126
    page = browser.get("/credits/").text
    assert "On: tops up at 40 credits, at most 50.00 USD a month." in page and "19.00 USD" in page
    assert "Automatic top-up" in page


def test_the_opt_in_shows_the_exact_terms_and_charges_only_once_agreed(browser, merchant_id):
    renders = product_named("Render credits")
    review = pay(browser, renders, agree=False, auto_top_up="on", threshold="40", monthly_limit="50")
    assert review.status_code == 200 and "I agree: pay" in review.text
    assert current_gateway().calls == 0 and shop.Order.select().count() == 0
    shown = re.search(r"<blockquote id=\"terms\" data-terms>(.*?)</blockquote>", review.text, re.S).group(1)
    assert "19.00 USD" in shown and "40 credits" in shown and "50.00 USD" in shown
    forged = pay(browser, renders, agree=False, auto_top_up="on", threshold="40", monthly_limit="50",
                 terms_digest="0" * 64)
    assert "I agree: pay" in forged.text and current_gateway().calls == 0  # not what was shown: shown again
    pay(browser, renders, auto_top_up="on", threshold="40", monthly_limit="50")
    [record] = storage.AutoTopUpConsent.select()
    assert html.unescape(shown) == record.terms
    assert current_gateway().calls == 1 and shop.Order.select().count() == 1


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
    limit = pay(browser, product_named("Render credits"), auto_top_up="on", threshold="20", monthly_limit="12.345")
    assert field_errors(limit.text) == {
        "monthly_limit": "Enter an amount in USD above 0, like 50.00, or leave it empty for no limit."}
    assert re.search(r'id="email"[^>]*aria-describedby="email-error" aria-invalid="true"', answer.text)
    assert current_gateway().calls == 0 and shop.Order.select().count() == 0


def test_my_credits_sends_a_stranger_to_the_hosts_sign_in_and_back(browser):
    answer = browser.get("/credits/")
    assert answer.status_code == 302 and answer.headers["Location"] == "/signin?next=%2Fcredits%2F"
    page = browser.get(answer.headers["Location"]).text
    assert '<label for="signin-email">Email</label>' in page and "data-balance" not in page
    signed_in = browser.post("/signin", data={"email": "ann@example.com", "next": "/credits/"})
    assert signed_in.headers["Location"] == "/credits/"
    assert browser.get("/credits/").status_code == 200


def test_sign_in_never_redirects_off_site(browser):
    answer = browser.post("/signin", data={"email": "ann@example.com", "next": "//evil.example/"})
    assert answer.headers["Location"] == "/credits/"


def test_my_credits_shows_the_balance_and_recent_usage(browser, merchant_id):
    renders = product_named("Render credits")
    pay(browser, renders)
    account = account_of(merchant_id, renders)
    hold_id = start_render(browser, account.id)
    page = browser.get("/credits/").text
    assert "data-available>50<" in page and "<strong>50</strong> credits are set aside" in page
    assert browser.post(f"/studio/renders/{hold_id}/finish").status_code == 302
    page = browser.get("/credits/").text
    assert "data-available>63<" in page and "data-held" not in page
    assert "Rendered one video" in page and "-37" in page
    assert "Bought credits" in page and "order-" not in page and "hook:" not in page
    hold = storage.CreditHold.get_by_id(hold_id)
    assert (hold.amount, hold.status, hold.captured_amount) == (50, "captured", 37)


def test_a_cancelled_render_gives_the_credits_back(browser, merchant_id):
    renders = product_named("Render credits")
    pay(browser, renders)
    account = account_of(merchant_id, renders)
    hold_id = start_render(browser, account.id)
    assert browser.post(f"/studio/renders/{hold_id}/cancel").status_code == 302
    assert browser.post(f"/studio/renders/{hold_id}/finish").status_code == 302  # no longer running: nothing
    assert storage.CreditHold.get_by_id(hold_id).status == "released"
    assert (ledger.balance(account.id), ledger.get_account(account.id).available) == (100, 100)


def test_a_buyer_cannot_use_another_buyers_account(browser, merchant_id):
    renders = product_named("Render credits")
    pay(browser, renders, email="bob@example.com")
    bobs = account_of(merchant_id, renders, "bob@example.com")
    bobs_render = start_render(browser, bobs.id)
    browser.post("/signin", data={"email": "eve@example.com"})
    assert browser.post(f"/studio/{bobs.id}/render").status_code == 404
    for verb in ("finish", "cancel"):
        assert browser.post(f"/studio/renders/{bobs_render}/{verb}").status_code == 404
    assert ledger.balance(bobs.id) == 100 and storage.CreditHold.get_by_id(bobs_render).status == "held"


# -- the host's own endpoints -------------------------------------------------------------

def test_the_demo_mounts_the_console_for_its_merchant(browser):
    page = browser.get("/credits/console/products").text
    assert "Render credits" in page or "100 credits" in page


def test_the_webhook_receiver_answers_2xx(browser):
    assert browser.post("/demo/webhook-receiver", data=b"{}").status_code == 204
