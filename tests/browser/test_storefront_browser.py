"""The demo and the plugin's drop-in pages in a real headless Chromium: the
merchant prices a product as an add-on on the host's Pricing tab, buyers pay at
checkout with auto top-up and a monthly limit, spend credits in the studio (a
hold, then a capture, seen in the portal and the console), see a top-up with
its amount; a buyer reads the exact consent terms before switching auto top-up
on, sets a monthly limit and sees a declined card; the merchant sees the
decline and the consent record in the console, gives a promotional grant,
edits a webhook endpoint and redelivers.

Every page visited is screenshotted at 1280 and 360 px wide into
``.ci/artifacts/screenshots/`` (kept by CI, ignored by git), checked for
sideways scrolling at 360 px, and checked with axe-core (no serious or critical
violation). axe-core comes from npm into a cache outside the repository
(``AXE_CORE_JS`` names an axe.min.js to use instead); without npm that check
skips, saying why.

The demo is served on 127.0.0.1 at a free port from a thread; Debian's
``chromium`` and ``chromium-driver`` are driven by Selenium. Every wait is
bounded (``WebDriverWait``). Skips, saying why, when either binary is missing;
a failing test leaves a screenshot in ``test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import storage
from addon_plugin import ledger, products, worker
from addon_plugin.topup import consent

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOTS = ROOT / ".ci" / "artifacts" / "screenshots"
AXE_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "addon-credits" / "axe-core"
WIDTHS = (1280, 360)
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


def _axe_source() -> str | None:
    """axe-core's axe.min.js: ``AXE_CORE_JS``, else npm's package in a cache outside
    the repository (installed there once). None when npm is missing."""
    given = os.environ.get("AXE_CORE_JS")
    if given:
        return Path(given).read_text()
    script = AXE_CACHE / "node_modules" / "axe-core" / "axe.min.js"
    if not script.exists():
        npm = shutil.which("npm")
        if npm is None:
            return None
        AXE_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(AXE_CACHE),
                        "axe-core@4"], check=True, capture_output=True, timeout=300)
    return script.read_text()


@pytest.fixture(scope="module")
def axe() -> str | None:
    return _axe_source()


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

    def __init__(self, driver, base_url: str, axe: str | None = None) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.base_url, self.axe = driver, base_url, axe
        self.wait = WebDriverWait(driver, 10)
        self.seen: list[str] = []

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

    def _width(self, width: int, height: int = 900) -> None:
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})  # mobile would zoom out

    def look(self, name: str) -> None:
        """Screenshots at each width (the whole page), no sideways scrolling at
        360 px, axe-core's serious and critical violations none, labels tied."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.check_accessibility()
        for width in WIDTHS:
            self._width(width)
            height = self.driver.execute_script("return document.documentElement.scrollHeight")
            self._width(width, min(max(height, 600), 8000))
            self.driver.save_screenshot(str(SCREENSHOTS / f"{name}-{width}.png"))
            if width == 360:
                overflow = self.driver.execute_script("""
                    const limit = document.documentElement.clientWidth;
                    return document.documentElement.scrollWidth > limit
                      ? [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > limit + 1
                          && !e.closest('details:not([open])')).slice(0, 5).map(e => e.outerHTML.slice(0, 120))
                      : [];""")
                assert overflow == [], f"{name} scrolls sideways at 360 px: {overflow}"
                assert self.driver.execute_script("return document.documentElement.scrollWidth") <= 360, name
        self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        if self.axe is not None:
            assert self.axe_violations() == [], name
        self.seen.append(name)

    def axe_violations(self) -> list[str]:
        """axe-core's serious and critical violations on this page."""
        self.driver.execute_script(self.axe)
        self.driver.set_script_timeout(30)
        result = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']}).then(r => done(JSON.stringify(r.violations)))"
            ".catch(e => done(JSON.stringify([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}])));")
        return [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
                for v in json.loads(result) if v["impact"] in ("serious", "critical")]

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
def page(request, chromium, storefront, axe) -> Iterator[Page]:
    """The shared Chromium, signed out; a screenshot in test-artifacts/ if the test fails."""
    chromium.delete_all_cookies()
    failed_before = request.session.testsfailed
    yield Page(chromium, storefront[1], axe)
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



def checkout(page: Page, email: str, *, quantity: str = "1", threshold: str | None = None,
             monthly_limit: str | None = None, look: bool = False) -> None:
    """Buy Render credits at the host's checkout; lands on the plugin's portal."""
    page.open("/shop")
    page.click_link("Buy Render credits")
    page.fill("#email", email)
    page.fill("#quantity", quantity)
    if threshold is not None:
        assert not page.find("#threshold").is_displayed()
        page.find("label[for=auto_top_up]").click()
        page.until_visible("#threshold")
        page.fill("#threshold", threshold)
        if monthly_limit is not None:
            page.fill("#monthly_limit", monthly_limit)
    if look:
        page.look("checkout")
    page.find("form.panel button[type=submit]").click()
    if threshold is not None:  # the opt-in shows the exact terms first; paying is agreeing to them
        page.until_visible("#terms")
        assert f"{threshold} credits" in page.find("#terms").text
        if look:
            page.look("checkout-terms")
        page.find("form.panel button[type=submit]").click()
    page.until_text(".addons-flash", "credits added.")
    assert page.driver.current_url.endswith("/credits/")


