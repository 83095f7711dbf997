"""The seed's walk-through in a real headless Chromium: the merchant prices a
product as an add-on, a buyer pays at checkout and switches auto top-up on, and
a webhook endpoint logs a delivery.

The demo is served on 127.0.0.1 at a free port from a thread; Debian's
``chromium`` and ``chromium-driver`` are driven by Selenium. Every wait is
bounded (``WebDriverWait``). Skips, saying why, when either binary is missing;
a failing test leaves a screenshot in ``test-artifacts/``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import storage
from addon_plugin import ledger, products, worker

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = ROOT / "test-artifacts"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1000")

pytestmark = pytest.mark.browser
sys.path.insert(0, str(ROOT / "examples"))


def _missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for name, path in (("Chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{name} not found at {path} (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    """One headless Chromium for the module, with a fresh profile."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def storefront(tmp_path_factory) -> Iterator[tuple[object, str]]:
    """The demo served on 127.0.0.1 at a free port: ``(app, base_url)``. SQLite in
    a temporary instance folder; the tests run the worker themselves."""
    from werkzeug.serving import make_server

    from storefront.app import create_app

    instance = tmp_path_factory.mktemp("storefront-instance")
    app = create_app({"TESTING": True, "STOREFRONT_WORKER": False}, instance_path=str(instance))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="storefront", daemon=True)
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        storage.unbind()  # later tests bind their own database


class Page:
    """The browser on the demo: bounded waits and the checks every page gets."""

    def __init__(self, driver, base_url: str) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.base_url = driver, base_url
        self.wait = WebDriverWait(driver, 10)

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def click_link(self, text: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.LINK_TEXT, text).click()

    def fill(self, css: str, value: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(value)

    def until_visible(self, css: str):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        return self.wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, css)))

    def until_text(self, css: str, text: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        self.wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))

    def check_accessibility(self) -> None:
        """Every form control has a label; every invalid one points at its error text."""
        unlabelled = self.driver.execute_script(
            "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]"
            ".filter(e => e.labels.length === 0).map(e => e.outerHTML)")
        assert unlabelled == []
        untied = self.driver.execute_script("""
            return [...document.querySelectorAll('[aria-invalid=true]')].filter(e => {
              const ids = (e.getAttribute('aria-describedby') || '').split(/\\s+/).filter(Boolean);
              return !ids.some(id => { const d = document.getElementById(id);
                                       return d && /error/.test(d.className) && d.textContent.trim(); });
            }).map(e => e.outerHTML)""")
        assert untied == []


@pytest.fixture
def page(request, chromium, storefront) -> Iterator[Page]:
    """The shared Chromium, signed out; a screenshot in test-artifacts/ if the test fails."""
    chromium.delete_all_cookies()
    failed_before = request.session.testsfailed
    yield Page(chromium, storefront[1])
    if request.session.testsfailed > failed_before:
        ARTIFACTS.mkdir(exist_ok=True)
        chromium.save_screenshot(str(ARTIFACTS / f"{request.node.name}.png"))


@pytest.fixture
def app(storefront):
    with storefront[0].app_context():
        yield storefront[0]


def _merchant_id() -> str:
    from storefront import shop

    return shop.the_shop().addons_merchant_id


def _host_product(name: str):
    from storefront import shop

    return shop.Product.get(shop.Product.name == name)


def checkout(page: Page, email: str, *, quantity: str = "1", threshold: str | None = None) -> None:
    page.open("/shop")
    page.click_link("Buy Render credits")
    page.fill("#email", email)
    page.fill("#quantity", quantity)
    if threshold is not None:
        assert not page.find("#threshold").is_displayed()
        page.find("label[for=auto_top_up]").click()
        page.until_visible("#threshold")
        page.fill("#threshold", threshold)
    page.check_accessibility()
    page.find("form.panel button[type=submit]").click()
    page.until_text(".flash", "credits added.")


