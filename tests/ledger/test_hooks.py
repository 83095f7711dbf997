"""The Saleor-style hooks a host calls: chaining, the pricing form, save_pricing,
order_paid (exactly once per line, even concurrently) and order_refunded."""

from __future__ import annotations

import threading
import time
from html.parser import HTMLParser
from types import SimpleNamespace

import pytest

import storage
from addon_plugin import AddonPlugin, ledger, plain, signals
from addon_plugin.config import DEFAULTS
from addon_plugin.errors import MerchantNotFound, ValidationError
from addon_plugin.schemas import ProductCreateSchema, coerce_form
from tests.helpers import create_product, ledger_sum, make_app, run_concurrently


def order(merchant_id, order_id="order_1", lines=None, **extra):
    return {"id": order_id, "merchant_id": merchant_id, "buyer_email": "Bob@Example.com",
            "lines": lines if lines is not None else [{"id": "l1", "host_product_id": "host-7", "quantity": 2}],
            **extra}


def entries(kind=None):
    query = storage.LedgerEntry.select().order_by(storage.LedgerEntry.sequence)
    if kind:
        query = query.where(storage.LedgerEntry.kind == kind)
    return list(query)


def bob_account(merchant_id, product) -> ledger.Account:
    return ledger.get_account(ledger.find_account_id(merchant_id, product.id, "bob@example.com"))


@pytest.fixture
def inactive_plugin(app):
    app.config["ADDONS_ACTIVE"] = False
    yield app.extensions["addons"].plugin
    app.config["ADDONS_ACTIVE"] = True


# -- metadata and loaders ------------------------------------------------------

def test_plugin_metadata_lists_every_setting_with_secrets_typed_as_secrets():
    settings = DEFAULTS
    assert AddonPlugin.PLUGIN_ID == "addons.credits"
    assert AddonPlugin.PLUGIN_NAME and AddonPlugin.DEFAULT_ACTIVE is True
    assert {item["name"]: item["value"] for item in AddonPlugin.DEFAULT_CONFIGURATION} == settings
    assert set(AddonPlugin.CONFIG_STRUCTURE) == set(settings)
    for setting in AddonPlugin.CONFIG_STRUCTURE.values():
        assert set(setting) == {"type", "label", "help_text"}
        assert setting["type"] in {"Boolean", "Integer", "String", "Secret", "List"}
    secrets = {name for name, setting in AddonPlugin.CONFIG_STRUCTURE.items() if setting["type"] == "Secret"}
    assert secrets == {"ADDONS_DATABASE_URL", "ADDONS_STRIPE_API_KEY"}


def test_a_default_configuration_list_can_be_passed_back_with_changes(tmp_path):
    configuration = [dict(item) for item in AddonPlugin.DEFAULT_CONFIGURATION]
    for item in configuration:
        if item["name"] == "ADDONS_DEFAULT_CURRENCY":
            item["value"] = "EUR"
        if item["name"] == "ADDONS_WEBHOOK_LEASE":
            item["value"] = 30
        if item["name"] == "ADDONS_DATABASE_URL":
            item["value"] = f"sqlite:///{tmp_path}/other.sqlite3"
    from flask import Flask

    host = Flask("other", instance_path=str(tmp_path))
    AddonPlugin(host, configuration=configuration)
    assert host.config["ADDONS_DEFAULT_CURRENCY"] == "EUR" and host.config["ADDONS_WEBHOOK_LEASE"] == 30


def test_loaders_are_decorators_the_plugin_calls(plugin):
    assert plugin.current_merchant_id() is None and plugin.current_buyer() is None

    @plugin.merchant_loader
    def merchant():
        return "mer_1"

    @plugin.buyer_loader
    def buyer():
        return ("mer_1", " Bob@Example.com ")

    assert merchant() == "mer_1"  # the decorator hands the function back
    assert plugin.current_merchant_id() == "mer_1"
    assert plugin.current_buyer() == ("mer_1", "bob@example.com", None)


def test_the_buyer_loader_may_name_the_gateway_customer(plugin):
    plugin.buyer_loader(lambda: ("mer_1", "bob@example.com", "cus_bob"))
    buyer = plugin.current_buyer()
    assert (buyer.merchant_id, buyer.buyer_email, buyer.customer) == ("mer_1", "bob@example.com", "cus_bob")

    plugin.buyer_loader(lambda: ("mer_1",))
    with pytest.raises(TypeError, match="buyer_loader must return"):
        plugin.current_buyer()


