"""SQLAlchemy 2 declarative models and the call status state machine.

The schema is portable between SQLite (the default) and PostgreSQL: plain ``VARCHAR`` /
``TEXT`` / ``INTEGER`` / ``BOOLEAN`` / ``FLOAT`` columns, :class:`sqlalchemy.JSON` for
structured values, enum-like columns stored as strings (no native enum types), and
timestamps as timezone-aware UTC (``TIMESTAMP WITH TIME ZONE`` on PostgreSQL; on SQLite,
which has no time zones, UTC is stored and re-attached on load by :class:`UTCDateTime`).

Tables: ``api_keys``, ``agents``, ``carrier_accounts``, ``calls``, ``call_transitions``,
``transcript_turns``, ``call_events``.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from gateway.store.errors import StoreError

__all__ = [
    "Base",
    "UTCDateTime",
    "CallStatus",
    "TRANSITIONS",
    "TERMINAL_STATUSES",
    "IllegalTransition",
    "check_transition",
    "ApiKey",
    "Agent",
    "CarrierAccount",
    "Call",
    "CallTransition",
    "TRANSITION_SOURCES",
    "TranscriptTurn",
    "CallEvent",
]


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    Binding a naive datetime raises :class:`ValueError` (it is ambiguous); aware values are
    converted to UTC. Loaded values are always aware UTC (SQLite returns naive values, which
    were stored as UTC).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: store aware UTC timestamps only")
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class CallStatus(enum.StrEnum):
    """Where a call is in its life. See :data:`TRANSITIONS` for the legal moves."""

    QUEUED = "queued"  # created; stream URL issued, nobody connected yet
    INITIATED = "initiated"  # outbound: the carrier accepted the call (it has a carrier call id)
    RINGING = "ringing"  # outbound: the callee's phone is ringing
    IN_PROGRESS = "in_progress"  # answered (carrier callback) or the media stream started
    COMPLETED = "completed"  # ended normally (either side hung up, max duration, …)
    FAILED = "failed"  # ended by an error (model, carrier, protocol, placement, node lost)
    NO_ANSWER = "no_answer"  # outbound: nobody picked up before the ring timeout
    BUSY = "busy"  # outbound: the callee's line was busy
    DECLINED = "declined"  # outbound: the callee rejected the call
    VOICEMAIL = "voicemail"  # outbound: a machine answered (voicemail policy hung up / left a message)
    CANCELED = "canceled"  # outbound: hung up by the gateway or the API before it was answered
    EXPIRED = "expired"  # the stream URL's token expired before anyone connected

    @property
    def is_terminal(self) -> bool:
        """Whether no transition leads out of this status."""
        return not TRANSITIONS[self]


#: The statuses that end a call before it was answered (an outbound call's carrier outcomes).
_UNANSWERED: frozenset[CallStatus] = frozenset(
    {
        CallStatus.FAILED,
        CallStatus.NO_ANSWER,
        CallStatus.BUSY,
        CallStatus.DECLINED,
        CallStatus.CANCELED,
        CallStatus.EXPIRED,
    }
)

#: The call lifecycle: for each status, the statuses it may move to. Terminal statuses map
#: to the empty set. The lifecycle only moves forward (no status is reached twice)::
#:
#:     queued      -> initiated ringing in_progress failed no_answer busy declined canceled expired
#:     initiated   -> ringing in_progress failed no_answer busy declined canceled expired
#:     ringing     -> in_progress failed no_answer busy declined canceled expired
#:     in_progress -> completed failed voicemail
#:     completed failed no_answer busy declined voicemail canceled expired: terminal
#:
#: The one exception is the store's ``node_lost`` presumption (``failed``), which a real
#: outcome of the serving process replaces (see ``CallsMixin.finalise_call``).
TRANSITIONS: dict[CallStatus, frozenset[CallStatus]] = {
    CallStatus.QUEUED: frozenset(
        {CallStatus.INITIATED, CallStatus.RINGING, CallStatus.IN_PROGRESS} | _UNANSWERED
    ),
    CallStatus.INITIATED: frozenset({CallStatus.RINGING, CallStatus.IN_PROGRESS} | _UNANSWERED),
    CallStatus.RINGING: frozenset({CallStatus.IN_PROGRESS} | _UNANSWERED),
    CallStatus.IN_PROGRESS: frozenset({CallStatus.COMPLETED, CallStatus.FAILED, CallStatus.VOICEMAIL}),
    CallStatus.COMPLETED: frozenset(),
    CallStatus.FAILED: frozenset(),
    CallStatus.NO_ANSWER: frozenset(),
    CallStatus.BUSY: frozenset(),
    CallStatus.DECLINED: frozenset(),
    CallStatus.VOICEMAIL: frozenset(),
    CallStatus.CANCELED: frozenset(),
    CallStatus.EXPIRED: frozenset(),
}

TERMINAL_STATUSES: frozenset[CallStatus] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)


class IllegalTransition(StoreError):
    """A call status change the lifecycle table does not allow (a bug in the caller).

    Attributes:
        call_id: the call, when known.
        old: the status the call was in.
        new: the status asked for.
    """

    code = "illegal_transition"

    def __init__(self, old: CallStatus, new: CallStatus, call_id: str = "") -> None:
        where = f"call {call_id}: " if call_id else ""
        allowed = ", ".join(sorted(TRANSITIONS[old])) or "nothing (terminal)"
        super().__init__(f"{where}illegal status transition {old} -> {new}; {old} allows {allowed}")
        self.call_id = call_id
        self.old = old
        self.new = new


def check_transition(old: CallStatus | str, new: CallStatus | str, *, call_id: str = "") -> None:
    """Raise :class:`IllegalTransition` unless ``old -> new`` is in :data:`TRANSITIONS`.

    Raises:
        IllegalTransition: the move is not allowed.
        ValueError: a status name is unknown.
    """
    old_s, new_s = CallStatus(old), CallStatus(new)
    if new_s not in TRANSITIONS[old_s]:
        raise IllegalTransition(old_s, new_s, call_id)


def sources_of(new: CallStatus) -> frozenset[CallStatus]:
    """Statuses from which ``new`` may be reached."""
    return frozenset(s for s, nxt in TRANSITIONS.items() if new in nxt)


class Base(DeclarativeBase):
    """Declarative base for the gateway's tables."""


