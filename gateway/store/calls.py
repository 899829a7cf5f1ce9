"""Calls: creation with a one-time stream token, the status lifecycle, and finalisation
with the transcript and events.

Lifecycle (:data:`gateway.store.models.TRANSITIONS`)::

    (none)      -> queued
    queued      -> initiated ringing in_progress failed no_answer busy declined canceled expired
    initiated   -> ringing in_progress failed no_answer busy declined canceled expired
    ringing     -> in_progress failed no_answer busy declined canceled expired
    in_progress -> completed failed voicemail
    (completed failed no_answer busy declined voicemail canceled expired: terminal)

Every status change writes one ``call_transitions`` row in the same transaction (see
:mod:`gateway.store.transitions`, which also holds the carrier-callback, placement and expiry
writes). Status changes are conditional ``UPDATE … WHERE status = …`` statements, so two
racing writers (two sockets using one stream URL, two finalisers) cannot both win, on SQLite
and PostgreSQL alike. Stream tokens are returned in plaintext once; only their SHA-256 is
stored.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from gateway.clock import iso_utc
from gateway.llm.base import AgentConfig
from gateway.store.errors import (
    BadToken,
    CallNotConnectable,
    TokenExpired,
    UnknownAgent,
    UnknownCall,
)
from gateway.store.transitions import _ROUNDS, CONNECTABLE_STATUSES, TransitionsMixin, _raced, _str_detail
from gateway.store.helpers import (
    CONNECTION_TYPES,
    _call_record,
    _details,
    _event_rows,
    _recording_values,
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
    CallTransition,
    IllegalTransition,
    TranscriptTurn,
)
from gateway.store.postcall import mark_post_call_pending
from gateway.store.records import CallConfig, CallRecord

__all__ = ["CallsMixin"]

log = logging.getLogger("gateway.store")


def _config_snapshot(config: CallConfig | AgentConfig | Mapping[str, Any]) -> dict[str, Any]:
    """A call's configuration as stored: JSON of its :class:`CallConfig` (an :class:`AgentConfig`
    gets default call policy; a mapping is checked as call config JSON)."""
    if isinstance(config, CallConfig):
        return config.to_json()
    if isinstance(config, AgentConfig):
        return CallConfig.from_agent_config(config).to_json()
    return CallConfig.from_json(config).to_json()


class CallsMixin(TransitionsMixin):
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
        to: str | None = None,
        from_: str | None = None,
        carrier_account_id: str | None = None,
        outbound: Mapping[str, Any] | None = None,
        post_call_fields: Sequence[Mapping[str, Any]] | None = None,
        webhook_url: str | None = None,
    ) -> tuple[CallRecord, str]:
        """Create a queued call and its one-time stream token, with its creation transition.

        Args:
            config: the call's configuration; snapshotted as JSON (an :class:`AgentConfig`
                gets default call policy; its secrets are never stored).
            connection_type: carrier name, one of :data:`CONNECTION_TYPES`.
            agent_id: the agent the config came from, if any (must exist).
            ttl_s: seconds the token stays valid for the first connection.
            direction: ``inbound`` or ``outbound`` (informational).
            tenant: the tenant the call belongs to; ``agent_id`` must be that tenant's agent.
            to, from_: the numbers (E.164) of an outbound call (``to_number``, ``from_number``).
            carrier_account_id: the carrier account an outbound call is placed through.
            outbound: the outbound request details kept for the record (JSON).
            post_call_fields: the values to extract when the call ends, as
                :meth:`gateway.api.after_call_schemas.FieldSpec.stored` dicts (JSON list).
            webhook_url: where this call's events go (checked by the caller's outbound policy).

        The ``None`` → ``queued`` transition row (source ``gateway``) is written with it.

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
        snapshot = _config_snapshot(config)
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
            to_number=to or None,
            from_number=from_ or None,
            carrier_account_id=carrier_account_id or None,
            outbound=dict(outbound) if outbound is not None else None,
            post_call_fields=[dict(f) for f in post_call_fields or ()],
            webhook_url=webhook_url or None,
        )
        with self._session() as s, s.begin():
            agent = s.get(Agent, agent_id) if agent_id is not None else None
            if agent_id is not None and (agent is None or agent.tenant != tenant):
                raise UnknownAgent(agent_id)
            s.add(row)
            s.flush()
            self._write_transition(s, row.id, None, CallStatus.QUEUED, source="gateway", at=now, seq=0)
        return _call_record(row), token

    def check_stream_token(self, call_id: str, token: str) -> CallRecord:
        """Check a stream URL's token before accepting the carrier's connection.

        This does not change the call: :meth:`mark_call_started` claims it (and loses the
        race cleanly if another socket claimed it first). Connectable: ``queued``,
        ``initiated``, ``ringing``, and ``in_progress`` that no stream claimed yet (the
        carrier said the callee answered, ``started_at`` is unset).

        Raises:
            UnknownCall: no such call.
            BadToken: the token is wrong (checked before the call's state is revealed).
            CallNotConnectable: a stream already claimed the call, or it ended.
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
            unclaimed = status is CallStatus.IN_PROGRESS and row.started_at is None
            if status not in CONNECTABLE_STATUSES and not unclaimed:
                raise CallNotConnectable(call_id, status.value)
            if self.now() >= row.stream_token_expires_at:
                raise TokenExpired(call_id)
            return _call_record(row)

    def set_call_status(
        self, call_id: str, status: CallStatus | str, *, source: str = "gateway",
        detail: Mapping[str, Any] | None = None,
    ) -> CallRecord:  # fmt: skip
        """Move a call to a non-terminal status (``initiated``, ``ringing``) with its row.

        Carrier callbacks use :meth:`apply_carrier_status` (idempotent) instead.

        Raises:
            UnknownCall, IllegalTransition, ValueError (terminal status: use
            :meth:`finalise_call`; ``in_progress``: :meth:`mark_call_started`; an unknown
            ``source``).
        """
        new = CallStatus(status)
        if new in TERMINAL_STATUSES:
            raise ValueError(f"{new} is terminal; use finalise_call()")
        if new is CallStatus.IN_PROGRESS:
            raise ValueError("use mark_call_started() for in_progress")
        with self._session() as s, s.begin():
            self._move(s, call_id, new, {}, source=source, detail=detail)  # non-terminal: moves or raises
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
        """Claim the call for a connected media stream.

        From ``queued`` / ``initiated`` / ``ringing``: → ``in_progress`` with its transition row
        (source ``media``), ``answered_at`` set to now. From an ``in_progress`` no stream claimed
        yet (the carrier's callback said answered, ``started_at`` unset): the claim alone, no
        new row. Either way ``started_at`` is set to now. Exactly one caller wins; the others
        get :class:`IllegalTransition` and should close their socket.

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
            # only what is given: an outbound call's numbers and carrier id are already stored
            **{k: v for k, v in _details(carrier_call_id, stream_id, from_, to).items() if v is not None},
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
            self._claim(s, call_id, values, now)
            row = s.get(Call, call_id, populate_existing=True)
            return _call_record(row)  # type: ignore[arg-type]

    def _claim(self, s: Session, call_id: str, values: dict[str, Any], now: datetime) -> None:
        """The claim of :meth:`mark_call_started`: one conditional ``UPDATE`` per round.

        Raises:
            UnknownCall; IllegalTransition (a stream already claimed it, or it ended).
        """
        new = CallStatus.IN_PROGRESS
        for _ in range(_ROUNDS):
            row = s.execute(
                select(Call.status, Call.started_at, Call.answered_at).where(Call.id == call_id)
            ).one_or_none()
            if row is None:
                raise UnknownCall(call_id)
            old = CallStatus(row.status)
            if old in CONNECTABLE_STATUSES:
                # the status is unchanged until our UPDATE lands, so answered_at is too
                answered = {"answered_at": now} if row.answered_at is None else {}
                where = [Call.status == old.value]
                move = {"status": new.value, **answered}
            elif old is new and row.started_at is None:
                where = [Call.status == new.value, Call.started_at.is_(None)]
                move = {}
            else:
                raise IllegalTransition(old, new, call_id)
            res = s.execute(
                update(Call).where(Call.id == call_id, *where).values(**values, **move)
                .execution_options(synchronize_session=False)
            )  # fmt: skip
            if _rowcount(res) == 1:
                if move:
                    self._write_transition(s, call_id, old, new, source="media", at=now)
                return
        raise _raced(call_id, new)

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
        voicemail: Mapping[str, Any] | None = None,
        source: str = "gateway",
        detail: Mapping[str, Any] | None = None,
    ) -> bool:
        """Record how a call ended, with its transcript, events and transition, in one transaction.

        Args:
            status: a terminal status (``completed``, ``failed``, ``voicemail``, ``no_answer``,
                ``busy``, ``declined``, ``canceled``, ``expired``) reachable from the call's
                current one (from ``in_progress``: ``completed``, ``failed``, ``voicemail``).
            end_reason: short label, e.g. ``caller_hangup``, ``agent_hangup``,
                ``max_duration``, ``inactivity``, ``model_error``.
            duration_ms: call length in ms (0 if it never started).
            transcript: dicts ``{"role": "user"|"agent", "text", "at_ms", "interrupted"?,
                "heard_ms"?, "start_ms"?, "end_ms"?, "latency_ms"?}`` in order.
            events: dicts ``{"kind", "at_ms", "data"?}`` in order.
            error_code, error_message: for ``failed`` calls.
            recording_path: where the WAV was written, if recorded (and valid).
            recording_status: ``completed`` or ``failed``; default: ``failed`` if
                ``recording_error`` is given, else ``completed`` if ``recording_path`` is,
                else none (not recorded).
            recording_error: why the recording failed (the call went on without it).
            metrics: free-form JSON (latencies, frame counts …).
            voicemail: the answering-machine detection outcome (``CallOutcome.voicemail``).
            source: the transition row's source (``gateway``, ``carrier`` or ``media``).
            detail: more for the transition row, whose detail is ``{"endReason",
                "errorCode"?, **detail}`` (values made ``str``).

        A call presumed lost (``failed`` / ``node_lost``) is not final for its real outcome:
        see :meth:`_supersede_node_lost`.

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
        if new not in TERMINAL_STATUSES:
            raise ValueError(f"finalise_call needs a terminal status, got {new}")
        turn_rows = _turn_rows(call_id, transcript)
        event_rows = _event_rows(call_id, events)
        values = {
            "ended_at": self.now(), "end_reason": end_reason, "error_code": error_code,
            "error_message": error_message, "duration_ms": max(0, int(duration_ms)),
            **_recording_values(recording_path, recording_status, recording_error),
            "metrics": dict(metrics) if metrics is not None else None,
            "voicemail": dict(voicemail) if voicemail is not None else None,
        }  # fmt: skip
        row_detail = {"endReason": end_reason, "errorCode": error_code, **(detail or {})}
        with self._session() as s, s.begin():
            if self._move(s, call_id, new, values, source=source, at=values["ended_at"], detail=row_detail) is None:
                lost = (turn_rows, event_rows, source, row_detail)
                if not self._supersede_node_lost(s, call_id, new, values, *lost):
                    return False
            s.add_all(turn_rows)
            s.add_all(event_rows)
        return True

    def _supersede_node_lost(
        self, s: Session, call_id: str, new: CallStatus, values: dict[str, Any],
        turn_rows: list[TranscriptTurn], event_rows: list[CallEvent], source: str, detail: dict[str, Any],
    ) -> bool:  # fmt: skip
        """For a call already final: replace a ``node_lost`` presumption by the real outcome.

        A call presumed lost (``failed`` / ``node_lost``, by a restart of its node or a lapsed
        lease) is not final for its real outcome: a finalise from the process that served it
        replaces the ``node_lost`` fields with its own and adds its turns and events after
        the ``node_lost`` event, which stays for the audit trail (logged at WARNING). Its
        transition: a row ``failed`` → the real status with ``detail["supersedes"] =
        "node_lost"``; when the real outcome is ``failed`` too, the ``failed`` row itself is
        rewritten (time, source, detail; ``presumedAt`` keeps the presumption's time), since a
        status is reached once per call.

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
                mark_post_call_pending(s, call_id)  # made anew from the real outcome
                for model, rows in ((TranscriptTurn, turn_rows), (CallEvent, event_rows)):
                    last = s.scalar(select(func.max(model.seq)).where(model.call_id == call_id))
                    for row in rows:
                        row.seq += 0 if last is None else last + 1
                self._supersede_row(s, call_id, new, values["ended_at"], source, detail)
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

    def _supersede_row(
        self, s: Session, call_id: str, new: CallStatus, at: datetime, source: str, detail: dict[str, Any]
    ) -> None:
        """The transition of a real outcome replacing ``node_lost`` (see :meth:`finalise_call`)."""
        marked = {**detail, "supersedes": NODE_LOST}
        failed = CallStatus.FAILED
        if new is failed:
            presumed = s.scalar(select(CallTransition.at).where(
                CallTransition.call_id == call_id, CallTransition.to_status == failed.value))  # fmt: skip
            if presumed is not None:
                s.execute(
                    update(CallTransition)
                    .where(CallTransition.call_id == call_id, CallTransition.to_status == failed.value)
                    .values(at=at, source=source, detail=_str_detail({**marked, "presumedAt": iso_utc(presumed)}))
                    .execution_options(synchronize_session=False)
                )  # fmt: skip
                return
        self._write_transition(s, call_id, failed, new, source=source, at=at, detail=marked)

    def get_call(self, call_id: str) -> CallRecord | None:
        """The call with its transcript turns, events and transitions (``seq`` order), or ``None``."""
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
            transitions = s.scalars(
                select(CallTransition).where(CallTransition.call_id == call_id).order_by(CallTransition.seq)
            ).all()
            return _call_record(row, turns, events, transitions)

