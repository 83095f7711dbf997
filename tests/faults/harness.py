"""The fault suite's tools: a real gunicorn server and real ``flask addons
worker`` processes that can be SIGKILLed and restarted, HTTP clients that retry
with the same idempotency key, and waits on conditions with deadlines."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
                raise RuntimeError(f"server exited with {process.returncode}") from None
            time.sleep(0.02)
    raise TimeoutError(f"nothing listened on port {port} within {timeout}s")


def poll(condition: Callable[[], bool], timeout: float = 60) -> bool:
    """Re-check a condition (e.g. on the database) until it holds or the deadline passes."""
    stop = threading.Event()
    deadline = threading.Timer(timeout, stop.set)
    deadline.start()
    try:
        while not stop.is_set():
            if condition():
                return True
            stop.wait(0.05)
        return condition()
    finally:
        deadline.cancel()


def environ(**config: Any) -> dict[str, str]:
    """``ADDONS_*`` settings as the host app reads them from its environment
    (``config.from_environ``: JSON, or plain text for strings)."""
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in config.items()}


class Server:
    """gunicorn serving ``app_spec`` with the given ``ADDONS_*`` environment."""

    def __init__(self, env: dict[str, str], app_spec: str = "tests.faults.host_app:app", workers: int = 2, *,
                 log_level: str = "warning", log_path: Path | None = None, args: tuple[str, ...] = ()):
        """``log_level`` is gunicorn's; with ``log_path`` the server's stdout and
        stderr (gunicorn's log, the app's logging) are appended to that file;
        ``args`` are more gunicorn options."""
        self.env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self.app_spec = app_spec
        self.workers = workers
        self.log_level = log_level
        self.log_path = log_path
        self.args = args
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        command = [sys.executable, "-m", "gunicorn", "-w", str(self.workers), "-b", f"127.0.0.1:{self.port}",
                   "--log-level", self.log_level, "--graceful-timeout", "1", *self.args, self.app_spec]
        if self.log_path is None:
            self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, start_new_session=True)
        else:
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(command + ["--access-logfile", "-"], cwd=ROOT, env=self.env,
                                                start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
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


class Worker:
    """``flask addons worker ARGS`` for the host app, in its own process group,
    with the given environment; its output is appended to ``log``."""

    def __init__(self, env: dict[str, str], *args: str, log: Path | None = None,
                 app_spec: str = "tests.faults.host_app:app") -> None:
        self.env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self.command = [sys.executable, "-m", "flask", "--app", app_spec, "addons", "worker", *args]
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> Worker:
        with open(self.log, "ab") if self.log else contextlib.nullcontext(subprocess.DEVNULL) as output:
            self.process = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=output,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> int:
        """SIGKILL the worker wherever it is; returns its exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.wait(timeout=10)

    def run(self, timeout: float = 120) -> int:
        """Start the worker (e.g. with ``--once``) and wait for it to exit; returns its exit status."""
        self.start()
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""


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