# -- chaining and the inactive plugin --------------------------------------------

def test_product_types_are_appended_to_the_previous_value(plugin):
    host_types = [{"id": "one_time", "label": "One-time"}, {"id": "subscription", "label": "Subscription"}]
    types = plugin.get_product_types(host_types)
    assert types == host_types + [{"id": "addon", "label": "Add on"}]
    assert len(host_types) == 2  # not mutated
    assert plugin.get_product_types(None) == [{"id": "addon", "label": "Add on"}]


def test_hooks_pass_other_product_types_through(plugin, merchant_id):
    previous = [{"name": "amount"}]
    assert plugin.get_pricing_form("subscription", previous) is previous
    assert plugin.render_pricing_form("subscription", "<p>host</p>") == "<p>host</p>"
    sentinel = object()
    assert plugin.save_pricing("one_time", {"price": "0"}, sentinel, merchant=merchant_id,
                               host_product_id="h") is sentinel
    assert storage.Product.select().count() == 0


def test_an_inactive_plugin_passes_previous_value_through(inactive_plugin, merchant_id, addon):
    previous = [{"id": "one_time", "label": "One-time"}]
    assert inactive_plugin.get_product_types(previous) is previous
    assert inactive_plugin.get_pricing_form("addon", previous) is previous
    assert inactive_plugin.render_pricing_form("addon", "<p>x</p>") == "<p>x</p>"
    sentinel = object()
    assert inactive_plugin.save_pricing("addon", {"price": "5", "credit_amount": "1"}, sentinel,
                                        merchant=merchant_id, host_product_id="new") is sentinel
    assert inactive_plugin.order_paid(order(merchant_id), sentinel) is sentinel
    assert inactive_plugin.order_refunded(order(merchant_id), sentinel) is sentinel
    assert storage.Product.select().count() == 1 and entries() == []


# -- the pricing form -------------------------------------------------------------

def test_the_pricing_form_describes_the_schemas_fields(plugin, addon):
    previous = [{"name": "host_field"}]
    form = plugin.get_pricing_form("addon", previous)
    assert form[0] == {"name": "host_field"}
    fields = {f["name"]: f for f in form[1:]}
    assert list(fields) == ["price", "currency", "credit_amount", "top_up_allowed", "overdraft_limit",
                            "credit_expiry_days", "name"]
    for name, field in fields.items():
        assert set(field) == {"name", "label", "type", "required", "help_text", "choices", "value"}
        assert field["required"] == ProductCreateSchema().fields[name].required
    assert fields["price"]["required"] and fields["credit_amount"]["required"] and not fields["name"]["required"]
    assert fields["price"]["type"] == "decimal" and fields["credit_amount"]["type"] == "integer"
    assert fields["top_up_allowed"]["choices"] == [("false", "One-time purchase"), ("true", "Top-ups allowed")]
    assert ("EUR", "EUR") in fields["currency"]["choices"]
    assert fields["currency"]["value"] == "USD" and fields["top_up_allowed"]["value"] == "false"


def test_the_pricing_form_shows_the_products_values_or_the_submitted_ones(plugin, addon):
    values = {f["name"]: f["value"] for f in plugin.get_pricing_form("addon", None, product=addon)}
    assert values == {"price": "19.00", "currency": "USD", "credit_amount": "100", "top_up_allowed": "true",
                      "overdraft_limit": "0", "credit_expiry_days": "", "name": "100 credits"}
    values = {f["name"]: f["value"] for f in plugin.get_pricing_form(
        "addon", None, product=addon, data={"price": "oops", "credit_amount": ""})}
    assert values["price"] == "oops" and values["credit_amount"] == "" and values["currency"] == "USD"


