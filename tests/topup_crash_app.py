"""A host app for the crash test, run as ``flask --app tests/topup_crash_app.py:create_app addons worker --once``.

Its gateway keeps charges in a file (one JSON line per charge, keyed by
idempotency key, like a real gateway's records) and logs every call. With
``TOPUP_CRASH_AFTER_CHARGE=1`` the process SIGKILLs itself right after the
charge is on file: the gateway took the money, the credit was never recorded.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
from decimal import Decimal
from pathlib import Path

from flask import Flask

from addon_plugin import AddonPlugin


class FileGateway:
    """Charges on file: a repeated idempotency key returns the first charge."""

    requires_customer = False

    def __init__(self, directory: str) -> None:
        self.charges = Path(directory, "charges.jsonl")
        self.calls = Path(directory, "calls.jsonl")

    def charge(self, *, amount: Decimal, currency: str, customer: str | None, payment_method: str,
               idempotency_key: str, description: str, metadata: dict[str, str]) -> str:
        with open(self.calls, "a") as calls:
            calls.write(json.dumps({"idempotency_key": idempotency_key, "pid": os.getpid()}) + "\n")
        with open(self.charges, "a+") as charges:
            fcntl.flock(charges, fcntl.LOCK_EX)
            charges.seek(0)
            for line in charges:
                record = json.loads(line)
                if record["idempotency_key"] == idempotency_key:
                    return record["id"]
            charge_id = f"ch_file_{sum(1 for _ in open(self.charges)) + 1}"
            charges.write(json.dumps({"id": charge_id, "idempotency_key": idempotency_key,
                                      "amount": str(amount), "currency": currency}) + "\n")
            charges.flush()
            os.fsync(charges.fileno())
        if os.environ.get("TOPUP_CRASH_AFTER_CHARGE") == "1":
            os.kill(os.getpid(), signal.SIGKILL)
        return charge_id


def create_app() -> Flask:
    app = Flask("crash_host", instance_path=os.environ["TOPUP_TEST_DIR"])
    app.config.update(ADDONS_DATABASE_URL=os.environ["TOPUP_TEST_DATABASE_URL"],
                      ADDONS_PAYMENT_GATEWAY=FileGateway(os.environ["TOPUP_TEST_DIR"]))
    AddonPlugin(app)
    return app
