"""A host app as a storefront would mount the plugin, served by gunicorn in the
fault suite. Reads its configuration from ``ADDONS_*`` environment variables."""

from __future__ import annotations

from flask import Flask

from addon_plugin import AddonPlugin
from addon_plugin.config import from_environ

app = Flask("fault-host")
from_environ(app.config)
AddonPlugin(app)
