"""A host app as a storefront would mount the plugin, served by gunicorn in the
fault suite. Reads its configuration from ``ADDONS_*`` environment variables;
``FAULT_HOST_LOG_LEVEL`` (e.g. ``DEBUG``) sends every logger's records at that
level to stderr, as a host that configures logging does.

Buyers sign in as on a real shop, into the host's own (cookie) session, which
the plugin reads through its ``buyer_loader``; the sign-in page is reduced to
``POST /fault-suite/sign-in`` with ``{"merchant_id", "buyer_email"}``.
"""

from __future__ import annotations

import logging
import os

from flask import Flask, request, session

from addon_plugin import AddonPlugin
from addon_plugin.config import from_environ

if os.environ.get("FAULT_HOST_LOG_LEVEL"):
    logging.basicConfig(level=os.environ["FAULT_HOST_LOG_LEVEL"],
                        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")

app = Flask("fault-host")
app.config["SECRET_KEY"] = os.environ.get("FAULT_HOST_SECRET_KEY", "fault-suite-only")
from_environ(app.config)
plugin = AddonPlugin(app)


@plugin.buyer_loader
def signed_in_buyer() -> tuple[str, str] | None:
    buyer = session.get("buyer")
    return (buyer[0], buyer[1]) if buyer else None


@app.post("/fault-suite/sign-in")
def sign_in():
    """Sign the buyer named in the JSON body in (the host's sign-in, reduced)."""
    body = request.get_json()
    session["buyer"] = [body["merchant_id"], body["buyer_email"]]
    return {"signed_in": session["buyer"]}
