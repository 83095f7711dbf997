"""The background worker's loop: ``flask addons worker``.

Features register tasks (webhook deliveries, top-ups) on the app; the worker
runs every task until none has anything due. A task is a callable that does a
bounded batch of due work and returns how many items it handled. A task
registered ``once_per_run`` (asking a gateway again, say) runs in the first
round of each run only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from flask import Flask

from .state import get_state

__all__ = ["register_task", "run_once", "run_forever"]

log = logging.getLogger(__name__)

Task = Callable[[], int]


def register_task(app: Flask, name: str, task: Task, *, once_per_run: bool = False) -> None:
    """Add a task to the app's worker (called from ``init_app``)."""
    get_state(app).worker_tasks[name] = (task, once_per_run)


def run_once() -> int:
    """Run every task until a full round finds nothing due; returns items handled.

    Work that falls due while this runs (an immediate retry) is done too.
    """
    total, first_round = 0, True
    while True:
        handled = 0
        for name, (task, once_per_run) in get_state().worker_tasks.items():
            if once_per_run and not first_round:
                continue
            try:
                handled += task()
            except Exception:
                log.exception("worker task %s failed; continuing", name)
        total += handled
        if handled == 0:
            return total
        first_round = False


def run_forever(poll_interval: float = 0.2, stop: threading.Event | None = None) -> None:
    """Run until ``stop`` is set, sleeping ``poll_interval`` between idle rounds."""
    stop = stop or threading.Event()
    while not stop.is_set():
        if run_once() == 0:
            stop.wait(poll_interval)
