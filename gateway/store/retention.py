"""Retention: deleting ended calls older than the operator keeps them (``GATEWAY_RETENTION_DAYS``).

:meth:`RetentionMixin.purge_calls` deletes, in one transaction per batch, ended calls created
before a cutoff (read on the ``ix_calls_created_at`` index, oldest first) with every row that
names them: transcript turns, events, transitions and webhook outbox rows. Their recording
paths are returned for the caller to remove (files are not the database's: a rolled-back
batch must not have lost them). Live calls are never deleted, however old, and neither is an
ended call whose after-call work is still to come: its post-call status ``pending`` or
``running`` (final, or NULL, is purgeable), or a webhook outbox row of it still ``pending``
(in its retry schedule, which runs ~27.6 h: :data:`gateway.webhooks.SCHEDULE_S`). Such a
call is deleted by a later purge, once its results are written and its deliveries are
delivered, failed or disabled.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, exists, or_, select

from gateway.store.base import StoreBase
from gateway.store.models import TERMINAL_STATUSES, Call, CallEvent, CallTransition, TranscriptTurn
from gateway.store.outbox import OutboxMessage
from gateway.store.postcall import POST_CALL_FINAL

__all__ = ["RetentionMixin", "PurgedCalls", "PURGE_BATCH"]

#: Calls deleted per transaction (SQLite's bound-parameter limit is 32,766).
PURGE_BATCH = 500

_ENDED = sorted(s.value for s in TERMINAL_STATUSES)
#: Every table with rows of a call, children first.
_CHILDREN = (TranscriptTurn, CallEvent, CallTransition, OutboxMessage)
#: A call whose after-call work is done: post-call results final (or never asked for) and
#: no delivery still in its retry schedule (read on ``ix_webhook_outbox_call``).
_SETTLED = (
    or_(Call.post_call_status.is_(None), Call.post_call_status.in_(sorted(POST_CALL_FINAL))),
    ~exists().where(OutboxMessage.call_id == Call.id, OutboxMessage.status == "pending"),
)


@dataclass(frozen=True, slots=True)
class PurgedCalls:
    """What one purge deleted: the calls' ids and their recordings' paths (to remove)."""

    call_ids: tuple[str, ...]
    recording_paths: tuple[str, ...]


class RetentionMixin(StoreBase):
    """Deleting old calls (see the module docstring)."""

    def purge_calls(self, *, before: datetime, limit: int = PURGE_BATCH) -> PurgedCalls:
        """Delete up to ``limit`` ended calls created before ``before`` (aware), oldest first,
        with their turns, events, transitions and outbox rows, in one transaction; calls whose
        post-call results or webhook deliveries are still to come are left for a later purge.

        Returns:
            The deleted calls' ids and recording paths (empty when nothing was old enough;
            fewer than ``limit``: no more to delete now).

        Raises:
            ValueError: ``limit`` not positive, or a naive ``before``.
        """
        if limit <= 0:
            raise ValueError("limit must be positive")
        if before.utcoffset() is None:
            raise ValueError("before must be an aware datetime")
        with self._session() as s, s.begin():
            rows = s.execute(
                select(Call.id, Call.recording_path)
                .where(Call.created_at < before, Call.status.in_(_ENDED), *_SETTLED)
                .order_by(Call.created_at)
                .limit(limit)
            ).all()
            ids = [r.id for r in rows]
            if ids:
                for model in _CHILDREN:
                    s.execute(delete(model).where(model.call_id.in_(ids)).execution_options(synchronize_session=False))
                s.execute(delete(Call).where(Call.id.in_(ids)).execution_options(synchronize_session=False))
        return PurgedCalls(tuple(ids), tuple(r.recording_path for r in rows if r.recording_path))
