"""The plugin object, made once and mounted by ``create_app`` (Flask's
extensions-module pattern): the demo's blueprints import it from here.

The loaders tell the plugin who is signed in; a real host reads its own session.
"""

from __future__ import annotations

from flask import session

from addon_plugin import AddonPlugin

from . import shop

__all__ = ["plugin"]

#: Stripe's test payment methods, as the "test" gateway understands them.
TEST_CARDS = [
    ("pm_card_visa", "Visa •••• 4242 (succeeds)"),
    ("pm_card_chargeDeclined", "Visa •••• 0002 (declined)"),
    ("pm_card_authenticationRequired", "Visa •••• 3155 (needs authentication)"),
]

#: The plugin, mounted on each app by :func:`storefront.app.create_app`.
plugin = AddonPlugin()


@plugin.merchant_loader
def _signed_in_merchant() -> str | None:
    """The demo's merchant is always signed in; a platform would read its session."""
    return shop.the_shop().addons_merchant_id


@plugin.buyer_loader
def _signed_in_buyer() -> tuple[str, str] | None:
    email = session.get("buyer_email")
    return (shop.the_shop().addons_merchant_id, email) if email else None


@plugin.payment_methods_loader
def _saved_cards() -> list[tuple[str, str]]:
    """The cards the buyer portal offers for auto top-up; a real host lists the buyer's saved cards."""
    return TEST_CARDS
