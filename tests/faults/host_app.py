"""A host app as a storefront would mount the plugin, served by gunicorn in the
fault suite. Reads its configuration from ``ADDONS_*`` environment variables;
``FAULT_HOST_LOG_LEVEL`` (e.g. ``DEBUG``) sends every logger's records at that
level to stderr, as a host that configures logging does."""

from __future__ import annotations

import logging
import os

from flask import Flask

from addon_plugin import AddonPlugin
from addon_plugin.config import from_environ

if os.environ.get("FAULT_HOST_LOG_LEVEL"):
    logging.basicConfig(level=os.environ["FAULT_HOST_LOG_LEVEL"],
                        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")

app = Flask("fault-host")
from_environ(app.config)
AddonPlugin(app)
