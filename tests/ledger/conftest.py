"""Fixtures of the order hooks' tests: the plugin and an add-on the host knows."""

import pytest

from addon_plugin import AddonPlugin
from tests.helpers import create_product


@pytest.fixture
def plugin(app) -> AddonPlugin:
    return app.extensions["addons"].plugin


@pytest.fixture
def addon(merchant_id):
    """An add-on the host knows as product "host-7": 100 credits for 19.00."""
    return create_product(merchant_id, host_product_id="host-7")
