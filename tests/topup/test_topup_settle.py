"""Unknown outcomes: a top-up the gateway never answered is unresolved, blocks new
ones and is settled by the gateway's lookup or by the merchant; a charge that has
not settled is credited only once the lookup says it succeeded."""

from __future__ import annotations

import pytest

import storage
from addon_plugin import errors, ledger, worker
from addon_plugin.topup import (
    ChargePending,
    Declined,
    GatewayUnavailable,
    TestGateway,
    execute,
    resolve_top_up,
    settle,
)
from tests.helpers import THRESHOLD, account_row, top_up_entries, top_ups

SCHEDULE = (30, 120, 600)  # ADDONS_TOP_UP_RETRY_SCHEDULE's default
INTERVAL = 300  # ADDONS_TOP_UP_LOOKUP_INTERVAL's default


class LostAnswersGateway(TestGateway):
    """A :class:`TestGateway` whose first ``lose`` charge answers are lost: the
    charge (or the decline) is made and recorded, then the call times out."""

    def __init__(self, lose: int = 1_000_000) -> None:
        super().__init__()
        self.lose = lose

    def charge(self, **kwargs) -> str:
        try:
            charge_id = super().charge(**kwargs)
        except Declined:
            if self.calls > self.lose:
                raise
        else:
            if self.calls > self.lose:
                return charge_id
        raise GatewayUnavailable("Read timed out.")


def deduct_below(account_id: str) -> storage.TopUp:
    """Take the balance to the threshold minus 10 and return the top-up that decided."""
    before = {t.id for t in top_ups(account_id)}
    ledger.record(account_id, -(ledger.balance(account_id) - THRESHOLD + 10), "usage")
    [new] = [t for t in top_ups(account_id) if t.id not in before]
    return new


def reload(top_up: storage.TopUp) -> storage.TopUp:
    return storage.TopUp.get_by_id(top_up.id)


def use(app, gateway):
    app.config["ADDONS_PAYMENT_GATEWAY"] = gateway
    return gateway


class DownGateway(TestGateway):
    """Never reached: every charge fails before it is made; its lookup knows nothing."""

    def charge(self, **kwargs) -> str:
        self.calls += 1
        raise GatewayUnavailable("Connection refused.")


class UndecidedGateway(DownGateway):
    """Down, and its lookup cannot tell either."""

    def lookup(self, idempotency_key: str) -> str | None:
        self.lookups += 1
        raise GatewayUnavailable("Still down.")


def unresolved(app, account_id: str, gateway) -> storage.TopUp:
    """A top-up left unresolved at its first attempt (an empty retry schedule)."""
    use(app, gateway)
    app.config["ADDONS_TOP_UP_RETRY_SCHEDULE"] = []
    top_up = deduct_below(account_id)
    assert worker.run_once() >= 1
    assert reload(top_up).status == "unresolved"
    return top_up


# -- the gateway took the money, every answer was lost --------------------------------

def test_a_charge_whose_answers_were_all_lost_is_unresolved_then_credited_once_by_lookup(
        app, auto_account_id, clock, received):
    gateway = use(app, LostAnswersGateway())
    top_up = deduct_below(auto_account_id)
    worker.run_once()
    for delay in SCHEDULE:  # every retry of the schedule, each answer lost too
        clock.advance(delay)
        worker.run_once()

    top_up = reload(top_up)
    assert (top_up.status, top_up.attempts, top_up.failure_code, top_up.charge_id) == ("unresolved", 4, None, None)
    assert len(gateway.charges) == 1 and gateway.calls == 4  # one charge: every attempt sent the same key
    assert top_up_entries(auto_account_id) == [] and ledger.balance(auto_account_id) == 490
    assert received["top_up_failed"] == [] and account_row(auto_account_id).top_up_failures == 0
    [signal] = received["top_up_unresolved"]
    assert signal["top_up"]["status"] == "unresolved" and signal["account"].id == auto_account_id

    ledger.record(auto_account_id, -1, "usage")  # it blocks new top-ups: no second charge
    assert len(top_ups(auto_account_id)) == 1
    worker.run_once()
    assert gateway.lookups == 0 and gateway.calls == 4  # the lookup waits for its interval

    clock.advance(INTERVAL)
    worker.run_once()
    top_up = reload(top_up)
    [charge] = gateway.charges.values()
    assert (top_up.status, top_up.charge_id, gateway.lookups, gateway.calls) == ("succeeded", charge.id, 1, 4)
    assert [entry.delta for entry in top_up_entries(auto_account_id)] == [100]
    assert ledger.balance(auto_account_id) == 589
    assert len(received["top_up_succeeded"]) == 1