class _Elements(HTMLParser):
    """Every element's attributes and the text inside elements with an id."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.text: dict[str, str] = {}
        self._open: list[str | None] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        if tag not in ("input", "br"):
            self._open.append(attributes.get("id"))

    def handle_endtag(self, tag):
        if tag not in ("input", "br") and self._open:
            self._open.pop()

    def handle_data(self, data):
        for element_id in self._open:
            if element_id:
                self.text[element_id] = self.text.get(element_id, "") + data


def parse(html: str) -> _Elements:
    parser = _Elements()
    parser.feed(str(html))
    return parser


def test_every_rendered_field_is_labelled_and_its_errors_are_tied_to_it(plugin):
    html = plugin.render_pricing_form("addon", "<p>host</p>", data={"price": "0", "credit_amount": "-1"},
                                      errors={"price": ["Must be a number greater than 0."],
                                              "credit_amount": ["Must be greater than or equal to 1."],
                                              "host_product_id": ["Taken."]})
    assert html.startswith("<p>host</p>")
    page = parse(html)
    labelled = {attrs["for"] for tag, attrs in page.elements if tag == "label"}
    controls = [attrs for tag, attrs in page.elements if tag in ("input", "select")]
    assert {c["name"] for c in controls} == {"price", "currency", "credit_amount", "top_up_allowed",
                                             "overdraft_limit", "credit_expiry_days", "name"}
    for control in controls:
        assert control["id"] in labelled, control
        for described in control["aria-describedby"].split():
            assert page.text.get(described, "").strip(), described  # points at text that exists
    price = next(c for c in controls if c["name"] == "price")
    assert price["value"] == "0" and price.get("aria-invalid") == "true"
    assert "addon-price-error" in price["aria-describedby"].split()
    assert page.text["addon-price-error"].strip() == "Must be a number greater than 0."
    assert "Must be greater than or equal to 1." in page.text["addon-credit-amount-error"]
    currency = next(c for c in controls if c["name"] == "currency")
    assert "aria-invalid" not in currency and "addon-currency-error" not in currency["aria-describedby"]
    assert "Taken." in page.text["addon-form-errors"]  # an error of no field of the form: shown on top


def test_rendered_values_are_escaped(plugin):
    html = plugin.render_pricing_form("addon", "", data={"name": '"><script>alert(1)</script>'})
    assert "<script>" not in html
    name = next(attrs for tag, attrs in parse(html).elements if attrs.get("name") == "name")
    assert name["value"] == '"><script>alert(1)</script>'


# -- save_pricing ---------------------------------------------------------------------

def test_save_pricing_refuses_bad_fields_one_message_list_each_and_saves_nothing(plugin, merchant_id):
    with pytest.raises(ValidationError) as caught:
        plugin.save_pricing("addon", {"price": "0", "credit_amount": "-5", "currency": "XXX",
                                      "top_up_allowed": "maybe", "overdraft_limit": "-1"},
                            None, merchant=merchant_id, host_product_id="host-1")
    messages = caught.value.messages
    assert set(messages) == {"price", "credit_amount", "currency", "top_up_allowed", "overdraft_limit"}
    assert all(isinstance(m, list) and m for m in messages.values())
    with pytest.raises(ValidationError) as caught:
        plugin.save_pricing("addon", {"price": "", "credit_amount": ""}, None, merchant=merchant_id,
                            host_product_id="host-1")
    assert set(caught.value.messages) == {"price", "credit_amount"}
    assert storage.Product.select().count() == 0


@pytest.mark.parametrize("data", [
    {"price": "19.001", "credit_amount": "100"},
    {"price": "19.00", "credit_amount": "1.5"},
    {"price": "-3", "credit_amount": "100"},
    {"price": "19.00", "credit_amount": "100", "currency": "usd"},
    {"price": "19.00", "credit_amount": "9007199254740992"},
    {"price": "19.00", "credit_amount": "\u0661\u0660\u0660"},  # Arabic-Indic "100": ASCII digits only
    {"price": "19.00", "credit_amount": "+100"},
    {"price": "19.00", "credit_amount": "100", "overdraft_limit": "\uff15"},
])
def test_save_pricing_and_the_api_schema_never_disagree(plugin, merchant_id, data):
    """The same fields are refused; the form's messages are for people, one per field."""
    schema = ProductCreateSchema()
    api_messages = schema.validate(coerce_form(schema, data))
    with pytest.raises(ValidationError) as caught:
        plugin.save_pricing("addon", data, None, merchant=merchant_id, host_product_id="host-1")
    assert api_messages and set(caught.value.messages) == set(api_messages)
    for name, messages in caught.value.messages.items():
        assert messages == [plain.FIELD_MESSAGES[name]] or messages[0].startswith("Enter a price above 0 with")


