"""The webhook outbox: one row per (event, destination), written in the state change's transaction.

Tables: ``webhook_endpoints`` (a tenant's endpoints, and its signing secret for per-call
``webhookUrl`` s; see :mod:`gateway.store.webhook_endpoints`) and ``webhook_outbox`` (the
deliveries). The outbox row's id (``msg_…``) is the Standard Webhooks ``webhook-id``: it is
the same on every attempt, so a receiver drops a repeat by it.

What writes rows, in the writer's own transaction (so a committed change always has its
events and a rolled-back one has none):

* :func:`write_call_events`, from :meth:`TransitionsMixin._write_transition
  <gateway.store.transitions.TransitionsMixin._write_transition>` (every status change):

  =================  =================================================================
  reached status     event types
  =================  =================================================================
  ``queued``         ``call.queued``
  ``ringing``        ``call.ringing``
  ``in_progress``    ``call.answered``
  ``voicemail``      ``call.voicemail`` then ``call.ended``
  other terminal     ``call.ended`` (``completed failed no_answer busy declined canceled
                     expired``)
  ``initiated``      none
  =================  =================================================================

  A real outcome replacing a ``node_lost`` presumption is a new ``call.ended`` (its
  ``data.detail.supersedes`` is ``node_lost``), except ``failed`` replacing ``failed``,
  which rewrites the transition row and sends nothing new.
* :func:`write_call_report` (``call.report``, the full record after post-call results),
  from the post-call step's ``finish_post_call`` transaction. Its ``payload`` stays NULL
  until the delivery worker renders it at the first attempt and stores it, so every attempt
  sends the same bytes.

Destinations of a call's event: each live endpoint of the call's tenant subscribed to the
type (``events`` NULL: all), plus the call's ``webhook_url`` (``endpoint_id`` NULL; signed
with the tenant's per-call secret), unless that URL answered 410 for this call.

Row ``status``: ``pending`` (to deliver, at ``next_attempt_at``), ``delivered``, ``failed``
(the retry schedule ran out, or its call is gone) or ``disabled`` (its endpoint answered 410
or was deleted). Claims are leases (:mod:`gateway.store.webhook_delivery`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, exists, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from gateway.clock import iso_utc
from gateway.store.models import TERMINAL_STATUSES, Base, Call, CallStatus, UTCDateTime, utcnow

__all__ = [
    "WebhookEndpoint",
    "OutboxMessage",
    "EVENT_TYPES",
    "event_types_of",
    "write_call_events",
    "write_call_report",
    "call_targets",
    "new_message_id",
]

#: Every event type a destination can receive (``events`` of an endpoint picks from these).
EVENT_TYPES: tuple[str, ...] = (
    "call.queued", "call.ringing", "call.answered", "call.voicemail", "call.ended", "call.report",
)  # fmt: skip

_BY_STATUS: dict[CallStatus, tuple[str, ...]] = {
    CallStatus.QUEUED: ("call.queued",),
    CallStatus.RINGING: ("call.ringing",),
    CallStatus.IN_PROGRESS: ("call.answered",),
    CallStatus.VOICEMAIL: ("call.voicemail", "call.ended"),
}


def event_types_of(new: CallStatus) -> tuple[str, ...]:
    """The event types a move to ``new`` sends (see the module docstring's table)."""
    if new in _BY_STATUS:
        return _BY_STATUS[new]
    return ("call.ended",) if new in TERMINAL_STATUSES else ()


class WebhookEndpoint(Base):
    """A tenant's webhook endpoint (``kind`` ``endpoint``), or its signing secret for the
    per-call ``webhookUrl`` s of its calls (``kind`` ``call_url``, ``url`` NULL, one live per
    tenant).

    ``secret`` is the Standard Webhooks key (``whsec_`` + base64 of 32 random bytes). It is
    kept because signing needs it (a digest could not sign); it is returned once, at
    creation, and never logged.
    """

    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        Index("ix_webhook_endpoints_tenant_kind", "tenant", "kind"),
        # One live call-URL secret per tenant, even when two rotations race (PostgreSQL's
        # READ COMMITTED lets both insert): the loser's INSERT fails and it retries.
        Index("uq_webhook_endpoints_call_url_live", "tenant", unique=True,
              sqlite_where=text("kind = 'call_url' AND deleted_at IS NULL"),
              postgresql_where=text("kind = 'call_url' AND deleted_at IS NULL")),
    )  # fmt: skip

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), default="default")
    kind: Mapped[str] = mapped_column(String(16), default="endpoint")
    url: Mapped[str | None] = mapped_column(Text, default=None)
    #: The event types it receives (a subset of :data:`EVENT_TYPES`); NULL: every type.
    events: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    secret: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: Set when it answered 410 Gone (``disabled_reason`` says so); nothing more is sent.
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    disabled_reason: Mapped[str | None] = mapped_column(Text, default=None)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class OutboxMessage(Base):
    """One event to deliver to one destination; its ``id`` is the ``webhook-id``."""

    __tablename__ = "webhook_outbox"
    __table_args__ = (
        Index("ix_webhook_outbox_due", "status", "next_attempt_at"),
        Index("ix_webhook_outbox_call", "call_id"),
        Index("ix_webhook_outbox_endpoint", "endpoint_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), default="default")
    call_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("calls.id", ondelete="CASCADE"), default=None
    )
    #: The endpoint (``webhook_endpoints.id``); NULL: the call's own ``webhook_url`` (``url``).
    endpoint_id: Mapped[str | None] = mapped_column(String(40), default=None)
    url: Mapped[str | None] = mapped_column(Text, default=None)
    event_type: Mapped[str] = mapped_column(String(32))
    #: The body sent, ``{"type", "timestamp", "data"}``; NULL until a ``call.report`` is rendered.
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    #: Attempts made so far (0: never tried).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: The worker holding it (a uuid4 per worker) and until when; lapsed: anyone may claim it.
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    #: The last attempt's HTTP status (NULL: no response) and error text.
    last_status: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


def new_message_id() -> str:
    """A ``webhook-id``: ``msg_`` + the creation time (ns, 16 hex digits, so ids sort in the
    order they were made, the tie-break under equal ``created_at``) + 64 random bits."""
    return f"msg_{time.time_ns():016x}{secrets.token_hex(8)}"


def call_targets(s: Session, tenant: str, call_id: str, webhook_url: str | None,
                 event_type: str) -> list[tuple[str | None, str | None]]:  # fmt: skip
    """``(endpoint_id, url)`` of each destination of ``event_type`` for a call (see the module
    docstring): the tenant's live subscribed endpoints (url ``None``: read at delivery), then
    ``(None, webhook_url)`` unless that URL answered 410 for this call."""
    rows = s.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.events).where(
            WebhookEndpoint.tenant == tenant, WebhookEndpoint.kind == "endpoint",
            WebhookEndpoint.disabled_at.is_(None), WebhookEndpoint.deleted_at.is_(None),
        ).order_by(WebhookEndpoint.created_at)
    ).all()  # fmt: skip
    targets: list[tuple[str | None, str | None]] = [(i, None) for i, ev in rows if ev is None or event_type in ev]
    if webhook_url:
        gone = s.scalar(select(exists().where(
            OutboxMessage.call_id == call_id, OutboxMessage.endpoint_id.is_(None), OutboxMessage.last_status == 410,
        )))  # fmt: skip
        if not gone:
            targets.append((None, webhook_url))
    return targets


