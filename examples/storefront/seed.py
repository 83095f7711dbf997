"""Demo data, made on the first start: a merchant (its API key printed once),
a campaign and three products, one of them already an add-on."""

from __future__ import annotations

from decimal import Decimal

from addon_plugin import merchants

from . import shop
from .addons import plugin


def seed() -> None:
    """Create the demo's shop on an empty database; do nothing on later starts."""
    if shop.Shop.select().exists():
        return
    merchant, key = merchants.create_merchant("Acme Video")
    with shop.db.atomic():
        store = shop.Shop.create(name="Acme Video", addons_merchant_id=merchant.id)
        campaign = shop.Campaign.create(name="Spring launch", description="AI video tools for small studios.")
        renders = shop.Product.create(campaign=campaign, name="Render credits", payment_type="addon",
                                      description="Credits spent per rendered minute.")
        shop.Product.create(campaign=campaign, name="Voice-over minutes", payment_type="one_time",
                            one_time_price=Decimal("9.00"), description="Synthetic voice-overs.")
        shop.Product.create(campaign=campaign, name="Studio Pro", payment_type="subscription",
                            subscription_price=Decimal("29.00"), subscription_interval="month",
                            description="Unlimited projects.")
    # The add-on's pricing lives in the plugin, saved through the same hook the Pricing tab uses.
    plugin.save_pricing(
        "addon", {"price": "19.00", "credit_amount": "100", "top_up_allowed": "true"}, None,
        merchant=store.addons_merchant_id, host_product_id=str(renders.id))
    print(f" * Demo merchant {store.name}: merchant_id {merchant.id}\n"
          f" * Its API key (shown once): {key.key}", flush=True)
