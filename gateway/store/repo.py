"""The :class:`Store`: synchronous persistence for API keys, agents, calls and transcripts.

Every method opens its own short transaction from a thread-safe ``sessionmaker``, so one
``Store`` is shared by the whole process; async code calls it through
``asyncio.to_thread``. Methods return the frozen records of :mod:`gateway.store.records`,
never ORM objects.

Status changes are conditional ``UPDATE … WHERE status IN (…)`` statements, so two racing
writers (two sockets using one stream URL, two finalisers) cannot both win, on SQLite and
PostgreSQL alike.

Secrets: API keys and stream tokens are returned in plaintext once, at creation; only their
SHA-256 hex digests are stored. Nothing here logs a key or a token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import create_engine, event, select, update
from sqlalchemy.engine import CursorResult, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from gateway.llm.base import AgentConfig
from gateway.store.errors import (
    BadToken,
    CallNotConnectable,
    TokenExpired,
    UnknownAgent,
    UnknownCall,
)
from gateway.store.models import (
    TERMINAL_STATUSES,
    Agent,
    ApiKey,
    Base,
    Call,
    CallEvent,
    CallStatus,
    IllegalTransition,
    TranscriptTurn,
    check_transition,
    sources_of,
)
from gateway.store.records import (
    AgentRecord,
    ApiKeyRecord,
    CallConfig,
    CallRecord,
    EventRecord,
    TurnRecord,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["Store", "hash_secret", "new_id", "CONNECTION_TYPES"]

log = logging.getLogger("gateway.store")

#: Carrier names a call can be created for (``raw`` is the custom WebSocket protocol).
CONNECTION_TYPES: tuple[str, ...] = ("twilio", "telnyx", "plivo", "vonage", "exotel", "raw")

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
    row: Call, turns: Iterable[TranscriptTurn] = (), events: Iterable[CallEvent] = ()
) -> CallRecord:
    return _record(
        CallRecord,
        row,
        config=dict(row.config or {}),
        status=CallStatus(row.status),
        metrics=dict(row.metrics) if row.metrics is not None else None,
        turns=tuple(_record(TurnRecord, t) for t in turns),
        events=tuple(_record(EventRecord, e, data=dict(e.data or {})) for e in events),
    )


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
        heard = turn.get("heard_ms")
        rows.append(
            TranscriptTurn(
                call_id=call_id,
                seq=seq,
                role=role,
                text=str(turn.get("text", "")),
                at_ms=int(turn.get("at_ms", 0)),
                interrupted=bool(turn.get("interrupted", False)),
                heard_ms=None if heard is None else int(heard),
            )
        )
    return rows


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


class Store:
    """Persistence for the gateway, over one SQLAlchemy engine.

    Args:
        database_url: SQLAlchemy URL, e.g. ``sqlite:///gateway.db`` (the default setting),
            ``sqlite://`` (in memory) or ``postgresql+psycopg://…``. A SQLite file's parent
            directory is created.
        clock: returns the current aware UTC time; injectable for tests.
        echo: log SQL statements (debugging).

    Thread safety: methods may be called concurrently from any thread.
    """

    def __init__(
        self,
        database_url: str,
        *,
        clock: Callable[[], datetime] = _utcnow,
        echo: bool = False,
    ) -> None:
        self.engine = _make_engine(database_url, echo=echo)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._clock = clock

    # -- lifecycle -----------------------------------------------------------------------

    def create_all(self) -> None:
        """Create any missing tables (idempotent; no migrations)."""
        Base.metadata.create_all(self.engine)

    def close(self) -> None:
        """Dispose of the engine's connection pool."""
        self.engine.dispose()

    def now(self) -> datetime:
        """The store's clock (aware UTC)."""
        return self._clock()

    def _session(self) -> Session:
        return self._sessions()

    # -- API keys ------------------------------------------------------------------------

    def create_api_key(self, name: str) -> tuple[str, ApiKeyRecord]:
        """Create an API key.

        Returns:
            ``(key, record)``: the plaintext key (``gw_`` + 43 URL-safe characters), shown
            this once and never stored, and its record.
        """
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKey(
            id=new_id("key"), name=name, key_hash=hash_secret(key), prefix=key[:8],
            created_at=self.now(),
        )  # fmt: skip
        with self._session() as s, s.begin():
            s.add(row)
        return key, _api_key_record(row)

    def verify_api_key(self, key: str | None) -> bool:
        """Whether ``key`` is a live (not revoked) API key. Never raises for bad input."""
        if not key or not isinstance(key, str) or len(key) > 512:
            return False
        digest = hash_secret(key)
        with self._session() as s:
            row = s.scalars(select(ApiKey).where(ApiKey.key_hash == digest)).one_or_none()
            if row is None or row.revoked_at is not None:
                return False
            return hmac.compare_digest(row.key_hash, digest)

    def revoke_api_key(self, key_id: str) -> bool:
        """Revoke a key by id. Returns ``False`` if no live key has that id."""
        with self._session() as s, s.begin():
            res = s.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=self.now())
            )
            return _rowcount(res) == 1

    def list_api_keys(self) -> list[ApiKeyRecord]:
        """All keys (live and revoked), oldest first."""
        with self._session() as s:
            rows = s.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)).all()
            return [_api_key_record(r) for r in rows]

    # -- agents --------------------------------------------------------------------------

    def create_agent(
        self,
        *,
        name: str,
        system_prompt: str,
        voice: str,
        language: str,
        greeting: str,
        model: str = "local",
        temperature: float = 0.0,
        first_speaker: str = "agent",
        interruptible: bool = False,
        turn_mode: str = "gateway",
        max_duration_s: int = 3000,
        inactivity_timeout_s: int = 30,
        inactivity_action: str = "hangup",
        recording_enabled: bool = True,
        tools: Iterable[Mapping[str, Any]] = (),
        secret_refs: Mapping[str, str] | None = None,
    ) -> AgentRecord:
        """Store a new agent (values are validated by the API layer, not here)."""
        row = Agent(
            id=new_id("agt"),
            name=name,
            system_prompt=system_prompt,
            voice=voice,
            language=language,
            greeting=greeting,
            model=model,
            temperature=float(temperature),
            first_speaker=first_speaker,
            interruptible=interruptible,
            turn_mode=turn_mode,
            max_duration_s=int(max_duration_s),
            inactivity_timeout_s=int(inactivity_timeout_s),
            inactivity_action=inactivity_action,
            recording_enabled=recording_enabled,
            tools=[dict(t) for t in tools],
            secret_refs=dict(secret_refs or {}),
            created_at=self.now(),
        )
        with self._session() as s, s.begin():
            s.add(row)
        return _agent_record(row)

    def get_agent(self, agent_id: str) -> AgentRecord | None:
        """The agent with this id, or ``None``."""
        with self._session() as s:
            row = s.get(Agent, agent_id)
            return None if row is None else _agent_record(row)

    # -- calls ---------------------------------------------------------------------------

    def create_call(
        self,
        config: CallConfig | AgentConfig | Mapping[str, Any],
        connection_type: str,
        *,
        agent_id: str | None = None,
        ttl_s: float = 600,
        direction: str = "inbound",
    ) -> tuple[CallRecord, str]:
        """Create a queued call and its one-time stream token.

        Args:
            config: the call's configuration; snapshotted as JSON (an :class:`AgentConfig`
                gets default call policy; its secrets are never stored).
            connection_type: carrier name, one of :data:`CONNECTION_TYPES`.
            agent_id: the agent the config came from, if any (must exist).
            ttl_s: seconds the token stays valid for the first connection.
            direction: ``inbound`` or ``outbound`` (informational).

        Returns:
            ``(call, token)``: the record and the plaintext stream token (43 URL-safe
            characters), returned this once; only its SHA-256 is stored.

        Raises:
            ValueError: unknown ``connection_type`` or non-positive ``ttl_s``.
            UnknownAgent: ``agent_id`` does not exist.
        """
        if connection_type not in CONNECTION_TYPES:
            raise ValueError(f"connection_type must be one of {CONNECTION_TYPES}, got {connection_type!r}")
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        if isinstance(config, CallConfig):
            snapshot = config.to_json()
        elif isinstance(config, AgentConfig):
            snapshot = CallConfig.from_agent_config(config).to_json()
        else:
            snapshot = CallConfig.from_json(config).to_json()
        token = secrets.token_urlsafe(32)
        now = self.now()
        row = Call(
            id=new_id("call"),
            agent_id=agent_id,
            config=snapshot,
            connection_type=connection_type,
            direction=direction,
            status=CallStatus.QUEUED.value,
            stream_token_hash=hash_secret(token),
            stream_token_expires_at=now + timedelta(seconds=ttl_s),
            created_at=now,
        )
        with self._session() as s, s.begin():
            if agent_id is not None and s.get(Agent, agent_id) is None:
                raise UnknownAgent(agent_id)
            s.add(row)
        return _call_record(row), token

    def check_stream_token(self, call_id: str, token: str) -> CallRecord:
        """Check a stream URL's token before accepting the carrier's connection.

        This does not change the call: :meth:`mark_call_started` claims it (and loses the
        race cleanly if another socket claimed it first).

        Raises:
            UnknownCall: no such call.
            BadToken: the token is wrong (checked before the call's state is revealed).
            CallNotConnectable: the call already started or ended.
            TokenExpired: the token's time to live ran out (or the call was expired).
        """
        with self._session() as s:
            row = s.get(Call, call_id)
            if row is None:
                raise UnknownCall(call_id)
            if not hmac.compare_digest(row.stream_token_hash, hash_secret(token or "")):
                raise BadToken(call_id)
            status = CallStatus(row.status)
            if status is CallStatus.EXPIRED:
                raise TokenExpired(call_id)
            if status not in (CallStatus.QUEUED, CallStatus.RINGING):
                raise CallNotConnectable(call_id, status.value)
            if self.now() >= row.stream_token_expires_at:
                raise TokenExpired(call_id)
            return _call_record(row)

    def _transition(
        self, s: Session, call_id: str, new: CallStatus, values: dict[str, Any]
    ) -> bool:
        """Move ``call_id`` to ``new`` atomically; ``False`` if it is already terminal.

        Raises:
            UnknownCall, IllegalTransition.
        """
        res = s.execute(
            update(Call)
            .where(Call.id == call_id, Call.status.in_([x.value for x in sources_of(new)]))
            .values(status=new.value, **values)
            .execution_options(synchronize_session=False)
        )
        if _rowcount(res) == 1:
            return True
        current = s.scalar(select(Call.status).where(Call.id == call_id))
        if current is None:
            raise UnknownCall(call_id)
        current_s = CallStatus(current)
        if current_s in TERMINAL_STATUSES and new in TERMINAL_STATUSES:
            return False
        check_transition(current_s, new, call_id=call_id)  # raises
        raise IllegalTransition(current_s, new, call_id)  # unreachable; for type checkers

    def set_call_status(self, call_id: str, status: CallStatus | str) -> CallRecord:
        """Move a call to a non-terminal status (e.g. ``ringing`` from the dialer).

        Raises:
            UnknownCall, IllegalTransition, ValueError (terminal status: use
            :meth:`finalise_call`).
        """
        new = CallStatus(status)
        if new in TERMINAL_STATUSES:
            raise ValueError(f"{new} is terminal; use finalise_call()")
        if new is CallStatus.IN_PROGRESS:
            raise ValueError("use mark_call_started() for in_progress")
        with self._session() as s, s.begin():
            self._transition(s, call_id, new, {})  # non-terminal target: True or raises
            return _call_record(s.get(Call, call_id, populate_existing=True))  # type: ignore[arg-type]

    def mark_call_started(
        self,
        call_id: str,
        *,
        carrier_call_id: str | None = None,
        stream_id: str | None = None,
        from_: str | None = None,
        to: str | None = None,
    ) -> CallRecord:
        """Claim the call for a connected media stream: ``queued``/``ringing`` → ``in_progress``.

        Sets ``started_at`` to now. Exactly one caller wins; the others get
        :class:`IllegalTransition` and should close their socket.

        Raises:
            UnknownCall, IllegalTransition.
        """
        values = {"started_at": self.now(), **_details(carrier_call_id, stream_id, from_, to)}
        with self._session() as s, s.begin():
            self._transition(s, call_id, CallStatus.IN_PROGRESS, values)  # True or raises
            row = s.get(Call, call_id, populate_existing=True)
            return _call_record(row)  # type: ignore[arg-type]

    def update_call_details(
        self,
        call_id: str,
        *,
        carrier_call_id: str | None = None,
        stream_id: str | None = None,
        from_: str | None = None,
        to: str | None = None,
    ) -> bool:
        """Fill in the carrier's ids and numbers once its ``start`` message arrives.

        For callers that claim the call (:meth:`mark_call_started`) before the carrier says
        who it is. Only the arguments given (not ``None`` / empty) are written; the status is
        not touched. Returns ``False`` if there was nothing to write.

        Raises:
            UnknownCall: no such call.
        """
        details = _details(carrier_call_id, stream_id, from_, to)
        values = {k: v for k, v in details.items() if v is not None}
        with self._session() as s, s.begin():
            if not values:
                if s.scalar(select(Call.id).where(Call.id == call_id)) is None:
                    raise UnknownCall(call_id)
                return False
            res = s.execute(
                update(Call).where(Call.id == call_id).values(**values)
                .execution_options(synchronize_session=False)
            )  # fmt: skip
            if _rowcount(res) != 1:
                raise UnknownCall(call_id)
            return True

    def finalise_call(
        self,
        call_id: str,
        *,
        status: CallStatus | str,
        end_reason: str,
        duration_ms: int,
        transcript: Iterable[Mapping[str, Any]] = (),
        events: Iterable[Mapping[str, Any]] = (),
        error_code: str | None = None,
        error_message: str | None = None,
        recording_path: str | Path | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> bool:
        """Record how a call ended, with its transcript and events, in one transaction.

        Args:
            status: a terminal status (``completed``, ``failed``, ``no_answer``, ``expired``)
                reachable from the call's current one.
            end_reason: short label, e.g. ``caller_hangup``, ``agent_hangup``,
                ``max_duration``, ``inactivity``, ``model_error``.
            duration_ms: call length in ms (0 if it never started).
            transcript: dicts ``{"role": "user"|"agent", "text", "at_ms", "interrupted"?,
                "heard_ms"?}`` in order.
            events: dicts ``{"kind", "at_ms", "data"?}`` in order.
            error_code, error_message: for ``failed`` calls.
            recording_path: where the WAV was written, if recorded.
            metrics: free-form JSON (latencies, frame counts …).

        Returns:
            ``True`` if this call finalised it; ``False`` if it was already final (a no-op:
            nothing is written).

        Raises:
            UnknownCall: no such call.
            IllegalTransition: e.g. ``queued`` → ``completed``.
            ValueError: ``status`` is not terminal, or a malformed turn or event.
        """
        new = CallStatus(status)
        if new not in TERMINAL_STATUSES:
            raise ValueError(f"finalise_call needs a terminal status, got {new}")
        turn_rows = _turn_rows(call_id, transcript)
        event_rows = _event_rows(call_id, events)
        values = {
            "ended_at": self.now(),
            "end_reason": end_reason,
            "error_code": error_code,
            "error_message": error_message,
            "duration_ms": max(0, int(duration_ms)),
            "recording_path": str(recording_path) if recording_path is not None else None,
            "metrics": dict(metrics) if metrics is not None else None,
        }
        with self._session() as s, s.begin():
            if not self._transition(s, call_id, new, values):
                log.debug("call %s already final; finalise_call is a no-op", call_id)
                return False
            s.add_all(turn_rows)
            s.add_all(event_rows)
        return True

    def expire_stale_calls(self) -> int:
        """Mark queued calls whose stream token expired as ``expired``. Returns how many."""
        now = self.now()
        with self._session() as s, s.begin():
            res = s.execute(
                update(Call)
                .where(
                    Call.status.in_([CallStatus.QUEUED.value, CallStatus.RINGING.value]),
                    Call.stream_token_expires_at <= now,
                )
                .values(
                    status=CallStatus.EXPIRED.value, ended_at=now,
                    end_reason="stream_token_expired", duration_ms=0,
                )  # fmt: skip
                .execution_options(synchronize_session=False)
            )
            return _rowcount(res)

    def get_call(self, call_id: str) -> CallRecord | None:
        """The call with its transcript turns and events (in ``seq`` order), or ``None``."""
        with self._session() as s:
            row = s.get(Call, call_id)
            if row is None:
                return None
            turns = s.scalars(
                select(TranscriptTurn)
                .where(TranscriptTurn.call_id == call_id)
                .order_by(TranscriptTurn.seq)
            ).all()
            events = s.scalars(
                select(CallEvent).where(CallEvent.call_id == call_id).order_by(CallEvent.seq)
            ).all()
            return _call_record(row, turns, events)