def _add_rows(s: Session, tenant: str, call_id: str, webhook_url: str | None, event_type: str,
              payload: dict[str, Any] | None, at: datetime) -> int:  # fmt: skip
    targets = call_targets(s, tenant, call_id, webhook_url, event_type)
    for endpoint_id, url in targets:
        s.add(OutboxMessage(
            id=new_message_id(), tenant=tenant, call_id=call_id, endpoint_id=endpoint_id, url=url,
            event_type=event_type, payload=payload, created_at=at, status="pending", attempts=0,
            next_attempt_at=at,
        ))  # fmt: skip
    return len(targets)


def write_call_events(
    s: Session, call_id: str, old: CallStatus | None, new: CallStatus, *, at: datetime, source: str,
    detail: Mapping[str, str], seq: int,
) -> int:  # fmt: skip
    """Add the outbox rows of a call's move ``old -> new`` (in the move's transaction).

    Call it after the ``UPDATE`` that made the move: the payload reads the call's columns as
    they are now (``endReason``, ``durationMs`` … of an ending). The body::

        {"type": "call.ended", "timestamp": "<at, ISO 8601>",
         "data": {"callId", "status", "previousStatus", "seq", "at", "source", "direction",
                  "connectionType", "agentId", "to", "from", "endReason", "errorCode",
                  "durationMs", "detail": {str: str}}}

    Returns:
        How many rows were added (0: no event for ``new``, or no destination).
    """
    types = event_types_of(new)
    if not types:
        return 0
    row = s.execute(
        select(Call.tenant, Call.webhook_url, Call.direction, Call.connection_type, Call.agent_id,
               Call.to_number, Call.from_number, Call.end_reason, Call.error_code, Call.duration_ms)
        .where(Call.id == call_id)
    ).one()  # fmt: skip
    data = {
        "callId": call_id, "status": new.value, "previousStatus": old.value if old is not None else None,
        "seq": seq, "at": iso_utc(at), "source": source, "direction": row.direction,
        "connectionType": row.connection_type, "agentId": row.agent_id, "to": row.to_number,
        "from": row.from_number, "endReason": row.end_reason, "errorCode": row.error_code,
        "durationMs": row.duration_ms, "detail": dict(detail),
    }  # fmt: skip
    added = 0
    for event_type in types:
        payload = {"type": event_type, "timestamp": iso_utc(at), "data": data}
        added += _add_rows(s, row.tenant, call_id, row.webhook_url, event_type, payload, at)
    return added


def write_call_report(s: Session, call_id: str, *, at: datetime) -> int:
    """Add the ``call.report`` rows of a call (in the post-call results' transaction).

    The payload is left NULL: the delivery worker renders the full record (as ``GET
    /calls/{id}`` shows it) at the first attempt and stores it.

    Returns:
        How many rows were added (0: no destination, or no such call).
    """
    row = s.execute(select(Call.tenant, Call.webhook_url).where(Call.id == call_id)).one_or_none()
    if row is None:
        return 0
    return _add_rows(s, row.tenant, call_id, row.webhook_url, "call.report", None, at)
