"""The extension: configuration precedence, the inactive switch, and JSON errors
only under the plugin's prefix."""

from __future__ import annotations

import pytest
from flask import Flask

from addon_plugin import AddonPlugin, current_gateway, worker
from addon_plugin.api import api_blueprint, mount
from addon_plugin.api.http import respond
from addon_plugin.api.openapi import document, operation
from addon_plugin.config import DEFAULTS, SETTINGS
from addon_plugin.state import AddonsState, get_state


def test_init_app_registers_the_extension_and_defaults(tmp_path):
    app = Flask("host", instance_path=str(tmp_path))
    plugin = AddonPlugin()
    plugin.init_app(app)
    assert app.extensions["addons"].plugin is plugin
    assert app.config["ADDONS_URL_PREFIX"] == "/api"
    assert app.config["ADDONS_DATABASE_URL"] == f"sqlite:///{tmp_path}/addons.sqlite3"
    assert "addons" in app.cli.commands


def test_everything_the_plugin_keeps_per_app_is_one_state_object(app, client):
    assert client.get("/api/openapi.json").status_code == 200     # the cached document
    worker.run_once()                                              # the worker's tasks, the prune clock
    with app.app_context():
        current_gateway()                                          # the resolved gateway
    assert set(app.extensions) == {"addons"}
    state = app.extensions["addons"]
    assert state is get_state(app) and isinstance(state, AddonsState)
    assert state.openapi is not None and {"top_ups", "webhooks.deliver", "webhooks.prune"} <= set(state.worker_tasks)
    assert state.worker_tasks["top_ups.look_up"][1] is True and state.worker_tasks["top_ups"][1] is False
    assert set(state.pruners) == {"webhook delivery(ies)", "usage day(s)"}
    assert state.documented_blueprints == {"addons", "addons_webhooks"}


def test_a_second_init_app_on_the_same_app_raises(tmp_path):
    app = Flask("host", instance_path=str(tmp_path))
    plugin = AddonPlugin(app)
    for again in (plugin, AddonPlugin()):
        with pytest.raises(RuntimeError, match="already mounted on the app 'host'"):
            again.init_app(app)
    assert app.extensions["addons"].plugin is plugin


def test_one_plugin_on_two_apps_keeps_two_states(tmp_path):
    plugin = AddonPlugin()
    first, second = Flask("first", instance_path=str(tmp_path)), Flask("second", instance_path=str(tmp_path))
    plugin.init_app(first)
    plugin.init_app(second)
    assert get_state(first) is not get_state(second)
    assert get_state(first).plugin is get_state(second).plugin is plugin
    assert get_state(first).worker_tasks["webhooks.prune"] is not get_state(second).worker_tasks["webhooks.prune"]
    first.config["ADDONS_WEBHOOK_RETRY_SCHEDULE"].append(99)     # each app has its own copy of a list default
    assert second.config["ADDONS_WEBHOOK_RETRY_SCHEDULE"] == DEFAULTS["ADDONS_WEBHOOK_RETRY_SCHEDULE"]


def test_a_features_routes_are_documented_only_on_the_app_it_is_mounted_on(tmp_path):
    first, second = Flask("first", instance_path=str(tmp_path)), Flask("second", instance_path=str(tmp_path))
    AddonPlugin(first), AddonPlugin(second)
    extra = api_blueprint("addons_extra", __name__)

    @extra.get("/addons/extra")
    @operation(summary="A feature's route", tag="extra", public=True)
    def extra_route():
        return respond({})

    with first.app_context():
        document(first)                                          # built before: built again with the feature
    mount(first, extra)
    second.register_blueprint(extra, url_prefix="/api")          # routed there, but no feature of its plugin
    with first.app_context():
        assert "/api/addons/extra" in document(first)["paths"]
    with second.app_context():
        assert "/api/addons/extra" not in document(second)["paths"]


def test_an_app_without_the_plugin_says_so():
    with pytest.raises(RuntimeError, match="not mounted on the app 'bare'.*init_app"):
        get_state(Flask("bare"))


def test_every_setting_is_declared_once_and_the_plugin_metadata_derives_from_it():
    assert {name: setting.default for name, setting in SETTINGS.items()} == DEFAULTS
    assert [{"name": name, "value": value} for name, value in DEFAULTS.items()] == AddonPlugin.DEFAULT_CONFIGURATION
    python_types = {"Boolean": bool, "Integer": int, "List": (list, tuple)}
    for name, setting in SETTINGS.items():
        assert AddonPlugin.CONFIG_STRUCTURE[name] == {"type": setting.type, "label": setting.label,
                                                      "help_text": setting.help}
        if setting.default is not None and setting.type in python_types:
            assert isinstance(setting.default, python_types[setting.type]), name
        if isinstance(setting.default, int) and not isinstance(setting.default, bool):
            assert setting.type == "Integer", name


def test_init_apps_docstring_lists_every_key_it_reads():
    doc = AddonPlugin.init_app.__doc__
    assert "{keys}" not in doc
    assert [name for name in SETTINGS if f"``{name}``" not in doc] == []


def test_host_config_wins_over_the_configuration_list_which_wins_over_defaults(tmp_path):
    app = Flask("host", instance_path=str(tmp_path))
    app.config["ADDONS_TOP_UP_MAX_BANKS"] = 3
    AddonPlugin(app, configuration=[{"name": "ADDONS_TOP_UP_MAX_BANKS", "value": 5},
                                    {"name": "ADDONS_TOP_UP_DAILY_LIMIT", "value": 2}])
    assert app.config["ADDONS_TOP_UP_MAX_BANKS"] == 3
    assert app.config["ADDONS_TOP_UP_DAILY_LIMIT"] == 2
    assert app.config["ADDONS_TOP_UP_MAX_FAILURES"] == 3


def test_an_inactive_plugin_answers_503_before_authentication(app, client):
    app.config["ADDONS_ACTIVE"] = False
    for method, path in (("post", "/api/buyer-addon/usage"), ("get", "/api/openapi.json"), ("get", "/api/nope")):
        response = getattr(client, method)(path)
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "plugin_inactive"


def test_routing_errors_are_json_under_the_prefix_and_the_hosts_own_elsewhere(app, client):
    @app.get("/shop")
    def shop():
        return "<h1>shop</h1>"

    api = client.get("/api/missing")
    assert api.status_code == 404 and api.get_json()["error"]["code"] == "not_found"
    wrong_method = client.get("/api/buyer-addon/usage/add")
    assert wrong_method.status_code == 405 and wrong_method.get_json()["error"]["code"] == "method_not_allowed"
    host = client.get("/not-the-api")
    assert host.status_code == 404 and not host.is_json
    assert client.get("/shop").data == b"<h1>shop</h1>"


def test_a_request_without_a_valid_key_is_401_whatever_its_body(client, product):
    for body in ("{not json", '{"value": 0}', ""):
        response = client.post("/api/buyer-addon/usage/add", data=body, content_type="application/json",
                               headers={"Authorization": "Bearer sk_bogus_key"})
        assert response.status_code == 401
        assert response.get_json()["error"]["code"] == "unauthorized"


def test_openapi_document_is_public_and_lists_the_usage_routes(client):
    document = client.get("/api/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    assert {"/api/buyer-addon/usage", "/api/buyer-addon/usage/add"} <= set(document["paths"])


def test_every_config_key_is_documented_in_the_readme():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert [key for key in DEFAULTS if f"`{key}`" not in readme] == []
