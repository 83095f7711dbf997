"""``flask addons worker --once`` in a process of its own, at a gateway whose
charges are on file: a worker SIGKILLed after the gateway took the charge,
before the credit, is completed by the next worker with one charge and one
ledger entry; a charge whose every answer was lost is unresolved, blocks new
top-ups, and is credited once by the next worker's lookup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import storage
from addon_plugin import ledger
from addon_plugin.topup import execute
from storage import utcnow
from tests.helpers import top_up_entries, top_ups

CRASH_APP = Path(__file__).with_name("crash_app.py")


def run_worker(database_url: str, directory: Path, *, crash: bool = False, lose_answers: bool = False,
               **config: str) -> subprocess.CompletedProcess:
    """``flask addons worker --once`` in a new process, on the test's database."""
    env = {**os.environ, "TOPUP_TEST_DATABASE_URL": database_url, "TOPUP_TEST_DIR": str(directory),
           "TOPUP_CRASH_AFTER_CHARGE": "1" if crash else "0", "TOPUP_LOSE_ANSWERS": "1" if lose_answers else "0",
           **config}
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", f"{CRASH_APP}:create_app", "addons", "worker", "--once"],
        env=env, capture_output=True, text=True, timeout=120,
    )


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_worker_killed_after_the_charge_is_completed_by_the_next_worker(database_url, tmp_path, auto_account_id):
    ledger.record(auto_account_id, -510, "usage")
    [top_up] = top_ups(auto_account_id)
    key = execute.charge_key(top_up.id)

    killed = run_worker(database_url, tmp_path, crash=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = storage.TopUp.get_by_id(top_up.id)
    assert (left.status, left.attempts) == ("charging", 1)
    [charge] = read_lines(tmp_path / "charges.jsonl")
    assert (charge["idempotency_key"], charge["amount"], charge["currency"]) == (key, "19.00", "USD")
    assert top_up_entries(auto_account_id) == [] and ledger.balance(auto_account_id) == 490

    # Its lease would run out in ADDONS_TOP_UP_LEASE; move it back rather than wait.
    storage.TopUp.update(next_attempt_at=utcnow() - timedelta(seconds=1)).where(
        storage.TopUp.id == top_up.id).execute()
    resumed = run_worker(database_url, tmp_path, crash=False)
    assert resumed.returncode == 0, resumed.stderr

    assert read_lines(tmp_path / "charges.jsonl") == [charge]  # one charge at the gateway
    calls = read_lines(tmp_path / "calls.jsonl")
    assert [call["idempotency_key"] for call in calls] == [key, key]
    assert calls[0]["pid"] != calls[1]["pid"]
    done = storage.TopUp.get_by_id(top_up.id)
    assert (done.status, done.charge_id, done.attempts) == ("succeeded", charge["id"], 2)
    [entry] = top_up_entries(auto_account_id)
    assert (entry.delta, entry.reference) == (100, top_up.id)
    assert ledger.balance(auto_account_id) == 590


def test_a_charge_whose_answers_were_all_lost_is_unresolved_then_credited_by_the_next_workers_lookup(
        database_url, tmp_path, auto_account_id):
    ledger.record(auto_account_id, -510, "usage")
    [top_up] = top_ups(auto_account_id)
    key = execute.charge_key(top_up.id)
    # Retries fall due at once, so one run makes the first attempt and all three retries.
    config = {"ADDONS_TOP_UP_RETRY_SCHEDULE": "[0, 0, 0]", "ADDONS_TOP_UP_LOOKUP_INTERVAL": "0"}

    timed_out = run_worker(database_url, tmp_path, lose_answers=True, **config)
    assert timed_out.returncode == 0, timed_out.stderr
    left = storage.TopUp.get_by_id(top_up.id)
    assert (left.status, left.attempts, left.failure_code) == ("unresolved", 4, None)
    [charge] = read_lines(tmp_path / "charges.jsonl")
    assert [call["idempotency_key"] for call in read_lines(tmp_path / "calls.jsonl")] == [key] * 4
    assert top_up_entries(auto_account_id) == [] and ledger.balance(auto_account_id) == 490
    ledger.record(auto_account_id, -1, "usage")  # blocked: no second top-up, no second charge
    assert len(top_ups(auto_account_id)) == 1

    looked_up = run_worker(database_url, tmp_path, **config)
    assert looked_up.returncode == 0, looked_up.stderr
    done = storage.TopUp.get_by_id(top_up.id)
    assert (done.status, done.charge_id) == ("succeeded", charge["id"])
    assert read_lines(tmp_path / "charges.jsonl") == [charge] and len(read_lines(tmp_path / "calls.jsonl")) == 4
    [entry] = top_up_entries(auto_account_id)
    assert (entry.delta, entry.reference) == (100, top_up.id)
    assert ledger.balance(auto_account_id) == 589
