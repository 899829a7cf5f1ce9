"""Post-call results on the call row: the pending mark, the worker's leased claims, the finish.

Life of ``calls.post_call_status`` (NULL until the call ends):

* ``pending``: set by :func:`mark_post_call_pending` in the **same transaction** as the
  call's move to a terminal status (:meth:`TransitionsMixin._write_transition
  <gateway.store.transitions.TransitionsMixin._write_transition>`, which every terminal path
  goes through: a session's finalise, carrier callbacks, expiry, ``node_lost`` recovery), and
  again when a real outcome replaces a ``node_lost`` presumption (the results are made anew
  from the real transcript; a worker still busy with the old ones loses its claim).
* ``running``: a worker claimed the row (:meth:`PostCallMixin.claim_post_calls`): a fresh
  token in ``post_call_claim``, a lease in ``post_call_lease_until``, ``post_call_attempts``
  counted. A row whose lease lapsed (its worker died) is claimable again, by any node.
* ``completed`` / ``skipped`` / ``failed``: :meth:`PostCallMixin.finish_post_call`, one
  transaction, only by the claim's holder (a worker that lost its claim writes nothing).

A claim is a conditional ``UPDATE … WHERE post_call_status = <what was read>``, so two
workers (two nodes, or a restarted one and its predecessor's lapsed lease) never both win a
row; a worker that crashed leaves its row to be taken over when the lease lapses. A worker
stopping cleanly hands its rows back (:meth:`PostCallMixin.release_post_calls`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from gateway.store.base import StoreBase
from gateway.store.helpers import _call_record, _rowcount
from gateway.store.models import Call, CallEvent, CallTransition, TranscriptTurn
from gateway.store.outbox import write_call_report
from gateway.store.records import CallRecord

__all__ = ["PostCallMixin", "PostCallJob", "mark_post_call_pending", "POST_CALL_FINAL", "POST_CALL_STATUSES"]

#: Every value of ``calls.post_call_status`` (NULL: the call has not ended).
POST_CALL_STATUSES: tuple[str, ...] = ("pending", "running", "completed", "skipped", "failed")
#: The statuses :meth:`PostCallMixin.finish_post_call` writes (the results are final).
POST_CALL_FINAL: frozenset[str] = frozenset({"completed", "skipped", "failed"})

_RESET: dict[str, Any] = {
    "post_call_status": "pending", "post_call_error": None, "summary": None, "extracted": None,
    "post_call_claim": None, "post_call_lease_until": None, "post_call_attempts": 0,
}  # fmt: skip


def mark_post_call_pending(s: Session, call_id: str) -> None:
    """Queue ``call_id``'s post-call results (``pending``, earlier results cleared), in ``s``'s
    transaction: call it with the move that ended the call."""
    s.execute(update(Call).where(Call.id == call_id).values(**_RESET).execution_options(synchronize_session=False))


@dataclass(frozen=True, slots=True)
class PostCallJob:
    """One claimed row: the call (with its turns and events), the claim's token, and how
    many claims the row has had (this one included)."""

    call: CallRecord
    claim: str
    attempts: int


class PostCallMixin(StoreBase):
    """The post-call worker's claims and results (see the module docstring)."""

    def claim_post_calls(self, *, lease_s: float, limit: int = 1, prefix: str = "pc") -> list[PostCallJob]:
        """Claim up to ``limit`` rows waiting for results: ``pending`` ones, oldest ended first,
        then ``running`` ones whose lease lapsed.

        Args:
            lease_s: how long (s) the claim holds; the worker must finish (or give up) sooner.
            limit: at most this many rows.
            prefix: start of each claim token (e.g. the node id, for the logs).

        Returns:
            The rows this call won, as :class:`PostCallJob` (others racing for a row lose it
            quietly).

        Raises:
            ValueError: ``lease_s`` or ``limit`` not positive.
        """
        if lease_s <= 0 or limit < 1:
            raise ValueError("lease_s and limit must be positive")
        now = self.now()
        waiting = or_(
            Call.post_call_status == "pending",
            and_(Call.post_call_status == "running", Call.post_call_lease_until < now),
        )
        jobs: list[PostCallJob] = []
        with self._session() as s, s.begin():
            rows = s.execute(
                select(Call.id, Call.post_call_status, Call.post_call_claim).where(waiting)
                .order_by(Call.post_call_status, Call.ended_at, Call.id).limit(limit)
            ).all()  # fmt: skip
            for call_id, status, old_claim in rows:
                claim = f"{prefix[:40]}-{secrets.token_hex(8)}"
                seen = Call.post_call_claim.is_(None) if old_claim is None else Call.post_call_claim == old_claim
                res = s.execute(
                    update(Call).where(Call.id == call_id, Call.post_call_status == status, seen)
                    .values(post_call_status="running", post_call_claim=claim,
                            post_call_lease_until=now + timedelta(seconds=lease_s),
                            post_call_attempts=Call.post_call_attempts + 1)
                    .execution_options(synchronize_session=False)
                )  # fmt: skip
                if _rowcount(res) == 1:
                    row = s.get(Call, call_id, populate_existing=True)
                    jobs.append(PostCallJob(_full_record(s, row), claim, row.post_call_attempts))  # type: ignore[arg-type]
        return jobs

    def finish_post_call(
        self, call_id: str, *, status: str, summary: str | None = None,
        extracted: Mapping[str, Any] | None = None, error: str | None = None, claim: str | None = None,
    ) -> bool:  # fmt: skip
        """Store a call's post-call results, in one transaction.

        Args:
            status: ``completed``, ``skipped`` or ``failed``.
            summary: the plain-language summary (``None`` unless completed).
            extracted: field name → value or ``None`` (JSON).
            error: why results were skipped or failed.
            claim: the worker's claim token; given, only that claim's holder may finish
                (``running`` with this token). ``None``: any ``pending`` or ``running`` row.

        The call's ``call.report`` webhook rows are written in the same transaction
        (:func:`gateway.store.outbox.write_call_report`).

        Returns:
            ``True`` if the results were stored; ``False`` if the row is not waiting for them
            (already final, never ended, or claimed by another worker since).

        Raises:
            ValueError: ``status`` is not one of :data:`POST_CALL_FINAL`.
        """
        if status not in POST_CALL_FINAL:
            raise ValueError(f"post-call status must be one of {sorted(POST_CALL_FINAL)}, got {status!r}")
        if claim is None:
            mine = Call.post_call_status.in_(("pending", "running"))
        else:
            mine = and_(Call.post_call_status == "running", Call.post_call_claim == claim)
        values = {
            "post_call_status": status, "summary": summary, "post_call_error": error,
            "extracted": dict(extracted) if extracted is not None else None,
            "post_call_claim": None, "post_call_lease_until": None,
        }  # fmt: skip
        with self._session() as s, s.begin():
            res = s.execute(
                update(Call).where(Call.id == call_id, mine).values(**values).execution_options(synchronize_session=False)
            )
            if _rowcount(res) != 1:
                return False
            write_call_report(s, call_id, at=self.now())  # the end-of-call report, in this transaction
        return True

    def release_post_calls(self, claims: Iterable[tuple[str, str]]) -> int:
        """Hand claimed rows back (``pending``, the claim not counted) for a worker that stops
        before finishing them. ``claims``: ``(call_id, claim)`` pairs. Returns how many."""
        done = 0
        with self._session() as s, s.begin():
            for call_id, claim in claims:
                res = s.execute(
                    update(Call).where(Call.id == call_id, Call.post_call_status == "running",
                                       Call.post_call_claim == claim)
                    .values(post_call_status="pending", post_call_claim=None, post_call_lease_until=None,
                            post_call_attempts=Call.post_call_attempts - 1)
                    .execution_options(synchronize_session=False)
                )  # fmt: skip
                done += _rowcount(res)
        return done


def _full_record(s: Session, row: Call) -> CallRecord:
    """``row`` with its turns, events and transitions (``seq`` order), read in ``s``."""
    turns = s.scalars(select(TranscriptTurn).where(TranscriptTurn.call_id == row.id).order_by(TranscriptTurn.seq))
    events = s.scalars(select(CallEvent).where(CallEvent.call_id == row.id).order_by(CallEvent.seq))
    transitions = s.scalars(
        select(CallTransition).where(CallTransition.call_id == row.id).order_by(CallTransition.seq)
    )
    return _call_record(row, turns.all(), events.all(), transitions.all())
