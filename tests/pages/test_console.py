"""The merchant console through Flask's test client: every page, every form
(with and without a CSRF token), plain messages, confirmation steps, and
tenancy (another merchant's objects are 404 and stay unchanged)."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from html import unescape as html_unescape

import pytest

import storage
from addon_plugin import accounts, holds, ledger, merchants, worker
from addon_plugin.pages.common import when
from addon_plugin.topup import set_auto_top_up
from tests.helpers import bearer
from tests.pages.forms import field_errors, key_of, token
from webhooks import endpoints as webhook_endpoints

C = "/credits/console"


@pytest.fixture
def endpoint(merchant_id):
    """An endpoint of the merchant's, for every event type."""
    endpoint, _ = webhook_endpoints.create_endpoint(merchant_id, "http://127.0.0.1:9/hook", None, "Ours")
    return endpoint


@pytest.fixture
def delivery_id(endpoint, account_id) -> str:
    """A delivery to ``endpoint``: a balance.updated event of bob's account, not yet attempted."""
    ledger.record(account_id, 5, "adjustment", description="Gift")
    return storage.WebhookDelivery.get(storage.WebhookDelivery.endpoint == endpoint.id).id


def post(client, url: str, data: dict | None = None, *, page: str | None = None):
    """Post ``data`` with the CSRF token of ``page`` (default: ``url``)."""
    return client.post(url, data={"csrf_token": token(client, page or url), **(data or {})})


def test_a_stranger_gets_401(client, signed_in, merchant_id):
    signed_in["merchant"] = None
    for url in (f"{C}/", f"{C}/products", f"{C}/buyers", f"{C}/api-keys", f"{C}/webhooks"):
        assert client.get(url).status_code == 401
    assert client.post(f"{C}/api-keys").status_code == 401
    assert merchants.list_api_keys(merchant_id)["data"] and len(merchants.list_api_keys(merchant_id)["data"]) == 1


@pytest.mark.parametrize("path", ["/", "/products", "/products/new", "/products/{product}", "/buyers",
                                  "/buyers?email=bob@example.com", "/accounts/{account}", "/api-keys",
                                  "/api-keys/{key}/revoke", "/webhooks", "/webhooks/{endpoint}",
                                  "/webhooks/{endpoint}/rotate", "/webhooks/{endpoint}/delete",
                                  "/webhooks/{endpoint}/deliveries", "/deliveries/{delivery}"])
def test_every_page_renders_for_the_merchant(client, merchant_id, product, account_id, endpoint, delivery_id, path):
    key_id = merchants.list_api_keys(merchant_id)["data"][0]["id"]
    url = C + path.format(product=product.id, account=account_id, key=key_id, endpoint=endpoint.id,
                          delivery=delivery_id)
    page = client.get(url)
    assert page.status_code == 200 and "<main" in page.text and "Traceback" not in page.text
    assert 'name="viewport"' in page.text and "/static/addons/pages.css" in page.text


def test_every_form_carries_a_csrf_token(client, merchant_id, product, account_id, endpoint):
    for path in ("/products/new", f"/products/{product.id}", f"/accounts/{account_id}", "/api-keys", "/webhooks",
                 f"/webhooks/{endpoint.id}"):
        html = client.get(C + path).text
        forms = re.findall(r'<form method="post".*?</form>', html, re.S)
        assert forms and all('name="csrf_token"' in form for form in forms), path


# -- products -------------------------------------------------------------------------

def test_a_new_product_refuses_bad_fields_in_plain_words_and_saves_nothing(client, merchant_id):
    answer = post(client, f"{C}/products/new", {"price": "0", "credit_amount": "99999999999999999",
                                                "currency": "USD", "top_up_allowed": "true"})
    assert answer.status_code == 422
    assert field_errors(answer.text) == {"addon-price": "Enter a price above 0, like 19.00.",
                                         "addon-credit-amount": "Enter a whole number of credits above 0, like 100."}
    assert storage.Product.select().count() == 0
    form = {"price": "12.50", "credit_amount": "60", "currency": "USD", "top_up_allowed": "true",
            "overdraft_limit": "0", "idempotency_key": key_of(answer.text)}
    assert post(client, f"{C}/products/new", form).status_code == 302
    assert post(client, f"{C}/products/new", form).status_code == 302  # a double submit creates one
    assert [(p.name, p.price_minor) for p in storage.Product.select()] == [("60 credits", 1250)]


