"""Micro-benchmark of the usage endpoint's answer: ``python -m benchmarks.usage_answer [seconds] [db]``.

Deductions through ``POST /buyer-addon/usage/add`` and balance reads through
``POST /buyer-addon/usage``, in process with Flask's test client (no network,
no server), so what it measures is the plugin's own cost per request: the
ledger write and everything the answer carries (the auto top-up state and the
depletion forecast included). Prints one JSON line per database and operation.
``per_cpu_s`` divides by this process's CPU time rather than wall time, so it
moves less when other processes share the machine (it leaves out the database
server's own time on PostgreSQL). Run it before and after a change,
alternately, several times.
"""

from __future__ import annotations

import json
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


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    only = sys.argv[2] if len(sys.argv) > 2 else None
    for name, url in databases():
        if only and only.lower() != name.lower():
            continue
        app = make_app(url)
        with app.app_context():
            storage.migrate()
            _, key, product_id, _ = seed(1, 10**12)
            _measure(name, app.test_client(), key, product_id, seconds)
        storage.unbind()


if __name__ == "__main__":
    main()