@pytest.mark.parametrize(("data", "expected"), [
    ({"credit_amount": "100"}, {"price": "Enter a price above 0, like 19.00."}),
    ({"price": "0", "credit_amount": "100"}, {"price": "Enter a price above 0, like 19.00."}),
    ({"price": "19.001", "credit_amount": "100"},
     {"price": "Enter a price above 0 with at most 2 decimal places for USD, like 19.00."}),
    ({"price": "5", "credit_amount": "100", "currency": "JPY", "overdraft_limit": "9007199254740992"},
     {"overdraft_limit": "Enter a whole number of credits, 0 or more (0 means no overdraft)."}),
    ({"price": "5", "credit_amount": "0", "top_up_allowed": "maybe"},
     {"credit_amount": "Enter a whole number of credits above 0, like 100.",
      "top_up_allowed": "Choose one-time purchase or top-ups allowed."}),
])
def test_the_pricing_form_speaks_plainly_never_in_library_defaults(plugin, merchant_id, data, expected):
    with pytest.raises(ValidationError) as caught:
        plugin.save_pricing("addon", data, None, merchant=merchant_id, host_product_id="host-1")
    assert {name: " ".join(messages) for name, messages in caught.value.messages.items()} == expected
    html = plugin.render_pricing_form("addon", "", data=data, errors=caught.value.messages)
    for default in ("Missing data", "Not a valid", "less than or equal", "9007199254740991", "Must be one of"):
        assert default not in html


def test_save_pricing_creates_then_updates_the_addon_for_the_host_product(plugin, merchant, merchant_id):
    form = {"price": "19.00", "credit_amount": "100", "top_up_allowed": "false", "overdraft_limit": "0",
            "name": "", "currency": "USD", "payment_type": "addon", "csrf_token": "host's own"}
    saved = []
    receiver = lambda sender, **kw: saved.append(kw["created"])  # noqa: E731
    signals.product_saved.connect(receiver)
    try:
        created = plugin.save_pricing("addon", form, None, merchant=merchant[0], host_product_id=42)
        updated = plugin.save_pricing("addon", {**form, "price": "25.50", "top_up_allowed": "true"}, created,
                                      merchant=merchant_id, host_product_id="42")
    finally:
        signals.product_saved.disconnect(receiver)
    assert updated.id == created.id and saved == [True, False]
    row = storage.Product.get_by_id(created.id)
    assert (row.merchant_id, row.host_product_id, row.name, row.price_minor, row.currency, row.credit_amount,
            row.top_up_allowed, row.overdraft_limit) == (merchant_id, "42", "100 credits", 2550, "USD", 100, True, 0)
    assert storage.Product.select().count() == 1


def test_save_pricing_refuses_a_price_whose_largest_top_up_would_not_fit(plugin, merchant_id):
    """10 banks (ADDONS_TOP_UP_MAX_BANKS) of this KWD price pass the amount column: refused at save, on
    create and on update, with the largest price that fits."""
    form = {"price": "922337203685477.581", "credit_amount": "100", "currency": "KWD"}
    for existing in (None, create_product(merchant_id, currency="KWD", price_minor=19000, host_product_id="h")):
        with pytest.raises(ValidationError) as caught:
            plugin.save_pricing("addon", form, None, merchant=merchant_id, host_product_id="h" if existing else "n")
        assert list(caught.value.messages) == ["price"]
        assert "922337203685477.580 KWD" in caught.value.messages["price"][0]
    assert [(p.host_product_id, p.price_minor) for p in storage.Product.select()] == [("h", 19000)]


def test_save_pricing_changes_the_currency_only_with_its_price(plugin, merchant_id):
    create_product(merchant_id, host_product_id="h")
    with pytest.raises(ValidationError) as caught:
        plugin.save_pricing("addon", {"price": "", "credit_amount": "100", "currency": "JPY"}, None,
                            merchant=merchant_id, host_product_id="h")
    assert list(caught.value.messages) == ["price"]
    saved = plugin.save_pricing("addon", {"price": "2800", "credit_amount": "100", "currency": "JPY"}, None,
                                merchant=merchant_id, host_product_id="h")
    assert (saved.currency, saved.price_minor) == ("JPY", 2800)


