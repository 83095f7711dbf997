"""The worker's side of the outbox: claim a due delivery, POST it, record the attempt.

The only module of ``webhooks`` that makes HTTP requests, and only in the worker,
never in a request thread. A claim is a lease, not a lock held across the call, so
a worker that dies mid-attempt only delays the delivery: delivery is at least once,
every attempt carrying the same ``webhook-id``.
"""

from __future__ import annotations

import logging
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import requests
from flask import current_app
from peewee import fn
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util import connection as _connection

import storage
from addon_plugin import signals
from addon_plugin.state import current_app_object
from storage import (
    Statements,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    db,
    transaction,
    utcnow,
)

from . import schedule, urls
from .errors import InvalidUrl
from .signing import signature_headers

__all__ = ["USER_AGENT", "EXCERPT_CHARS", "Outcome", "send", "deliver_due", "live_secrets", "prune"]

log = logging.getLogger(__name__)

#: Sent with every attempt, so receivers can recognise (and allow-list) us.
USER_AGENT = "addon-credits-webhooks/1.0 (+https://www.standardwebhooks.com)"

#: How much of a response body an attempt keeps for the merchant to read.
EXCERPT_CHARS = 1000

# Prepared once (a busy worker claims and records many deliveries a second).
_CLAIM = """UPDATE webhook_delivery SET lease_token = ?, lease_expires_at = ?
 WHERE id = (SELECT d.id FROM webhook_delivery d JOIN webhook_endpoint e ON e.id = d.endpoint_id
              WHERE d.status = 'pending' AND d.next_attempt_at <= ? AND e.enabled
                AND (d.lease_expires_at IS NULL OR d.lease_expires_at <= ?)
              ORDER BY d.next_attempt_at LIMIT 1{lock})
   AND (lease_expires_at IS NULL OR lease_expires_at <= ?)
RETURNING id, attempt_count"""

_TARGET = """SELECT ev.id, ev.payload, ep.id, ep.url, ep.secret, ep.previous_secret, ep.previous_secret_expires_at
  FROM webhook_delivery d
  JOIN webhook_event ev ON ev.id = d.event_id
  JOIN webhook_endpoint ep ON ep.id = d.endpoint_id
 WHERE d.id = ?"""

_FINISH = """UPDATE webhook_delivery SET status = ?, attempt_count = ?, last_attempt_at = ?, next_attempt_at = ?,
       completed_at = ?, lease_token = NULL, lease_expires_at = NULL
 WHERE id = ? AND lease_token = ?"""

_ATTEMPT = """INSERT INTO webhook_attempt
       (id, delivery_id, number, status_code, duration_ms, error, response_excerpt, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)"""

_SQL = Statements(
    claim={"sqlite": _CLAIM.format(lock=""), "postgresql": _CLAIM.format(lock=" FOR UPDATE OF d SKIP LOCKED")},
    target=_TARGET, finish=_FINISH, attempt=_ATTEMPT,
)


def _execute(name: str, params: tuple):
    return db.execute_sql(_SQL[name], params)


# -- one HTTP attempt --------------------------------------------------------

class _VettedConnection(HTTPConnection):
    """Connects only to an address the SSRF guard vetted just now.

    Resolving and connecting in one place means the address checked is the
    address used (no window for DNS rebinding). TLS still verifies ``host``.
    """

    def _new_conn(self) -> socket.socket:
        try:
            addresses = urls.public_addresses(self._dns_host, self.port)
        except InvalidUrl as error:
            raise NewConnectionError(self, f"refused by the SSRF guard: {error.message}") from None
        failure: OSError | None = None
        for address in addresses:
            try:
                return _connection.create_connection(
                    (address, self.port), self.timeout,
                    source_address=self.source_address, socket_options=self.socket_options,
                )
            except TimeoutError as error:
                raise ConnectTimeoutError(self, f"Connection to {self.host} timed out.") from error
            except OSError as error:
                failure = error
        raise NewConnectionError(self, f"Failed to establish a new connection: {failure}")


