"""Blinker signals: how the webhook dispatcher, the top-up handler and any
extending developer learn what the plugin did.

The sender is always the Flask app (``current_app._get_current_object()``);
connect with ``sender=app`` to hear one app only. Receivers run in no fixed order.

Timing: signals about a balance change are sent **inside** the transaction that
makes it, right after its ledger row is written. A receiver's database writes
commit or roll back with the change; a receiver that raises aborts the whole
change (nothing is applied, the caller gets the error). Side effects outside the
database (HTTP, e-mail) belong in :func:`addon_plugin.on_commit`, which runs them
only after the commit.

``account`` and ``entry`` arguments are :class:`addon_plugin.ledger.Account` and
:class:`addon_plugin.ledger.Entry` snapshots taken right after the change.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: Sent when a ledger entry changes an account's balance, inside its transaction.
#: Kwargs: ``account`` (the account after the change), ``entry`` (the new ledger
#: entry) and ``previous_balance`` (int).
balance_changed = _signals.signal("balance-changed")

#: Sent after :data:`balance_changed` when the change took the balance from above
#: the account's ``threshold`` to at or below it (never when ``threshold`` is
#: None). Inside the transaction. Kwargs: ``account``, ``entry``, ``previous_balance``.
balance_low = _signals.signal("balance-low")

#: Sent after :data:`balance_changed` when the change took the balance from above
#: 0 to at or below 0. Inside the transaction. Kwargs: ``account``, ``entry``,
#: ``previous_balance``.
balance_depleted = _signals.signal("balance-depleted")

#: Sent when the ledger refused a deduction for insufficient credits, once the
#: transaction it was refused in has ended: nothing was written for it, and
#: receivers run outside any transaction (open one to write). Kwargs:
#: ``account`` (as it stood at the refusal), ``kind`` (of the refused entry,
#: e.g. ``"usage"``) and ``requested`` (the credits it needed, > 0).
deduction_refused = _signals.signal("deduction-refused")

#: Sent when an order line granted add-on credits (after its ``purchase`` entry,
#: inside the transaction). Kwargs: ``account``, ``entry``, ``order_id``,
#: ``quantity``, ``credits``.
addon_purchased = _signals.signal("addon-purchased")

#: Sent when an automatic top-up was charged and credited, inside the transaction
#: that writes its ``top_up`` entry. Kwargs: ``account`` (its balance is the new
#: balance), ``entry``, ``top_up`` (a JSON-ready dict, as the top-ups resource
#: shows it: ``banks``, ``credits``, ``amount``, ``currency``, ``charge_id``, …).
top_up_succeeded = _signals.signal("top-up-succeeded")

#: Sent when an automatic top-up failed, inside the transaction that records
#: the failure: a decline (``card_declined``, ``authentication_required``, …),
#: ``gateway_unavailable`` (the gateway's lookup found no charge),
#: ``resolved_as_failed`` (the merchant said so), or, without a charge,
#: ``daily_limit_reached`` or ``balance_limit_exceeded``. Kwargs: ``account``,
#: ``top_up`` (a dict, as for :data:`top_up_succeeded`), ``failure``
#: (``{"code", "message"}``).
top_up_failed = _signals.signal("top-up-failed")

#: Sent when an automatic top-up's outcome is unknown once its gateway retries
#: ran out (or the gateway's answers disagree), inside the transaction that
#: marks it ``unresolved``. It blocks new top-ups until the gateway's lookup or
#: the merchant (``POST …/top-ups/<id>/resolve``) settles it. Kwargs:
#: ``account``, ``top_up`` (a dict, as for :data:`top_up_succeeded`).
top_up_unresolved = _signals.signal("top-up-unresolved")

#: Sent when auto top-up was switched off for an account by the plugin, inside
#: that transaction. Kwargs: ``account`` and ``reason`` (``"max_failures"``,
#: ``"product_changed"``).
auto_top_up_disabled = _signals.signal("auto-top-up-disabled")

#: Sent when an add-on product was created or changed, inside the transaction.
#: Kwargs: ``product`` (the ``storage.Product`` row) and ``created`` (bool).
product_saved = _signals.signal("product-saved")

#: Sent by the webhook worker when a delivery has used its last attempt and is
#: marked failed, inside that transaction. Kwargs: ``delivery`` (the
#: ``storage`` delivery row) and ``endpoint`` (its endpoint row).
webhook_delivery_failed = _signals.signal("webhook-delivery-failed")

#: Sent once per grant when it will expire within ``ADDONS_GRANT_EXPIRY_WARNING``
#: seconds: by the worker, or at once for a grant created inside that window,
#: inside the transaction that marks it warned. Kwargs: ``account`` and
#: ``grant`` (a dict, as the grants resource shows it).
grant_expiring = _signals.signal("grant-expiring")

#: Sent when credits were reserved by a spend hold, inside its transaction.
#: Kwargs: ``hold`` (a dict, as the holds resource shows it) and ``account``
#: (after it: ``account.held`` includes it, ``account.available`` is what is left).
hold_placed = _signals.signal("hold-placed")

#: Sent when a hold was captured, inside the transaction that writes its
#: ``usage`` entry (after the balance signals). Kwargs: ``hold`` (a dict,
#: ``captured``, with ``captured_amount`` and ``entry_id``) and ``account``.
hold_captured = _signals.signal("hold-captured")

#: Sent when a hold was released, inside that transaction. Kwargs: ``hold``
#: (a dict, ``released``) and ``account`` (its credits available again).
hold_released = _signals.signal("hold-released")
#: Sent by the worker when an account with auto top-up off is forecast to run
#: out of credits within ``ADDONS_FORECAST_WARNING``: once per approach (again
#: only after the forecast has moved back out), inside the transaction that
#: marks it warned. Kwargs: ``account`` and ``forecast``
#: (``{"credits_per_day", "depletes_at"}``, as the account resource shows it).
balance_forecast_low = _signals.signal("balance-forecast-low")

__all__ = [
    "balance_changed",
    "balance_low",
    "balance_depleted",
    "deduction_refused",
    "addon_purchased",
    "top_up_succeeded",
    "top_up_failed",
    "top_up_unresolved",
    "auto_top_up_disabled",
    "product_saved",
    "webhook_delivery_failed",
    "grant_expiring",
    "hold_placed",
    "hold_captured",
    "hold_released",
    "balance_forecast_low",
]
