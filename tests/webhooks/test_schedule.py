"""The retry schedule (Standard Webhooks, jittered, scalable) and the signed headers."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gateway.store.webhook_endpoints import new_webhook_secret
from gateway.webhooks.schedule import SCHEDULE_S, encode_body, retry_delay_s, signed_request


def test_schedule_is_the_standard_one_with_jitter_and_scale() -> None:
    assert SCHEDULE_S == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    rng = random.Random(1)
    for n in range(1, 8):
        delays = [retry_delay_s(n, rng=rng) for _ in range(200)]
        assert all(0.8 * SCHEDULE_S[n] <= d < 1.2 * SCHEDULE_S[n] for d in delays)
        assert len(set(delays)) == 200  # jittered, not one instant for everyone
    assert retry_delay_s(2, scale=0.001, rng=random.Random(1)) == pytest.approx(
        retry_delay_s(2, rng=random.Random(1)) * 0.001)  # fmt: skip
    assert retry_delay_s(8) is None and retry_delay_s(20) is None
    with pytest.raises(ValueError):
        retry_delay_s(0)
    with pytest.raises(ValueError):
        retry_delay_s(1, scale=0)


def test_signed_headers_verify_and_detect_tampering() -> None:
    secret = new_webhook_secret()
    assert secret.startswith("whsec_") and len(secret) == 50
    body = encode_body({"type": "call.ended", "data": {"text": "héllo"}})
    assert body == '{"type":"call.ended","data":{"text":"héllo"}}'.encode()
    headers = signed_request("msg_1", secret, body)
    assert Webhook(secret).verify(body, headers) == {"type": "call.ended", "data": {"text": "héllo"}}
    assert headers["webhook-id"] == "msg_1" and headers["webhook-signature"].startswith("v1,")
    for bad_body, bad_headers, key in (
        (body + b" ", headers, secret),
        (body, {**headers, "webhook-id": "msg_2"}, secret),
        (body, headers, new_webhook_secret()),
        (body, {k: v for k, v in headers.items() if k != "webhook-signature"}, secret),
    ):
        with pytest.raises(WebhookVerificationError):
            Webhook(key).verify(bad_body, bad_headers)
    old = signed_request("msg_1", secret, body, now=datetime.now(timezone.utc) - timedelta(minutes=6))
    with pytest.raises(WebhookVerificationError):  # replayed outside the receiver's tolerance
        Webhook(secret).verify(body, old)
