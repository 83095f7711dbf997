"""The extension: configuration precedence, the inactive switch, and JSON errors
only under the plugin's prefix."""

from __future__ import annotations

from flask import Flask

from addon_plugin import AddonPlugin


def test_init_app_registers_the_extension_and_defaults(tmp_path):
    app = Flask("host", instance_path=str(tmp_path))
    plugin = AddonPlugin()
    plugin.init_app(app)
    assert app.extensions["addons"] is plugin
    assert app.config["ADDONS_URL_PREFIX"] == "/api"
    assert app.config["ADDONS_DATABASE_URL"] == f"sqlite:///{tmp_path}/addons.sqlite3"
    assert "addons" in app.cli.commands


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

    from addon_plugin.config import DEFAULTS

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert [key for key in DEFAULTS if f"`{key}`" not in readme] == []
