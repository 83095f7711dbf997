"""The console's developer pages: API keys (shown once, revoked after a
confirmation) and webhook endpoints (create, edit, switch off, rotate, delete),
their deliveries with the body and headers sent, and redelivery.

The plugin reaches ``webhooks`` only at run time (``init_app`` wires it), so
its services are imported inside the views."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from flask import abort, flash, redirect, request, url_for

import storage

from .. import merchants
from ..errors import AddonError, ValidationError
from ..plain import plain
from .console import console, current_merchant, own, page

__all__: list[str] = []


# -- API keys -------------------------------------------------------------------

def _keys_page(status: int = 200, **shown: Any) -> Any:
    return page("api_keys.html", status, keys=merchants.list_api_keys(current_merchant(), limit=100)["data"], **shown)


@console.get("/api-keys")
def api_keys() -> Any:
    return _keys_page()


@console.post("/api-keys")
def api_key_create() -> Any:
    """The new key is shown in this response only (never in a session, a flash or a log)."""
    return _keys_page(201, new_key=merchants.create_api_key(current_merchant()))


@console.route("/api-keys/<key_id>/revoke", methods=["GET", "POST"])
def api_key_revoke(key_id: str) -> Any:
    """A confirmation page, then the revocation."""
    key = next((k for k in merchants.list_api_keys(current_merchant(), limit=500)["data"] if k["id"] == key_id), None)
    if key is None:
        abort(404)
    if request.method == "GET":
        return page("confirm.html", title="Revoke this API key?", action=url_for(".api_key_revoke", key_id=key_id),
                     text=f"Programs using the key {key_id} will be refused from the moment you revoke it. "
                          "This cannot be undone.", button="Revoke the key", back=url_for(".api_keys"))
    own(lambda merchant_id, k: merchants.revoke_api_key(k, merchant_id), key_id)
    flash(f"Key {key_id} revoked: requests with it are refused from now on.")
    return redirect(url_for(".api_keys"))


# -- webhooks -------------------------------------------------------------------

def _webhooks() -> ModuleType:
    """``webhooks.endpoints``, imported when a page needs it: the plugin reaches
    ``webhooks`` only at run time, once ``init_app`` has wired it, never on import."""
    from webhooks import endpoints

    return endpoints


def _event_types() -> tuple[str, ...]:
    from webhooks import EVENT_TYPES

    return EVENT_TYPES


def _webhooks_page(status: int = 200, *, errors: Any = None, form: Any = None, **shown: Any) -> Any:
    return page("webhooks.html", status, endpoints=_webhooks().list_endpoints(current_merchant(), limit=100).data,
                 event_types=_event_types(), errors=errors or {}, form=form or {}, **shown)


@console.get("/webhooks")
def webhooks() -> Any:
    return _webhooks_page()


def _endpoint_fields() -> dict[str, Any]:
    form = request.form
    return {"url": form.get("url", "").strip(), "event_types": form.getlist("event_types") or None,
            "description": form.get("description", "").strip()}


@console.post("/webhooks")
def webhook_create() -> Any:
    """The endpoint's signing secret is shown in this response only."""
    try:
        endpoint, secret = _webhooks().create_endpoint(current_merchant(), **_endpoint_fields())
    except ValidationError as error:
        return _webhooks_page(422, errors=plain(error.messages, keep=("event_types",)), form=request.form)
    return _webhooks_page(201, new_endpoint=endpoint, new_secret=secret)