def test_a_merchant_prices_a_product_as_an_add_on(page, app):
    page.open("/campaigns")
    page.click_link("Voice-over minutes")
    page.click_link("Edit")
    page.click_link("Pricing")
    assert not page.find("#addon-price").is_displayed()

    page.find("label[for=payment-type-addon]").click()
    for field in ("#addon-price", "#addon-credit-amount", "#addon-top-up-allowed-false", "#addon-top-up-allowed-true"):
        page.until_visible(field)
    page.check_accessibility()

    page.fill("#addon-price", "0")
    page.fill("#addon-credit-amount", "-5")
    page.find("form.pricing button[type=submit]").click()
    page.until_visible("#addon-price-error")
    assert page.find("#addon-price-error").text == "Must be a number greater than 0."
    assert "addon-credit-amount-error" in page.find("#addon-credit-amount").get_attribute("aria-describedby")
    assert page.find("#addon-price").get_attribute("aria-invalid") == "true"
    page.check_accessibility()
    item = _host_product("Voice-over minutes")
    assert products.product_for_host(_merchant_id(), str(item.id)) is None

    page.fill("#addon-price", "12.50")
    page.fill("#addon-credit-amount", "60")
    page.find("label[for=addon-top-up-allowed-true]").click()
    page.find("form.pricing button[type=submit]").click()
    page.until_text(".flash", "Pricing saved.")
    addon = products.product_for_host(_merchant_id(), str(item.id))
    assert (addon.price_minor, addon.currency, addon.credit_amount, addon.top_up_allowed, addon.name) == (
        1250, "USD", 60, True, "60 credits")


def test_a_buyer_pays_at_checkout_with_auto_top_up_and_sees_the_balance(page, app):
    checkout(page, "carol@example.com", quantity="2", threshold="20")
    assert page.driver.current_url.endswith("/account")
    assert page.find("[data-balance]").text == "200"
    assert page.find("[data-status]").text == "On: tops up at 20 credits."
    page.check_accessibility()


def test_a_buyer_switches_auto_top_up_on_with_a_threshold(page, app):
    checkout(page, "dave@example.com")
    form = "form.auto-top-up"
    assert page.find(f"{form} [data-status]").text == "Off."
    page.find(f"{form} label.choice").click()
    page.fill(f"{form} input[name=threshold]", "lots")
    page.find(f"{form} button[type=submit]").click()
    page.until_text(f"{form} .field-error", "Not a valid integer.")
    page.check_accessibility()

    page.fill(f"{form} input[name=threshold]", "30")
    page.find(f"{form} button[type=submit]").click()
    page.until_text(f"{form} [data-status]", "On: tops up at 30 credits.")
    addon = products.product_for_host(_merchant_id(), str(_host_product("Render credits").id))
    account = ledger.get_account(ledger.find_account_id(_merchant_id(), addon.id, "dave@example.com"))
    assert (account.auto_top_up_enabled, account.threshold, account.payment_method) == (True, 30, "pm_card_visa")


def test_a_merchant_registers_a_webhook_endpoint_and_sees_a_delivery(page, app):
    page.open("/developer")
    page.check_accessibility()
    assert page.find("#url").get_attribute("value") == page.base_url + "/demo/webhook-receiver"
    page.find("label[for='event-addon.purchased']").click()
    page.find("form[action$='/developer/webhooks'] button[type=submit]").click()
    assert page.until_visible("[data-new-secret]").text.startswith("whsec_")

    checkout(page, "erin@example.com")  # an add-on bought: an addon.purchased event
    worker.run_once()                    # what `flask addons worker --once` does

    page.open("/developer")
    page.find("a[href*='/developer/webhooks/']").click()
    page.until_visible(".delivery")
    assert page.find(".delivery h2").text == "addon.purchased succeeded"
    assert page.find(".delivery tbody td:nth-child(3)").text == "204"
    page.find(".delivery button[type=submit]").click()
    page.until_text(".flash", "queued again")
