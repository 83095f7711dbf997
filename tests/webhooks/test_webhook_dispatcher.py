"""webhooks.dispatcher: the outbox is written in the balance change's own
transaction, with the event's documented body, for the endpoints that want it."""

from __future__ import annotations

import json

import pytest
import responses

import storage
from addon_plugin import ledger, signals
from tests.helpers import THRESHOLD, create_product, make_app
from webhooks import endpoints

URL = "https://merchant.example/hook"


@pytest.fixture
def hooks(app):
    """The app with fake hosts allowed (no DNS in tests)."""
    app.config["ADDONS_WEBHOOK_ALLOW_PRIVATE_URLS"] = True
    return app


@pytest.fixture
def endpoint_id(hooks, merchant_id) -> str:
    return endpoints.create_endpoint(merchant_id, URL)[0].id


def outbox() -> list[tuple[str, dict, list[str]]]:
    """Every event (type, body, endpoint ids of its deliveries), oldest first."""
    found = []
    for event in storage.WebhookEvent.select().order_by(storage.WebhookEvent.id):
        targets = sorted(d.endpoint_id for d in storage.WebhookDelivery.select().where(
            storage.WebhookDelivery.event == event.id))
        found.append((event.type, json.loads(event.payload), targets))
    return found


def types() -> list[str]:
    return sorted(kind for kind, _, _ in outbox())


def test_a_balance_change_writes_event_and_delivery_with_the_spec_body(endpoint_id, merchant_id, product,
                                                                      account_id):
    change = ledger.record(account_id, 250, "adjustment", description="welcome", reference="ref-1",
                           metadata={"campaign": "spring"})
    [(kind, body, targets)] = outbox()
    assert kind == "balance.updated" and targets == [endpoint_id]
    created = change.entry.created_at.isoformat(timespec="microseconds") + "Z"
    assert body == {
        "type": "balance.updated",
        "timestamp": created,
        "data": {
            "merchant_id": merchant_id,
            "account_id": account_id,
            "buyer_email": "bob@example.com",
            "product_id": product.id,
            "balance": 250,
            "entry": {
                "id": change.entry.id,
                "sequence": 1,
                "delta": 250,
                "balance_after": 250,
                "kind": "adjustment",
                "description": "welcome",
                "reference": "ref-1",
                "metadata": {"campaign": "spring"},
                "idempotency_key": None,
                "actor": None,
                "created_at": created,
                "allocations": [{"grant_id": change.entry.allocations[0].grant_id, "amount": 250}],
            },
        },
    }
    delivery = storage.WebhookDelivery.get()
    assert (delivery.status, delivery.attempt_count) == ("pending", 0)
    assert delivery.next_attempt_at <= storage.utcnow()


def test_the_outbox_rolls_back_with_the_change(endpoint_id, funded_account_id):
    before = len(outbox())
    with pytest.raises(RuntimeError), storage.transaction():
        ledger.record(funded_account_id, -10, "usage")
        assert len(outbox()) == before + 1  # written inside the change's transaction
        raise RuntimeError("the caller's transaction fails after the change")
    assert len(outbox()) == before
    assert ledger.balance(funded_account_id) == 1000


def test_a_subscriber_that_raises_leaves_no_event(app, endpoint_id, funded_account_id):
    before = len(outbox())

    def refuse(sender, **kwargs):
        raise RuntimeError("no")

    signals.balance_changed.connect(refuse, sender=app)
    try:
        with pytest.raises(RuntimeError):
            ledger.record(funded_account_id, -10, "usage")
    finally:
        signals.balance_changed.disconnect(refuse, sender=app)
    assert len(outbox()) == before


def test_crossing_the_threshold_and_zero_gives_low_and_depleted(endpoint_id, funded_account_id):
    storage.CreditAccount.update(threshold=100).where(storage.CreditAccount.id == funded_account_id).execute()
    storage.WebhookEvent.delete().execute()  # forget the funding's events
    ledger.record(funded_account_id, -1000, "usage")
    assert types() == ["balance.depleted", "balance.low", "balance.updated"]
    sequences = {body["data"]["entry"]["sequence"] for _, body, _ in outbox()}
    assert sequences == {2}


def test_endpoints_get_only_the_types_they_asked_for(hooks, merchant_id, funded_account_id):
    storage.WebhookEvent.delete().execute()
    low_only = endpoints.create_endpoint(merchant_id, URL, ["balance.depleted"])[0].id
    everything = endpoints.create_endpoint(merchant_id, URL + "/all", [])[0].id
    ledger.record(funded_account_id, -1, "usage")
    ledger.record(funded_account_id, -999, "usage")
    found = {(kind, tuple(targets)) for kind, _, targets in outbox()}
    assert found == {("balance.updated", (everything,)),
                     ("balance.depleted", tuple(sorted([low_only, everything])))}