def test_switching_to_one_time_purchase_says_how_many_auto_top_ups_it_ends_first(client, merchant_id, product,
                                                                                 account_id):
    set_auto_top_up(account_id, merchant_id=merchant_id, enabled=True, threshold=10, payment_method="pm_card_visa")
    form = {"price": "19.00", "currency": "USD", "credit_amount": "100", "top_up_allowed": "false",
            "overdraft_limit": "0", "name": "100 credits"}
    url = f"{C}/products/{product.id}"
    asked = post(client, url, form)
    assert asked.status_code == 200 and "data-affected" in asked.text and "<strong>1 buyer</strong>" in asked.text
    assert storage.Product.get_by_id(product.id).top_up_allowed
    assert storage.CreditAccount.get_by_id(account_id).auto_top_up_enabled
    assert 'name="confirmed" value="yes"' in asked.text
    assert post(client, url, {**form, "confirmed": "yes"}).status_code == 302
    assert not storage.Product.get_by_id(product.id).top_up_allowed
    assert not storage.CreditAccount.get_by_id(account_id).auto_top_up_enabled


def test_a_product_change_without_a_token_is_400(client, product):
    answer = client.post(f"{C}/products/{product.id}", data={"price": "1.00", "credit_amount": "1"})
    assert answer.status_code == 400 and storage.Product.get_by_id(product.id).price_minor == 1900


# -- buyers, adjustments, grants --------------------------------------------------------

def test_buyers_and_their_accounts_show_grants_ledger_and_top_ups(client, merchant_id, account_id):
    set_auto_top_up(account_id, merchant_id=merchant_id, enabled=True, threshold=990,
                    payment_method="pm_card_chargeDeclined")
    accounts.record_usage(merchant_id, {"product_id": storage.CreditAccount.get_by_id(account_id).product_id,
                                        "buyer_email": "bob@example.com", "value": -20})
    assert "bob@example.com" in client.get(f"{C}/buyers").text
    assert "No buyer with that email." in client.get(f"{C}/buyers?email=nobody@example.com").text
    page = client.get(f"{C}/accounts/{account_id}").text
    top_ups = page.split("data-top-ups", 1)[1].split("</table>")[0]
    assert "19.00 USD" in top_ups and "card_declined" in top_ups and "failed" in top_ups
    assert "order_1" in page.split("data-ledger", 1)[1] and "data-grants" in page


def _section(html: str, marker: str) -> str:
    return html.split(marker, 1)[1].split("</section>", 1)[0]


def test_the_account_shows_available_held_and_its_holds(client, merchant_id, account_id):
    captured = holds.place(account_id, 50, description="Render a video", reference="render-1")
    holds.capture(captured["id"], merchant_id, 37)
    active = holds.place(account_id, 20, description="Another render")
    page = client.get(f"{C}/accounts/{account_id}").text
    assert "data-available>943 credits<" in page and "data-held>20 credits<" in page
    assert "data-balance>963 credits<" in page
    rows = re.findall(r"<tr>(.*?)</tr>", _section(page, "data-holds").split("<tbody>")[1], re.S)
    cells = [re.findall(r'data-label="(\w+)"[^>]*>([^<]*)<', row) for row in rows]
    assert [dict(row) for row in cells] == [
        {"Placed": when(active["created_at"]), "Amount": "20", "Status": "held",
         "Expires": when(active["expires_at"]), "Captured": "", "Description": "Another render", "Reference": ""},
        {"Placed": when(captured["created_at"]), "Amount": "50", "Status": "captured",
         "Expires": when(captured["expires_at"]), "Captured": "37", "Description": "Render a video",
         "Reference": "render-1"}]