# -- order_paid -------------------------------------------------------------------------

def test_order_paid_grants_credit_amount_times_quantity_once(plugin, merchant_id, addon):
    sentinel = object()
    purchased = []
    receiver = lambda sender, **kw: purchased.append(kw)  # noqa: E731
    signals.addon_purchased.connect(receiver)
    try:
        assert plugin.order_paid(order(merchant_id), sentinel) is sentinel
        assert plugin.order_paid(order(merchant_id), None) is None
    finally:
        signals.addon_purchased.disconnect(receiver)
    account = bob_account(merchant_id, addon)
    assert account.balance == 200
    [entry] = entries()
    assert (entry.kind, entry.delta, entry.reference, entry.actor) == ("purchase", 200, "order_1", "hook:order_paid")
    assert len(purchased) == 1
    assert (purchased[0]["order_id"], purchased[0]["quantity"], purchased[0]["credits"]) == ("order_1", 2, 200)
    assert purchased[0]["account"].balance == 200 and purchased[0]["entry"].id == entry.id


def test_order_paid_accepts_objects_and_product_ids_and_ignores_other_lines(plugin, merchant_id, addon):
    other = create_product(merchant_id, name="50 credits", credit_amount=50, host_product_id=None)
    paid = SimpleNamespace(id=981, merchant_id=merchant_id, buyer_email="bob@example.com", lines=[
        SimpleNamespace(id=1, product_id=other.id, quantity=1),
        SimpleNamespace(id=2, host_product_id="a-t-shirt", quantity=3),   # the host's own product
        SimpleNamespace(id=3, product_id="prod_unknown", quantity=1),
        SimpleNamespace(id=4, host_product_id="host-7", quantity=1),
    ])
    plugin.order_paid(paid, None)
    assert bob_account(merchant_id, other).balance == 50
    assert bob_account(merchant_id, addon).balance == 100
    assert {(e.reference, e.delta) for e in entries()} == {("981", 50), ("981", 100)}


def test_two_lines_of_one_addon_are_granted_separately(plugin, merchant_id, addon):
    lines = [{"id": "a", "host_product_id": "host-7", "quantity": 1},
             {"id": "b", "host_product_id": "host-7", "quantity": 1}]
    plugin.order_paid(order(merchant_id, lines=lines), None)
    plugin.order_paid(order(merchant_id, lines=lines), None)
    assert bob_account(merchant_id, addon).balance == 200 and len(entries()) == 2


def test_another_merchants_addon_is_not_an_addon_of_this_order(plugin, merchant_id, addon):
    from addon_plugin import merchants

    other_merchant, _ = merchants.create_merchant("Other")
    plugin.order_paid(order(other_merchant.id, lines=[{"id": "l1", "product_id": addon.id, "quantity": 1}]), None)
    assert entries() == []


@pytest.mark.parametrize("bad", [
    {"lines": [{"id": "l1", "host_product_id": "host-7", "quantity": 0}]},
    {"lines": [{"id": "l1", "host_product_id": "host-7", "quantity": "2"}]},
    {"lines": [{"id": "l1", "host_product_id": "host-7"}]},
    {"lines": [{"host_product_id": "host-7", "quantity": 1}]},
    {"buyer_email": ""},
    {"auto_top_up_threshold": -1, "payment_method": "pm_card_visa"},
])
def test_a_bad_order_is_refused_and_grants_nothing(plugin, merchant_id, addon, bad):
    good_line = {"id": "l0", "host_product_id": "host-7", "quantity": 1}
    extra = {k: v for k, v in bad.items() if k != "lines"}
    paid = order(merchant_id, lines=[good_line] + bad.get("lines", []), **extra)
    with pytest.raises(ValidationError):
        plugin.order_paid(paid, None)
    assert entries() == []


def test_an_unknown_merchant_is_an_error_not_silence(plugin, addon):
    with pytest.raises(MerchantNotFound):
        plugin.order_paid(order("mer_unknown"), None)
    with pytest.raises(MerchantNotFound):
        plugin.order_refunded(order("mer_unknown"), None)
    with pytest.raises(MerchantNotFound):
        plugin.save_pricing("addon", {"price": "5", "credit_amount": "10"}, None, merchant="mer_unknown",
                            host_product_id="h")
    assert entries() == [] and storage.Product.select().count() == 1


