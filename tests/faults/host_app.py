"""A host app as a storefront would mount the plugin, served by gunicorn in the
fault suite. Reads its configuration from ``ADDONS_*`` environment variables."""

from __future__ import annotations

import json
import os

from flask import Flask

from addon_plugin import AddonPlugin

app = Flask("fault-host")
for name, value in os.environ.items():
    if name.startswith("ADDONS_"):
        try:
            app.config[name] = json.loads(value)
        except ValueError:
            app.config[name] = value
AddonPlugin(app)
