"""Call records as API response models: the listing's summary and (below) the full record.

The full record is what ``GET /calls/{callId}`` answers and what the end-of-call webhook report
carries, built by one function so the two never drift apart.
"""

from __future__ import annotations

import inspect
import statistics
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.requests import HTTPConnection

from gateway.api.calls_schemas import CallSummaryOut
from gateway.api.deps import ApiServices
from gateway.api.record_schemas import LatencyOut, PostCallOut, TransferOut, TurnLatencyOut
from gateway.api.schemas import CallErrorOut, CallOut, RecordingOut, TurnOut
from gateway.api.urls import public_url
from gateway.api.views import config_out, event_out, transition_out, turn_out
from gateway.config import Settings
from gateway.store import TERMINAL_STATUSES, CallRecord

__all__ = ["call_out", "call_summary_out", "recording_out", "latency_out", "duration_sec", "objective_of"]


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


def _url(settings: Settings, conn: HTTPConnection | None, path: str) -> str:
    """``path`` as an absolute URL (``GATEWAY_PUBLIC_URL``, else the request's base); the path
    alone when there is neither (a record rendered outside a request, e.g. a webhook report)."""
    if conn is None and not settings.public_url.strip():
        return path
    return public_url(settings, conn, path)  # type: ignore[arg-type]  # conn only read without public_url


def recording_out(settings: Settings, conn: HTTPConnection | None, rec: CallRecord) -> RecordingOut | None:
    """The record's ``recording`` (``None``: not recorded); ``url`` once it is ``completed``."""
    if rec.recording_state is None:
        return None
    done = rec.recording_state == "completed"
    return RecordingOut(
        status=rec.recording_state,  # type: ignore[arg-type]
        path=rec.recording_path,
        url=_url(settings, conn, f"/calls/{rec.id}/recording") if done else None,
        error=rec.recording_error,
    )


def latency_out(transcript: Iterable[TurnOut], metrics: Mapping[str, Any] | None) -> LatencyOut:
    """The latency figures: per agent turn from the transcript (its ``latency_ms``); median and
    maximum over the call's samples (``metrics.turnLatencyMs``, which also holds replies whose
    turn has no text); barge-in reactions from ``metrics.bargeInReactionMs``."""
    turns = [TurnLatencyOut(turn=i, ms=max(0, t.latency_ms)) for i, t in enumerate(transcript)
             if t.latency_ms is not None]  # fmt: skip
    samples = [float(x) for x in (metrics or {}).get("turnLatencyMs") or () if isinstance(x, (int, float))]
    if not samples:
        samples = [float(t.ms) for t in turns]
    barge = [max(0, round(x)) for x in (metrics or {}).get("bargeInReactionMs") or () if isinstance(x, (int, float))]
    return LatencyOut(
        turns=turns,
        response_p50_ms=max(0, round(statistics.median(samples))) if samples else None,
        response_max_ms=max(0, round(max(samples))) if samples else None,
        barge_in_ms=barge,
    )


async def _live(api: ApiServices, rec: CallRecord) -> Mapping[str, Any] | None:
    """The running call's view (transcript, events, duration) when this process serves it."""
    if api.live_view is None or rec.status in TERMINAL_STATUSES:
        return None
    view = api.live_view(rec.id)
    return await view if inspect.isawaitable(view) else view


async def call_out(rec: CallRecord, api: ApiServices, conn: HTTPConnection | None = None) -> CallOut:
    """The full call record, as ``GET /calls/{callId}`` answers it and the end-of-call report
    carries it.

    Args:
        rec: the call as :meth:`gateway.store.Store.get_call` returns it (turns, events and
            transitions loaded).
        api: the app's services (settings; ``live_view`` overlays a running call's transcript
            and events).
        conn: the request being served, for absolute URLs when ``GATEWAY_PUBLIC_URL`` is unset;
            ``None`` outside a request (then URLs are paths without it).
    """
    transcript = [turn_out(t) for t in rec.turns]
    events = [event_out(e) for e in rec.events]
    duration_ms, live = rec.duration_ms, False
    view = await _live(api, rec)
    if view is not None:
        live = True
        transcript = [turn_out(t) for t in view.get("transcript", ())]
        events = [event_out(e) for e in view.get("events", ())]
        duration_ms = view.get("duration_ms", duration_ms)
    error = None
    if rec.error_code or rec.error_message:
        error = CallErrorOut(code=rec.error_code or "error", message=rec.error_message or "")
    recording = recording_out(api.settings, conn, rec)
    return CallOut(
        id=rec.id, agent_id=rec.agent_id, status=rec.status.value,  # type: ignore[arg-type]
        live=live, direction=rec.direction, connection_type=rec.connection_type,
        created_at=rec.created_at, started_at=rec.started_at, ended_at=rec.ended_at,
        end_reason=rec.end_reason, error=error, duration_ms=duration_ms,
        from_=rec.from_number,  # type: ignore[call-arg]  # alias "from"
        to=rec.to_number, carrier_call_id=rec.carrier_call_id, carrier_account_id=rec.carrier_account_id,
        answered_at=rec.answered_at, carrier_status=rec.carrier_status, stream_id=rec.stream_id,
        transitions=[transition_out(t) for t in rec.transitions], voicemail=rec.voicemail,
        config=config_out(rec.call_config()), transcript=transcript, events=events,
        recording=recording, metrics=rec.metrics,
        objective=objective_of(rec), summary=rec.summary, extracted=rec.extracted,
        post_call=PostCallOut(status=rec.post_call_status, error=rec.post_call_error),  # type: ignore[arg-type]
        recording_url=recording.url if recording is not None else None,
        duration_sec=duration_sec(rec), latency=latency_out(transcript, rec.metrics),
        transfer=TransferOut(to=rec.transferred_to, at=rec.transferred_at) if rec.transferred_to else None,
    )  # fmt: skip