def test_a_line_too_large_rolls_back_the_whole_order(plugin, merchant_id, addon):
    create_product(merchant_id, credit_amount=ledger.MAX_CREDITS, host_product_id="huge")
    lines = [{"id": "l1", "host_product_id": "host-7", "quantity": 1},
             {"id": "l2", "host_product_id": "huge", "quantity": 2}]
    with pytest.raises(ValidationError):
        plugin.order_paid(order(merchant_id, lines=lines), None)
    assert entries() == []


def test_order_paid_grants_once_when_called_concurrently(app, plugin, merchant_id, addon):
    assert run_concurrently(lambda _: plugin.order_paid(order(merchant_id), None), 8, app=app) == []
    account = bob_account(merchant_id, addon)
    assert account.balance == 200 == ledger_sum(account.id)
    assert len(entries("purchase")) == 1


def _lock_waiters(url: str) -> int:
    import psycopg2

    with psycopg2.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity"
                       " WHERE datname = current_database() AND wait_event_type = 'Lock'")
        return cursor.fetchone()[0]


def test_a_second_call_waiting_on_the_first_grants_nothing(app, plugin, merchant_id, addon, database_url):
    """The race made certain: the first call holds its transaction open (in an
    ``addon_purchased`` receiver) until the second is waiting on a lock."""
    ledger.open_account(merchant_id, addon.id, "bob@example.com")
    first_inside, errors = threading.Event(), []

    def hold(sender, **kwargs):
        first_inside.set()
        if storage.dialect() == "postgresql":  # SQLite's BEGIN IMMEDIATE already queues the second
            deadline = time.monotonic() + 10
            while _lock_waiters(database_url) == 0 and time.monotonic() < deadline:
                time.sleep(0.01)

    def pay():
        try:
            with app.app_context():
                plugin.order_paid(order(merchant_id), None)
        except Exception as error:  # surfaced below
            errors.append(error)

    signals.addon_purchased.connect(hold)
    try:
        first = threading.Thread(target=pay)
        first.start()
        assert first_inside.wait(timeout=10)
        second = threading.Thread(target=pay)
        second.start()
        first.join(timeout=30)
        second.join(timeout=30)
    finally:
        signals.addon_purchased.disconnect(hold)
    assert errors == []
    assert bob_account(merchant_id, addon).balance == 200 and len(entries("purchase")) == 1


def test_the_checkout_opt_in_switches_auto_top_up_on(app, plugin, merchant_id, addon):
    app.config["ADDONS_PAYMENT_GATEWAY"] = "test"
    once = create_product(merchant_id, host_product_id="once", top_up_allowed=False)
    lines = [{"id": "l1", "host_product_id": "host-7", "quantity": 1},
             {"id": "l2", "host_product_id": "once", "quantity": 1}]
    plugin.order_paid(order(merchant_id, lines=lines, payment_method="pm_card_visa", customer="cus_1",
                            auto_top_up_threshold=20), None)
    account = bob_account(merchant_id, addon)
    assert (account.auto_top_up_enabled, account.threshold, account.payment_method, account.customer) == (
        True, 20, "pm_card_visa", "cus_1")
    assert bob_account(merchant_id, once).auto_top_up_enabled is False  # a one-time purchase: not switched on


def test_a_refused_opt_in_still_grants_the_credits(plugin, merchant_id, addon, caplog):
    plugin.order_paid(order(merchant_id, payment_method="pm_card_visa", auto_top_up_threshold=20), None)  # no gateway
    account = bob_account(merchant_id, addon)
    assert account.balance == 200 and account.auto_top_up_enabled is False
    assert "no_payment_gateway" in caplog.text


def test_without_a_payment_method_there_is_no_opt_in(app, plugin, merchant_id, addon):
    app.config["ADDONS_PAYMENT_GATEWAY"] = "test"
    plugin.order_paid(order(merchant_id, auto_top_up_threshold=20), None)
    assert bob_account(merchant_id, addon).auto_top_up_enabled is False


