"""The app the HTTP benchmark serves under gunicorn: the plugin mounted on a
bare host, plus ``/noop`` (no database) as the ceiling of the same stack.

Reads ``ADDONS_DATABASE_URL`` from the environment.
"""

from __future__ import annotations

import os

from flask import Flask

from addon_plugin import AddonPlugin

app = Flask("bench")
app.config["ADDONS_DATABASE_URL"] = os.environ["ADDONS_DATABASE_URL"]
app.config["ADDONS_DATABASE_POOL_SIZE"] = int(os.environ.get("ADDONS_DATABASE_POOL_SIZE", "4"))
AddonPlugin(app)


@app.post("/noop")
def noop():
    """The same WSGI stack answering without touching the database."""
    return app.response_class('{"success":true}', mimetype="application/json")
