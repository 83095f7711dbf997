"""The blueprint: the plugin's HTTP API, JSON only, under ``ADDONS_URL_PREFIX``."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify
from peewee import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from ..errors import AddonError, DatabaseUnavailable, PluginInactive

__all__ = ["blueprint", "create_blueprint"]

log = logging.getLogger(__name__)

blueprint = Blueprint("addons", __name__)


@blueprint.before_request
def _refuse_when_inactive() -> None:
    if not current_app.config["ADDONS_ACTIVE"]:
        raise PluginInactive()


@blueprint.errorhandler(AddonError)
def _addon_error(error: AddonError):
    return jsonify(error.to_dict()), error.status


@blueprint.errorhandler(HTTPException)
def _http_error(error: HTTPException):
    code = (error.name or "error").lower().replace(" ", "_")
    body = {"error": {"code": code, "message": error.description, "fields": {}}}
    return jsonify(body), error.code


@blueprint.errorhandler(OperationalError)
@blueprint.errorhandler(InterfaceError)
def _database_error(error: Exception):
    log.warning("database unavailable: %s", error)
    return _addon_error(DatabaseUnavailable())


@blueprint.errorhandler(Exception)
def _internal_error(error: Exception):
    log.exception("unhandled error in the add-ons API")
    body = {"error": {"code": "internal_error", "message": "Internal error; nothing was applied.", "fields": {}}}
    return jsonify(body), 500


def create_blueprint() -> Blueprint:
    """The blueprint with every route module attached."""
    return blueprint