def test_no_endpoint_no_event(app, funded_account_id):
    ledger.record(funded_account_id, -1, "usage")
    assert outbox() == []


def test_disabled_endpoints_and_other_merchants_get_nothing(hooks, merchant_id, endpoint_id, funded_account_id):
    from addon_plugin import merchants

    other, _ = merchants.create_merchant("Other")
    endpoints.create_endpoint(other.id, URL)
    endpoints.update_endpoint(merchant_id, endpoint_id, enabled=False)
    storage.WebhookEvent.delete().execute()
    ledger.record(funded_account_id, -1, "usage")
    assert outbox() == []


def test_no_request_is_made_while_recording(endpoint_id, funded_account_id):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.POST, URL)
        ledger.record(funded_account_id, -5, "usage")
        assert len(mock.calls) == 0
    assert storage.WebhookDelivery.select().where(storage.WebhookDelivery.status == "pending").count() == 2


def test_each_app_dispatches_only_its_own_signals(app, endpoint_id, funded_account_id, tmp_path):
    make_app(app.config["ADDONS_DATABASE_URL"], str(tmp_path / "other"))  # a second host app, same database
    storage.WebhookEvent.delete().execute()
    ledger.record(funded_account_id, -5, "usage")
    assert types() == ["balance.updated"]


def _send_in_transaction(signal, app, **kwargs) -> None:
    with storage.transaction():
        signal.send(app, **kwargs)


def test_top_up_and_purchase_signals_become_events(app, endpoint_id, funded_account_id):
    storage.WebhookEvent.delete().execute()
    change = ledger.record(funded_account_id, 100, "top_up", reference="tu_1")
    top_up = {"id": "tu_1", "status": "succeeded", "banks": 1, "credits": 100, "amount": "19.00",
              "currency": "USD", "charge_id": "ch_1", "failure_code": None}
    storage.WebhookEvent.delete().execute()
    _send_in_transaction(signals.top_up_succeeded, app, account=change.account, entry=change.entry, top_up=top_up)
    failure = {"code": "card_declined", "message": "Your card was declined."}
    _send_in_transaction(signals.top_up_failed, app, account=change.account,
                         top_up={**top_up, "status": "failed"}, failure=failure)
    _send_in_transaction(signals.auto_top_up_disabled, app, account=change.account, reason="max_failures")
    _send_in_transaction(signals.addon_purchased, app, account=change.account, entry=change.entry,
                         order_id="order_9", quantity=2, credits=200)
    bodies = {kind: body for kind, body, _ in outbox()}
    assert set(bodies) == {"top_up.succeeded", "top_up.failed", "auto_top_up.disabled", "addon.purchased"}

    succeeded = bodies["top_up.succeeded"]["data"]
    assert succeeded["top_up"] == top_up and succeeded["entry"]["kind"] == "top_up"
    assert succeeded["balance"] == 1100 and succeeded["account_id"] == funded_account_id

    failed = bodies["top_up.failed"]["data"]
    assert failed["failure"] == failure and failed["top_up"]["status"] == "failed"
    assert "entry" not in failed

    disabled = bodies["auto_top_up.disabled"]["data"]
    assert disabled["reason"] == "max_failures" and "entry" not in disabled

    purchased = bodies["addon.purchased"]["data"]
    assert (purchased["order_id"], purchased["quantity"], purchased["credits"]) == ("order_9", 2, 200)
    assert purchased["entry"]["id"] == change.entry.id


def test_a_top_up_dataclass_is_sent_as_an_object(app, endpoint_id, account_id):
    from dataclasses import dataclass
    from datetime import datetime
    from decimal import Decimal

    @dataclass
    class TopUp:
        id: str
        amount: Decimal
        created_at: datetime

    account = ledger.get_account(account_id)
    _send_in_transaction(signals.top_up_failed, app, account=account,
                         top_up=TopUp("tu_2", Decimal("19.00"), datetime(2025, 1, 2, 3, 4, 5)),
                         failure={"code": "daily_limit_reached", "message": "Daily limit reached."})
    [(_, body, _)] = outbox()
    assert body["data"]["top_up"] == {"id": "tu_2", "amount": "19.00",
                                      "created_at": "2025-01-02T03:04:05.000000Z"}


def test_every_endpoint_of_the_merchant_gets_one_delivery_per_event(hooks, merchant_id, product):
    ids = {endpoints.create_endpoint(merchant_id, f"{URL}/{n}")[0].id for n in range(3)}
    account = ledger.open_account(merchant_id, create_product(merchant_id).id, "ann@example.com")
    ledger.record(account, 5, "adjustment")
    [(_, _, targets)] = outbox()
    assert set(targets) == ids


# -- the top-up code's real signals ------------------------------------------------