def test_the_account_shows_its_consent_records_and_auto_top_up_state(client, merchant_id, account_id):
    accounts.set_auto_top_up(merchant_id, account_id, enabled=True, threshold=990,
                             payment_method="pm_card_chargeDeclined", monthly_limit="40.00", actor="key_abc",
                             ip="203.0.113.7", user_agent="curl/8.0")
    accounts.record_usage(merchant_id, {"product_id": storage.CreditAccount.get_by_id(account_id).product_id,
                                        "buyer_email": "bob@example.com", "value": -20})
    account = accounts.get_account(merchant_id, account_id)
    [record] = accounts.list_consents(merchant_id, account_id)["data"]
    page = client.get(f"{C}/accounts/{account_id}").text
    consents = _section(page, "data-consents")
    for shown in (when(record["created_at"]), ">key_abc<", "203.0.113.7", "curl/8.0",
                  "limit 40.00 USD a month", "19.00 USD", "pm_card_chargeDeclined"):
        assert shown in consents, shown
    assert html_unescape(re.search(r"data-terms>(.*?)</td>", consents, re.S)[1]) == record["terms"]
    state = _section(page, "data-auto-top-up")
    assert "data-monthly-limit>40.00 USD<" in state and "data-failures>1<" in state
    assert "<code>card_declined</code>" in state and when(account["auto_top_up"]["last_failure"]["at"]) in state
    assert f"data-retry-at>{when(account['auto_top_up']['retry_at'])}<" in state
    assert "failed: 100 credits for 19.00 USD" in state
    forecast = account["forecast"]
    assert (f"data-forecast>{forecast['credits_per_day']:g} credits a day; available lasts until "
            f"{when(forecast['depletes_at'])}<") in page


def test_an_account_without_holds_or_consents_says_so(client, account_id):
    page = client.get(f"{C}/accounts/{account_id}").text
    assert "No holds." in page and "auto top-up was never switched on" in page
    assert "data-forecast>No usage in the window<" in page and "data-last-failure>None<" in page


def test_an_adjustment_needs_a_reason_in_plain_words_and_is_recorded_once(client, account_id):
    url, action = f"{C}/accounts/{account_id}", f"{C}/accounts/{account_id}/adjustments"
    bad = post(client, action, {"value": "1.5", "description": " ", "idempotency_key": "k1"}, page=url)
    assert bad.status_code == 422
    assert field_errors(bad.text) == {
        "adjust-value": "Enter a whole number of credits other than 0, like 50 to add or -20 to take away.",
        "adjust-description": "Enter a short reason, up to 1000 characters."}
    page = client.get(url).text
    good = {"value": "-30", "description": "Failed render", "idempotency_key": key_of(page, action)}
    assert post(client, action, good, page=url).status_code == 302
    assert post(client, action, good, page=url).status_code == 302  # a double submit
    assert ledger.balance(account_id) == 970
    [entry] = storage.LedgerEntry.select().where(storage.LedgerEntry.kind == "adjustment")
    assert (entry.delta, entry.description, entry.actor) == (-30, "Failed render", "console")


def test_an_adjustment_past_the_overdraft_limit_is_refused_and_the_form_gets_a_new_key(client, account_id):
    url, action = f"{C}/accounts/{account_id}", f"{C}/accounts/{account_id}/adjustments"
    answer = post(client, action, {"value": "-1001", "description": "Too much", "idempotency_key": "adj-2"}, page=url)
    assert answer.status_code == 422 and "adjust-value" in field_errors(answer.text)
    assert key_of(answer.text, action) != "adj-2" and ledger.balance(account_id) == 1000


def test_a_post_without_a_token_adjusts_nothing(client, account_id):
    answer = client.post(f"{C}/accounts/{account_id}/adjustments",
                         data={"value": "5", "description": "x", "idempotency_key": "k"})
    assert answer.status_code == 400 and ledger.balance(account_id) == 1000