class _VettedHTTPConnection(_VettedConnection, HTTPConnection):
    pass


class _VettedHTTPSConnection(_VettedConnection, HTTPSConnection):
    pass


class _VettedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _VettedHTTPConnection


class _VettedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _VettedHTTPSConnection


class _VettedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _VettedHTTPPool, "https": _VettedHTTPSPool}


def _session(allow_private: bool) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxies or .netrc from the environment
    if not allow_private:
        session.mount("http://", _VettedAdapter())
        session.mount("https://", _VettedAdapter())
    return session


@dataclass(frozen=True)
class Outcome:
    """What one attempt got: a status code or an error, and how long it took."""

    status_code: int | None
    duration_ms: int
    error: str | None = None
    excerpt: str | None = None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _describe(error: Exception) -> str:
    reason = error.args[0] if error.args else error
    reason = getattr(reason, "reason", None) or reason  # urllib3's MaxRetryError wraps the cause
    if isinstance(error, requests.Timeout):
        kind = "timeout"
    elif isinstance(error, requests.ConnectionError):
        kind = "connection error"
    else:
        kind = type(error).__name__
    return f"{kind}: {reason}"[:EXCERPT_CHARS]


def send(session: requests.Session, url: str, body: bytes, headers: dict[str, str],
         timeout: tuple[float, float]) -> Outcome:
    """POST one signed body with (connect, read) timeouts and no redirects; never
    raises: errors come back in the :class:`Outcome`."""
    headers = {**headers, "content-type": "application/json", "user-agent": USER_AGENT}
    started = time.monotonic()
    try:
        response = session.post(url, data=body, headers=headers, timeout=(timeout[0], timeout[1]),
                                allow_redirects=False, stream=True)
        try:
            raw = next(response.iter_content(EXCERPT_CHARS * 4), b"")
        finally:
            response.close()
    except (requests.RequestException, ValueError) as error:
        return Outcome(None, _elapsed_ms(started), error=_describe(error))
    excerpt = raw.decode("utf-8", errors="replace")[:EXCERPT_CHARS]
    return Outcome(response.status_code, _elapsed_ms(started), excerpt=excerpt,
                   retry_after=schedule.parse_retry_after(response.headers.get("retry-after"), utcnow()))


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


# -- claim, attempt, record --------------------------------------------------

@dataclass(frozen=True)
class _Claim:
    """A leased delivery and everything its attempt needs."""

    delivery_id: str
    token: str
    number: int
    event_id: str
    payload: str
    endpoint_id: str
    url: str
    secrets: list[str]


def live_secrets(secret: str, previous: str | None, previous_expires_at: datetime | str | None,
                 now: datetime) -> list[str]:
    """The secrets that sign now: the current one, and the previous one during its grace period."""
    if isinstance(previous_expires_at, str):  # SQLite hands back text
        previous_expires_at = datetime.fromisoformat(previous_expires_at)
    if previous and previous_expires_at and previous_expires_at > now:
        return [secret, previous]
    return [secret]


def _claim(lease_seconds: float) -> _Claim | None:
    """Lease the most overdue delivery no one holds, with what its attempt needs.

    One short transaction: PostgreSQL skips rows other workers have locked
    (``SKIP LOCKED``), SQLite's write lock serialises claims. ``init_app`` keeps the
    lease longer than both timeouts together; once it expires, another worker
    makes the attempt again."""
    now = utcnow()
    token = secrets.token_hex(12)
    with transaction():
        row = _execute("claim", (token, now + timedelta(seconds=lease_seconds), now, now, now)).fetchone()
        if row is None:
            return None
        delivery_id, attempts_made = row
        event_id, payload, endpoint_id, url, secret, previous, expires = _execute("target", (delivery_id,)).fetchone()
    return _Claim(delivery_id, token, attempts_made + 1, event_id, payload, endpoint_id, url,
                  live_secrets(secret, previous, expires, now))


