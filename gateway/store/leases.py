"""Call leases: how long a node vouches for a call it serves, and which calls lost their node.

A node claiming a stream (:meth:`~gateway.store.calls.CallsMixin.mark_call_started`) records
its id (``calls.node_id``), its process run (``calls.node_run``, a uuid4 made at the app's
start) and a lease: ``lease_until = now + lease_s`` (``GATEWAY_CALL_LEASE_S``), stamped
``lease_renewed_at = now``. While the call is live its process renews the lease every
``lease_s / 3`` (:meth:`LeasesMixin.renew_leases`). A call whose lease lapsed has no live
process behind it; :mod:`gateway.store.recovery` decides what to finalise from these columns.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update

from gateway.store.base import StoreBase
from gateway.store.helpers import _call_record, _rowcount
from gateway.store.models import Call, CallStatus
from gateway.store.records import CallRecord

__all__ = ["LeasesMixin", "NODE_LOST", "PRE_LEASE_MAX_DURATION_S", "lease_expiry"]

#: End reason and error code of a call whose node died under it (a presumption: the call's
#: real outcome replaces it if it ever arrives, see ``finalise_call``).
NODE_LOST = "node_lost"

#: The longest call a config allows (``maxDuration``): the lease of a row written before
#: leases existed runs out this long (plus one lease) after its start when its config has none.
PRE_LEASE_MAX_DURATION_S = 7200

#: Renewals per lease: a live process renews every ``lease_s / RENEWALS``.
RENEWALS = 3

_CHUNK = 1000  # ids per UPDATE (SQLite's bound-parameter limit is 32,766)


def lease_expiry(call: CallRecord, default_lease_s: float) -> datetime:
    """When ``call``'s lease runs out (aware UTC).

    ``lease_until`` when the row has one; for a row from before leases (``None``): its start
    (else creation) + its config's ``max_duration_s`` (else 7,200 s) + ``default_lease_s``.
    """
    if call.lease_until is not None:
        return call.lease_until
    start = call.started_at or call.created_at
    try:
        max_s = float(call.config.get("max_duration_s") or PRE_LEASE_MAX_DURATION_S)
    except (TypeError, ValueError):
        max_s = PRE_LEASE_MAX_DURATION_S
    return start + timedelta(seconds=max_s + default_lease_s)


class LeasesMixin(StoreBase):
    """Lease renewal and the queries that find calls whose node is gone."""

    def renew_leases(self, call_ids: Collection[str], *, run_id: str, lease_s: float) -> int:
        """Extend the leases of this process's live calls to ``now + lease_s``.

        One ``UPDATE`` (per 1,000 ids) touching only calls still ``in_progress`` and claimed
        by ``run_id``: a call finalised meanwhile (e.g. presumed ``node_lost`` by another
        node) is left alone.

        Returns:
            How many leases were renewed.

        Raises:
            ValueError: ``lease_s`` not positive. SQLAlchemy errors from the database.
        """
        if lease_s <= 0:
            raise ValueError("lease_s must be positive")
        ids = list(dict.fromkeys(call_ids))
        if not ids:
            return 0
        now = self.now()
        renewed = 0
        with self._session() as s, s.begin():
            for i in range(0, len(ids), _CHUNK):
                res = s.execute(
                    update(Call)
                    .where(Call.id.in_(ids[i : i + _CHUNK]), Call.node_run == run_id,
                           Call.status == CallStatus.IN_PROGRESS.value)  # fmt: skip
                    .values(lease_until=now + timedelta(seconds=lease_s), lease_renewed_at=now)
                    .execution_options(synchronize_session=False)
                )
                renewed += _rowcount(res)
        return renewed

    def lost_calls(self, node_id: str, *, run_id: str | None = None) -> list[CallRecord]:
        """Calls ``node_id`` claimed that are still ``in_progress`` and not claimed by ``run_id``.

        Candidates for the start-up recovery of ``node_id`` (see :mod:`gateway.store.recovery`
        for which of them are finalised). ``run_id`` ``None``: every such call. Oldest first.
        """
        query = select(Call).where(Call.node_id == node_id, Call.status == CallStatus.IN_PROGRESS.value)
        if run_id is not None:
            query = query.where(or_(Call.node_run.is_(None), Call.node_run != run_id))
        with self._session() as s:
            return [_call_record(row) for row in s.scalars(query.order_by(Call.started_at)).all()]

    def lapsed_calls(self, *, default_lease_s: float) -> list[CallRecord]:
        """``in_progress`` calls of any node whose lease ran out (:func:`lease_expiry`). Oldest first.

        Only calls a stream claimed (``started_at`` set): one the carrier answered but no stream
        claimed has no node, and ``expire_stale_calls`` ends it when its stream token expires.
        """
        now = self.now()
        with self._session() as s:
            rows = s.scalars(
                select(Call)
                .where(
                    Call.status == CallStatus.IN_PROGRESS.value,
                    Call.started_at.is_not(None),  # answered but never claimed: expiry's, not ours
                    or_(
                        Call.lease_until <= now,
                        # rows from before leases: a cheap bound here, the exact one below
                        Call.lease_until.is_(None) & (Call.created_at <= now - timedelta(seconds=default_lease_s)),
                    ),
                )
                .order_by(Call.started_at)
            ).all()
            calls = [_call_record(row) for row in rows]
        return [c for c in calls if lease_expiry(c, default_lease_s) <= now]