def test_a_promotional_grant_that_expires(client, account_id):
    url, action = f"{C}/accounts/{account_id}", f"{C}/accounts/{account_id}/grants"
    bad = post(client, action, {"amount": "-5", "expires_in_days": "0", "idempotency_key": "g1"}, page=url)
    assert bad.status_code == 422
    assert field_errors(bad.text) == {
        "grant-amount": "Enter a whole number of credits above 0, like 50.",
        "grant-expires": "Enter a whole number of days from 1 to 3650, or leave it empty for never."}
    good = {"amount": "50", "expires_in_days": "30", "description": "Welcome", "idempotency_key": "g2"}
    assert post(client, action, good, page=url).status_code == 302
    grant = storage.CreditGrant.get(storage.CreditGrant.category == "promotional")
    assert (grant.amount, grant.status, grant.description) == (50, "active", "Welcome")
    assert timedelta(days=29) < grant.expires_at - storage.utcnow() <= timedelta(days=30)
    assert "promotional" in client.get(url).text.split("data-grants", 1)[1]


# -- charts ------------------------------------------------------------------------------

def test_the_overview_charts_credits_used_and_top_up_revenue(client, merchant_id, account_id):
    set_auto_top_up(account_id, merchant_id=merchant_id, enabled=True, threshold=990, payment_method="pm_card_visa")
    accounts.record_usage(merchant_id, {"product_id": storage.CreditAccount.get_by_id(account_id).product_id,
                                        "buyer_email": "bob@example.com", "value": -20})
    page = client.get(f"{C}/").text
    assert "Used: 20 credits in 30 days" in page and "Revenue: 19.00 USD in 30 days" in page
    assert page.count("<svg") == 2


# -- API keys --------------------------------------------------------------------------

def test_an_api_key_is_shown_once_and_revoked_after_a_confirmation(app, client, merchant_id):
    created = post(client, f"{C}/api-keys")
    [key] = re.findall(r'<code id="new-key" data-new-key>(sk_[\w-]+)</code>', created.text)
    assert created.status_code == 201 and 'data-copy="new-key" hidden' in created.text
    assert key not in client.get(f"{C}/api-keys").text
    api = app.test_client()
    assert api.get("/api/addons/products", headers=bearer(key)).status_code == 200
    key_id = "key_" + key.split("_")[1]
    confirm = client.get(f"{C}/api-keys/{key_id}/revoke")
    assert "Revoke this API key?" in confirm.text and "cannot be undone" in confirm.text
    assert client.post(f"{C}/api-keys/{key_id}/revoke").status_code == 400  # no token: still works
    assert api.get("/api/addons/products", headers=bearer(key)).status_code == 200
    assert post(client, f"{C}/api-keys/{key_id}/revoke").status_code == 302
    assert api.get("/api/addons/products", headers=bearer(key)).status_code == 401


# -- webhooks --------------------------------------------------------------------------

def test_an_endpoint_is_created_with_its_secret_shown_once(client, merchant_id):
    bad = post(client, f"{C}/webhooks", {"url": "ftp://example.com/hook"})
    assert bad.status_code == 422 and field_errors(bad.text) == {"endpoint-url": "The URL must use http or https."}
    created = post(client, f"{C}/webhooks", {"url": "http://127.0.0.1:9/hook", "event_types": ["addon.purchased"]})
    [secret] = re.findall(r'data-new-secret>(whsec_[\w+/=]+)<', created.text)
    assert secret not in client.get(f"{C}/webhooks").text
    [endpoint] = webhook_endpoints.list_endpoints(merchant_id).data
    assert (endpoint.url, endpoint.event_types) == ("http://127.0.0.1:9/hook", ["addon.purchased"])