def test_lookups_are_asked_once_per_run_and_no_more_often_than_the_interval(app, auto_account_id, clock):
    app.config["ADDONS_TOP_UP_LOOKUP_INTERVAL"] = 0
    gateway = UndecidedGateway()
    top_up = unresolved(app, auto_account_id, gateway)
    assert gateway.lookups == 1  # a zero interval: asked in the run that left it unresolved…
    worker.run_once()
    assert gateway.lookups == 2  # …and once in each later run, however many rounds a run makes

    app.config["ADDONS_TOP_UP_LOOKUP_INTERVAL"] = INTERVAL
    clock.advance(1)
    worker.run_once()
    assert gateway.lookups == 3  # due since the last lookup (interval 0); the next is 300 s away
    clock.advance(INTERVAL - 1)
    worker.run_once()
    assert gateway.lookups == 3
    clock.advance(1)
    worker.run_once()
    assert gateway.lookups == 4 and reload(top_up).status == "unresolved" and gateway.calls == 1


def test_a_lookup_that_finds_no_charge_fails_the_top_up_as_gateway_unavailable(
        app, auto_account_id, clock, received):
    gateway = DownGateway()
    top_up = unresolved(app, auto_account_id, gateway)
    clock.advance(INTERVAL)
    assert settle.look_up_due() == 1
    top_up = reload(top_up)
    assert (top_up.status, top_up.failure_code, top_up.charge_id) == ("failed", "gateway_unavailable", None)
    assert gateway.lookups == 1 and top_up_entries(auto_account_id) == []
    assert account_row(auto_account_id).top_up_failures == 1
    [signal] = received["top_up_failed"]
    assert signal["failure"]["code"] == "gateway_unavailable"


def test_a_lookup_that_finds_a_declined_charge_fails_the_top_up_with_its_code(
        app, auto_account_id, merchant_id, clock, received):
    from addon_plugin.topup import set_auto_top_up

    set_auto_top_up(auto_account_id, merchant_id=merchant_id, enabled=True, threshold=THRESHOLD,
                    payment_method="pm_card_chargeDeclined")
    top_up = unresolved(app, auto_account_id, LostAnswersGateway())
    clock.advance(INTERVAL)
    settle.look_up_due()
    assert (reload(top_up).status, reload(top_up).failure_code) == ("failed", "card_declined")
    assert [signal["failure"]["code"] for signal in received["top_up_failed"]] == ["card_declined"]


def test_a_gateway_without_lookup_leaves_the_top_up_to_the_merchant(app, auto_account_id, clock):
    class NoLookup:
        requires_customer = False

        def charge(self, **kwargs) -> str:
            raise GatewayUnavailable("Read timed out.")

    top_up = unresolved(app, auto_account_id, NoLookup())
    clock.advance(INTERVAL)
    assert settle.look_up_due() == 0 and reload(top_up).status == "unresolved"


# -- charges that have not settled ---------------------------------------------------

class SettlingGateway(TestGateway):
    """Accepts every charge as still processing; its lookup says so until :attr:`settled`."""

    def __init__(self) -> None:
        super().__init__()
        self.settled = False

    def charge(self, **kwargs) -> str:
        raise ChargePending(super().charge(**kwargs))

    def lookup(self, idempotency_key: str) -> str | None:
        if not self.settled:
            self.lookups += 1
            raise GatewayUnavailable("The charge is still processing.")
        return super().lookup(idempotency_key)


def test_a_charge_still_processing_is_credited_only_once_the_lookup_says_it_succeeded(
        app, auto_account_id, clock, received):
    gateway = use(app, SettlingGateway())
    top_up = deduct_below(auto_account_id)
    worker.run_once()
    [charge] = gateway.charges.values()
    top_up = reload(top_up)
    assert (top_up.status, top_up.charge_id, top_up.completed_at) == ("pending_settlement", charge.id, None)
    assert top_up_entries(auto_account_id) == [] and received["top_up_succeeded"] == []
    ledger.record(auto_account_id, -1, "usage")  # blocks new top-ups
    assert len(top_ups(auto_account_id)) == 1

    clock.advance(INTERVAL)
    worker.run_once()
    assert reload(top_up).status == "pending_settlement" and gateway.lookups == 1

    gateway.settled = True
    clock.advance(INTERVAL)
    worker.run_once()
    top_up = reload(top_up)
    assert (top_up.status, top_up.charge_id, gateway.calls) == ("succeeded", charge.id, 1)
    assert [entry.delta for entry in top_up_entries(auto_account_id)] == [100]
    assert len(received["top_up_succeeded"]) == 1 and received["top_up_unresolved"] == []


