"""Where the pages are mounted, their stylesheet, and a host's template overrides."""

from __future__ import annotations

from flask import Flask

from addon_plugin import AddonPlugin, ledger, merchants
from tests.helpers import create_product


def _host(database_url: str, tmp_path, **config) -> tuple[Flask, AddonPlugin]:
    app = Flask("host", instance_path=str(tmp_path), template_folder=str(tmp_path / "templates"))
    app.config.update(TESTING=True, SECRET_KEY="s", ADDONS_DATABASE_URL=database_url, **config)
    return app, AddonPlugin(app)


def test_the_prefixes_say_where_and_none_means_not_mounted(database_url, tmp_path):
    app, _ = _host(database_url, tmp_path, ADDONS_PORTAL_PREFIX=None, ADDONS_CONSOLE_PREFIX="/admin/credits")
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    assert "/credits/" not in rules and "/admin/credits/" in rules and "/admin/credits/products" in rules
    assert not any(rule.startswith("/credits") for rule in rules)


def test_the_stylesheet_is_served_and_themed_with_custom_properties(app, client):
    css = client.get("/credits/static/addons/pages.css")
    assert css.status_code == 200 and "--addons-accent:" in css.text and "var(--addons-accent)" in css.text


def test_a_hosts_own_template_wins(database_url, tmp_path):
    override = tmp_path / "templates" / "addons" / "portal"
    override.mkdir(parents=True)
    (override / "_balance.html").write_text("<p data-host-balance>Host says {{ v.account.balance }}</p>")
    app, plugin = _host(database_url, tmp_path)
    with app.app_context():
        import storage

        storage.migrate()
        merchant, _ = merchants.create_merchant("M")
        account_id = ledger.open_account(merchant.id, create_product(merchant.id).id, "bob@example.com")
        ledger.record(account_id, 7, "purchase", reference="o")
        plugin.buyer_loader(lambda: (merchant.id, "bob@example.com"))
        page = app.test_client().get("/credits/").text
    assert "<p data-host-balance>Host says 7</p>" in page and "data-paid" not in page
    assert "Automatic top-up" in page  # the other sections are still the plugin's


def test_an_inactive_plugin_shows_no_page(app, client, account_id):
    app.config["ADDONS_ACTIVE"] = False
    for url in ("/credits/", "/credits/console/"):
        answer = client.get(url)
        assert answer.status_code == 503 and "bob@example.com" not in answer.text and "Not available" in answer.text