def _attempt(claim: _Claim, session: requests.Session) -> None:
    """Sign the stored body now, with the endpoint's live secrets, and send it
    outside any transaction."""
    config = current_app.config
    body = claim.payload.encode()
    headers = signature_headers(claim.event_id, int(time.time()), body, claim.secrets)
    outcome = send(session, claim.url, body, headers, config["ADDONS_WEBHOOK_TIMEOUT"])
    log.info("webhook delivery %s attempt %d to endpoint %s: %s in %d ms", claim.delivery_id, claim.number,
             claim.endpoint_id, outcome.status_code or outcome.error, outcome.duration_ms)
    _record(claim, outcome, config["ADDONS_WEBHOOK_RETRY_SCHEDULE"])


def _record(claim: _Claim, outcome: Outcome, retry_schedule: list[float]) -> None:
    """Write the attempt and the delivery's next state, if the lease is still ours.

    2xx succeeds; 410 disables the endpoint and fails the delivery; anything else
    is retried per :mod:`.schedule` until the last attempt fails the delivery and
    sends ``webhook_delivery_failed``."""
    now = utcnow()
    gone = outcome.status_code == 410
    delay = None if outcome.ok or gone else schedule.next_delay(retry_schedule, claim.number, outcome.retry_after)
    status = "succeeded" if outcome.ok else "pending" if delay is not None else "failed"
    next_at = now + timedelta(seconds=delay) if delay is not None else None
    with transaction():
        finished = _execute("finish", (status, claim.number, now, next_at, None if status == "pending" else now,
                                       claim.delivery_id, claim.token))
        if finished.rowcount != 1:
            log.warning("webhook delivery %s: lease lost (or delivery deleted) before attempt %d was recorded",
                        claim.delivery_id, claim.number)
            return
        _execute("attempt", (storage.new_id("att"), claim.delivery_id, claim.number, outcome.status_code,
                             outcome.duration_ms, outcome.error, outcome.excerpt, now))
        if gone:
            WebhookEndpoint.update(enabled=False, disabled_reason="gone", updated_at=now).where(
                WebhookEndpoint.id == claim.endpoint_id).execute()
        if status == "failed":
            signals.webhook_delivery_failed.send(
                current_app_object(),
                delivery=WebhookDelivery.get_by_id(claim.delivery_id),
                endpoint=WebhookEndpoint.get_by_id(claim.endpoint_id),
            )


def deliver_due(limit: int = 100) -> int:
    """Make up to ``limit`` due attempts, one claimed delivery at a time; returns how many.

    The worker task: ``flask addons worker`` calls it until it returns 0.
    """
    config = current_app.config
    session = _session(bool(config["ADDONS_WEBHOOK_ALLOW_PRIVATE_URLS"]))
    done = 0
    try:
        while done < limit:
            claim = _claim(float(config["ADDONS_WEBHOOK_LEASE"]))
            if claim is None:
                break
            _attempt(claim, session)
            done += 1
    finally:
        session.close()
    return done


def prune(older_than: float, *, batch: int = 1000) -> int:
    """Delete successful deliveries (with their attempts) completed more than
    ``older_than`` seconds ago, then events left with no delivery; returns how
    many deliveries went. Failed and pending deliveries are kept."""
    cutoff = utcnow() - timedelta(seconds=older_than)
    pruned = 0
    while True:
        with transaction():
            ids = [row.id for row in WebhookDelivery.select(WebhookDelivery.id).where(
                (WebhookDelivery.status == "succeeded") & (WebhookDelivery.completed_at < cutoff)
            ).limit(batch)]
            if ids:
                WebhookAttempt.delete().where(WebhookAttempt.delivery.in_(ids)).execute()
                WebhookDelivery.delete().where(WebhookDelivery.id.in_(ids)).execute()
        pruned += len(ids)
        if len(ids) < batch:
            break
    orphan = ~fn.EXISTS(WebhookDelivery.select(WebhookDelivery.id).where(WebhookDelivery.event == WebhookEvent.id))
    WebhookEvent.delete().where((WebhookEvent.created_at < cutoff) & orphan).execute()
    return pruned
