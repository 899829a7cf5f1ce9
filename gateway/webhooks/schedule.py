"""The Standard Webhooks retry schedule, with jitter, and the signed request's headers (pure).

Schedule (delay before each attempt, from the previous one): immediately, 5 s, 5 min, 30 min,
2 h, 5 h, 10 h, 10 h: eight attempts over about 27.6 h, after which the delivery is
``failed``. Each retry's delay is multiplied by a uniform jitter in [0.8, 1.2) so that
deliveries failing together (an endpoint down) do not come back together, and by the
operator's ``GATEWAY_WEBHOOK_RETRY_SCALE`` (1; tests compress the schedule with e.g. 0.001).

Source: https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
("Retry schedule", "Signature scheme": ``webhook-id``, ``webhook-timestamp`` in integer
seconds since the epoch, ``webhook-signature`` ``v1,<base64 HMAC-SHA256 of
id.timestamp.body>``).
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timezone
from typing import Any

from standardwebhooks.webhooks import Webhook

__all__ = ["SCHEDULE_S", "JITTER", "retry_delay_s", "signed_request", "encode_body"]

#: Seconds to wait before attempt ``i`` (attempt 0: at once).
SCHEDULE_S: tuple[float, ...] = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
#: The multiplicative jitter's range.
JITTER: tuple[float, float] = (0.8, 1.2)


def retry_delay_s(attempts_made: int, *, scale: float = 1.0, rng: random.Random | None = None) -> float | None:
    """Seconds until the next attempt after ``attempts_made`` failed ones (≥ 1), jittered and
    scaled; ``None``: the schedule is spent (the delivery has failed).

    Raises:
        ValueError: ``attempts_made`` < 1 or ``scale`` not positive.
    """
    if attempts_made < 1 or scale <= 0:
        raise ValueError("attempts_made must be >= 1 and scale positive")
    if attempts_made >= len(SCHEDULE_S):
        return None
    jitter = (rng or random).uniform(*JITTER)
    return SCHEDULE_S[attempts_made] * jitter * scale


def encode_body(payload: Any) -> bytes:
    """The exact bytes sent (and signed): compact JSON, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def signed_request(message_id: str, secret: str, body: bytes, *, now: datetime | None = None) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt, signed with ``standardwebhooks``.

    Args:
        message_id: the ``webhook-id`` (the outbox row's id, the same on every attempt).
        secret: ``whsec_…``.
        body: the bytes sent (:func:`encode_body`).
        now: the attempt's time (aware; default now): ``webhook-timestamp``, whole seconds.

    Returns:
        ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``, ``content-type``.
    """
    at = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(microsecond=0)
    signature = Webhook(secret).sign(msg_id=message_id, timestamp=at, data=body.decode("utf-8"))
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
