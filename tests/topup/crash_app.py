"""A host app for the crash test, run as ``flask --app tests/topup/crash_app.py:create_app addons worker --once``.

Its gateway keeps charges in a file (``tests.faults.gateway.FileGateway``: one JSON
line per charge, keyed by idempotency key, like a real gateway's records) and
logs every call. With ``TOPUP_CRASH_AFTER_CHARGE=1`` the process SIGKILLs
itself right after the charge is on file: the gateway took the money, the
credit was never recorded. With ``TOPUP_LOSE_ANSWERS=1`` every charge call
times out once the charge is on file: the money taken, the answer lost.
``ADDONS_*`` environment variables configure the plugin.
"""

from __future__ import annotations

import os
import signal

from flask import Flask

from addon_plugin import AddonPlugin
from addon_plugin.config import from_environ
from addon_plugin.topup import GatewayUnavailable
from tests.faults.gateway import FileGateway


class CrashingGateway(FileGateway):
    """A :class:`FileGateway` whose process may die, or whose answer may be lost, right after each charge."""

    def charge(self, **charge) -> str:
        charge_id = super().charge(**charge)
        if os.environ.get("TOPUP_CRASH_AFTER_CHARGE") == "1":
            os.kill(os.getpid(), signal.SIGKILL)
        if os.environ.get("TOPUP_LOSE_ANSWERS") == "1":
            raise GatewayUnavailable("Read timed out.")
        return charge_id


def create_app() -> Flask:
    app = Flask("crash_host", instance_path=os.environ["TOPUP_TEST_DIR"])
    from_environ(app.config)
    app.config.update(ADDONS_DATABASE_URL=os.environ["TOPUP_TEST_DATABASE_URL"],
                      ADDONS_PAYMENT_GATEWAY=CrashingGateway(os.environ["TOPUP_TEST_DIR"]))
    AddonPlugin(app)
    return app
