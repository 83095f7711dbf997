"""The webhook errors, as branches of the plugin's one error tree::

    addon_plugin.errors.AddonError
    ├── ValidationError
    │   └── InvalidUrl                        422 invalid_url
    ├── NotFound
    │   ├── EndpointNotFound                  404 webhook_endpoint_not_found
    │   └── DeliveryNotFound                  404 delivery_not_found
    └── Conflict
        └── EndpointDisabled                  409 endpoint_disabled

The API's error handler renders them like any other ``AddonError``.
"""

from __future__ import annotations

from typing import Any

from addon_plugin.errors import Conflict, NotFound, ValidationError

__all__ = ["InvalidUrl", "EndpointNotFound", "DeliveryNotFound", "EndpointDisabled"]


class InvalidUrl(ValidationError):
    """A webhook URL the plugin may not call (scheme, or an address the SSRF guard refuses)."""

    code = "invalid_url"
    default_message = "The URL is not an allowed webhook URL."

    def __init__(self, message: str | None = None, **context: Any):
        super().__init__(message, fields={"url": [message or self.default_message]}, **context)


class EndpointNotFound(NotFound):
    """No webhook endpoint with that id for this merchant."""

    code = "webhook_endpoint_not_found"
    default_message = "No webhook endpoint with that id."


class DeliveryNotFound(NotFound):
    """No webhook delivery with that id for this merchant."""

    code = "delivery_not_found"
    default_message = "No webhook delivery with that id."


class EndpointDisabled(Conflict):
    """The endpoint is disabled; enable it before redelivering to it."""

    code = "endpoint_disabled"
    default_message = "The webhook endpoint is disabled; enable it first."