def start_render(page: Page) -> None:
    """Start a render in the host's studio: a hold sets 50 credits aside."""
    page.open("/studio")
    page.find("[data-start-render]").click()
    page.until_text(".flash", "Rendering: 50 credits set aside")


def finish_render(page: Page) -> None:
    """Finish the studio's render: the hold is captured for the 37 it cost."""
    page.find("[data-finish-render]").click()
    page.until_text(".flash", "Rendered a video: it cost 37 credits")


def render(page: Page, times: int) -> None:
    """Whole renders: reserve, then capture (the merchant's hold and capture API calls, in process)."""
    for _ in range(times):
        start_render(page)
        finish_render(page)


def account_of(email: str) -> ledger.Account:
    addon = products.product_for_host(_merchant_id(), str(_host_product("Render credits").id))
    return ledger.get_account(ledger.find_account_id(_merchant_id(), addon.id, email))


def test_a_merchant_prices_a_product_as_an_add_on(page, app):
    page.open("/campaigns")
    page.click_link("Voice-over minutes")
    page.click_link("Edit")
    page.click_link("Pricing")
    assert not page.find("#addon-price").is_displayed()

    page.find("label[for=payment-type-addon]").click()
    for field in ("#addon-price", "#addon-credit-amount", "#addon-top-up-allowed-false", "#addon-top-up-allowed-true"):
        page.until_visible(field)
    page.look("pricing-tab")

    page.fill("#addon-price", "0")
    page.fill("#addon-credit-amount", "-5")
    page.find("form.pricing button[type=submit]").click()
    page.until_visible("#addon-price-error")
    assert page.find("#addon-price-error").text == "Enter a price above 0, like 19.00."
    assert page.find("#addon-credit-amount-error").text == "Enter a whole number of credits above 0, like 100."
    assert "addon-credit-amount-error" in page.find("#addon-credit-amount").get_attribute("aria-describedby")
    assert page.find("#addon-price").get_attribute("aria-invalid") == "true"
    page.look("pricing-tab-errors")
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
    page.open("/credits/console/products")
    page.look("console-products")


def test_a_buyer_checks_out_with_auto_top_up_spends_and_sees_the_top_up_with_its_amount(page, app):
    page.open("/credits/")
    assert "/signin?next=" in page.driver.current_url  # the host's sign-in: ADDONS_SIGN_IN_URL
    page.look("sign-in")
    checkout(page, "carol@example.com", threshold="20", monthly_limit="50.00", look=True)
    assert page.find("[data-available]").text == "100"
    assert page.find("[data-status]").text == "On: tops up at 20 credits, at most 50.00 USD a month."
    page.look("portal-after-checkout")

    start_render(page)                 # a hold sets 50 aside: available 50, the balance still 100
    page.look("studio-render-running")
    page.open("/credits/")
    assert page.find("[data-available]").text == "50" and page.find("[data-balance]").text == "100"
    assert "50 credits are set aside for work in progress" in page.find("[data-held]").text
    page.look("portal-hold")
    page.open("/studio")
    finish_render(page)                # captured 37, the other 13 back: 63
    assert account_of("carol@example.com").balance == 63
    render(page, 1)                    # its hold takes available to 13, at or below 20: a bank is bought; → 126
    page.look("studio")
    assert account_of("carol@example.com").balance == 126
    page.open("/credits/")
    top_ups = page.find("[data-top-ups]").text
    assert "19.00 USD" in top_ups and "Paid" in top_ups and "100" in top_ups
    assert page.find("[data-last-top-up]").text.startswith("Last top-up: 100 credits for 19.00 USD on ")
    assert page.find("[data-forecast]").text.startswith("At this rate (about ")
    activity = page.find("[data-activity]").text
    assert "Automatic top-up" in activity and "Rendered one video" in activity and "Bought credits" in activity
    assert "-37" in activity
    assert not re.search(r"topup_|hook:|order-\d|top_up|purchase|hold_", activity)
    assert page.find("svg[role=img] title").get_attribute("textContent").startswith("Credits used and added")
    page.look("portal-after-top-up")

    account_id = account_of("carol@example.com").id
    page.open(f"/credits/console/accounts/{account_id}")
    holds = page.find("[data-holds]").text
    assert "captured" in holds and "37" in holds and "50" in holds
    assert "hook:order_paid" in page.find("[data-consents]").text
    assert page.find("[data-monthly-limit]").text == "50.00 USD"
    page.look("console-account-holds")


