"""The call lifecycle's writes: every status change with its ``call_transitions`` row.

Lifecycle (:data:`gateway.store.models.TRANSITIONS`; each change is one ``call_transitions``
row, written in the same transaction as ``calls.status``)::

    (none)      -> queued                                          create_call (gateway)
    queued      -> initiated ringing in_progress failed no_answer busy declined canceled expired
    initiated   -> ringing in_progress failed no_answer busy declined canceled expired
    ringing     -> in_progress failed no_answer busy declined canceled expired
    in_progress -> completed failed voicemail
    (completed failed no_answer busy declined voicemail canceled expired: terminal)

Who writes what (``source``): ``gateway`` for creation, ``mark_call_placed`` (queued →
initiated), ``set_call_status``, ``finalise_call`` (a session's outcome, recovery's
``node_lost``), ``expire_stale_calls``; ``carrier`` for :meth:`apply_carrier_status` (status
callbacks); ``media`` for the stream's claim in ``mark_call_started``.

Concurrency: each move reads the call's status, then runs ``UPDATE … WHERE status = <that
status>``; a writer that lost a race (rowcount 0) reads again and decides again. The
lifecycle only moves forward, so this ends within a few rounds. The winner's ``UPDATE``
holds the call row (PostgreSQL's row lock, SQLite's write lock) until it commits, so its
transition ``seq`` (max + 1) cannot collide. A status is reached at most once per call
(unique ``(call_id, to_status)``), which makes a repeated carrier callback a no-op.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session

from gateway.clock import iso_utc
from gateway.store.base import StoreBase
from gateway.store.errors import CallNotConnectable, StoreError, UnknownCall
from gateway.store.helpers import _call_record, _rowcount, hash_secret
from gateway.store.models import (
    TERMINAL_STATUSES,
    TRANSITION_SOURCES,
    TRANSITIONS,
    Call,
    CallStatus,
    CallTransition,
    IllegalTransition,
)
from gateway.store.outbox import write_call_events
from gateway.store.postcall import mark_post_call_pending
from gateway.store.records import CallRecord

__all__ = ["TransitionsMixin", "CARRIER_STATUSES", "CONNECTABLE_STATUSES", "CarrierResult"]

#: The statuses a carrier callback may report (the dialer's vocabulary).
CARRIER_STATUSES: frozenset[CallStatus] = frozenset(
    CallStatus(s)
    for s in ("initiated", "ringing", "in_progress", "completed", "no_answer", "busy", "declined",
              "failed", "canceled")
)  # fmt: skip

#: Statuses in which a stream URL may still connect (plus ``in_progress`` with no stream yet).
CONNECTABLE_STATUSES: frozenset[CallStatus] = frozenset(
    {CallStatus.QUEUED, CallStatus.INITIATED, CallStatus.RINGING}
)

#: What :meth:`TransitionsMixin.apply_carrier_status` did.
CarrierResult = Literal["applied", "duplicate", "late", "noted"]

_ROUNDS = len(CallStatus)  # a lost race means the status moved forward: bounded rounds
_CHUNK = 500  # ids per bulk statement (SQLite's bound-parameter limit is 32,766)


def _str_detail(detail: Mapping[str, Any] | None) -> dict[str, str]:
    """``detail`` as the str → str dict a transition row holds (``None`` values dropped)."""
    return {str(k): str(v) for k, v in (detail or {}).items() if v is not None}


def _check_source(source: str) -> None:
    if source not in TRANSITION_SOURCES:
        raise ValueError(f"source must be one of {TRANSITION_SOURCES}, got {source!r}")


class _Raced(StoreError):
    """A status kept changing under a writer for more rounds than the lifecycle has."""


def _raced(call_id: str, new: CallStatus) -> _Raced:
    return _Raced(f"call {call_id}: its status kept changing under a move to {new}")


class TransitionsMixin(StoreBase):
    """Status moves with their transition rows, carrier callbacks, placement and expiry."""

    # -- the primitives --------------------------------------------------------------------

    def _write_transition(
        self, s: Session, call_id: str, old: CallStatus | None, new: CallStatus, *,
        source: str, at: datetime | None = None, detail: Mapping[str, Any] | None = None,
        seq: int | None = None,
    ) -> None:  # fmt: skip
        """Add the row for ``old -> new`` (``seq``: next after the call's last if ``None``).

        Call it only after the ``UPDATE`` that made the change, in the same transaction. The
        change's webhook events go into the outbox here too, in the same transaction
        (:func:`gateway.store.outbox.write_call_events`), and a terminal status queues the
        call's post-call results (:func:`gateway.store.postcall.mark_post_call_pending`).

        Raises:
            ValueError: ``source`` is not one of :data:`TRANSITION_SOURCES`.
        """
        _check_source(source)
        last_seq, last_at = s.execute(
            select(func.max(CallTransition.seq), func.max(CallTransition.at)).where(CallTransition.call_id == call_id)
        ).one()  # fmt: skip
        if seq is None:
            seq = 0 if last_seq is None else last_seq + 1
        at, row_detail = at or self.now(), _str_detail(detail)
        if last_at is not None:  # in order after the call's last move (the clock may step back)
            at = max(at, last_at)
        s.add(
            CallTransition(
                call_id=call_id, seq=seq, from_status=old.value if old is not None else None,
                to_status=new.value, at=at, source=source, detail=row_detail,
            )  # fmt: skip
        )
        write_call_events(s, call_id, old, new, at=at, source=source, detail=row_detail, seq=seq)
        if new in TERMINAL_STATUSES:  # the call ended: its post-call results are due (same transaction)
            mark_post_call_pending(s, call_id)

    def _move(
        self, s: Session, call_id: str, new: CallStatus, values: Mapping[str, Any], *,
        source: str, at: datetime | None = None, detail: Mapping[str, Any] | None = None,
    ) -> CallStatus | None:  # fmt: skip
        """Move ``call_id`` to ``new`` (setting ``values``) and write its transition row.

        Returns:
            The status it moved from; ``None`` if the call is terminal and ``new`` is too
            (a finalise that came second: nothing written).

        Raises:
            UnknownCall, IllegalTransition, ValueError (an unknown ``source``).
        """
        _check_source(source)
        for _ in range(_ROUNDS):
            current = s.scalar(select(Call.status).where(Call.id == call_id))
            if current is None:
                raise UnknownCall(call_id)
            old = CallStatus(current)
            if new not in TRANSITIONS[old]:
                if old in TERMINAL_STATUSES and new in TERMINAL_STATUSES:
                    return None
                raise IllegalTransition(old, new, call_id)
            res = s.execute(
                update(Call).where(Call.id == call_id, Call.status == old.value)
                .values(status=new.value, **values).execution_options(synchronize_session=False)
            )  # fmt: skip
            if _rowcount(res) == 1:
                self._write_transition(s, call_id, old, new, source=source, at=at, detail=detail)
                return old
        raise _raced(call_id, new)

    def _reached(self, s: Session, call_id: str) -> dict[str, str]:
        """``{to_status: source}`` of every transition row of the call."""
        rows = s.execute(
            select(CallTransition.to_status, CallTransition.source).where(CallTransition.call_id == call_id)
        ).all()
        return {to: source for to, source in rows}

    # -- placement -------------------------------------------------------------------------

    def mark_call_placed(self, call_id: str, carrier_call_id: str) -> CallRecord:
        """The dialer placed the call: ``queued`` → ``initiated`` and its ``carrier_call_id``.

        The row's source is ``gateway``, its detail ``{"carrierCallId"}``. If callbacks already
        moved the call on (or it is terminal), only ``carrier_call_id`` is set, when empty.

        Raises:
            UnknownCall: no such call.
            ValueError: ``carrier_call_id`` is empty.
        """
        if not carrier_call_id:
            raise ValueError("carrier_call_id is required")
        new = CallStatus.INITIATED
        with self._session() as s, s.begin():
            for _ in range(_ROUNDS):
                row = s.execute(select(Call.status, Call.carrier_call_id).where(Call.id == call_id)).one_or_none()
                if row is None:
                    raise UnknownCall(call_id)
                if row.status != CallStatus.QUEUED.value:
                    if not row.carrier_call_id:
                        s.execute(
                            update(Call).where(Call.id == call_id, Call.carrier_call_id.is_(None))
                            .values(carrier_call_id=carrier_call_id).execution_options(synchronize_session=False)
                        )  # fmt: skip
                    break
                res = s.execute(
                    update(Call).where(Call.id == call_id, Call.status == CallStatus.QUEUED.value)
                    .values(status=new.value, carrier_call_id=carrier_call_id)
                    .execution_options(synchronize_session=False)
                )  # fmt: skip
                if _rowcount(res) == 1:
                    self._write_transition(s, call_id, CallStatus.QUEUED, new, source="gateway",
                                           detail={"carrierCallId": carrier_call_id})  # fmt: skip
                    break
            else:
                raise _raced(call_id, new)
            return _call_record(s.get(Call, call_id, populate_existing=True))  # type: ignore[arg-type]

    def reissue_stream_token(self, call_id: str, ttl_s: float) -> str:
        """A new plaintext stream token for a call no stream has claimed yet.

        For answer URLs fetched when the callee answers (Plivo): the stream URL is made then.
        The previous token stops working; the new one expires ``ttl_s`` s from now.

        Raises:
            UnknownCall: no such call.
            CallNotConnectable: a stream already claimed it, or it ended.
            ValueError: ``ttl_s`` not positive.
        """
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        token = secrets.token_urlsafe(32)
        unclaimed = Call.status.in_([x.value for x in CONNECTABLE_STATUSES]) | (
            (Call.status == CallStatus.IN_PROGRESS.value) & Call.started_at.is_(None)
        )
        with self._session() as s, s.begin():
            res = s.execute(
                update(Call).where(Call.id == call_id, unclaimed)
                .values(stream_token_hash=hash_secret(token), stream_token_expires_at=self.now() + timedelta(seconds=ttl_s))
                .execution_options(synchronize_session=False)
            )  # fmt: skip
            if _rowcount(res) == 1:
                return token
            status = s.scalar(select(Call.status).where(Call.id == call_id))
        if status is None:
            raise UnknownCall(call_id)
        raise CallNotConnectable(call_id, status)

    # -- carrier callbacks -----------------------------------------------------------------

    def apply_carrier_status(
        self,
        call_id: str,
        status: CallStatus | str,
        *,
        raw_status: str = "",
        at: datetime | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> CarrierResult:
        """Apply a carrier's status callback to the lifecycle; idempotent, order-tolerant.

        Args:
            status: one of :data:`CARRIER_STATUSES` (the dialer's normalised vocabulary).
            raw_status: the carrier's own word (``no-answer``, ``call.hangup`` …), kept in the
                transition's ``detail["rawStatus"]``.
            at: the carrier's time of the event (aware); default now. One earlier than the
                call's last transition is recorded at that transition's instant, the carrier's
                own in ``detail["carrierAt"]``, so the lifecycle stays in time order.
            detail: more for the transition row (values made ``str``); for ``failed``,
                ``errorCode`` (else ``sipCode``, else ``carrier_failed``) and
                ``errorMessage`` (else ``cause``) become the call's error fields.

        Returns:
            ``"applied"``: a legal forward move, written (source ``carrier``). ``in_progress``
            sets ``answered_at`` (not ``started_at``: the media stream still claims the call);
            a terminal status while no stream claimed the call finalises it (end reason
            ``carrier_<status>``, duration 0).
            ``"duplicate"``: the call already reached this status (nothing changes).
            ``"noted"``: a terminal status while a stream serves the call, or after the
            gateway finalised it: ``carrier_status`` is set; the call's status stays the
            gateway's.
            ``"late"``: anything else (``ringing`` after ``in_progress``, a second, different
            final word): nothing changes.

        Raises:
            UnknownCall: no such call.
            ValueError: ``status`` outside :data:`CARRIER_STATUSES`, ``at`` naive.
            Never :class:`IllegalTransition`.
        """
        new = CallStatus(status)
        if new not in CARRIER_STATUSES:
            raise ValueError(f"not a carrier status: {new}")
        if at is not None and (at.tzinfo is None or at.utcoffset() is None):
            raise ValueError(f"naive datetime {at!r}: give the carrier's time as aware UTC")
        when = at or self.now()
        row_detail = {"rawStatus": raw_status or new.value, **_str_detail(detail)}
        with self._session() as s, s.begin():
            for _ in range(_ROUNDS):
                result = self._carrier_round(s, call_id, new, when, row_detail)
                if result is not None:
                    return result
        raise _raced(call_id, new)

    def _carrier_round(
        self, s: Session, call_id: str, new: CallStatus, when: datetime, detail: dict[str, str]
    ) -> CarrierResult | None:
        """One decision of :meth:`apply_carrier_status`; ``None``: lost a race, decide again."""
        row = s.execute(
            select(Call.status, Call.started_at, Call.carrier_status).where(Call.id == call_id)
        ).one_or_none()
        if row is None:
            raise UnknownCall(call_id)
        old = CallStatus(row.status)
        if (ordered := _in_order(s, call_id, when)) != when:  # answered_at / ended_at too
            when, detail = ordered, {**detail, "carrierAt": iso_utc(when)}
        reached = self._reached(s, call_id)
        terminal = new in TERMINAL_STATUSES
        by = reached.get(new.value, "gateway" if new is old else None)  # no row: an older database's
        if row.carrier_status == new.value or (by == "carrier" if terminal else by is not None):
            return "duplicate"  # a final status the gateway reached is still the carrier's word
        if new in TRANSITIONS[old] and not (terminal and row.started_at is not None):
            where = [Call.id == call_id, Call.status == old.value]
            if terminal:
                where.append(Call.started_at.is_(None))
            res = s.execute(
                update(Call).where(*where).values(status=new.value, **_carrier_values(new, when, detail))
                .execution_options(synchronize_session=False)
            )  # fmt: skip
            if _rowcount(res) != 1:
                return None
            self._write_transition(s, call_id, old, new, source="carrier", at=when, detail=detail)
            return "applied"
        serving = old is CallStatus.IN_PROGRESS and row.started_at is not None
        by_gateway = old in TERMINAL_STATUSES and reached.get(old.value, "gateway") != "carrier"
        if terminal and (serving or by_gateway) and row.carrier_status is None:
            res = s.execute(
                update(Call).where(Call.id == call_id, Call.carrier_status.is_(None))
                .values(carrier_status=new.value).execution_options(synchronize_session=False)
            )  # fmt: skip
            return "noted" if _rowcount(res) == 1 else None
        return "late"

    # -- expiry ----------------------------------------------------------------------------

    def expire_stale_calls(self) -> int:
        """End the calls whose stream token expired before any stream claimed them.

        ``queued``, ``initiated`` and ``ringing`` calls become ``expired``
        (``stream_token_expired``); an ``in_progress`` call the carrier answered but no stream
        claimed becomes ``failed`` / ``no_stream``. Each gets its transition row (source
        ``gateway``). Returns how many calls were ended.
        """
        now = self.now()
        expired = Call.stream_token_expires_at <= now
        done = 0
        with self._session() as s, s.begin():
            for old in (CallStatus.QUEUED, CallStatus.INITIATED, CallStatus.RINGING):
                values = {"ended_at": now, "end_reason": "stream_token_expired", "duration_ms": 0}
                done += self._bulk_move(s, old, CallStatus.EXPIRED, values, [expired], now)
            values = {
                "ended_at": now, "end_reason": "no_stream", "error_code": "no_stream", "duration_ms": 0,
                "error_message": "the call was answered but no media stream connected before its stream token expired",
            }  # fmt: skip
            done += self._bulk_move(s, CallStatus.IN_PROGRESS, CallStatus.FAILED, values,
                                    [expired, Call.started_at.is_(None)], now)  # fmt: skip
        return done

    def _bulk_move(
        self, s: Session, old: CallStatus, new: CallStatus, values: Mapping[str, Any],
        where: Sequence[Any], now: datetime,
    ) -> int:  # fmt: skip
        """Move every ``old`` call matching ``where`` to ``new``, with a row each. Returns how many.

        The ids are selected, then updated per chunk with the same conditions; the calls that
        moved are those in the chunk now ``new`` without a ``new`` row yet (a concurrent
        writer's move came with its own row), and get theirs.
        """
        ids = list(s.scalars(select(Call.id).where(Call.status == old.value, *where)))
        moved = 0
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i : i + _CHUNK]
            res = s.execute(
                update(Call).where(Call.id.in_(chunk), Call.status == old.value, *where)
                .values(status=new.value, **values).execution_options(synchronize_session=False)
            )  # fmt: skip
            if _rowcount(res) == 0:
                continue
            has_row = exists().where(CallTransition.call_id == Call.id, CallTransition.to_status == new.value)
            mine = list(s.scalars(select(Call.id).where(Call.id.in_(chunk), Call.status == new.value, ~has_row)))
            last = dict(
                s.execute(
                    select(CallTransition.call_id, func.max(CallTransition.seq))
                    .where(CallTransition.call_id.in_(mine)).group_by(CallTransition.call_id)
                ).all()
            )  # fmt: skip
            for call_id in mine:
                seq = last[call_id] + 1 if call_id in last else 0
                self._write_transition(s, call_id, old, new, source="gateway", at=now,
                                       detail={"endReason": values["end_reason"]}, seq=seq)  # fmt: skip
            moved += len(mine)
        return moved


def _in_order(s: Session, call_id: str, at: datetime) -> datetime:
    """``at``, or the call's last transition's instant when that is later.

    A carrier's own timestamps are coarser than the gateway's (Twilio's ``Timestamp`` is RFC 2822,
    whole seconds) and its clock is not ours, so its "ringing" can read earlier than the gateway's
    "queued" a few hundred ms before. The record keeps its moves in order; the carrier's own time
    stays in the row's ``carrierAt`` detail.
    """
    last = s.scalar(select(func.max(CallTransition.at)).where(CallTransition.call_id == call_id))
    return at if last is None or at >= last else last


def _carrier_values(new: CallStatus, when: datetime, detail: Mapping[str, str]) -> dict[str, Any]:
    """The ``calls`` columns a carrier's move to ``new`` sets (besides ``status``)."""
    if new is CallStatus.IN_PROGRESS:
        return {"answered_at": when}
    if new not in TERMINAL_STATUSES:
        return {}
    values: dict[str, Any] = {"ended_at": when, "end_reason": f"carrier_{new.value}", "duration_ms": 0}
    if new is CallStatus.FAILED:
        values["error_code"] = detail.get("errorCode") or detail.get("sipCode") or "carrier_failed"
        values["error_message"] = (
            detail.get("errorMessage") or detail.get("cause")
            or f"the carrier reported the call failed ({detail.get('rawStatus', 'failed')})"
        )  # fmt: skip
    return values
