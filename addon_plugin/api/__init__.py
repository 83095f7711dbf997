"""The blueprint: the plugin's HTTP API, JSON only, under ``ADDONS_URL_PREFIX``.

Every failure under the prefix answers ``{"error": {"code", "message",
"fields"}}``, including routing 404/405 and 413; outside the prefix the host's
own error pages are left alone.
"""

from __future__ import annotations

import logging
from importlib import import_module

from flask import Blueprint, Flask, current_app, request
from peewee import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge

from ..errors import AddonError, DatabaseUnavailable, PluginInactive
from ..errors import NotFound as ObjectNotFound
from .openapi import document_blueprint

__all__ = ["api_blueprint", "blueprint", "create_blueprint", "install_error_pages", "mount"]

log = logging.getLogger(__name__)

#: Route modules, imported once by :func:`create_blueprint`.
ROUTE_MODULES = ["usage", "usage_records", "top_ups", "docs", "products", "accounts", "grants", "api_keys", "me",
                 "holds"]


def _error_response(code: str, message: str, status: int, fields: dict | None = None,
                    headers: dict[str, str] | None = None):
    from .http import respond

    return respond({"error": {"code": code, "message": message, "fields": fields or {}}}, status, headers=headers)


def _before_request() -> None:
    if not current_app.config["ADDONS_ACTIVE"]:
        raise PluginInactive()
    request.max_content_length = current_app.config["ADDONS_MAX_CONTENT_LENGTH"]
    if any("\x00" in value for value in (request.view_args or {}).values() if isinstance(value, str)):
        raise ObjectNotFound()  # no id holds a NUL, and PostgreSQL could not even compare one


def _addon_error(error: AddonError):
    return _error_response(error.code, error.message, error.status, error.fields)


_HTTP_CODES = {413: "payload_too_large"}


def _http_error(error: HTTPException):
    """Werkzeug's error as JSON, keeping its headers (a 405's ``Allow``)."""
    code = _HTTP_CODES.get(error.code or 500) or (error.name or "error").lower().replace(" ", "_")
    headers = {name: value for name, value in error.get_headers() if name.lower() != "content-type"}
    return _error_response(code, error.description or error.name, error.code or 500, headers=headers)


def _database_error(error: Exception):
    log.warning("database unavailable: %s", error)
    return _addon_error(DatabaseUnavailable())


def _internal_error(error: Exception):
    log.exception("unhandled error in the add-ons API")
    return _error_response("internal_error", "Internal error; nothing was applied.", 500)


def api_blueprint(name: str, import_name: str) -> Blueprint:
    """A blueprint that behaves like the plugin's own API (the ``ADDONS_ACTIVE``
    switch, the body limit, JSON errors), for a feature that adds routes of its own."""
    api = Blueprint(name, import_name)
    api.before_request(_before_request)
    api.register_error_handler(AddonError, _addon_error)
    api.register_error_handler(HTTPException, _http_error)
    api.register_error_handler(OperationalError, _database_error)
    api.register_error_handler(InterfaceError, _database_error)
    api.register_error_handler(Exception, _internal_error)
    return api


#: The plugin's own routes.
blueprint = api_blueprint("addons", __name__)


def install_error_pages(app: Flask) -> None:
    """Answer routing errors under the prefix in JSON; defer to the host elsewhere."""
    prefix = app.config["ADDONS_URL_PREFIX"].rstrip("/")
    for exc in (NotFound, MethodNotAllowed, RequestEntityTooLarge):
        previous = app.error_handler_spec.get(None, {}).get(exc.code, {}).get(exc)

        def handler(error, previous=previous):
            if request.path == prefix or request.path.startswith(prefix + "/"):
                if not app.config["ADDONS_ACTIVE"]:
                    return _addon_error(PluginInactive())
                return _http_error(error)
            return previous(error) if previous else error

        app.register_error_handler(exc, handler)


def create_blueprint() -> Blueprint:
    """The blueprint with every route module attached."""
    for name in ROUTE_MODULES:
        import_module(f"{__name__}.{name}")
    return blueprint


def mount(app: Flask, api: Blueprint) -> None:
    """Register ``api`` (made by :func:`api_blueprint`) under ``ADDONS_URL_PREFIX``,
    its routes listed in the OpenAPI document with the plugin's own."""
    app.register_blueprint(api, url_prefix=app.config["ADDONS_URL_PREFIX"])
    document_blueprint(app, api.name)