@console.route("/webhooks/<endpoint_id>", methods=["GET", "POST"])
def webhook_edit(endpoint_id: str) -> Any:
    """Change the URL, events, description, or switch the endpoint on or off."""
    endpoint = own(_webhooks().get_endpoint, endpoint_id)
    if request.method == "POST":
        fields = _endpoint_fields()
        try:
            _webhooks().update_endpoint(current_merchant(), endpoint_id, url=fields["url"],
                                              event_types=fields["event_types"], description=fields["description"],
                                              enabled=request.form.get("enabled") == "on")
        except ValidationError as error:
            return page("webhook_edit.html", 422, endpoint=endpoint, event_types=_event_types(), form=request.form,
                         errors=plain(error.messages, keep=("event_types",)))
        flash("Endpoint saved.")
        return redirect(url_for(".webhook_edit", endpoint_id=endpoint_id))
    return page("webhook_edit.html", endpoint=endpoint, event_types=_event_types(), form=None, errors={})


@console.route("/webhooks/<endpoint_id>/rotate", methods=["GET", "POST"])
def webhook_rotate(endpoint_id: str) -> Any:
    endpoint = own(_webhooks().get_endpoint, endpoint_id)
    if request.method == "GET":
        return page("confirm.html", title="Rotate the signing secret?",
                     action=url_for(".webhook_rotate", endpoint_id=endpoint_id),
                     text=f"A new secret signs deliveries to {endpoint.url}. The old one keeps signing too for a "
                          "grace period, so you can switch your receiver over without missing a message.",
                     button="Rotate the secret", back=url_for(".webhook_edit", endpoint_id=endpoint_id))
    endpoint, secret = own(_webhooks().rotate_secret, endpoint_id)
    return page("webhook_edit.html", endpoint=endpoint, event_types=_event_types(), form=None, errors={},
                 new_secret=secret)


@console.route("/webhooks/<endpoint_id>/delete", methods=["GET", "POST"])
def webhook_delete(endpoint_id: str) -> Any:
    endpoint = own(_webhooks().get_endpoint, endpoint_id)
    if request.method == "GET":
        return page("confirm.html", title="Delete this endpoint?",
                     action=url_for(".webhook_delete", endpoint_id=endpoint_id),
                     text=f"Nothing more is sent to {endpoint.url}, and its delivery log is deleted with it. "
                          "This cannot be undone.", button="Delete the endpoint",
                     back=url_for(".webhook_edit", endpoint_id=endpoint_id))
    own(_webhooks().delete_endpoint, endpoint_id)
    flash(f"Endpoint {endpoint.url} deleted.")
    return redirect(url_for(".webhooks"))


@console.get("/webhooks/<endpoint_id>/deliveries")
def deliveries(endpoint_id: str) -> Any:
    endpoint = own(_webhooks().get_endpoint, endpoint_id)
    found = _webhooks().list_deliveries(current_merchant(), endpoint_id, limit=100).data
    return page("deliveries.html", endpoint=endpoint, deliveries=found)


@console.get("/deliveries/<delivery_id>")
def delivery(delivery_id: str) -> Any:
    """One delivery: the body and headers sent, and each attempt's answer."""
    found = own(_webhooks().get_delivery, delivery_id)
    event = storage.WebhookEvent.get_by_id(found.event_id)
    endpoint = own(_webhooks().get_endpoint, found.endpoint_id)
    from webhooks.delivery import USER_AGENT  # at run time only, as _webhooks() says

    headers = [("content-type", "application/json"), ("user-agent", USER_AGENT), ("webhook-id", found.event_id),
               ("webhook-timestamp", "the attempt's time, in seconds since 1970"),
               ("webhook-signature", "v1,… (signed at each attempt with the endpoint's secret)")]
    return page("delivery.html", delivery=found, endpoint=endpoint, body=event.payload, headers=headers)


@console.post("/deliveries/<delivery_id>/redeliver")
def redeliver(delivery_id: str) -> Any:
    try:
        found = own(_webhooks().redeliver, delivery_id)
    except AddonError as error:  # the endpoint is disabled
        flash(error.message)
        return redirect(url_for(".delivery", delivery_id=delivery_id))
    flash("Delivery queued again: it is sent within moments, with the same webhook-id.")
    return redirect(url_for(".delivery", delivery_id=found.id))
