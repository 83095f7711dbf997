"""Fixtures of the fault suite."""

from __future__ import annotations

import pytest

import storage

from .harness import Server, environ


@pytest.fixture
def env(app, database_url, tmp_path) -> dict[str, str]:
    """The environment of the servers and workers a test starts: the test's
    database, the file-backed gateway (``tests.faults.gateway``, keeping its
    charges in ``FAULTS_GATEWAY_DIR``) and webhooks to 127.0.0.1 allowed.
    A module adds its own settings by overriding ``env`` (requesting this one)."""
    storage.db.close()
    return {**environ(ADDONS_DATABASE_URL=database_url, ADDONS_PAYMENT_GATEWAY="tests.faults.gateway:FileGateway",
                      ADDONS_WEBHOOK_ALLOW_PRIVATE_URLS=True),
            "FAULTS_GATEWAY_DIR": str(tmp_path / "gateway")}


@pytest.fixture
def server(env):
    """The host app under gunicorn (2 workers) with ``env``."""
    server = Server(env).start()
    yield server
    server.stop()