def test_ids_holding_the_separator_make_distinct_keys(plugin, merchant_id, addon):
    """Order "A:B" line "C" and order "A" line "B:C" are two lines (the keys were
    both "order_paid:A:B:C": the second order raised IdempotencyKeyReused)."""
    plugin.order_paid(order(merchant_id, "A:B", [{"id": "C", "host_product_id": "host-7", "quantity": 1}]), None)
    plugin.order_paid(order(merchant_id, "A", [{"id": "B:C", "host_product_id": "host-7", "quantity": 1}]), None)
    plugin.order_refunded(order(merchant_id, "A"), None)
    assert [(e.reference, e.delta) for e in entries()] == [("A:B", 100), ("A", 100), ("A", -100)]
    assert bob_account(merchant_id, addon).balance == 100


def test_long_ids_are_hashed_into_distinct_keys_that_still_replay(plugin, merchant_id, addon):
    long_id = "o" * 250  # with a line id, past 255 characters
    lines = [{"id": "l" * 200 + "1", "host_product_id": "host-7", "quantity": 1},
             {"id": "l" * 200 + "2", "host_product_id": "host-7", "quantity": 2}]
    for _ in range(2):
        plugin.order_paid(order(merchant_id, long_id, lines), None)
        plugin.order_refunded(order(merchant_id, long_id), None)
    assert [e.delta for e in entries()] == [100, 200, -300]
    assert all(len(e.idempotency_key) <= 255 for e in entries())


# -- order_refunded ------------------------------------------------------------------------

def test_a_refund_takes_back_the_unspent_credits_exactly_once(plugin, merchant_id, addon):
    plugin.order_paid(order(merchant_id), None)                       # +200
    account = bob_account(merchant_id, addon)
    ledger.record(account.id, -30, "usage")                            # 170 left
    sentinel = object()
    assert plugin.order_refunded({"id": "order_1", "merchant_id": merchant_id}, sentinel) is sentinel
    plugin.order_refunded(SimpleNamespace(id="order_1", merchant_id=merchant_id), None)
    [refund] = entries("refund")
    assert (refund.delta, refund.reference, refund.balance_after) == (-170, "order_1", 0)
    assert ledger.balance(account.id) == 0 == ledger_sum(account.id)


def test_a_refund_never_takes_credits_bought_later(plugin, merchant_id, addon):
    plugin.order_paid(order(merchant_id, "order_1"), None)            # +200
    account = bob_account(merchant_id, addon)
    ledger.record(account.id, -150, "usage")                           # 50 of order_1 left
    plugin.order_paid(order(merchant_id, "order_2"), None)            # +200 more
    plugin.order_refunded(order(merchant_id, "order_1"), None)
    assert [e.delta for e in entries("refund")] == [-50]
    assert ledger.balance(account.id) == 200


def test_a_refund_of_spent_credits_takes_nothing_and_never_goes_below_zero(plugin, merchant_id):
    create_product(merchant_id, host_product_id="host-7", overdraft_limit=500)
    plugin.order_paid(order(merchant_id), None)                        # +200
    account_id = ledger.find_account_id(merchant_id, storage.Product.get().id, "bob@example.com")
    ledger.record(account_id, -300, "usage")                           # -100: overdrawn
    plugin.order_refunded(order(merchant_id), None)
    assert entries("refund") == [] and ledger.balance(account_id) == -100


def test_a_refund_of_an_order_without_addons_does_nothing(plugin, merchant_id, addon):
    plugin.order_refunded(order(merchant_id, "order_9"), None)
    assert entries() == []



def test_hooks_work_without_a_request(tmp_path, database_url):
    """Hooks need only the host's app context (e.g. a background job)."""
    host = make_app(database_url, str(tmp_path))
    with host.app_context():
        assert host.extensions["addons"].plugin.get_product_types([]) == [{"id": "addon", "label": "Add on"}]


def test_save_pricing_refuses_strings_no_database_keeps(plugin, merchant_id):
    with pytest.raises(ValidationError) as caught:
        plugin.save_pricing("addon", {"price": "5", "credit_amount": "10", "name": "bad\x00name"}, None,
                            merchant=merchant_id, host_product_id="host-1")
    assert set(caught.value.messages) == {"name"}
    assert storage.Product.select().count() == 0