def test_inline_mode_leaves_a_processing_charge_pending_without_credit(app, auto_account_id, clock):
    app.config["ADDONS_TOP_UP_MODE"] = "inline"
    gateway = use(app, SettlingGateway())
    ledger.record(auto_account_id, -510, "usage")
    [top_up] = top_ups(auto_account_id)
    assert (top_up.status, gateway.calls) == ("pending_settlement", 1)
    assert ledger.balance(auto_account_id) == 490

    gateway.settled = True
    clock.advance(INTERVAL)
    worker.run_once()
    assert reload(top_up).status == "succeeded" and ledger.balance(auto_account_id) == 590


def test_a_settling_charge_the_gateway_then_does_not_know_is_unresolved(app, auto_account_id, clock, received):
    class ForgetfulGateway(SettlingGateway):
        def lookup(self, idempotency_key: str) -> str | None:
            return None

    use(app, ForgetfulGateway())
    top_up = deduct_below(auto_account_id)
    worker.run_once()
    clock.advance(INTERVAL)
    worker.run_once()
    top_up = reload(top_up)
    assert (top_up.status, top_up.failure_code) == ("unresolved", None) and top_up.charge_id
    assert len(received["top_up_unresolved"]) == 1 and received["top_up_failed"] == []


def test_a_processing_charge_at_a_gateway_without_lookup_is_unresolved_with_its_charge_id(
        app, auto_account_id, received):
    class NoLookup:
        requires_customer = False

        def charge(self, **kwargs) -> str:
            raise ChargePending("ch_processing_1")

    use(app, NoLookup())
    top_up = deduct_below(auto_account_id)
    execute.run_due()
    assert (reload(top_up).status, reload(top_up).charge_id) == ("unresolved", "ch_processing_1")
    assert len(received["top_up_unresolved"]) == 1


# -- the merchant resolves -----------------------------------------------------------

def test_the_merchant_resolves_an_unresolved_top_up_as_succeeded(app, auto_account_id, merchant_id, received):
    top_up = unresolved(app, auto_account_id, DownGateway())
    resolved = resolve_top_up(top_up.id, merchant_id=merchant_id, outcome="succeeded", charge_id="ch_found_1")
    assert (resolved.status, resolved.charge_id) == ("succeeded", "ch_found_1")
    [entry] = top_up_entries(auto_account_id)
    assert (entry.delta, entry.reference, entry.metadata) == (100, top_up.id, '{"charge_id":"ch_found_1"}')
    assert len(received["top_up_succeeded"]) == 1

    with pytest.raises(errors.TopUpNotUnresolved):  # settled: a second word changes nothing
        resolve_top_up(top_up.id, merchant_id=merchant_id, outcome="failed")
    assert len(top_up_entries(auto_account_id)) == 1


def test_the_merchant_resolves_an_unresolved_top_up_as_failed(app, auto_account_id, merchant_id, received):
    top_up = unresolved(app, auto_account_id, DownGateway())
    resolved = resolve_top_up(top_up.id, merchant_id=merchant_id, outcome="failed")
    assert (resolved.status, resolved.failure_code) == ("failed", "resolved_as_failed")
    assert top_up_entries(auto_account_id) == [] and account_row(auto_account_id).top_up_failures == 1
    assert [signal["failure"]["code"] for signal in received["top_up_failed"]] == ["resolved_as_failed"]


def test_the_merchant_and_the_lookup_settle_a_top_up_once(app, auto_account_id, merchant_id, clock):
    class RacingGateway(DownGateway):
        """Its lookup finds the charge, while the merchant resolves the top-up as failed."""

        def lookup(self, idempotency_key: str) -> str | None:
            resolve_top_up(top_up.id, merchant_id=merchant_id, outcome="failed")
            return "ch_late_1"

    top_up = unresolved(app, auto_account_id, RacingGateway())
    clock.advance(INTERVAL)
    settle.look_up_due()
    assert (reload(top_up).status, reload(top_up).charge_id) == ("failed", None)
    assert top_up_entries(auto_account_id) == []


def test_only_an_unresolved_top_up_of_the_merchant_can_be_resolved(app, auto_account_id, merchant_id):
    from addon_plugin import merchants

    top_up = deduct_below(auto_account_id)  # pending
    with pytest.raises(errors.TopUpNotUnresolved) as refused:
        resolve_top_up(top_up.id, merchant_id=merchant_id, outcome="succeeded", charge_id="ch_1")
    assert refused.value.context["status"] == "pending"
    other, _ = merchants.create_merchant("Other")
    with pytest.raises(errors.TopUpNotFound):
        resolve_top_up(top_up.id, merchant_id=other.id, outcome="failed")
    with pytest.raises(errors.ValidationError):
        resolve_top_up(top_up.id, merchant_id=merchant_id, outcome="succeeded")
    assert reload(top_up).status == "pending" and top_up_entries(auto_account_id) == []
