"""The app the benchmarks serve (gunicorn) and run workers on: the plugin
mounted on a bare host, plus ``/noop`` (no database) as the ceiling of the same
stack. Every ``ADDONS_*`` environment variable becomes config (JSON values
parsed, e.g. ``ADDONS_WEBHOOK_ALLOW_PRIVATE_URLS=true``).
"""

from __future__ import annotations

from flask import Flask

from addon_plugin import AddonPlugin
from addon_plugin.config import from_environ

app = Flask("bench")
from_environ(app.config)
app.config.setdefault("ADDONS_DATABASE_POOL_SIZE", 4)
AddonPlugin(app)


@app.post("/noop")
def noop():
    """The same WSGI stack answering without touching the database."""
    return app.response_class('{"success":true}', mimetype="application/json")
