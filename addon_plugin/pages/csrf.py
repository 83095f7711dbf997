"""CSRF for the pages' forms: Flask-WTF's signed, session-bound token, checked
on every write before anything else runs (no global ``CSRFProtect`` on the host)."""

from __future__ import annotations

from flask import abort, request
from flask_wtf.csrf import generate_csrf, validate_csrf
from wtforms import ValidationError

__all__ = ["FIELD", "token", "protect"]

#: The hidden form field that carries the token.
FIELD = "csrf_token"


def token() -> str:
    """This session's token, for a form's hidden field (the app needs a ``SECRET_KEY``)."""
    return generate_csrf()


def protect() -> None:
    """Refuse (400) a write whose form lacks this session's valid token."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    try:
        validate_csrf(request.form.get(FIELD))
    except ValidationError:
        abort(400, "This form has expired or did not come from this site. Go back, reload the page and try again.")
