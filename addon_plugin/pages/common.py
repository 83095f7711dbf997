"""What the portal and the console share: the signed-in check, the stylesheet,
template helpers and the error pages."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, abort, current_app, g, render_template, request
from flask import redirect as _redirect
from werkzeug.exceptions import HTTPException

from ..hooks import HostHooks
from . import csrf

__all__ = ["make_blueprint", "plugin", "refuse_inactive", "sign_in", "new_key", "when", "money"]

_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def plugin() -> HostHooks:
    """The app's plugin (its loaders)."""
    return current_app.extensions["addons"].plugin


def refuse_inactive() -> None:
    """An inactive plugin (``ADDONS_ACTIVE`` false) shows no page: 503, as its API answers."""
    if not current_app.config["ADDONS_ACTIVE"]:
        abort(503, "Credits are not available right now. Please try again later.")


def sign_in() -> Any:
    """Nobody is signed in: 302 to ``ADDONS_SIGN_IN_URL`` (with ``next``) when set, else 401."""
    url = current_app.config.get("ADDONS_SIGN_IN_URL")
    if url:
        return _redirect(f"{url}{'&' if '?' in url else '?'}{urlencode({'next': request.full_path.rstrip('?')})}")
    return render_template("addons/pages/error.html", code=401, title="Sign in first",
                           message="Sign in to see this page."), 401


def new_key() -> str:
    """A fresh idempotency key for a form: a double submit of it writes once."""
    return uuid.uuid4().hex


def when(moment: Any, fmt: str = "%d %b %Y, %H:%M") -> str:
    """A time as the pages show it (UTC): an API time string or a datetime."""
    if moment is None:
        return ""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return moment.strftime(fmt) + " UTC"


def money(amount: Any, currency: str) -> str:
    """An amount with its currency, as a person reads it: ``19.00 USD``."""
    return f"{Decimal(str(amount))} {currency}"


def make_blueprint(name: str, who: Callable[[HostHooks], Any], kept_as: str) -> Blueprint:
    """A pages blueprint: the plugin's templates and stylesheet, the helpers and
    error pages, and its guard: only someone signed in (``who(plugin)``, kept as
    ``g.<kept_as>``) sees a page, and a write only with a valid CSRF token."""
    blueprint = Blueprint(name, __name__, template_folder=os.path.join(_HERE, "templates"),
                          static_folder=os.path.join(_HERE, "static"), static_url_path="/static")

    @blueprint.before_request
    def signed_in() -> Any:
        if request.endpoint and request.endpoint.endswith(".static"):
            return None  # the stylesheet is public: the sign-in answer uses it too
        refuse_inactive()
        setattr(g, kept_as, who(plugin()))
        if getattr(g, kept_as) is None:
            return sign_in()
        csrf.protect()
        return None

    @blueprint.context_processor
    def helpers() -> dict[str, Any]:
        return {"csrf_token": csrf.token, "csrf_field": csrf.FIELD, "when": when, "money": money,
                "pages": name}

    @blueprint.errorhandler(HTTPException)
    def error_page(error: HTTPException) -> Any:
        titles = {400: "This form could not be used", 404: "Not found", 405: "Not allowed",
                  503: "Not available"}
        return render_template("addons/pages/error.html", code=error.code,
                               title=titles.get(error.code or 500, error.name),
                               message=error.description), error.code

    return blueprint
