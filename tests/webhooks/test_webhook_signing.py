"""webhooks.signing: Standard Webhooks signatures, checked against a fixed
vector and, independently, against the `standardwebhooks` package."""

from __future__ import annotations

import base64
import time
from datetime import UTC

import pytest
from standardwebhooks import Webhook

from webhooks import WebhookVerificationError, generate_secret, sign, signature_headers, verify

# The published Standard Webhooks example: it cannot drift with our code.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_the_known_vector():
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_known_vector_verifies_at_its_time():
    headers = {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TIMESTAMP),
               "webhook-signature": VECTOR_SIGNATURE}
    assert verify(VECTOR_BODY, headers, VECTOR_SECRET, now=VECTOR_TIMESTAMP + 10) == {"test": 2432232314}


def test_secret_is_whsec_and_base64_of_at_least_24_bytes():
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) >= 24
    assert generate_secret() != secret


def test_standardwebhooks_library_accepts_our_headers():
    secret = generate_secret()
    body = '{"type":"balance.updated","data":{"buyer_email":"zoë@example.com"}}'.encode()
    headers = signature_headers("msg_1", int(time.time()), body, [secret])
    assert Webhook(secret).verify(body, headers) == {"type": "balance.updated",
                                                     "data": {"buyer_email": "zoë@example.com"}}


def test_during_rotation_both_secrets_sign_and_either_verifies():
    old, new = generate_secret(), generate_secret()
    body = b'{"n":1}'
    headers = signature_headers("msg_2", int(time.time()), body, [new, old])
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers) == {"n": 1}
        assert verify(body, headers, secret) == {"n": 1}


def test_our_verify_accepts_standardwebhooks_signatures_and_any_header_case():
    from datetime import datetime

    secret = generate_secret()
    now = int(time.time())
    signature = Webhook(secret).sign("msg_3", datetime.fromtimestamp(now, tz=UTC), '{"a":1}')
    headers = {"Webhook-Id": "msg_3", "WEBHOOK-TIMESTAMP": str(now), "webhook-signature": signature}
    assert verify('{"a":1}', headers, secret) == {"a": 1}


def _headers(body: bytes, secret: str, timestamp: int | None = None) -> dict[str, str]:
    return signature_headers("msg_4", timestamp if timestamp is not None else int(time.time()), body, [secret])


def test_tampered_body_fails():
    secret = generate_secret()
    headers = _headers(b'{"balance":1}', secret)
    with pytest.raises(WebhookVerificationError):
        verify(b'{"balance":9}', headers, secret)


def test_wrong_secret_fails():
    headers = _headers(b"{}", generate_secret())
    with pytest.raises(WebhookVerificationError):
        verify(b"{}", headers, generate_secret())


def test_old_timestamp_fails():
    secret = generate_secret()
    headers = _headers(b"{}", secret, int(time.time()) - 301)
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify(b"{}", headers, secret)


def test_future_timestamp_fails():
    secret = generate_secret()
    headers = _headers(b"{}", secret, int(time.time()) + 301)
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify(b"{}", headers, secret)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_fails(missing):
    secret = generate_secret()
    headers = _headers(b"{}", secret)
    del headers[missing]
    with pytest.raises(WebhookVerificationError, match="Missing"):
        verify(b"{}", headers, secret)


def test_changing_the_id_breaks_the_signature():
    secret = generate_secret()
    headers = _headers(b"{}", secret)
    headers["webhook-id"] = "msg_other"
    with pytest.raises(WebhookVerificationError):
        verify(b"{}", headers, secret)


def test_a_secret_that_is_not_base64_is_refused():
    with pytest.raises(ValueError):
        sign("whsec_not*base64", "msg", 1, b"{}")


def test_verify_takes_a_request_s_headers_and_several_secrets():
    from werkzeug.datastructures import Headers

    old, new = generate_secret(), generate_secret()
    body = b'{"type":"balance.low"}'
    headers = Headers(signature_headers("msg_5", int(time.time()), body, [old]))
    assert verify(body, headers, [new, old]) == {"type": "balance.low"}
    with pytest.raises(WebhookVerificationError):
        verify(body, headers, [new])
