"""Helpers behind :class:`gateway.store.repo.Store`: ids and secret digests, engine setup,
row → record conversion, and the transcript/event rows ``finalise_call`` writes.

Nothing here opens a session; the store's mixins (:mod:`gateway.store.accounts`,
:mod:`gateway.store.calls`) call these inside their own transactions.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import create_engine, event
from sqlalchemy.engine import CursorResult, Engine, make_url
from sqlalchemy.pool import StaticPool

from gateway.store.models import (
    Agent,
    ApiKey,
    Base,
    Call,
    CallEvent,
    CallStatus,
    CallTransition,
    TranscriptTurn,
)
from gateway.store.records import (
    AgentRecord,
    ApiKeyRecord,
    CallRecord,
    EventRecord,
    TurnRecord,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["CONNECTION_TYPES", "API_KEY_PREFIX", "hash_secret", "new_id"]

#: Carrier names a call can be created for (``raw`` is the custom WebSocket protocol,
#: ``webrtc`` a browser's peer connection: :mod:`gateway.webrtc`).
CONNECTION_TYPES: tuple[str, ...] = ("twilio", "telnyx", "plivo", "vonage", "exotel", "raw", "webrtc")

API_KEY_PREFIX = "gw_"


def hash_secret(secret: str) -> str:
    """SHA-256 hex digest of an API key or stream token (what the store keeps)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_id(prefix: str) -> str:
    """A random id such as ``agt_3f9c…`` (96 random bits, hex)."""
    return f"{prefix}_{secrets.token_hex(12)}"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _make_engine(database_url: str, *, echo: bool = False) -> Engine:
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, echo=echo, pool_pre_ping=True, future=True)
    in_memory = url.database in (None, "", ":memory:") or "mode=memory" in str(url)
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if in_memory:
        # One shared connection, or every session would see its own empty database.
        kwargs["poolclass"] = StaticPool
    elif url.database:
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, echo=echo, future=True, **kwargs)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=5000")
        if not in_memory:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.close()

    return engine


def _rowcount(result: Any) -> int:
    """Rows matched by an UPDATE (``Session.execute`` is typed as returning ``Result``)."""
    return int(cast(CursorResult[Any], result).rowcount or 0)


_R = TypeVar("_R", bound="DataclassInstance")


def _record(record_type: type[_R], row: Base, **converted: Any) -> _R:
    """A ``record_type`` (frozen dataclass) from ``row``'s columns of the same names.

    Args:
        record_type: one of the :mod:`gateway.store.records` records.
        row: the ORM row; each field not in ``converted`` is read from its same-named column.
        converted: fields that need more than a read (containers copied, enums parsed, rows
            of other tables).

    Raises:
        AttributeError: the row has no column for a field (the record and table drifted apart).
    """
    names = [f.name for f in fields(record_type) if f.name not in converted]
    return record_type(**{name: getattr(row, name) for name in names}, **converted)


def _api_key_record(row: ApiKey) -> ApiKeyRecord:
    return _record(ApiKeyRecord, row)


def _agent_record(row: Agent) -> AgentRecord:
    return _record(
        AgentRecord,
        row,
        tools=tuple(dict(t) for t in row.tools or ()),
        secret_refs=dict(row.secret_refs or {}),
    )


def _call_record(
    row: Call,
    turns: Iterable[TranscriptTurn] = (),
    events: Iterable[CallEvent] = (),
    transitions: Iterable[CallTransition] = (),
) -> CallRecord:
    return _record(
        CallRecord,
        row,
        config=dict(row.config or {}),
        status=CallStatus(row.status),
        metrics=_dict_or_none(row.metrics),
        voicemail=_dict_or_none(row.voicemail),
        outbound=_dict_or_none(row.outbound),
        turns=tuple(_record(TurnRecord, t) for t in turns),
        events=tuple(_record(EventRecord, e, data=dict(e.data or {})) for e in events),
        transitions=[_transition_dict(t) for t in transitions],
    )


def _dict_or_none(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return dict(value) if value is not None else None


def _transition_dict(row: CallTransition) -> dict[str, Any]:
    """A ``call_transitions`` row as ``CallRecord.transitions`` holds it."""
    return {
        "from": row.from_status,
        "to": row.to_status,
        "at": row.at,
        "source": row.source,
        "detail": dict(row.detail or {}),
    }


def _details(
    carrier_call_id: str | None, stream_id: str | None, from_: str | None, to: str | None
) -> dict[str, str | None]:
    """The carrier's ids and numbers as ``calls`` column values; empty strings become None."""
    return {
        "carrier_call_id": carrier_call_id or None,
        "stream_id": stream_id or None,
        "from_number": from_ or None,
        "to_number": to or None,
    }


def _turn_rows(call_id: str, transcript: Iterable[Mapping[str, Any]]) -> list[TranscriptTurn]:
    rows = []
    for seq, turn in enumerate(transcript):
        role = turn.get("role")
        if role not in ("user", "agent"):
            raise ValueError(f"transcript turn {seq}: role must be 'user' or 'agent', got {role!r}")
        rows.append(
            TranscriptTurn(
                call_id=call_id,
                seq=seq,
                role=role,
                text=str(turn.get("text", "")),
                at_ms=int(turn.get("at_ms", 0)),
                interrupted=bool(turn.get("interrupted", False)),
                **{k: _int_or_none(turn.get(k)) for k in ("heard_ms", "start_ms", "end_ms", "latency_ms")},
            )
        )
    return rows


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _event_rows(call_id: str, events: Iterable[Mapping[str, Any]]) -> list[CallEvent]:
    rows = []
    for seq, ev in enumerate(events):
        kind = ev.get("kind")
        if not kind:
            raise ValueError(f"call event {seq}: 'kind' is required")
        rows.append(
            CallEvent(
                call_id=call_id,
                seq=seq,
                at_ms=int(ev.get("at_ms", 0)),
                kind=str(kind),
                data=dict(ev.get("data") or {}),
            )
        )
    return rows


def _recording_values(path: str | Path | None, status: str | None, error: str | None) -> dict[str, Any]:
    """The ``calls`` recording columns of a finalise: ``status`` defaults to ``failed`` with an
    ``error``, else ``completed`` with a ``path``, else none (not recorded).

    Raises:
        ValueError: ``status`` is not ``completed``, ``failed`` or ``None``.
    """
    if status is None:
        status = "failed" if error else ("completed" if path else None)
    if status not in (None, "completed", "failed"):
        raise ValueError(f"recording_status must be completed or failed, got {status!r}")
    return {"recording_path": str(path) if path is not None else None, "recording_status": status,
            "recording_error": error}
