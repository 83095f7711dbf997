"""A payment gateway whose records outlive the process that charged.

Selected by a dotted path, as a host would configure its own gateway::

    ADDONS_PAYMENT_GATEWAY=tests.faults.gateway:FileGateway
    FAULTS_GATEWAY_DIR=/tmp/…      # where the charges are kept

Every call is logged (``calls.jsonl``) and every charge kept (``charges.jsonl``,
one JSON line each, fsynced) under a file lock shared by all processes, like a
real gateway's records: a repeated idempotency key returns the first charge,
and :meth:`FileGateway.lookup` finds it.

A test can make the next charge pause, in whichever process makes it, before
the charge is on file or right after it (the money taken, the credit not yet
recorded), so it can SIGKILL that process at exactly that moment:
:meth:`FileGateway.pause_next`, then :meth:`FileGateway.wait_paused`.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

__all__ = ["FileGateway", "PAUSE_POINTS"]

#: Where a charge can be paused: before it is on file, or just after.
PAUSE_POINTS = ("before", "after")

#: Longest a paused charge waits to be killed before it carries on.
MAX_PAUSE = 60.0


class FileGateway:
    """Charges on file, shared by every process given the same directory."""

    requires_customer = False

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        self.directory = Path(directory or os.environ["FAULTS_GATEWAY_DIR"])
        self.directory.mkdir(parents=True, exist_ok=True)
        self.charges_path = self.directory / "charges.jsonl"
        self.calls_path = self.directory / "calls.jsonl"

    # -- the gateway ------------------------------------------------------------

    def charge(self, *, amount: Decimal, currency: str, customer: str | None, payment_method: str,
               idempotency_key: str, description: str, metadata: Mapping[str, str]) -> str:
        """Charge once per idempotency key; a repeat returns the first charge's id."""
        self._append(self.calls_path, {"idempotency_key": idempotency_key, "pid": os.getpid()})
        self._pause_here("before")
        with open(self.charges_path, "a+") as charges:
            fcntl.flock(charges, fcntl.LOCK_EX)
            charges.seek(0)
            records = [json.loads(line) for line in charges]
            for record in records:
                if record["idempotency_key"] == idempotency_key:
                    return record["id"]
            charge_id = f"ch_file_{len(records) + 1}"
            charges.write(json.dumps({"id": charge_id, "idempotency_key": idempotency_key, "amount": str(amount),
                                      "currency": currency, "pid": os.getpid()}) + "\n")
            charges.flush()
            os.fsync(charges.fileno())
        self._pause_here("after")
        return charge_id

    def lookup(self, idempotency_key: str) -> str | None:
        """The charge made with that key, or None (this gateway never declines)."""
        for record in self.charges():
            if record["idempotency_key"] == idempotency_key:
                return record["id"]
        return None

    # -- what a test reads and controls -------------------------------------------

    def charges(self) -> list[dict]:
        """Every charge made, oldest first."""
        return self._read(self.charges_path)

    def calls(self) -> list[dict]:
        """Every call of :meth:`charge` (repeats included), oldest first."""
        return self._read(self.calls_path)

    def pause_next(self, point: str) -> None:
        """Make the next charge, in any process, pause at ``point`` (see :data:`PAUSE_POINTS`)."""
        assert point in PAUSE_POINTS
        (self.directory / f"pause-{point}").touch()

    def wait_paused(self, timeout: float) -> int | None:
        """The pid of the process paused in a charge, once there is one (None after ``timeout``).

        The pause is then cleared: kill that process, and the next charge runs normally."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for marker in self.directory.glob("paused-*"):
                marker.unlink()
                return int(marker.name.rsplit("-", 1)[1])
            time.sleep(0.01)
        return None

    # -- inside -----------------------------------------------------------------

    def _pause_here(self, point: str) -> None:
        armed = self.directory / f"pause-{point}"
        try:
            armed.rename(self.directory / f"paused-{point}-{os.getpid()}")  # atomic: one process takes it
        except FileNotFoundError:
            return
        time.sleep(MAX_PAUSE)  # until the test kills this process (or gives up on it)

    @staticmethod
    def _append(path: Path, record: dict) -> None:
        with open(path, "a") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            file.write(json.dumps(record) + "\n")

    @staticmethod
    def _read(path: Path) -> list[dict]:
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