def test_a_buyer_reads_the_terms_sets_a_limit_and_sees_a_declined_card_the_merchant_the_consent(page, app):
    checkout(page, "dave@example.com")
    account_id = account_of("dave@example.com").id
    form = f"form[action$='/credits/accounts/{account_id}/auto-top-up']"
    page.find(f"{form} label.choice").click()
    page.fill(f"{form} input[name=threshold]", "lots")
    page.fill(f"{form} input[name=monthly_limit]", "12.345")
    page.find(f"{form} button[type=submit]").click()
    page.until_visible(f"#att-{account_id}-threshold-error")
    error = page.find(f"#att-{account_id}-threshold-error").text
    assert error == "Enter a whole number of credits, 0 or more, like 20."
    assert page.find(f"#att-{account_id}-limit-error").text.startswith(
        "Enter the most automatic top-ups may charge in a month, in USD")
    page.look("portal-settings-error")

    page.fill(f"{form} input[name=threshold]", "80")
    page.fill(f"{form} input[name=monthly_limit]", "40")
    from selenium.webdriver.support.select import Select

    Select(page.find(f"{form} select[name=payment_method]")).select_by_value("pm_card_chargeDeclined")
    page.find(f"{form} button[type=submit]").click()
    terms = page.until_visible("[data-terms]").text  # shown before anything is switched on
    addon = products.product_for_host(_merchant_id(), str(_host_product("Render credits").id))
    assert terms == consent.terms_for(addon, threshold=80, monthly_limit="40")
    assert "40.00 USD" in terms and not account_of("dave@example.com").auto_top_up_enabled
    page.look("portal-consent-terms")
    page.find("[data-review] button[type=submit]").click()
    page.until_text(".addons-flash", "Auto top-up is on: it tops up at 80 credits, at most 40.00 USD a month.")
    render(page, 1)                    # its hold takes available to 50, at or below 80: tried and declined
    page.open("/credits/")
    notice = page.until_visible("[data-notice]").text
    assert "Your last automatic top-up failed" in notice and "declined" in notice and "What to do:" in notice
    assert "we try this card again on" in notice
    page.look("portal-declined")

    page.open("/credits/console/buyers")
    page.look("console-buyers")
    page.find(f"a[href$='/credits/console/accounts/{account_id}']").click()
    top_ups = page.until_visible("[data-top-ups]").text
    assert "card_declined" in top_ups and "19.00 USD" in top_ups and "failed" in top_ups
    record = page.find("[data-consents] tbody tr").text
    assert "buyer" in record and terms in record and "127.0.0.1" in record and "Chrome" in record
    assert page.find("[data-failures]").text == "1" and "card_declined" in page.find("[data-last-failure]").text
    page.look("console-account-declined")

    page.fill("#grant-amount", "50")
    page.fill("#grant-expires", "30")
    page.fill("#grant-description", "Sorry about the card trouble")
    page.find("form[action$='/grants'] button[type=submit]").click()
    page.until_text(".addons-flash", "Granted +50 credits")
    assert "promotional" in page.find("[data-grants]").text
    page.look("console-account-grant")
    page.open("/credits/")
    assert page.find(f"#account-{account_id} [data-promotional]").text == "50 credits"
    assert "50 promotional credits expire on" in page.find(f"#account-{account_id} [data-expiring]").text
    page.open("/credits/console/")
    page.look("console-overview")


def test_a_merchant_edits_a_webhook_endpoint_and_redelivers(page, app):
    page.open("/credits/console/api-keys")
    page.find("form[action$='/api-keys'] button[type=submit]").click()
    assert page.until_visible("[data-new-key]").text.startswith("sk_")
    assert page.find("[data-copy=new-key]").is_displayed()  # JavaScript adds the copy button
    page.look("console-api-key-created")
    page.find("a[href$='/revoke']").click()
    page.until_text("h1", "Revoke this API key?")
    page.look("console-api-key-revoke")

    page.open("/credits/console/webhooks")
    page.fill("#endpoint-url", page.base_url + "/demo/webhook-receiver")
    page.find("label[for='event-addon.purchased']").click()
    page.find("form[action$='/credits/console/webhooks'] button[type=submit]").click()
    assert page.until_visible("[data-new-secret]").text.startswith("whsec_")
    page.look("console-webhooks")
    page.find("a[href*='/credits/console/webhooks/ep_']").click()
    page.until_visible("#endpoint-description")
    page.fill("#endpoint-description", "Demo receiver")
    page.find("label[for='event-balance.updated']").click()
    page.find("form.addons-card button[type=submit]").click()
    page.until_text(".addons-flash", "Endpoint saved.")
    assert page.find("#endpoint-description").get_attribute("value") == "Demo receiver"
    page.look("console-webhook-edit")

    checkout(page, "erin@example.com")  # addon.purchased and balance.updated events
    worker.run_once()                    # what `flask addons worker --once` does
    page.open("/credits/console/webhooks")
    page.find("a[href$='/deliveries']").click()
    page.until_visible("[data-deliveries]")
    page.look("console-deliveries")
    page.find("[data-deliveries] a[href*='/credits/console/deliveries/']").click()
    body = page.until_visible("[data-body]").text
    assert '"type":' in body and "erin@example.com" in body
    assert "webhook-signature" in page.find("[data-headers]").text
    assert "204" in page.find("[data-attempts]").text
    page.look("console-delivery")
    page.find("form[action$='/redeliver'] button[type=submit]").click()
    page.until_text(".addons-flash", "queued again")
    assert page.find("[data-status]").text == "pending"
