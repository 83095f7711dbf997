"""Micro-benchmark of the usage endpoint's answer: ``python -m benchmarks.usage_answer [--ab] [seconds] [db]``.

Deductions through ``POST /buyer-addon/usage/add`` and balance reads through
``POST /buyer-addon/usage``, in process with Flask's test client (no network,
no server), so what it measures is the plugin's own cost per request: the
ledger write and everything the answer carries (the auto top-up state and the
depletion forecast included). Prints one JSON line per database and operation.
``per_cpu_s`` divides by this process's CPU time rather than wall time, so it
moves less when other processes share the machine (it leaves out the database
server's own time on PostgreSQL). Run it before and after a change,
alternately, several times. ``--ab`` measures in one process instead, switching
what the account answer's auto top-up state and forecast cost off and on in
turn (CPU-time rates), which a loaded machine disturbs far less.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

from flask.testing import FlaskClient

import storage
from benchmarks.run import databases, make_app, seed


def _measure(name: str, client: FlaskClient, key: str, product_id: str, seconds: float) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    body = {"product_id": product_id, "buyer_email": "b0@bench.example"}

    def deduct() -> None:
        response = client.post("/api/buyer-addon/usage/add", json={**body, "value": -1}, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)

    def read() -> None:
        response = client.post("/api/buyer-addon/usage", json=body, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)

    deduct()
    for operation, fn in (("usage/add", deduct), ("usage", read)):
        count, cpu, start = 0, time.process_time(), time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(100):
                fn()
            count += 100
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        print(json.dumps({"db": name, "op": operation, "per_s": round(count / wall, 1),
                          "per_cpu_s": round(count / cpu, 1)}), flush=True)


def _ab(name: str, client: FlaskClient, key: str, product_id: str, seconds: float, rounds: int) -> None:
    """The same process, alternately without and with what issue 15 added to the usage answer (the
    visible auto top-up state and forecast, read by ``account_extras``; the usage-day counter on
    ``balance_changed``), ``rounds`` times ``seconds`` each: prints each operation's median rate
    ratio (with / without), so load from other processes falls on both sides alike."""
    from flask import current_app

    from addon_plugin import account_extras, forecast, signals

    app = current_app._get_current_object()
    real_read = account_extras.read
    headers = {"Authorization": f"Bearer {key}"}
    body = {"product_id": product_id, "buyer_email": "b0@bench.example"}
    quiet = ({"monthly_limit": None, "consecutive_failures": 0, "last_failure": None, "retry_at": None,
              "last_top_up": None}, None)

    def switch(on: bool) -> None:
        account_extras.read = real_read if on else (lambda account: quiet)  # type: ignore[assignment]
        signals.balance_changed.disconnect(forecast.on_balance_changed, sender=app)
        if on:
            signals.balance_changed.connect(forecast.on_balance_changed, sender=app)

    calls = {"usage/add": lambda: client.post("/api/buyer-addon/usage/add", json={**body, "value": -1},
                                              headers=headers),
             "usage": lambda: client.post("/api/buyer-addon/usage", json=body, headers=headers)}
    for operation, fn in calls.items():
        ratios, rates = [], {False: [], True: []}
        for _ in range(rounds):
            pair = {}
            for on in (False, True):
                switch(on)
                count, cpu = 0, time.process_time()
                while time.process_time() - cpu < seconds:
                    for _ in range(20):
                        fn()
                    count += 20
                pair[on] = count / (time.process_time() - cpu)
                rates[on].append(pair[on])
            ratios.append(pair[True] / pair[False])
        switch(True)
        print(json.dumps({"db": name, "op": operation, "rounds": rounds,
                          "without_per_cpu_s": round(statistics.median(rates[False]), 1),
                          "with_per_cpu_s": round(statistics.median(rates[True]), 1),
                          "median_ratio": round(statistics.median(ratios), 3),
                          "ratios": [round(r, 3) for r in sorted(ratios)]}), flush=True)
    account_extras.read = real_read  # type: ignore[assignment]


def main() -> None:
    args = [arg for arg in sys.argv[1:] if arg != "--ab"]
    ab = "--ab" in sys.argv
    seconds = float(args[0]) if args else 3.0
    only = args[1] if len(args) > 1 else None
    for name, url in databases():
        if only and only.lower() != name.lower():
            continue
        app = make_app(url)
        with app.app_context():
            storage.migrate()
            _, key, product_id, _ = seed(1, 10**12)
            if ab:
                _ab(name, app.test_client(), key, product_id, seconds, rounds=15)
            else:
                _measure(name, app.test_client(), key, product_id, seconds)
        storage.unbind()


if __name__ == "__main__":
    main()