def test_an_endpoint_is_edited_disabled_rotated_and_deleted(client, merchant_id, endpoint):
    url = f"{C}/webhooks/{endpoint.id}"
    assert post(client, url, {"url": "http://127.0.0.1:8/new", "description": "New"}).status_code == 302
    changed = webhook_endpoints.get_endpoint(merchant_id, endpoint.id)
    assert (changed.url, changed.description, changed.enabled) == ("http://127.0.0.1:8/new", "New", False)
    assert post(client, url, {"url": changed.url, "enabled": "on"}).status_code == 302
    assert webhook_endpoints.get_endpoint(merchant_id, endpoint.id).enabled
    old_secret = storage.WebhookEndpoint.get_by_id(endpoint.id).secret
    rotated = post(client, f"{url}/rotate")
    [secret] = re.findall(r'data-new-secret>(whsec_[\w+/=]+)<', rotated.text)
    assert secret == storage.WebhookEndpoint.get_by_id(endpoint.id).secret != old_secret
    assert "Delete this endpoint?" in client.get(f"{url}/delete").text
    assert post(client, f"{url}/delete", page=f"{url}/delete").status_code == 302
    assert not storage.WebhookEndpoint.select().where(storage.WebhookEndpoint.id == endpoint.id).exists()


def test_a_delivery_shows_the_body_and_headers_sent_and_is_redelivered(client, endpoint, delivery_id):
    worker.run_once()  # one attempt, refused: nothing listens on port 9
    listing = client.get(f"{C}/webhooks/{endpoint.id}/deliveries").text
    assert f"/deliveries/{delivery_id}" in listing and "balance.updated" in listing
    page = client.get(f"{C}/deliveries/{delivery_id}").text
    event = storage.WebhookDelivery.get_by_id(delivery_id).event
    body = re.search(r"<pre data-body>(.*?)</pre>", page, re.S)[1]
    assert json.loads(body.replace("&#34;", '"').replace("&quot;", '"')) == json.loads(event.payload)
    assert f"<code>{event.id}</code>" in page and "webhook-signature" in page
    storage.WebhookDelivery.update(status="failed").where(storage.WebhookDelivery.id == delivery_id).execute()
    redelivered = post(client, f"{C}/deliveries/{delivery_id}/redeliver", page=f"{C}/deliveries/{delivery_id}")
    assert redelivered.status_code == 302
    assert storage.WebhookDelivery.get_by_id(delivery_id).status == "pending"


# -- tenancy ---------------------------------------------------------------------------

def test_another_merchant_sees_and_changes_none_of_it(client, signed_in, merchant_id, product, account_id, endpoint,
                                                      delivery_id, other_merchant_id):
    key_id = merchants.list_api_keys(merchant_id)["data"][0]["id"]
    signed_in["merchant"] = other_merchant_id
    for path in (f"/products/{product.id}", f"/accounts/{account_id}", f"/webhooks/{endpoint.id}",
                 f"/webhooks/{endpoint.id}/deliveries", f"/deliveries/{delivery_id}", f"/api-keys/{key_id}/revoke"):
        assert client.get(C + path).status_code == 404, path
    for path, data in ((f"/products/{product.id}", {"price": "1", "credit_amount": "1"}),
                       (f"/accounts/{account_id}/adjustments", {"value": "5", "description": "x"}),
                       (f"/accounts/{account_id}/grants", {"amount": "5"}),
                       (f"/webhooks/{endpoint.id}", {"url": "http://127.0.0.1:1/x"}),
                       (f"/webhooks/{endpoint.id}/delete", {}), (f"/webhooks/{endpoint.id}/rotate", {}),
                       (f"/deliveries/{delivery_id}/redeliver", {}), (f"/api-keys/{key_id}/revoke", {})):
        assert post(client, C + path, data, page=f"{C}/api-keys").status_code == 404, path
    assert "bob@example.com" not in client.get(f"{C}/buyers").text
    assert "data-holds" not in client.get(f"{C}/accounts/{account_id}").text
    assert "100 credits" not in client.get(f"{C}/products").text
    assert "127.0.0.1:9" not in client.get(f"{C}/webhooks").text
    assert ledger.balance(account_id) == 1005 and storage.Product.get_by_id(product.id).price_minor == 1900
    assert storage.WebhookEndpoint.get_by_id(endpoint.id).url == "http://127.0.0.1:9/hook"
    assert merchants.list_api_keys(merchant_id)["data"][0]["revoked_at"] is None
