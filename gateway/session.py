"""CallSession: the one asyncio owner of a live call.

It owns the carrier socket (through a :class:`Transport`), the model bridge, the playout
ledger, the timers and the call's record. Caller audio flows carrier → adapter → decode →
resample → VAD and bridge; agent audio flows bridge → transcode → playout ledger → adapter →
carrier, paced on an accumulating clock. Everything CPU-bound is a synchronous pure stage; this
module only awaits.

Barge-in (caller speech while agent audio is playing, on an interruptible call): send the
carrier ``clear`` first, then drop queued audio, reset the outbound resampler, and tell the
bridge to cancel its reply and cut its memory to the ms the caller heard (from mark
acknowledgements).

A call ends on the carrier's ``stop``, the socket closing, ``maxDuration``, inactivity, or a
fatal model error; whichever it is, the record is finalised with status, reason, transcript,
events, metrics and the recording path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from gateway.audio.playout import PlayoutLedger
from gateway.carriers import events as ev
from gateway.clock import Clock, MonotonicClock
from gateway.codecs.transcode import Transcoder, decode
from gateway.formats import AudioFormat, Encoding
from gateway.journal import CallJournal
from gateway.llm import base as llm
from gateway.llm.common import cut_heard
from gateway.recording_guard import BestEffortRecording
from gateway.vadrun import VadEnd, VadRunner, VadStart

__all__ = ["CallSession", "CallPolicy", "Transport", "CallOutcome", "CallHooks"]

_SILENCE_BYTE = {Encoding.PCMU: 0xFF, Encoding.PCMA: 0xD5, Encoding.L16: 0x00}
_START_TIMEOUT_S = 15.0
#: Time limits (s) on the steps that finalise a call: past one, the step is abandoned
#: (cancelled, not awaited) and finalisation goes on, so nothing outside can wedge a record.
_BRIDGE_CLOSE_S = 5.0
_TRANSPORT_CLOSE_S = 2.0
_ON_FINISHED_S = 15.0
_MAX_SAMPLES = 1000  # latency samples kept per call and metric


class Transport(Protocol):
    """One call's carrier WebSocket, as the session sees it."""

    async def receive(self) -> ev.Frame | None:
        """The next message, or ``None`` once the peer has closed."""
        ...

    async def send(self, frame: ev.Frame) -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


@dataclass(frozen=True, slots=True)
class CallPolicy:
    """Per-call limits and switches from the agent or inline call (seconds)."""

    max_duration_s: float = 3000
    inactivity_timeout_s: float = 30
    inactivity_action: str = "hangup"  # or "prompt": ask once, then hang up
    inactivity_prompt: str = "Are you still there?"
    recording_enabled: bool = True


@dataclass(slots=True)
class CallOutcome:
    """What the session hands to the store when the call ends."""

    status: str  # completed | failed
    end_reason: str
    duration_ms: int
    transcript: list[dict[str, Any]]
    events: list[dict[str, Any]]
    metrics: dict[str, Any]
    error_code: str | None = None
    error_message: str | None = None
    recording_path: str | None = None
    recording_status: str | None = None  # completed | failed; None: not recorded
    recording_error: str | None = None  # why the recording failed (the call went on)
    started: ev.Started | None = None


@dataclass(slots=True)
class CallHooks:
    """Optional callbacks into the app (store, recorder), injected so tests can omit them."""

    on_started: Callable[[ev.Started], Awaitable[None]] | None = None
    open_recorder: Callable[[int], Any] | None = None  # sample rate -> recorder or None
    on_finished: Callable[[CallOutcome], Awaitable[None]] | None = None


class _CallEnded(Exception):
    def __init__(self, reason: str, status: str = "completed", code: str | None = None, msg: str | None = None):
        super().__init__(reason)
        self.reason, self.status, self.code, self.msg = reason, status, code, msg


