"""Reading the pages' forms in tests: the CSRF token, a form's idempotency key,
the field errors shown."""

from __future__ import annotations

import re

__all__ = ["token", "key_of", "field_errors"]


def token(client, url: str) -> str:
    """The CSRF token of the form on ``url``."""
    page = client.get(url)
    assert page.status_code == 200, page.text
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text)[1]


def key_of(html: str, action: str | None = None) -> str:
    """The idempotency key of the form posting to ``action`` (None: the page's first)."""
    form = html if action is None else html[html.index(f'action="{action}"'):]
    return re.search(r'name="idempotency_key" value="(\w+)"', form)[1]


def field_errors(html: str) -> dict[str, str]:
    """Error elements by id (``<id>-error``) → their text."""
    return dict(re.findall(r'class="(?:field|addon)-error" id="([\w-]+)-error">([^<]*)<', html))
