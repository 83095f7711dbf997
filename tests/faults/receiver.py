"""A merchant's webhook server on 127.0.0.1, run by a thread in the test.

It records every request and verifies each signature with the
``standardwebhooks`` package (as a merchant would, not with our own code).
By default it answers 200 (400 if the signature does not verify); a test can
script the answers (``answer``) and stall requests (``hold``), and can start it
late on a port chosen in advance, so that until then the merchant's server is
down (connection refused).
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
from standardwebhooks import Webhook

from .harness import free_port

__all__ = ["Receiver", "register"]

#: Seconds any wait on the receiver may take by default.
DEADLINE = 60


class Receiver:
    """A merchant's webhook server. ``requests`` holds one record per request:
    ``{"number", "id", "body", "verified", "headers", "at", "status"}`` (``at``
    is ``time.monotonic()`` on arrival; ``status`` is what was answered, None
    until then).

    ``hold(number)`` is called with each request's 1-based number before
    answering, so a test can stall a request (e.g. until it kills the worker).
    ``answer(record)`` returns the status to answer (it may take its time: a
    slow server); by default 200, or 400 when the signature does not verify.
    """

    def __init__(self, hold: Callable[[int], None] | None = None,
                 answer: Callable[[dict], int] | None = None, *, port: int | None = None) -> None:
        self.secret: str | None = None
        self.requests: list[dict] = []
        self.changed = threading.Condition()
        self.hold = hold
        self.answer = answer
        self.port = port or free_port()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks"

    def start(self) -> Receiver:
        """Start listening (until now, connections to ``url`` are refused)."""
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def ids(self) -> collections.Counter:
        """How many requests arrived per ``webhook-id``."""
        with self.changed:
            return collections.Counter(request["id"] for request in self.requests)

    def wait_until(self, condition: Callable[[], bool], timeout: float = DEADLINE) -> bool:
        """Wait for ``condition`` (re-checked on each request and each answer)."""
        with self.changed:
            return self.changed.wait_for(condition, timeout) if timeout else condition()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {key.lower(): value for key, value in self.headers.items()}
                try:
                    Webhook(receiver.secret).verify(body, headers)
                    verified = True
                except Exception:
                    verified = False
                with receiver.changed:
                    record = {"number": len(receiver.requests) + 1, "id": headers.get("webhook-id"),
                              "body": json.loads(body), "verified": verified, "headers": headers,
                              "at": time.monotonic(), "status": None}
                    receiver.requests.append(record)
                    receiver.changed.notify_all()
                if receiver.hold:
                    receiver.hold(record["number"])
                status = receiver.answer(record) if receiver.answer else 200 if verified else 400
                with receiver.changed:
                    record["status"] = status
                    receiver.changed.notify_all()
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:  # the worker is gone, or gave up waiting
                    pass

            def log_message(self, *args) -> None:
                pass

        return Handler


def register(base_url: str, headers: dict[str, str], receiver: Receiver) -> str:
    """Register ``receiver`` as a webhook endpoint (for every event type) through
    the HTTP API at ``base_url``; keeps its secret on it and returns the endpoint id."""
    created = requests.post(f"{base_url}/api/addons/webhook-endpoints", json={"url": receiver.url},
                            headers=headers, timeout=10)
    assert created.status_code == 201, created.text
    receiver.secret = created.json()["secret"]
    return created.json()["id"]