class ApiKey(Base):
    """A REST API key. Only the SHA-256 hex digest of the key is stored, never the key."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    #: The first characters of the key (``gw_ab12…``), to tell keys apart in listings.
    prefix: Mapped[str] = mapped_column(String(16))
    #: The tenant the key acts for: what it creates belongs to this tenant, and it may
    #: reference only the secrets granted to it (:mod:`gateway.tenants`).
    tenant: Mapped[str] = mapped_column(String(64), default="default")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class Agent(Base):
    """A reusable agent definition; calls snapshot it into ``calls.config`` when created."""

    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    system_prompt: Mapped[str] = mapped_column(Text)
    voice: Mapped[str] = mapped_column(String(100))
    language: Mapped[str] = mapped_column(String(35))
    greeting: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(200), default="local")
    temperature: Mapped[float] = mapped_column(Float, default=0.0)
    first_speaker: Mapped[str] = mapped_column(String(10), default="agent")
    interruptible: Mapped[bool] = mapped_column(Boolean, default=False)
    turn_mode: Mapped[str] = mapped_column(String(20), default="gateway")
    #: off | immediate | pause_then_commit; NULL: the operator's default (GATEWAY_BARGE_IN_MODE).
    barge_in_mode: Mapped[str | None] = mapped_column(String(20), default=None, nullable=True)
    barge_in_commit_ms: Mapped[int] = mapped_column(Integer, default=400)
    max_duration_s: Mapped[int] = mapped_column(Integer, default=3000)
    inactivity_timeout_s: Mapped[int] = mapped_column(Integer, default=30)
    inactivity_action: Mapped[str] = mapped_column(String(10), default="hangup")
    recording_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    tools: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    #: credential name -> environment variable name (references only, never secret values)
    secret_refs: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    #: The tenant of the API key that created it; other tenants' keys get a 404.
    tenant: Mapped[str] = mapped_column(String(64), default="default", index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CarrierAccount(Base):
    """A tenant's own carrier account: its kind, credentials **by reference** and caller IDs.

    ``secret_refs`` maps the carrier SDK's credential names (``account_sid``, ``auth_token``
    …, see :mod:`gateway.store.carrier_accounts`) to ``GATEWAY_SECRET_*`` variable names;
    no secret value is ever stored. At most one live account per tenant is the default
    (a partial unique index). Deleting sets ``deleted_at``: the row stays, so calls placed
    through it can still be hung up.
    """

    __tablename__ = "carrier_accounts"
    __table_args__ = (
        Index(
            "uq_carrier_accounts_default", "tenant", unique=True,
            sqlite_where=text("is_default = 1"), postgresql_where=text("is_default"),
        ),  # fmt: skip
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), default="default", index=True)
    #: ``twilio``, ``telnyx``, ``plivo`` or ``vonage``.
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200))
    #: credential name -> environment variable name (references only, never secret values)
    secret_refs: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    #: The account's caller-ID numbers, E.164 (``+14155552671``), in the order given.
    numbers: Mapped[list[str]] = mapped_column(JSON, default=list)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class Call(Base):
    """One call: its config snapshot, stream token (hashed), lifecycle and outcome."""

    __tablename__ = "calls"
    __table_args__ = (
        Index("ix_calls_status_expires", "status", "stream_token_expires_at"),
        Index("ix_calls_created_at", "created_at"),
        Index("ix_calls_node_status", "node_id", "status"),
        Index("ix_calls_status_lease", "status", "lease_until"),
        # GET /calls: a tenant's calls newest first, alone or by status or direction
        # (gateway.store.calls_query); id breaks ties in the order
        Index("ix_calls_tenant_created", "tenant", "created_at", "id"),
        Index("ix_calls_tenant_status_created", "tenant", "status", "created_at", "id"),
        Index("ix_calls_tenant_direction_created", "tenant", "direction", "created_at", "id"),
        # the post-call worker's claims (gateway.store.postcall): pending rows, lapsed leases
        Index("ix_calls_post_call_status_lease", "post_call_status", "post_call_lease_until"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    #: The tenant of the API key that created it: its secrets resolve within that tenant's
    #: grant, and other tenants' keys get a 404.
    tenant: Mapped[str] = mapped_column(String(64), default="default")
    agent_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("agents.id", ondelete="SET NULL"), default=None, index=True
    )
    #: Snapshot of the :class:`~gateway.store.records.CallConfig` the call runs with
    #: (``CallConfig.to_json()``); never holds secrets.
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: The carrier name (``twilio``, ``telnyx``, ``plivo``, ``vonage``, ``exotel``, ``raw``).
    connection_type: Mapped[str] = mapped_column(String(20))
    direction: Mapped[str] = mapped_column(String(10), default="inbound")
    status: Mapped[str] = mapped_column(String(20), default=CallStatus.QUEUED.value)
    stream_token_hash: Mapped[str] = mapped_column(String(64))
    stream_token_expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    end_reason: Mapped[str | None] = mapped_column(String(64), default=None)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    duration_ms: Mapped[int | None] = mapped_column(Integer, default=None)
    recording_path: Mapped[str | None] = mapped_column(Text, default=None)
    #: ``recording`` (stream started, WAV being written), ``completed`` or ``failed``; NULL:
    #: not recorded (or a row from before this column, read as ``completed`` if it has a path).
    recording_status: Mapped[str | None] = mapped_column(String(16), default=None)
    #: Why the recording failed (``OSError`` text, e.g. ``[Errno 28] No space left on device``).
    recording_error: Mapped[str | None] = mapped_column(Text, default=None)
    #: The gateway node (``GATEWAY_NODE_ID``) that claimed the call's media stream: the node
    #: that finalises it as ``node_lost`` at its next start-up if it died mid-call.
    node_id: Mapped[str | None] = mapped_column(String(200), default=None)
    #: The process run of that node (a uuid4 made at the app's start) that claimed the stream;
    #: only it renews the lease (:mod:`gateway.store.leases`). NULL: a row from before leases.
    node_run: Mapped[str | None] = mapped_column(String(64), default=None)
    #: Until when the serving process vouches for the call (renewed every lease / 3 while it
    #: is live); once past, any node's sweeper finalises it as ``node_lost``. NULL: no lease.
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    #: When the lease was last set (the claim or a renewal).
    lease_renewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    carrier_call_id: Mapped[str | None] = mapped_column(String(200), default=None)
    stream_id: Mapped[str | None] = mapped_column(String(200), default=None)
    from_number: Mapped[str | None] = mapped_column(String(64), default=None)
    to_number: Mapped[str | None] = mapped_column(String(64), default=None)
    #: The tenant's carrier account an outbound call was placed through (no foreign key: the
    #: account row stays when deleted, and old databases get the column by ``ALTER TABLE``).
    carrier_account_id: Mapped[str | None] = mapped_column(String(40), default=None)
    #: When the callee answered (the carrier's ``in_progress``, else the media stream's start).
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    #: The carrier's final status when it came after the gateway finalised the call (or while
    #: a stream served it), e.g. ``completed``; the call's own ``status`` is the gateway's.
    carrier_status: Mapped[str | None] = mapped_column(String(32), default=None)
    #: The answering-machine detection outcome (``CallOutcome.voicemail``), if it ran.
    voicemail: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    #: An outbound call's request details kept for the record: ``{"objective", "context",
    #: "ringTimeout", "voicemail": {...}, "variables": [names]}`` (variable names only).
    outbound: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    #: The request's ``fields`` to extract after the call (``FieldSpec.stored()`` dicts);
    #: NULL or empty: none asked for.
    post_call_fields: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)
    #: ``pending`` (to compute), ``running`` (a worker holds it), ``completed``, ``skipped`` (no chat endpoint configured:
    #: ``post_call_error`` says so) or ``failed`` (``post_call_error`` says why); NULL: the
    #: call has not ended.
    post_call_status: Mapped[str | None] = mapped_column(String(16), default=None)
    post_call_error: Mapped[str | None] = mapped_column(Text, default=None)
    #: The post-call worker's claim (``running``): a token per claim, until when it holds
    #: (another worker may take the row over once it lapsed), and how many claims the row had
    #: (bounded: a row that keeps killing its worker ends ``failed``). See gateway.store.postcall.
    post_call_claim: Mapped[str | None] = mapped_column(String(64), default=None)
    post_call_lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    post_call_attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: The post-call plain-language summary, and the extracted values (name -> value or null).
    summary: Mapped[str | None] = mapped_column(Text, default=None)
    extracted: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    #: The request's per-call ``webhookUrl`` (events and the end-of-call report go there too).
    webhook_url: Mapped[str | None] = mapped_column(Text, default=None)
    #: Where ``POST /calls/{id}/control`` transferred the call (E.164), and when; NULL: never.
    transferred_to: Mapped[str | None] = mapped_column(String(64), default=None)
    transferred_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


#: Who caused a status change: the gateway itself (creation, placement, expiry, a session's
#: finalise, recovery), the carrier (a status callback) or the media stream (its claim).
TRANSITION_SOURCES: tuple[str, ...] = ("gateway", "carrier", "media")


class CallTransition(Base):
    """One status change of a call, timestamped, in ``seq`` order (0: the creation row).

    Written in the same transaction as the change of ``calls.status``. A status is reached at
    most once per call (unique ``(call_id, to_status)``): the lifecycle only moves forward,
    which is what makes a repeated carrier callback a no-op. The ``node_lost`` presumption is
    the one status that can be left: its replacement by ``completed`` / ``voicemail`` is a row
    from ``failed`` with ``detail["supersedes"] = "node_lost"``; by another ``failed`` it
    rewrites the ``failed`` row itself (same ``detail`` mark, ``presumedAt`` the old time).
    """

    __tablename__ = "call_transitions"
    __table_args__ = (Index("uq_call_transitions_to_status", "call_id", "to_status", unique=True),)

    call_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: NULL for the creation row (``NULL -> queued``).
    from_status: Mapped[str | None] = mapped_column(String(20), default=None)
    to_status: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: One of :data:`TRANSITION_SOURCES`.
    source: Mapped[str] = mapped_column(String(10), default="gateway")
    #: str -> str, e.g. ``{"rawStatus": "no-answer"}``, ``{"endReason": "caller_hangup"}``.
    detail: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)


class TranscriptTurn(Base):
    """One finished transcript turn of a call, ordered by ``seq``."""

    __tablename__ = "transcript_turns"

    call_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: ``user`` (the caller) or ``agent``.
    role: Mapped[str] = mapped_column(String(10))
    text: Mapped[str] = mapped_column(Text)
    #: Milliseconds since the call started.
    at_ms: Mapped[int] = mapped_column(Integer)
    #: The caller barged in on this (agent) turn.
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False)
    #: For interrupted agent turns: ms of the turn's audio the caller actually heard.
    heard_ms: Mapped[int | None] = mapped_column(Integer, default=None)
    #: The turn's span (ms since the call started): the caller's speech onset and end, or the
    #: agent's first audio and the end of its audio; NULL: not measured.
    start_ms: Mapped[int | None] = mapped_column(Integer, default=None)
    end_ms: Mapped[int | None] = mapped_column(Integer, default=None)
    #: Agent turns after caller speech: the end of that speech → the turn's first audio (ms).
    latency_ms: Mapped[int | None] = mapped_column(Integer, default=None)


class CallEvent(Base):
    """One timeline event of a call (barge-in, DTMF, model error, …), ordered by ``seq``."""

    __tablename__ = "call_events"

    call_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    at_ms: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
