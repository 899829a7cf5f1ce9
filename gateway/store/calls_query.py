"""Listing a tenant's calls: filters, newest first, one page at a time, on indexed queries.

:meth:`CallsQueryMixin.list_calls` backs ``GET /calls``. Every filter combination is served by
one of the ``calls`` indexes ``(tenant, created_at, id)``, ``(tenant, status, created_at, id)``
and ``(tenant, direction, created_at, id)`` (:class:`gateway.store.models.Call`): the rows are
read in index order, newest first, so a page costs its offset plus its length, never a sort
of the tenant's calls. ``id`` breaks ties between calls created in the same microsecond, so
pages do not overlap or skip.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.sql.elements import ColumnElement

from gateway.store.base import StoreBase
from gateway.store.helpers import _call_record
from gateway.store.models import Call, CallStatus
from gateway.store.records import CallRecord

__all__ = ["CallsQueryMixin", "CallPage", "MAX_PAGE"]

#: The largest page :meth:`CallsQueryMixin.list_calls` returns.
MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class CallPage:
    """One page of a call listing.

    Attributes:
        calls: the page's calls, newest first (``created_at`` then ``id`` descending); their
            ``turns``, ``events`` and ``transitions`` are empty.
        total: how many calls match the filters in all (every page).
    """

    calls: tuple[CallRecord, ...]
    total: int


class CallsQueryMixin(StoreBase):
    """Read-side queries over many calls."""

    def list_calls(
        self,
        *,
        tenant: str,
        status: CallStatus | str | Collection[CallStatus | str] | None = None,
        direction: str | None = None,
        created_from: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> CallPage:
        """A page of ``tenant``'s calls, newest first.

        Args:
            tenant: only this tenant's calls.
            status: only calls in this status (or in any of these); ``None``: any.
            direction: ``inbound`` or ``outbound``; ``None``: either.
            created_from: only calls created at or after this instant (aware).
            created_before: only calls created before this instant (aware).
            limit: page length, 1–:data:`MAX_PAGE`.
            offset: calls skipped before the page (≥ 0).

        Returns:
            The page and the total number of matching calls.

        Raises:
            ValueError: ``limit`` or ``offset`` out of range, an unknown status, or a naive
                datetime.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be 1..{MAX_PAGE}, got {limit}")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        where = _filters(tenant, status, direction, created_from, created_before)
        query = (
            select(Call).where(*where).order_by(Call.created_at.desc(), Call.id.desc()).limit(limit).offset(offset)
        )
        with self._session() as s:
            rows = s.scalars(query).all()
            total = s.scalar(select(func.count()).select_from(Call).where(*where)) or 0
            return CallPage(calls=tuple(_call_record(r) for r in rows), total=int(total))


def _filters(
    tenant: str,
    status: CallStatus | str | Collection[CallStatus | str] | None,
    direction: str | None,
    created_from: datetime | None,
    created_before: datetime | None,
) -> list[ColumnElement[bool]]:
    """The ``WHERE`` terms of :meth:`CallsQueryMixin.list_calls`."""
    where: list[ColumnElement[bool]] = [Call.tenant == tenant]
    if status is not None:
        wanted = [status] if isinstance(status, str) else list(status)
        values = sorted({CallStatus(v).value for v in wanted})
        where.append(Call.status == values[0] if len(values) == 1 else Call.status.in_(values))
    if direction is not None:
        where.append(Call.direction == direction)
    for bound in (created_from, created_before):
        if bound is not None and bound.utcoffset() is None:
            raise ValueError(f"naive datetime {bound!r}: give aware instants")
    if created_from is not None:
        where.append(Call.created_at >= created_from)
    if created_before is not None:
        where.append(Call.created_at < created_before)
    return where
