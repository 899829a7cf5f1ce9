"""``GET /calls``: the key's tenant's calls, newest first, filtered and one page at a time.

Query parameters: ``limit`` (1–1000, default 100), ``offset`` (≥ 0), ``status`` (one call
status), ``direction`` (``inbound`` / ``outbound``), ``start_date`` and ``end_date`` (ISO 8601;
a time without an offset is UTC). A call is listed when ``start_date ≤ createdAt <
end_date``; an ``end_date`` given as a date alone (``2026-12-02``) includes that whole day.
The document declares both as strings with :data:`ISO_8601_PATTERN` (not ``format:
date-time``, which is RFC 3339's date and time with an offset, narrower than what is taken):
a string matching it is a real instant (months, days, leap years, hours and offsets checked),
and the route refuses any other (:func:`_iso_only`).
Served by the store's indexed listing (:meth:`gateway.store.calls_query.CallsQueryMixin.list_calls`).
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BeforeValidator, WithJsonSchema

from gateway.api.auth import Tenant
from gateway.api.call_views import call_summary_out
from gateway.api.calls_schemas import CallList, PaginationOut
from gateway.api.deps import Api
from gateway.api.responses import AUTH, _error
from gateway.api.routing import GatewayRoute
from gateway.api.schemas import CallStatusT
from gateway.store.calls_query import MAX_PAGE

__all__ = ["router", "MAX_OFFSET", "ISO_8601_PATTERN"]

router = APIRouter(tags=["calls"], route_class=GatewayRoute)

#: The largest ``offset`` accepted (a bound for the database's integer, far past any listing).
MAX_OFFSET = 2**31 - 1
_DATE_ONLY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_YEAR = r"(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"  # 0001-9999
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_MONTH_DAY = r"(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
_TIME = r"[Tt ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:[.,][0-9]{1,9})?)?"
_OFFSET = r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):?[0-5][0-9])"
#: ISO 8601 as the listing takes it (and its OpenAPI ``pattern``): a date (a real one: 0001
#: to 9999, February 29 in leap years only), or a date and time (``T`` or a space; hh:mm,
#: optional seconds and fraction) with an optional offset (``Z``, ``±hh:mm`` or ``±hhmm``;
#: none: UTC); digits are ASCII (``[0-9]``: Python's ``\\d`` takes any Unicode digit).
#: Sources: ISO 8601-1:2019 §5.2.2 (calendar dates), §5.3 (times); what pydantic's datetime
#: parser then takes (every string matching it, checked by a fuzz test).
_ISO_8601 = re.compile(rf"(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)(?:{_TIME}{_OFFSET}?)?")  # fullmatch it
ISO_8601_PATTERN = f"^{_ISO_8601.pattern}$"
_MIN = datetime.min.replace(tzinfo=timezone.utc)
_MAX = datetime.max.replace(tzinfo=timezone.utc)
_START = "ISO 8601: only calls created at or after it (no offset: UTC)."
_END = "ISO 8601: only calls created before it (no offset: UTC); a date alone includes that day."
Direction = Literal["inbound", "outbound"]


def _iso_only(value: Any) -> Any:
    """Refuse what pydantic's lax datetime would take besides ISO 8601 (``0.5``: a Unix time)."""
    if isinstance(value, str) and not _ISO_8601.fullmatch(value):
        raise ValueError("must be an ISO 8601 date or date-time, e.g. 2026-03-01 or 2026-03-01T12:00:00Z")
    return value


#: A query parameter's instant: ISO 8601 only; documented as a string with the pattern.
IsoDateTime = Annotated[
    datetime,
    BeforeValidator(_iso_only),
    WithJsonSchema({"type": "string", "pattern": ISO_8601_PATTERN, "examples": ["2026-03-01", "2026-03-01T12:00:00Z"]}),
]


def _instant(value: datetime | None, raw: str | None, *, whole_day: bool) -> datetime | None:
    """``value`` as aware UTC (naive: read as UTC), clamped to what a datetime can hold; with
    ``whole_day`` and ``raw`` a date alone, the next day's midnight (the day included)."""
    if value is None:
        return None
    if value.utcoffset() is None:
        value = value.replace(tzinfo=timezone.utc)
    try:
        value = value.astimezone(timezone.utc)
        if whole_day and raw is not None and _DATE_ONLY.fullmatch(raw):
            value += timedelta(days=1)
    except OverflowError:  # an offset past year 1 or 9999: before or after every call
        value = _MIN if value.year == 1 else _MAX
    return value


@router.get(
    "/calls",
    operation_id="listCalls",
    summary="List calls, newest first",
    description="The key's tenant's calls, newest first (createdAt, then id), filtered by status, "
    "direction and creation time (start_date ≤ createdAt < end_date; an end_date given as a date "
    "alone includes that day), one page at a time: pagination.total counts every match.",
    response_model=CallList,
    responses={
        200: {"description": "A page of calls."},
        **AUTH,
        422: _error("A query parameter is invalid (code validation_error); fields names it."),
    },
)
async def list_calls(
    tenant: Tenant,
    api: Api,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page length, 1–1000.")] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Calls skipped before the page.")] = 0,
    # not Optional: absent is None, and the document states the type alone (no null to send)
    status: Annotated[CallStatusT, Query(description="Only calls in this status.")] = None,  # type: ignore[assignment]
    direction: Annotated[Direction, Query(description="Only calls of this direction.")] = None,  # type: ignore[assignment]
    start_date: Annotated[IsoDateTime, Query(description=_START)] = None,  # type: ignore[assignment]
    end_date: Annotated[IsoDateTime, Query(description=_END)] = None,  # type: ignore[assignment]
) -> CallList:
    page = await asyncio.to_thread(
        api.store.list_calls, tenant=tenant, status=status, direction=direction,
        created_from=_instant(start_date, None, whole_day=False),
        created_before=_instant(end_date, request.query_params.get("end_date"), whole_day=True),
        limit=limit, offset=offset,
    )  # fmt: skip
    return CallList(
        calls=[call_summary_out(rec) for rec in page.calls],
        pagination=PaginationOut(total=page.total, limit=limit, offset=offset),
    )
