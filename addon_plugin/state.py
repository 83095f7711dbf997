"""What the plugin keeps per app: one object in ``app.extensions["addons"]``.

Every module reads it through :func:`get_state`, so nothing per app hides in
other ``app.extensions`` keys or in module globals, and several apps in one
process never share it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app

if TYPE_CHECKING:
    from .extension import AddonPlugin

__all__ = ["AddonsState", "current_app_object", "get_state"]


@dataclass
class AddonsState:
    """The plugin's state for one app, made by ``init_app``."""

    #: The extension object mounted on the app (its hooks and loaders).
    plugin: AddonPlugin
    #: Background tasks by name, each ``(task, once_per_run)``: a callable doing a
    #: bounded batch of due work and returning how many items it handled, and
    #: whether it runs in a run's first round only (see :mod:`addon_plugin.worker`).
    worker_tasks: dict[str, tuple[Callable[[], int], bool]] = field(default_factory=dict)
    #: What ``flask addons prune`` deletes besides idempotent results, by what
    #: it reports (``"webhook delivery(ies)"``): callables returning how many.
    pruners: dict[str, Callable[[], int]] = field(default_factory=dict)
    #: Names of the blueprints whose routes the OpenAPI document lists: the
    #: plugin's own and those a feature mounted (:func:`addon_plugin.api.mount`).
    documented_blueprints: set[str] = field(default_factory=lambda: {"addons"})
    #: ``(ADDONS_PAYMENT_GATEWAY, the gateway resolved from it)``, so it is
    #: resolved once per value.
    gateway: tuple[Any, Any] | None = None
    #: The OpenAPI document, built on first use.
    openapi: dict[str, Any] | None = None


def get_state(app: Flask | None = None) -> AddonsState:
    """The plugin's state for ``app`` (default: the current app); a
    :class:`RuntimeError` if the plugin was never mounted on it."""
    app = app if app is not None else current_app
    state = app.extensions.get("addons")
    if state is None:
        raise RuntimeError(f"The credit add-ons plugin is not mounted on the app {app.name!r}: "
                           "call AddonPlugin(app) or plugin.init_app(app) first.")
    return state


def current_app_object() -> Flask:
    """The app itself behind the ``current_app`` proxy: the sender of every
    signal, and what may be kept past the app context."""
    # Flask types ``current_app`` as the app, not as the proxy it is.
    return current_app._get_current_object()  # type: ignore[attr-defined]
