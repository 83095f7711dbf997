"""Drop-in pages: the buyer portal and the merchant console (SPEC §14).

Server-rendered Jinja (no JavaScript needed), one stylesheet themed with CSS
custom properties, every template overridable by the host's own
``templates/addons/...``. Both read who is signed in from the host's loaders
(``buyer_loader``, ``merchant_loader``) and write through the same services
and idempotent paths as the API; every form carries a CSRF token.

:func:`init_app` mounts each at its prefix (``ADDONS_PORTAL_PREFIX``,
``ADDONS_CONSOLE_PREFIX``; None: not mounted).
"""

from __future__ import annotations

from flask import Flask

__all__ = ["init_app"]


def init_app(app: Flask) -> None:
    """Mount the portal and the console where the app's config says."""
    from . import developers  # noqa: F401  (its routes join the console's blueprint)
    from .console import console
    from .portal import portal

    for blueprint, key in ((portal, "ADDONS_PORTAL_PREFIX"), (console, "ADDONS_CONSOLE_PREFIX")):
        prefix = app.config[key]
        if prefix is not None:
            app.register_blueprint(blueprint, url_prefix=prefix.rstrip("/") or None)
