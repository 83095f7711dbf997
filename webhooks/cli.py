"""``flask addons redeliver``: the webhook command, added to the plugin's group by ``init_app``."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from addon_plugin.cli import fail
from addon_plugin.errors import AddonError

from . import endpoints


@click.command("redeliver")
@with_appcontext
@click.argument("delivery_id")
@click.option("--merchant", "merchant_id", required=True, help="The merchant that owns the delivery.")
def redeliver(delivery_id: str, merchant_id: str) -> None:
    """Queue one more attempt of a webhook delivery, due now (same webhook-id)."""
    try:
        delivery = endpoints.redeliver(merchant_id, delivery_id)
    except AddonError as error:
        fail(error)
    click.echo(f"queued {delivery.id} (status {delivery.status})")
