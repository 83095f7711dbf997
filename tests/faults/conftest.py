"""Fixtures of the fault suite."""

from __future__ import annotations

import pytest

import storage

from .harness import Server


@pytest.fixture
def server(app, database_url):
    """The host app under gunicorn (2 workers) on the test's database."""
    storage.db.close()
    server = Server({"ADDONS_DATABASE_URL": database_url}).start()
    yield server
    server.stop()
