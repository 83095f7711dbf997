"""A demo storefront that hosts the credit add-ons plugin the way a real host would.

Run it (SQLite databases in the instance folder, demo data seeded on first start)::

    flask --app examples/storefront/app.py run

Merchant side: Campaigns → product → Edit → Pricing → "Add on"; the plugin's
credits console at /credits/console (buyers, grants, API keys, webhooks).
Buyer side: Shop → checkout with a test card → Studio; the plugin's buyer portal
at /credits ("My credits").

Everything add-on related goes through the plugin: its hooks, its services and
its HTTP API. This package only shows where a host calls them.
"""

from __future__ import annotations

import os
import secrets
import threading
from datetime import datetime
from typing import Any

from flask import Flask, render_template

from addon_plugin import migrate, worker

from . import shop
from .addons import plugin
from .buyer import buyer
from .merchant import merchant
from .seed import seed

__all__ = ["create_app", "plugin"]


def _secret_key(instance_path: str) -> bytes:
    """A key kept in the instance folder, so sessions survive a restart."""
    path = os.path.join(instance_path, "secret_key")
    if not os.path.exists(path):
        with open(path, "wb") as file:
            file.write(secrets.token_bytes(32))
    with open(path, "rb") as file:
        return file.read()


def create_app(config: dict[str, Any] | None = None, *, instance_path: str | None = None) -> Flask:
    """The storefront app with the plugin mounted, its databases ready and seeded."""
    app = Flask(__name__, instance_path=instance_path)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.update(
        SECRET_KEY=_secret_key(app.instance_path),
        STOREFRONT_DATABASE=os.path.join(app.instance_path, "storefront.sqlite3"),
        ADDONS_PAYMENT_GATEWAY="test",      # Stripe-style test cards: pm_card_visa, pm_card_chargeDeclined, …
        ADDONS_TOP_UP_MODE="inline",        # a top-up is charged before the response that caused it
        ADDONS_WEBHOOK_ALLOW_PRIVATE_URLS=True,  # the demo's receiver runs on localhost; never in production
        ADDONS_SIGN_IN_URL="/signin",       # the plugin's pages send a stranger to the host's sign-in
    )
    app.config.update(config or {})
    plugin.init_app(app)                    # ADDONS_DATABASE_URL defaults to instance/addons.sqlite3

    shop.bind(app.config["STOREFRONT_DATABASE"])
    app.teardown_appcontext(shop.close)   # peewee opens the host's connection on first use

    app.register_blueprint(merchant)
    app.register_blueprint(buyer)
    app.add_template_filter(_when, "when")

    @app.get("/")
    def home() -> str:
        return render_template("home.html")

    @app.post("/demo/webhook-receiver")
    def webhook_receiver():
        """Where the demo's webhook endpoints point: any 2xx marks a delivery done.
        A real receiver checks the signature first: ``webhooks.verify(body, headers, secret)``."""
        return "", 204

    with app.app_context():
        migrate()                           # what `flask addons init-db` does
        seed()
    if app.config.get("STOREFRONT_WORKER", True):
        _start_worker(app)
    return app


def _when(moment: str, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """An API time (ISO 8601 in UTC, e.g. ``2026-01-31T12:00:00.123456Z``) as the pages show it."""
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).strftime(fmt)


def _start_worker(app: Flask) -> None:
    """Deliver webhooks (and retry top-ups) in a background thread, so the demo
    needs no second terminal; production runs ``flask addons worker``."""

    def run() -> None:
        with app.app_context():
            worker.run_forever(poll_interval=1.0)

    threading.Thread(target=run, name="addons-worker", daemon=True).start()
