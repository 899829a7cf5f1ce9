"""Response models of the call listing (``GET /calls``).

camelCase on the wire like every API model (:mod:`gateway.api.schemas`).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from gateway.api.record_schemas import PostCallStatusT
from gateway.api.schemas import CallStatusT, _Response

__all__ = ["CallSummaryOut", "PaginationOut", "CallList", "PostCallStatusT"]


class CallSummaryOut(_Response):
    """One call of a listing: who, when, how it ended (``GET /calls/{callId}`` has the rest)."""

    id: str
    agent_id: str | None
    status: CallStatusT
    direction: str = Field(description="inbound or outbound.")
    connection_type: str
    from_: str | None = Field(alias="from")
    to: str | None
    created_at: datetime
    started_at: datetime | None
    answered_at: datetime | None
    ended_at: datetime | None
    end_reason: str | None
    duration_sec: float | None = Field(description="Call length (s), null until it ended.")
    objective: str | None = Field(description="An outbound call's objective, as requested.")
    post_call_status: PostCallStatusT | None = Field(
        description="Post-call results: pending, running, completed, skipped or failed; null while the call runs."
    )


class PaginationOut(_Response):
    """Where a page sits: ``total`` matching calls, this page's ``limit`` and ``offset``."""

    total: int = Field(ge=0)
    limit: int = Field(ge=1, le=1000)
    offset: int = Field(ge=0)


class CallList(_Response):
    """``GET /calls``: a page of the key's tenant's calls, newest first."""

    calls: list[CallSummaryOut]
    pagination: PaginationOut
