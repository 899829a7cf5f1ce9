"""Finalising one call: the bounded close steps, the carrier close code, the outcome.

Whatever ends a call (the carrier, a policy, the model, a bug, :meth:`CallSession.request_end`
or cancellation of ``run()``), the session finalises it once, shielded from cancellation, with
:func:`finish_call`: the final ``ended`` event, the bridge closed, the recording finished, the
carrier socket closed with a code that says why (:func:`close_code`), the
:class:`~gateway.session.common.CallOutcome` built, and the app's ``on_finished`` hook awaited.
Each step that waits on something outside the call is bounded (:data:`BRIDGE_CLOSE_S`,
:data:`TRANSPORT_CLOSE_S`, :data:`ON_FINISHED_S`, on the call's clock) and its failure is
logged and absorbed, so nothing outside can wedge or lose a record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway.audio.playout import PlayoutLedger
from gateway.carriers import events as ev
from gateway.clock import Clock
from gateway.journal import CallJournal
from gateway.llm import base as llm
from gateway.recording_guard import BestEffortRecording
from gateway.session.common import CallEnded, CallHooks, CallOutcome, CallStats, Transport

__all__ = ["finish_call", "close_code", "bounded", "metrics", "CallParts",
           "BRIDGE_CLOSE_S", "TRANSPORT_CLOSE_S", "ON_FINISHED_S"]  # fmt: skip

#: Time limits (s) on the steps that finalise a call: past one, the step is abandoned
#: (cancelled, not awaited) and finalisation goes on, so nothing outside can wedge a record.
BRIDGE_CLOSE_S = 5.0
TRANSPORT_CLOSE_S = 2.0
ON_FINISHED_S = 15.0

#: Why the call ended (its ``end_reason``) → the carrier socket's close code when that is not
#: the status's default: a refused ``start`` is a policy violation (RFC 6455 §7.4.1).
_CLOSE_CODES = {"bad_start": 1008}


def close_code(ended: CallEnded, *, requested: bool) -> int:
    """The WebSocket close code for a call that ended with ``ended`` (RFC 6455 §7.4.1).

    1001 "going away" when the app asked the call to end (``requested``: shutdown); 1008
    "policy violation" for a ``start`` the adapter refused (``bad_start``); 1000 for any other
    ``completed`` or ``voicemail`` call; 1011 "internal error" for any other failure.
    """
    if requested:
        return 1001
    code = _CLOSE_CODES.get(ended.reason)
    if code is not None:
        return code
    return 1000 if ended.status in ("completed", "voicemail") else 1011


async def bounded(clock: Clock, log: logging.LoggerAdapter, step: str, work: Awaitable[Any], limit_s: float) -> None:
    """Await one finalisation step for at most ``limit_s`` (on the call's clock).

    Its failure, a stray ``CancelledError`` from inside it included, is logged and
    absorbed: closing must not lose the record. Past the limit it is cancelled and
    abandoned (not awaited: a step that ignores cancellation cannot hold the call).
    """
    task = asyncio.ensure_future(work)
    timer = asyncio.ensure_future(clock.sleep(limit_s))
    try:
        await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
    if not task.done():
        task.cancel()
        log.warning("%s did not finish within %.1f s: abandoned", step, limit_s)
    elif task.cancelled():
        log.warning("%s was cancelled from inside", step)
    elif task.exception() is not None:
        log.warning("%s failed", step, exc_info=task.exception())


def metrics(stats: CallStats, journal: CallJournal, ledger: PlayoutLedger | None,
            echo: Callable[[], dict[str, Any] | None] | None = None) -> dict[str, Any]:
    """The record's ``metrics``: counters, protocol-error counts, latency samples (ms), and
    ``echo`` (the call's echo path: :meth:`gateway.engine.echo.EchoStage.metrics`) when agent
    audio played on a call with an echo stage (absent otherwise)."""
    out = {
        "framesIn": stats.frames_in,
        "framesOut": stats.frames_out,
        "messagesOut": stats.messages_out,
        "marksAcked": stats.marks_acked,
        "bargeIns": stats.barge_ins,
        "bargeInPauses": stats.barge_in_pauses,  # pause-then-commit: pauses, and how they ended
        "bargeInResumes": stats.barge_in_resumes,
        "bargeInCommits": stats.barge_in_commits,
        "otherTrackFrames": stats.other_track_frames,
        "vadFallbackTicks": stats.vad_fallback_ticks,
        "protocolErrors": dict(journal.protocol_errors),
        "unhandledEvents": dict(journal.unhandled),
        "eventsDropped": dict(journal.dropped),
        "marksUnknown": ledger.unknown_acks if ledger is not None else 0,
        "marksStale": ledger.stale_acks if ledger is not None else 0,
        "turnLatencyMs": [round(x, 1) for x in stats.turn_latency_ms],
        "bargeInReactionMs": [round(x, 1) for x in stats.barge_in_ms],
    }
    try:
        found = echo() if echo is not None else None
    except Exception:  # noqa: BLE001 - a bug there must not lose the record
        logging.getLogger("gateway.call").exception("the echo metrics could not be made")
        found = None
    if found is not None:
        out["echo"] = found
    return out


@dataclass(slots=True)
class CallParts:
    """What a call has to close and report, as far as it got (``None``: never set up)."""

    clock: Clock
    t0: float
    log: logging.LoggerAdapter
    journal: CallJournal
    stats: CallStats
    transcript: list[dict[str, Any]]
    transport: Transport
    hooks: CallHooks
    bridge: llm.ModelBridge | None = None
    ledger: PlayoutLedger | None = None
    recorder: BestEffortRecording | None = None
    started: ev.Started | None = None
    voicemail: Callable[[str], dict[str, Any]] | None = None  # end reason -> the detector's outcome
    echo: Callable[[], dict[str, Any] | None] | None = None  # the record's metrics.echo, or None


async def finish_call(parts: CallParts, ended: CallEnded, *, requested: bool) -> CallOutcome:
    """Close what the call opened and build its outcome; never raises for a step's failure.

    Args:
        parts: the call's parts.
        ended: why it ended.
        requested: whether the app asked it to end (:meth:`CallSession.request_end`).
    """
    clock, log = parts.clock, parts.log

    def ms() -> float:
        return (clock.now() - parts.t0) * 1000.0

    parts.journal.event("ended", ms(), {"reason": ended.reason}, final=True)
    parts.journal.flush_log(ms())
    if parts.bridge is not None:
        await bounded(clock, log, "bridge close", parts.bridge.close(), BRIDGE_CLOSE_S)
    recording = parts.recorder.close() if parts.recorder is not None else None  # never raises
    code = close_code(ended, requested=requested)
    observe = getattr(parts.transport, "observe", None)  # optional: see Transport
    if observe is not None:
        observe("ended", {"status": ended.status, "endReason": ended.reason})
    await bounded(clock, log, "transport close", parts.transport.close(code, ended.reason[:100]), TRANSPORT_CLOSE_S)
    outcome = CallOutcome(
        status=ended.status,
        end_reason=ended.reason,
        duration_ms=int(ms()),
        transcript=parts.transcript,
        events=parts.journal.events,
        metrics=metrics(parts.stats, parts.journal, parts.ledger, parts.echo),
        error_code=ended.code,
        error_message=ended.msg,
        recording_path=recording.path if recording else None,
        recording_status=recording.status if recording else None,
        recording_error=recording.error if recording else None,
        started=parts.started,
        voicemail=parts.voicemail(ended.reason) if parts.voicemail is not None else None,
    )
    log.info("call ended: %s (%s), %d ms", ended.reason, ended.status, outcome.duration_ms)
    if parts.hooks.on_finished is not None:
        await bounded(clock, log, "on_finished hook", parts.hooks.on_finished(outcome), ON_FINISHED_S)
    return outcome
