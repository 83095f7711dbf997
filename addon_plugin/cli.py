"""``flask addons …``: operators' commands. No balance math here: each calls
the ledger or a service."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import NoReturn

import click
from flask import Flask
from flask.cli import AppGroup

import storage

from . import idempotency, ledger, merchants, worker
from .errors import AddonError
from .state import get_state

addons_cli = AppGroup("addons", help="Credit add-ons: database, merchants, keys, worker.")


def fail(error: AddonError) -> NoReturn:
    """Stop the command with the error's code and message (exit status 1)."""
    raise click.ClickException(f"{error.code}: {error.message}")


@addons_cli.command("init-db")
def init_db() -> None:
    """Create or upgrade the schema (safe to run twice)."""
    applied = storage.migrate()
    version = storage.current_version()
    click.echo(f"schema at version {version}" + (f" (applied {applied})" if applied else " (up to date)"))


@addons_cli.command("create-merchant")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object and nothing else.")
def create_merchant(name: str, as_json: bool) -> None:
    """Create a merchant and print its id and a new API key (shown once)."""
    merchant, key = merchants.create_merchant(name)
    if as_json:
        click.echo(json.dumps({"merchant_id": merchant.id, "api_key": key.key}))
    else:
        click.echo(f"merchant_id: {merchant.id}\napi_key:     {key.key}\n(the key is shown only once)")


@addons_cli.command("create-api-key")
@click.argument("merchant_id")
def create_api_key(merchant_id: str) -> None:
    """Create another API key for a merchant (shown once)."""
    try:
        key = merchants.create_api_key(merchant_id)
    except AddonError as error:
        fail(error)
    click.echo(f"key_id:  {key.id}\napi_key: {key.key}\n(the key is shown only once)")


@addons_cli.command("revoke-api-key")
@click.argument("key_id")
def revoke_api_key(key_id: str) -> None:
    """Revoke an API key; requests with it are refused at once."""
    try:
        merchants.revoke_api_key(key_id)
    except AddonError as error:
        fail(error)
    click.echo(f"revoked {key_id}")


@addons_cli.command("balance")
@click.argument("account_id", required=False)
@click.option("--merchant", "merchant_id", help="With --product and --email: find the account.")
@click.option("--product", "product_id")
@click.option("--email", "buyer_email")
def balance(account_id: str | None, merchant_id: str | None, product_id: str | None,
            buyer_email: str | None) -> None:
    """Print an account's balance (by id, or by merchant, product and e-mail)."""
    if account_id is None:
        if not (merchant_id and product_id and buyer_email):
            raise click.UsageError("Give ACCOUNT_ID, or --merchant, --product and --email.")
        account_id = ledger.find_account_id(merchant_id, product_id, buyer_email)
        if account_id is None:
            raise click.ClickException("account_not_found: no such account")
    try:
        account = ledger.get_account(account_id)
    except AddonError as error:
        fail(error)
    click.echo(json.dumps({"account_id": account.id, "buyer_email": account.buyer_email,
                           "product_id": account.product_id, "balance": account.balance}))


@addons_cli.command("worker")
@click.option("--once", is_flag=True, help="Do everything due now (and retries falling due meanwhile), then exit.")
@click.option("--poll-interval", default=0.2, show_default=True,
              help="Seconds to sleep when idle (bounds the latency of new work).")
def run_worker(once: bool, poll_interval: float) -> None:
    """Deliver webhooks and run top-ups."""
    if once:
        click.echo(f"handled {worker.run_once()} item(s)")
    else:
        worker.run_forever(poll_interval)


@addons_cli.command("prune")
def prune() -> None:
    """Delete idempotent results past ADDONS_IDEMPOTENCY_TTL, and what each
    feature keeps for a while (webhook deliveries past ADDONS_WEBHOOK_PRUNE_AFTER)."""
    click.echo(f"pruned {idempotency.prune()} idempotency record(s)")
    for what, prune_some in get_state().pruners.items():
        click.echo(f"pruned {prune_some()} {what}")


def register_pruner(app: Flask, what: str, prune_some: Callable[[], int]) -> None:
    """Have ``flask addons prune`` call ``prune_some`` too, reporting how many
    ``what`` it deleted (called from a feature's ``init_app``)."""
    get_state(app).pruners[what] = prune_some
