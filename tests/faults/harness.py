"""The fault suite's tools: a real gunicorn server that can be SIGKILLed and
restarted, and HTTP clients that retry with the same idempotency key."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen | None = None, timeout: float = 30) -> None:
    """Return once something accepts connections on ``port`` (or fail)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            time.sleep(0.02)
    raise TimeoutError(f"nothing listened on port {port} within {timeout}s")


class Server:
    """gunicorn serving ``app_spec`` with the given ``ADDONS_*`` environment."""

    def __init__(self, env: dict[str, str], app_spec: str = "tests.faults.host_app:app", workers: int = 2):
        self.env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self.app_spec = app_spec
        self.workers = workers
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Server":
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-w", str(self.workers), "-b", f"127.0.0.1:{self.port}",
             "--log-level", "warning", "--graceful-timeout", "1", self.app_spec],
            cwd=ROOT, env=self.env, start_new_session=True)
        wait_for_port(self.port, self.process)
        return self

    def kill(self) -> None:
        """SIGKILL the whole server (master and workers) mid-flight."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def post_until_answered(session: requests.Session, url: str, body: dict, headers: dict,
                        deadline: float) -> requests.Response:
    """POST, retrying the same request (same idempotency key) on connection errors
    until an HTTP answer arrives, as a well-behaved client does."""
    while True:
        try:
            return session.post(url, json=body, headers=headers, timeout=10)
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
            # refused, reset, or cut off mid-answer by the kill: no answer yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
