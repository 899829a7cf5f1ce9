"""Call records as API response models: the listing's summary and (below) the full record.

The full record is what ``GET /calls/{callId}`` answers and what the end-of-call webhook report
carries, built by one function so the two never drift apart.
"""

from __future__ import annotations

from gateway.api.calls_schemas import CallSummaryOut
from gateway.store import CallRecord

__all__ = ["call_summary_out", "duration_sec", "objective_of"]


def duration_sec(rec: CallRecord) -> float | None:
    """The call's length (s, to the ms) once it ended; ``None`` before."""
    if rec.duration_ms is None or rec.ended_at is None:
        return None
    return round(rec.duration_ms / 1000.0, 3)


def objective_of(rec: CallRecord) -> str | None:
    """An outbound call's requested objective (its ``outbound`` details), else ``None``."""
    objective = (rec.outbound or {}).get("objective")
    return str(objective) if objective else None


def call_summary_out(rec: CallRecord) -> CallSummaryOut:
    """``rec`` as one entry of ``GET /calls``."""
    return CallSummaryOut(
        id=rec.id, agent_id=rec.agent_id, status=rec.status.value,  # type: ignore[arg-type]
        direction=rec.direction, connection_type=rec.connection_type,
        from_=rec.from_number, to=rec.to_number,  # type: ignore[call-arg]  # alias "from"
        created_at=rec.created_at, started_at=rec.started_at, answered_at=rec.answered_at,
        ended_at=rec.ended_at, end_reason=rec.end_reason, duration_sec=duration_sec(rec),
        objective=objective_of(rec), post_call_status=rec.post_call_status,  # type: ignore[arg-type]
    )  # fmt: skip
