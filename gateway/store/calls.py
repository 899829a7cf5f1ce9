"""Calls: creation with a one-time stream token, the status lifecycle, and finalisation
with the transcript and events.

Status changes are conditional ``UPDATE … WHERE status IN (…)`` statements, so two racing
writers (two sockets using one stream URL, two finalisers) cannot both win, on SQLite and
PostgreSQL alike. Stream tokens are returned in plaintext once; only their SHA-256 is stored.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from gateway.llm.base import AgentConfig
from gateway.store.base import StoreBase
from gateway.store.errors import (
    BadToken,
    CallNotConnectable,
    TokenExpired,
    UnknownAgent,
    UnknownCall,
)
from gateway.store.helpers import (
    CONNECTION_TYPES,
    _call_record,
    _details,
    _event_rows,
    _rowcount,
    _turn_rows,
    hash_secret,
    new_id,
)
from gateway.store.leases import NODE_LOST
from gateway.store.models import (
    TERMINAL_STATUSES,
    TRANSITIONS,
    Agent,
    Call,
    CallEvent,
    CallStatus,
    IllegalTransition,
    TranscriptTurn,
    check_transition,
    sources_of,
)
from gateway.store.records import CallConfig, CallRecord

__all__ = ["CallsMixin"]

log = logging.getLogger("gateway.store")


class CallsMixin(StoreBase):
    """Calls and their status lifecycle, stream tokens, transcripts and events."""

    def create_call(
        self,
        config: CallConfig | AgentConfig | Mapping[str, Any],
        connection_type: str,
        *,
        agent_id: str | None = None,
        ttl_s: float = 600,
        direction: str = "inbound",
        tenant: str = "default",
    ) -> tuple[CallRecord, str]:
        """Create a queued call and its one-time stream token.

        Args:
            config: the call's configuration; snapshotted as JSON (an :class:`AgentConfig`
                gets default call policy; its secrets are never stored).
            connection_type: carrier name, one of :data:`CONNECTION_TYPES`.
            agent_id: the agent the config came from, if any (must exist).
            ttl_s: seconds the token stays valid for the first connection.
            direction: ``inbound`` or ``outbound`` (informational).
            tenant: the tenant the call belongs to; ``agent_id`` must be that tenant's agent.

        Returns:
            ``(call, token)``: the record and the plaintext stream token (43 URL-safe
            characters), returned this once; only its SHA-256 is stored.

        Raises:
            ValueError: unknown ``connection_type`` or non-positive ``ttl_s``.
            UnknownAgent: ``agent_id`` does not exist (or belongs to another tenant).
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
            tenant=tenant,
        )
        with self._session() as s, s.begin():
            agent = s.get(Agent, agent_id) if agent_id is not None else None
            if agent_id is not None and (agent is None or agent.tenant != tenant):
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
        node_id: str | None = None,
        node_run: str | None = None,
        lease_s: float | None = None,
        recording_path: str | Path | None = None,
    ) -> CallRecord:
        """Claim the call for a connected media stream: ``queued``/``ringing`` → ``in_progress``.

        Sets ``started_at`` to now. Exactly one caller wins; the others get
        :class:`IllegalTransition` and should close their socket.

        Args:
            node_id: the gateway node serving the stream (``GATEWAY_NODE_ID``): if it dies
                mid-call, its next start-up finalises the call (:meth:`lost_calls`).
            node_run: the claiming process's run id; only it renews the lease
                (:meth:`~gateway.store.leases.LeasesMixin.renew_leases`).
            lease_s: the lease (s): ``lease_until`` is set to now + ``lease_s``; ``None``: no
                lease (the call lapses by its start + max duration, see
                :func:`~gateway.store.leases.lease_expiry`).
            recording_path: where the call's WAV will be written, if it is recorded (the
                recording is ``recording`` until :meth:`finalise_call`; after a crash the
                start-up recovery links this file).

        Raises:
            UnknownCall, IllegalTransition, ValueError (``lease_s`` not positive).
        """
        now = self.now()
        values: dict[str, Any] = {
            "started_at": now,
            **_details(carrier_call_id, stream_id, from_, to),
            "node_id": node_id,
            "node_run": node_run,
        }
        if lease_s is not None:
            if lease_s <= 0:
                raise ValueError("lease_s must be positive")
            values.update(lease_until=now + timedelta(seconds=lease_s), lease_renewed_at=now)
        if recording_path is not None:
            values.update(recording_path=str(recording_path), recording_status="recording")
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
        recording_status: str | None = None,
        recording_error: str | None = None,
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
            recording_path: where the WAV was written, if recorded (and valid).
            recording_status: ``completed`` or ``failed``; default: ``failed`` if
                ``recording_error`` is given, else ``completed`` if ``recording_path`` is,
                else none (not recorded).
            recording_error: why the recording failed (the call went on without it).
            metrics: free-form JSON (latencies, frame counts …).

        A call presumed lost (``failed`` / ``node_lost``, by a restart of its node or a lapsed
        lease) is not final for its real outcome: a finalise from the process that served it
        replaces the ``node_lost`` fields with its own and adds its turns and events after
        the ``node_lost`` event, which stays for the audit trail (logged at WARNING).

        Returns:
            ``True`` if this call finalised it; ``False`` if it was already final (a no-op:
            nothing is written; logged at WARNING when it ended for another reason).

        Raises:
            UnknownCall: no such call.
            IllegalTransition: e.g. ``queued`` → ``completed``.
            ValueError: ``status`` is not terminal, a malformed turn or event, or an unknown
                ``recording_status``.
        """
        new = CallStatus(status)
        if recording_status is None:
            recording_status = "failed" if recording_error else ("completed" if recording_path else None)
        if recording_status not in (None, "completed", "failed"):
            raise ValueError(f"recording_status must be completed or failed, got {recording_status!r}")
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
            "recording_status": recording_status,
            "recording_error": recording_error,
            "metrics": dict(metrics) if metrics is not None else None,
        }
        with self._session() as s, s.begin():
            if not self._transition(s, call_id, new, values):
                if not self._supersede_node_lost(s, call_id, new, values, turn_rows, event_rows):
                    return False
            s.add_all(turn_rows)
            s.add_all(event_rows)
        return True

    def _supersede_node_lost(
        self, s: Session, call_id: str, new: CallStatus, values: dict[str, Any],
        turn_rows: list[TranscriptTurn], event_rows: list[CallEvent],
    ) -> bool:  # fmt: skip
        """For a call already final: replace a ``node_lost`` presumption by the real outcome.

        ``True`` if ``values`` replaced it (the rows are renumbered to follow the stored
        ones; the caller adds them); ``False`` if the finalise is dropped (logged).
        """
        status, reason = s.execute(select(Call.status, Call.end_reason).where(Call.id == call_id)).one()
        real = values["end_reason"] != NODE_LOST and new in TRANSITIONS[CallStatus.IN_PROGRESS]
        if reason == NODE_LOST and status == CallStatus.FAILED.value and real:
            res = s.execute(
                update(Call)
                .where(Call.id == call_id, Call.status == CallStatus.FAILED.value, Call.end_reason == NODE_LOST)
                .values(status=new.value, **values)
                .execution_options(synchronize_session=False)
            )
            if _rowcount(res) == 1:
                for model, rows in ((TranscriptTurn, turn_rows), (CallEvent, event_rows)):
                    last = s.scalar(select(func.max(model.seq)).where(model.call_id == call_id))
                    for row in rows:
                        row.seq += 0 if last is None else last + 1
                log.warning("call %s was presumed %s; its real outcome (%s, %s) replaces that record",
                            call_id, NODE_LOST, new.value, values["end_reason"])  # fmt: skip
                return True
            status, reason = s.execute(select(Call.status, Call.end_reason).where(Call.id == call_id)).one()
        if reason == values["end_reason"]:
            log.debug("call %s already final (%s); finalise_call is a no-op", call_id, reason)
        else:
            log.warning("call %s already final (%s, %s): its finalise as (%s, %s) is dropped",
                        call_id, status, reason, new.value, values["end_reason"])  # fmt: skip
        return False

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
