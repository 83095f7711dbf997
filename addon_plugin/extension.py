"""The Flask extension: the one place where the pieces are wired together."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

from flask import Flask

import storage

from . import config, forecast, grants, holds, pages, topup
from .hooks import HostHooks
from .state import AddonsState

__all__ = ["AddonPlugin"]

log = logging.getLogger(__name__)


class AddonPlugin(HostHooks):
    """Credit add-ons for a Flask storefront, in the Flask-extension shape::

        plugin = AddonPlugin()      # or AddonPlugin(app)
        plugin.init_app(app)

    Configuration precedence: keys the host set in ``app.config`` win over a
    ``configuration`` list given here (Saleor's ``[{"name", "value"}]``), which
    wins over :data:`addon_plugin.config.DEFAULTS`.

    The database is bound process-wide (Peewee models share one proxy): apps in
    one process share ``ADDONS_DATABASE_URL``, while their signals stay apart
    (each subscriber is connected with ``sender=app``).

    The host-facing hooks and loaders come from :class:`~addon_plugin.hooks.HostHooks`.
    """

    PLUGIN_ID = "addons.credits"
    PLUGIN_NAME = "Credit add-ons"
    DEFAULT_ACTIVE = True
    #: Saleor-style settings: every ``ADDONS_*`` key (the source of truth) with its default.
    DEFAULT_CONFIGURATION = config.DEFAULT_CONFIGURATION
    #: How a Saleor-style settings page shows each setting ("Secret": write-only, never echoed).
    CONFIG_STRUCTURE = config.CONFIG_STRUCTURE

    def __init__(self, app: Flask | None = None, *,
                 configuration: Iterable[Mapping[str, Any]] | None = None) -> None:
        self.configuration = {item["name"]: item["value"] for item in configuration or ()}
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Apply config defaults, bind the database, mount the blueprint, add the
        ``flask addons`` commands, connect the plugin's own signal subscribers
        and keep the app's state in ``app.extensions["addons"]``. Once per app:
        a second call raises :class:`RuntimeError`.

        Reads these keys, each set with ``app.config.setdefault`` (a key the
        host set wins over ``configuration``, which wins over the default):

        {keys}
        """
        if "addons" in app.extensions:
            raise RuntimeError(f"The credit add-ons plugin is already mounted on the app {app.name!r}; "
                               "init_app runs once per app.")
        for key, default in config.DEFAULTS.items():  # a copy: no app may change another's list
            app.config.setdefault(key, self.configuration[key] if key in self.configuration else copy.deepcopy(default))
        if not app.config["ADDONS_DATABASE_URL"]:
            path = os.path.join(app.instance_path, "addons.sqlite3")
            app.config["ADDONS_DATABASE_URL"] = f"sqlite:///{path}"
        app.extensions["addons"] = AddonsState(plugin=self)

        storage.bind(app.config["ADDONS_DATABASE_URL"], pool_size=app.config["ADDONS_DATABASE_POOL_SIZE"],
                     prepare=app.config["ADDONS_DATABASE_PREPARE"])
        app.teardown_appcontext(_close_connection)

        import webhooks  # it depends on the plugin, never the other way round: wired here only

        from .api import create_blueprint, install_error_pages
        from .cli import addons_cli

        app.register_blueprint(create_blueprint(), url_prefix=app.config["ADDONS_URL_PREFIX"])
        install_error_pages(app)
        app.cli.add_command(addons_cli)
        # Features that subscribe to signals or add worker tasks wire themselves here.
        topup.init_app(app)
        grants.init_app(app)
        holds.init_app(app)
        forecast.init_app(app)
        webhooks.init_app(app)
        pages.init_app(app)  # the buyer portal and merchant console, where their prefixes say


def _keys_read() -> str:
    """The keys ``init_app`` reads, for its docstring: one line each, with its default."""
    return "\n        ".join(f"- ``{name}`` ({setting.default!r}): {setting.help}"
                              for name, setting in config.SETTINGS.items())


AddonPlugin.init_app.__doc__ = (AddonPlugin.init_app.__doc__ or "").replace("{keys}", _keys_read())


def _close_connection(exc: BaseException | None) -> None:
    """Give the request's connection back to the pool. A connection the database
    dropped is discarded by the pool, so the next request gets a fresh one."""
    database = storage.db.obj
    if database is None or database.is_closed():
        return
    try:
        database.close()
    except Exception:  # e.g. the server went away mid-request
        log.warning("could not return the database connection cleanly", exc_info=True)
        database.dispose()