def _deduct_below_threshold(account_id: str) -> None:
    ledger.record(account_id, -(ledger.balance(account_id) - THRESHOLD + 10), "usage")


def test_a_real_top_up_becomes_a_top_up_succeeded_event(app, endpoint_id, auto_account_id):
    from addon_plugin.topup import execute

    _deduct_below_threshold(auto_account_id)
    storage.WebhookEvent.delete().execute()
    assert execute.run_due() == 1
    bodies = {kind: body["data"] for kind, body, _ in outbox()}
    assert set(bodies) == {"balance.updated", "top_up.succeeded"}
    succeeded = bodies["top_up.succeeded"]
    assert succeeded["entry"]["kind"] == "top_up" and succeeded["entry"] == bodies["balance.updated"]["entry"]
    assert (succeeded["balance"], succeeded["top_up"]["status"], succeeded["top_up"]["credits"]) == (
        THRESHOLD - 10 + 100, "succeeded", 100)


def test_a_declined_top_up_becomes_failed_and_disabled_events(app, endpoint_id, merchant_id, auto_account_id):
    from addon_plugin.topup import execute, set_auto_top_up

    app.config["ADDONS_TOP_UP_MAX_FAILURES"] = 1
    set_auto_top_up(auto_account_id, merchant_id=merchant_id, enabled=True, threshold=THRESHOLD,
                    payment_method="pm_card_chargeDeclined")
    _deduct_below_threshold(auto_account_id)
    storage.WebhookEvent.delete().execute()
    execute.run_due()
    bodies = {kind: body["data"] for kind, body, _ in outbox()}
    assert set(bodies) == {"top_up.failed", "auto_top_up.disabled"}
    failed = bodies["top_up.failed"]
    assert failed["failure"]["code"] == "card_declined" and failed["top_up"]["failure_code"] == "card_declined"
    assert "entry" not in failed and failed["balance"] == THRESHOLD - 10
    assert bodies["auto_top_up.disabled"]["reason"] == "max_failures"


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_endpoint_deleted_while_a_change_publishes_fails_nothing_and_gets_nothing(hooks, merchant_id, endpoint_id,
                                                                                    funded_account_id):
    """PostgreSQL, READ COMMITTED: the endpoint is deleted (not yet committed)
    when a change reads the endpoints; the change must neither fail on the
    foreign key once the delete commits nor leave a delivery for it."""
    import threading

    import psycopg2

    other = endpoints.create_endpoint(merchant_id, URL + "/other")[0].id
    storage.WebhookEvent.delete().execute()
    url = hooks.config["ADDONS_DATABASE_URL"]
    deleting, watching = psycopg2.connect(url), psycopg2.connect(url)
    watching.autocommit = True
    with deleting.cursor() as cursor:  # what delete_endpoint does, held open
        cursor.execute("DELETE FROM webhook_delivery WHERE endpoint_id = %s", (endpoint_id,))
        cursor.execute("DELETE FROM webhook_endpoint WHERE id = %s", (endpoint_id,))
    errors: list[BaseException] = []

    def change() -> None:
        with hooks.app_context():
            try:
                ledger.record(funded_account_id, -1, "usage")
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)
            finally:
                storage.db.close()

    thread = threading.Thread(target=change)
    thread.start()
    try:
        waiting = 0
        for _ in range(200):  # until the change waits on the delete's row lock
            with watching.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                               "AND wait_event_type = 'Lock'")
                (waiting,) = cursor.fetchone()
            if waiting or not thread.is_alive():
                break
            thread.join(0.05)
        deleting.commit()
    finally:
        thread.join(30)
        deleting.close()
        watching.close()
    assert waiting == 1
    assert errors == []
    [(kind, _, targets)] = outbox()
    assert (kind, targets) == ("balance.updated", [other])
    assert ledger.balance(funded_account_id) == 999


def test_an_unresolved_top_up_becomes_a_top_up_unresolved_event(app, endpoint_id, auto_account_id):
    from addon_plugin.topup import GatewayUnavailable, execute

    class Silent:
        requires_customer = False

        def charge(self, **kwargs):
            raise GatewayUnavailable("Read timed out.")

    app.config.update(ADDONS_PAYMENT_GATEWAY=Silent(), ADDONS_TOP_UP_RETRY_SCHEDULE=[])
    _deduct_below_threshold(auto_account_id)
    storage.WebhookEvent.delete().execute()
    execute.run_due()
    [(kind, body, targets)] = outbox()
    assert (kind, targets) == ("top_up.unresolved", [endpoint_id])
    data = body["data"]
    assert (data["account_id"], data["balance"]) == (auto_account_id, THRESHOLD - 10)
    assert data["top_up"]["status"] == "unresolved" and data["top_up"]["credits"] == 100
    assert "entry" not in data and "failure" not in data