@dataclass(slots=True)
class _Stats:
    frames_in: int = 0
    frames_out: int = 0
    marks_acked: int = 0
    barge_ins: int = 0
    other_track_frames: int = 0
    turn_latency_ms: list[float] = field(default_factory=list)
    barge_in_ms: list[float] = field(default_factory=list)


class CallSession:
    """One live call. Create, then ``await run()``; it returns when the call has ended.

    Args:
        call_id: our call id (for logs and the record).
        adapter: the carrier adapter (sans-I/O) for this socket.
        transport: the carrier socket.
        bridge_factory: makes the model bridge for this call.
        config: what the model is asked to do.
        policy: limits and switches.
        vad: makes this call's VAD runner (direct or batched across calls) for the carrier's
            sample rate (Hz); the runner says which rate it takes (8 or 16 kHz).
        hooks: store and recorder callbacks.
        clock: time source (tests inject a fake one).
        lead_ms: agent audio kept buffered at the carrier ahead of real time (ms).
        mark_every: frames between marks.
        send_every_ms: while agent audio plays, the pacer wakes this often (ms) and tops the
            carrier up (two 20 ms frames per wake at 40 ms: half the wake-ups of one per frame;
            the carrier then holds between ``lead_ms - 20`` and ``lead_ms + 20`` ms). New audio
            after a pause still leaves at once.
        model_chunk_ms: caller audio goes to the model in messages of this much audio (ms),
            flushed at once before every turn event (speech start, end of turn, barge-in).
    """

    def __init__(
        self,
        *,
        call_id: str,
        adapter: ev.CarrierAdapter,
        transport: Transport,
        bridge_factory: Callable[[llm.AgentConfig], llm.ModelBridge],
        config: llm.AgentConfig,
        policy: CallPolicy,
        vad: Callable[[int], VadRunner],
        hooks: CallHooks | None = None,
        clock: Clock | None = None,
        lead_ms: float = 80.0,
        mark_every: int = 5,
        send_every_ms: float = 40.0,
        model_chunk_ms: float = 40.0,
    ) -> None:
        self.call_id = call_id
        self.adapter = adapter
        self.transport = transport
        self.config = config
        self.policy = policy
        self.hooks = hooks or CallHooks()
        self.clock = clock or MonotonicClock()
        self.log = logging.LoggerAdapter(logging.getLogger("gateway.call"), {"call_id": call_id})
        self._bridge_factory = bridge_factory
        self._vad_factory = vad
        self._vad: VadRunner | None = None
        self._vad_at_carrier_rate = False
        self._vad_barge_mode = False
        self._lead_ms = lead_ms
        self._mark_every = mark_every
        self._slack_ms = max(0.0, send_every_ms - 20.0)
        self._model_chunk_ms = model_chunk_ms
        self._model_buf = bytearray()
        self._model_chunk_bytes = 0
        self.bridge: llm.ModelBridge | None = None
        self.ledger: PlayoutLedger | None = None
        self.stats = _Stats()
        self.transcript: list[dict[str, Any]] = []
        self.journal = CallJournal(self.log)
        self._t0 = self.clock.now()
        self._fmt: AudioFormat | None = None
        self._to_vad: Transcoder | None = None
        self._to_model: Transcoder | None = None
        self._from_model: Transcoder | None = None
        self._audio_ready = asyncio.Event()
        self._send_lock = asyncio.Lock()  # frames, marks and clear leave in the ledger's order
        self._agent_turns: dict[str, int] = {}
        self._cancelled_items: dict[str, int] = {}  # item cut by barge-in -> ms the caller heard
        self._caller_samples = 0
        self._caller_origin: int | None = None
        self._last_activity = self._t0
        self._prompted = False
        self._speech_end_at: float | None = None
        self._speech_onset_at: float | None = None
        self._recorder: BestEffortRecording | None = None
        self._closed = False
        self._started: ev.Started | None = None
        self._end_request: _CallEnded | None = None
        self._finishing: asyncio.Task[CallOutcome] | None = None
        self._end_requested = asyncio.Event()

    # ------------------------------------------------------------------ helpers
    def _ms(self) -> float:
        return (self.clock.now() - self._t0) * 1000.0

    @property
    def events(self) -> list[dict[str, Any]]:
        """The call's events so far (bounded: see :class:`~gateway.journal.CallJournal`)."""
        return self.journal.events

    def _event(self, kind: str, /, **data: Any) -> None:
        self.journal.event(kind, self._ms(), data)

    async def _send(self, frame: ev.Frame) -> None:
        await self.transport.send(frame)

    # ------------------------------------------------------------------ lifecycle
    def request_end(self, reason: str = "shutdown") -> None:
        """Ask the call to end now, e.g. with ``shutdown`` when the gateway gets SIGTERM.

        The call ends ``completed`` with ``reason`` (``failed``, ``no_start``, if its stream
        had not started yet), its record is finalised as for any other ending, and the carrier
        socket is closed with 1001 "going away" (RFC 6455 §7.4.1). Idempotent: the first
        reason wins. Returns at once; :meth:`run` returns when the call has ended.
        """
        if self._end_request is None:
            self._end_request = _CallEnded(reason)
            self._end_requested.set()

    async def _end_watch(self) -> None:
        await self._end_requested.wait()
        assert self._end_request is not None
        raise self._end_request

    async def run(self) -> CallOutcome:
        """Run the call to its end and finalise its record. Never raises for call errors.

        The record is finalised whatever ends the call, cancellation of ``run()`` included:
        then the finalisation runs shielded from the cancellation (reason ``cancelled``, unless
        :meth:`request_end` gave one), and the cancellation is re-raised once it is done.
        """
        try:
            ended = await self._serve()
        except asyncio.CancelledError:
            await self._finish_once(self._end_request or _CallEnded(
                "cancelled", "failed", "cancelled", "the call's task was cancelled"))
            raise
        return await self._finish_once(ended)

    async def _finish_once(self, ended: _CallEnded) -> CallOutcome:
        """Finalise in a task of its own (once per call), shielded from ``run()``'s cancellation."""
        if self._finishing is None:
            self._finishing = asyncio.create_task(self._finish(ended), name=f"finish-{self.call_id}")
        return await asyncio.shield(self._finishing)

    async def _serve(self) -> _CallEnded:
        """The call itself, from the carrier's ``start`` to whatever ends it."""
        ended = _CallEnded("carrier_closed")
        try:
            started = await asyncio.wait_for(self._await_start(), _START_TIMEOUT_S)
            await self._setup(started)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._carrier_loop())
                tg.create_task(self._model_loop())
                tg.create_task(self._pacer_loop())
                tg.create_task(self._timer_loop())
                tg.create_task(self._end_watch())
        except* _CallEnded as group:
            ended = group.exceptions[0]
        except* TimeoutError:
            ended = _CallEnded("start_timeout", "failed", "start_timeout", "no start message within 15 s")
        except* llm.BridgeFailed as group:
            exc = group.exceptions[0]
            ended = _CallEnded("model_error", "failed", exc.code, str(exc))
        except* Exception as group:  # a bug of ours: end the call, keep the record
            self.log.exception("call failed", exc_info=group.exceptions[0])
            ended = _CallEnded("internal_error", "failed", "internal_error", type(group.exceptions[0]).__name__)
        return ended

    async def _await_start(self) -> ev.Started:
        while True:
            frame = await self._receive_before_start()
            if frame is None:
                raise _CallEnded("carrier_closed_before_start", "failed", "no_start", "socket closed before start")
            for event in self.adapter.receive(frame):
                if isinstance(event, ev.Started):
                    return event
                if isinstance(event, ev.Stopped):
                    raise _CallEnded("stop_before_start", "failed", "no_start", "stop before start")
                self._count(event)
                if isinstance(event, ev.ProtocolError) and event.fatal:  # a refused start: no format
                    raise _CallEnded("bad_start", "failed", "bad_start", f"{event.kind}: {event.detail}")

    async def _receive_before_start(self) -> ev.Frame | None:
        """The next frame, unless :meth:`request_end` comes first (then the call ends)."""
        if self._end_request is None:
            receive = asyncio.ensure_future(self.transport.receive())
            ended = asyncio.ensure_future(self._end_requested.wait())
            try:
                await asyncio.wait((receive, ended), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (receive, ended):
                    task.cancel()
            if receive.done() and not receive.cancelled():
                return receive.result()
        assert self._end_request is not None
        reason = self._end_request.reason
        self._end_request = _CallEnded(reason, "failed", "no_start", f"ended ({reason}) before the stream started")
        raise self._end_request

    async def _setup(self, started: ev.Started) -> None:
        self._started = started
        fmt = self._fmt = started.audio_format
        self._event("started", streamId=started.stream_id, carrierCallId=started.call_id, format=str(fmt))
        self.log.info("stream started: %s, %s", self.adapter.name, fmt)
        if self.hooks.on_started is not None:
            await self.hooks.on_started(started)
        frame_bytes = fmt.bytes_for_ms(self.adapter.frame_ms)
        self.ledger = PlayoutLedger(
            frame_bytes=frame_bytes,
            frame_ms=self.adapter.frame_ms,
            silence_byte=_SILENCE_BYTE[fmt.encoding],
            lead_ms=self._lead_ms,
            mark_every=self._mark_every,
            has_marks=self.adapter.has_marks,
        )
        self._vad = self._vad_factory(fmt.sample_rate)
        self._vad_at_carrier_rate = self._vad.sample_rate == fmt.sample_rate
        if not self._vad_at_carrier_rate:
            self._to_vad = Transcoder(fmt, AudioFormat(Encoding.L16, self._vad.sample_rate), aligned=True)
        if self.policy.recording_enabled and self.hooks.open_recorder is not None:
            self._recorder = BestEffortRecording(
                self.hooks.open_recorder, fmt.sample_rate, logger=self.log,
                on_failure=lambda stage, error: self._event("recording_failed", stage=stage, error=error),
            )  # fmt: skip
        self.bridge = self._bridge_factory(self.config)
        await self.bridge.start(self.config, fmt)
        if self.bridge.input_format != fmt and (
            self._vad_at_carrier_rate or self.bridge.input_format != self._to_vad.dst  # type: ignore[union-attr]
        ):
            self._to_model = Transcoder(fmt, self.bridge.input_format, aligned=True)
        self._from_model = Transcoder(self.bridge.output_format, fmt)
        self._model_chunk_bytes = max(1, self.bridge.input_format.bytes_for_ms(self._model_chunk_ms))

    async def _finish(self, ended: _CallEnded) -> CallOutcome:
        self.journal.event("ended", self._ms(), {"reason": ended.reason}, final=True)
        self.journal.flush_log(self._ms())
        if self.bridge is not None:
            await self._bounded("bridge close", self.bridge.close(), _BRIDGE_CLOSE_S)
        recording = self._recorder.close() if self._recorder is not None else None  # never raises
        code = 1001 if ended is self._end_request else 1000 if ended.status == "completed" else 1011
        await self._bounded("transport close", self.transport.close(code, ended.reason[:100]), _TRANSPORT_CLOSE_S)
        s = self.stats
        outcome = CallOutcome(
            status=ended.status,
            end_reason=ended.reason,
            duration_ms=int(self._ms()),
            transcript=self.transcript,
            events=self.events,
            metrics={
                "framesIn": s.frames_in,
                "framesOut": s.frames_out,
                "marksAcked": s.marks_acked,
                "bargeIns": s.barge_ins,
                "otherTrackFrames": s.other_track_frames,
                "protocolErrors": dict(self.journal.protocol_errors),
                "unhandledEvents": dict(self.journal.unhandled),
                "eventsDropped": dict(self.journal.dropped),
                "marksUnknown": self.ledger.unknown_acks if self.ledger is not None else 0,
                "marksStale": self.ledger.stale_acks if self.ledger is not None else 0,
                "turnLatencyMs": [round(x, 1) for x in s.turn_latency_ms],
                "bargeInReactionMs": [round(x, 1) for x in s.barge_in_ms],
            },
            error_code=ended.code,
            error_message=ended.msg,
            recording_path=recording.path if recording else None,
            recording_status=recording.status if recording else None,
            recording_error=recording.error if recording else None,
            started=self._started,
        )
        self.log.info("call ended: %s (%s), %d ms", ended.reason, ended.status, outcome.duration_ms)
        if self.hooks.on_finished is not None:
            await self._bounded("on_finished hook", self.hooks.on_finished(outcome), _ON_FINISHED_S)
        return outcome

    async def _bounded(self, step: str, work: Awaitable[Any], limit_s: float) -> None:
        """Await one finalisation step for at most ``limit_s`` (on the call's clock).

        Its failure, a stray ``CancelledError`` from inside it included, is logged and
        absorbed: closing must not lose the record. Past the limit it is cancelled and
        abandoned (not awaited: a step that ignores cancellation cannot hold the call).
        """
        task = asyncio.ensure_future(work)
        timer = asyncio.ensure_future(self.clock.sleep(limit_s))
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        if not task.done():
            task.cancel()
            self.log.warning("%s did not finish within %.1f s: abandoned", step, limit_s)
        elif task.cancelled():
            self.log.warning("%s was cancelled from inside", step)
        elif task.exception() is not None:
            self.log.warning("%s failed", step, exc_info=task.exception())

    # ------------------------------------------------------------------ carrier side
    def _count(self, event: ev.CarrierEvent) -> None:
        if isinstance(event, ev.ProtocolError):
            self.journal.protocol_error(event.kind, event.detail, self._ms())
        elif isinstance(event, ev.Unhandled):
            self.journal.unhandled_event(event.event)

    async def _carrier_loop(self) -> None:
        while True:
            frame = await self.transport.receive()
            if frame is None:
                raise _CallEnded("carrier_closed")
            for event in self.adapter.receive(frame):
                if isinstance(event, ev.Media):
                    if event.track.startswith("inbound"):  # never feed our own outbound track back
                        await self._on_media(event.payload)
                    else:
                        self.stats.other_track_frames += 1
                elif isinstance(event, ev.MarkAck):
                    if self.ledger is not None and self.ledger.acknowledge(event.name, self._ms()):
                        self.stats.marks_acked += 1
                elif isinstance(event, ev.Stopped):
                    raise _CallEnded("carrier_stop")
                elif isinstance(event, ev.Dtmf):
                    self._event("dtmf", digit=event.digit)
                elif isinstance(event, (ev.Connected, ev.Cleared, ev.Started)):
                    pass
                else:
                    self._count(event)

    async def _on_media(self, payload: bytes) -> None:
        """One caller frame: record it, feed the model and the VAD, act on VAD events."""
        fmt = self._fmt
        bridge, vad, ledger = self.bridge, self._vad, self.ledger
        assert fmt is not None and bridge is not None and vad is not None and ledger is not None
        self.stats.frames_in += 1
        if self._caller_origin is None:
            self._caller_origin = int(self._ms() * fmt.sample_rate / 1000)
        pcm = None
        if self._vad_at_carrier_rate or self._recorder is not None:
            pcm = decode(payload, fmt.encoding)
            if self._recorder is not None:
                self._recorder.caller(pcm, self._caller_origin + self._caller_samples)
        self._caller_samples += fmt.samples_for_bytes(len(payload))
        converted = None
        if not self._vad_at_carrier_rate:
            converted = self._to_vad.process(payload)  # type: ignore[union-attr]
            pcm = np.frombuffer(converted, dtype="<i2")
        if bridge.input_format == fmt:
            self._model_buf += payload  # G.711 straight through
        elif self._to_model is None:
            self._model_buf += converted  # type: ignore[operator] - the VAD's 16 kHz L16
        else:
            self._model_buf += self._to_model.process(payload)
        if len(self._model_buf) >= self._model_chunk_bytes:
            await self._flush_model_audio()
        barge_mode = self.config.interruptible and ledger.playing(self._ms())
        if barge_mode != self._vad_barge_mode:
            vad.agent_speaking(barge_mode)
            self._vad_barge_mode = barge_mode
        for vad_event in await vad.process(pcm):
            if isinstance(vad_event, VadStart):
                await self._on_speech_start(vad_event)
            elif isinstance(vad_event, VadEnd):
                await self._on_speech_end()

    async def _flush_model_audio(self) -> None:
        if self._model_buf and self.bridge is not None:
            chunk = bytes(self._model_buf)
            self._model_buf.clear()
            await self.bridge.send_audio(chunk)

    async def _on_speech_start(self, event: VadStart) -> None:
        now_ms = self._ms()
        self._last_activity = self.clock.now()
        onset_ms = now_ms - event.confirm_delay_ms
        self._speech_onset_at = onset_ms
        self._speech_end_at = None
        self._event("caller_speech_start", onsetMs=int(onset_ms))
        assert self.ledger is not None and self.bridge is not None
        await self._flush_model_audio()
        if self.config.interruptible and self.ledger.playing(now_ms):
            await self._barge_in("vad", onset_ms)
        if self.config.turn_mode == "gateway":
            await self.bridge.speech_started()

    async def _on_speech_end(self) -> None:
        assert self.bridge is not None
        self._last_activity = self.clock.now()
        self._speech_end_at = self._ms()
        self._event("caller_speech_end")
        await self._flush_model_audio()
        if self.config.turn_mode == "gateway":
            await self.bridge.end_of_turn()

    async def _barge_in(self, source: str, onset_ms: float | None = None) -> None:
        """Stop agent audio at once: carrier clear, drop the queue, cut the model's reply."""
        assert self.ledger is not None and self.bridge is not None and self._from_model is not None
        async with self._send_lock:  # after any frames already taken from the queue
            await self._send(self.adapter.clear())
            now_ms = self._ms()
            heard = self.ledger.clear(now_ms)
        self._from_model.reset()
        self.stats.barge_ins += 1
        if onset_ms is not None and len(self.stats.barge_in_ms) < _MAX_SAMPLES:
            self.stats.barge_in_ms.append(now_ms - onset_ms)
        item_id = heard.item_id if heard else None
        heard_ms = heard.heard_ms if heard else 0
        if item_id is not None:
            self._cancelled_items[item_id] = heard_ms
            self._mark_turn_heard(item_id, heard_ms, heard.queued_ms if heard else 0)
        self._event("barge_in", source=source, itemId=item_id, heardMs=heard_ms)
        self.log.info("barge-in (%s): caller heard %d ms of %s", source, heard_ms, item_id)
        if source != "model":
            await self.bridge.interrupt(item_id, heard_ms)

    def _mark_turn_heard(self, item_id: str, heard_ms: int, queued_ms: int) -> None:
        idx = self._agent_turns.get(item_id)
        if idx is None:
            return
        turn = self.transcript[idx]
        turn["interrupted"] = True
        turn["heard_ms"] = heard_ms
        turn["text"] = cut_heard([(turn["text"], queued_ms)], heard_ms, suffix="")

    # ------------------------------------------------------------------ model side
    async def _model_loop(self) -> None:
        assert self.bridge is not None
        async for event in self.bridge.events():
            if isinstance(event, llm.AudioOut):
                if self._on_agent_audio(event):
                    await self._pump()  # the first frames leave now, from this task
            elif isinstance(event, llm.Transcript):
                self._add_turn(event)
            elif isinstance(event, llm.ResponseDone):
                if self.ledger is not None and event.response_id:
                    self.ledger.end_item(event.response_id)
                    self._audio_ready.set()
            elif isinstance(event, (llm.SpeechStarted, llm.Interrupted)):
                if self.ledger is not None and self.ledger.playing(self._ms()) and self.config.interruptible:
                    await self._barge_in("model" if isinstance(event, llm.Interrupted) else "model_vad")
            elif isinstance(event, llm.SessionRenewed):  # the bridge moved to a new model session
                self._event("model_session", reason=event.reason, attempts=event.attempts, gapMs=event.gap_ms,
                            carried=event.carried, replayedBytes=event.replayed_bytes)  # fmt: skip
            elif isinstance(event, llm.BridgeError):
                self._event("model_error", code=event.code, message=event.message[:200])
                if event.fatal:
                    raise _CallEnded("model_error", "failed", event.code, event.message)
                self.log.warning("model error %s: %s", event.code, event.message[:200])
        raise _CallEnded("model_closed", "failed", "model_closed", "the model connection ended")

    def _on_agent_audio(self, event: llm.AudioOut) -> bool:
        """Queue agent audio for playout; False if it was dropped (cut by a barge-in)."""
        if event.item_id in self._cancelled_items or not event.audio:
            return False
        assert self.ledger is not None and self._from_model is not None
        if self._speech_end_at is not None and len(self.stats.turn_latency_ms) < _MAX_SAMPLES:
            self.stats.turn_latency_ms.append(self._ms() - self._speech_end_at)
            self._speech_end_at = None
        self.ledger.enqueue(event.item_id, self._from_model.process(event.audio))
        self._audio_ready.set()
        return True

    def _add_turn(self, event: llm.Transcript) -> None:
        turn = {"role": event.role, "text": event.text, "at_ms": int(self._ms()), "interrupted": False}
        if event.role == "agent" and event.item_id in self._cancelled_items:
            # The model finalised this transcript after the barge-in; bridges send such late
            # transcripts already cut to what was heard, so flag it without cutting again.
            turn["interrupted"] = True
            turn["heard_ms"] = self._cancelled_items[event.item_id]
        if event.role == "agent" and event.item_id:
            self._agent_turns[event.item_id] = len(self.transcript)
        self.transcript.append(turn)
        self._last_activity = self.clock.now()

    # ------------------------------------------------------------------ pacing and timers
    async def _pump(self) -> None:
        """Send every frame now due (media, then its mark), in the ledger's order."""
        ledger = self.ledger
        assert ledger is not None
        async with self._send_lock:
            now_ms = self._ms()
            for frame in ledger.due(now_ms):
                await self._send(self.adapter.media(frame.payload))
                self.stats.frames_out += 1
                if frame.mark is not None:
                    mark = self.adapter.mark(frame.mark)
                    if mark is not None:
                        await self._send(mark)
                if self._recorder is not None and self._fmt is not None:
                    at = int(frame.play_at_ms * self._fmt.sample_rate / 1000)
                    self._recorder.agent(decode(frame.payload, self._fmt.encoding), at)
            if ledger.playing(now_ms):
                self._last_activity = self.clock.now()

    async def _pacer_loop(self) -> None:
        """Keep the carrier topped up on the clock while agent audio plays."""
        assert self.ledger is not None
        ledger = self.ledger
        while True:
            await self._pump()
            nxt = ledger.next_due_ms()
            if nxt is None:
                self._audio_ready.clear()
                if ledger.next_due_ms() is None:
                    await self._audio_ready.wait()
            else:
                await self.clock.sleep(max(0.0, nxt + self._slack_ms - self._ms()) / 1000.0)

    async def _timer_loop(self) -> None:
        policy = self.policy
        while True:
            await self.clock.sleep(0.25)
            now = self.clock.now()
            if now - self._t0 >= policy.max_duration_s:
                raise _CallEnded("max_duration")
            idle = now - self._last_activity
            if idle >= policy.inactivity_timeout_s:
                if policy.inactivity_action == "prompt" and not self._prompted and self.bridge is not None:
                    self._prompted = True
                    self._last_activity = now
                    self._event("inactivity_prompt")
                    try:
                        await self.bridge.say(policy.inactivity_prompt)
                    except NotImplementedError:
                        raise _CallEnded("inactivity") from None
                else:
                    raise _CallEnded("inactivity")
