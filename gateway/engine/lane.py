"""One call's place in the :class:`~gateway.engine.engine.MediaEngine`: its queued frames and results.

A :class:`Lane` belongs to one call session. The session's carrier loop :meth:`Lane.submit`\\ s
each inbound frame's payload (carrier bytes) without awaiting anything; the engine's tick takes
every lane's queued bytes (:meth:`Lane.take`), does the CPU work for all lanes together, and
appends one :class:`TickResult` per lane to the lane's outbox; the session's own task awaits
:meth:`Lane.results` and acts on them (recording, model audio, turns, barge-in, policies). The
engine owns nothing of the call beyond these buffers and the per-call DSP state the lane keeps
(resampler history, the VAD runner's detector and pre-gate).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.codecs.resample import Resampler
from gateway.codecs.transcode import encode
from gateway.formats import AudioFormat, Encoding
from gateway.vadrun import VadCue, VadEnd, VadStart, VadVoicing, _Runner

if TYPE_CHECKING:
    from gateway.engine.echo import EchoStage
    from gateway.engine.engine import MediaEngine

__all__ = ["Lane", "TickResult", "Hear"]

#: A session's synchronous listener: decoded caller PCM (int16 at the carrier's rate) and the
#: arrival time of its last frame (ms on the call's clock) in, the policies' actions out.
Hear = Callable[[np.ndarray, float], Sequence[Any]]


@dataclass(slots=True)
class TickResult:
    """What one tick made of one lane's queued frames.

    Attributes:
        at_ms: arrival of the last frame in this result (ms on the call's clock).
        pcm: the frames decoded, int16 ``[n]`` at the carrier's rate.
        start_sample: ``pcm[0]``'s index on the call's timeline (samples at the carrier's rate).
        model_audio: the same audio in the model's input format (bytes).
        vad: the VAD's events, oldest first (:class:`~gateway.vadrun.VadStart`'s
            ``confirm_delay_ms`` counts to ``at_ms``).
        actions: what the lane's :data:`Hear` listener returned.
        fallback: the scorer failed this tick and the cheap VAD scored it instead.
        error: an exception raised by this lane's own work (a bug): the session re-raises it.
        voicing: how far the caller's voice reached after this tick (:class:`~gateway.vadrun.VadVoicing`,
            for pause-then-commit barge-in), or ``None``.
    """

    at_ms: float
    pcm: np.ndarray
    start_sample: int
    model_audio: bytes
    vad: list[VadStart | VadEnd | VadCue] = field(default_factory=list)
    actions: Sequence[Any] = ()
    fallback: bool = False
    error: BaseException | None = None
    voicing: VadVoicing | None = None


class Lane:
    """One call's queue into the engine. Made by :meth:`MediaEngine.attach`.

    Args:
        engine: the engine that ticks this lane.
        fmt: the carrier's audio format (PCMU / PCMA at 8 kHz, L16 at its rate).
        vad: this call's VAD runner (its ``sample_rate`` is 8 or 16 kHz).
        model_format: the model's input format.
        hear: the session's listener (answering-machine detection), or ``None``.
        echo: the call's :class:`~gateway.engine.echo.EchoStage` (its rate is the carrier's and
            the VAD's), or ``None``: the engine runs each tick's decoded audio through it before
            the VAD.

    Attributes:
        barge_mode: the latest frame's barge-in mode (agent audio playing on an interruptible
            call): the VAD asks for the shorter confirmation from the next tick on.
        fallback_ticks: ticks this lane was scored by the cheap VAD (the scorer failed).
        wake_bytes: model audio (bytes) that wakes the session's task by itself (see
            :meth:`deliver`); the session sets it to what its next model message still needs.
    """

    __slots__ = ("engine", "fmt", "vad", "model_format", "hear", "barge_mode", "fallback_ticks", "_queue",
                 "_queued_bytes", "_last_ms", "_carry", "_samples", "_origin", "to_vad", "_vad_skip",
                 "to_model", "_model_skip", "_passthrough", "_model_is_vad", "_outbox", "_ready", "_closed",
                 "_unread_bytes", "wake_bytes",
                 "_applied_barge", "echo")  # fmt: skip

    def __init__(self, engine: MediaEngine, fmt: AudioFormat, vad: _Runner, model_format: AudioFormat,
                 hear: Hear | None = None, echo: EchoStage | None = None) -> None:
        if echo is not None and not echo.rate == fmt.sample_rate == vad.sample_rate:
            raise ValueError("the echo stage runs at the carrier's rate, which must be the VAD's")
        self.engine = engine
        self.echo = echo
        if echo is not None:
            echo.bind(vad)  # its double-talk rule judges the VAD's chunks
        self.fmt = fmt
        self.vad = vad
        self.model_format = model_format
        self.hear = hear
        self.barge_mode = False
        self._applied_barge = False
        self.fallback_ticks = 0
        self._queue: list[bytes] = []
        self._queued_bytes = 0
        self._last_ms = 0.0
        self._carry = b""  # an odd trailing L16 byte
        self._samples = 0
        self._origin: int | None = None
        rate = fmt.sample_rate
        self.to_vad = Resampler(rate, vad.sample_rate) if vad.sample_rate != rate else None
        self._vad_skip = self.to_vad.delay if self.to_vad is not None else 0
        self._passthrough = model_format == fmt
        self._model_is_vad = model_format == AudioFormat(Encoding.L16, vad.sample_rate)
        need_model = not (self._passthrough or self._model_is_vad)
        self.to_model = Resampler(rate, model_format.sample_rate) if need_model else None
        self._model_skip = self.to_model.delay if self.to_model is not None else 0
        self._outbox: deque[TickResult] = deque()
        self._ready = asyncio.Event()
        self._closed = False
        self._unread_bytes = 0
        self.wake_bytes = 1

    # ------------------------------------------------------------------ the session's side
    def submit(self, payload: bytes, now_ms: float, barge_mode: bool) -> None:
        """Queue one inbound frame's audio (bytes in :attr:`fmt`) that arrived at ``now_ms``
        (an empty payload carries no audio and is ignored)."""
        if not payload:
            return
        if self._origin is None:
            self._origin = int(now_ms * self.fmt.sample_rate / 1000)
        if not self._queue:
            self.engine._wake(self)
        self._queue.append(payload)
        self._queued_bytes += len(payload)
        self._last_ms = now_ms
        self.barge_mode = barge_mode

    @property
    def queued_bytes(self) -> int:
        """Bytes submitted and not yet taken by a tick."""
        return self._queued_bytes

    def drain(self) -> None:
        """Process this lane's queued frames now (the call is ending), without waiting for a tick."""
        if self._queue:
            self.engine.run_tick([self])

    async def results(self) -> AsyncIterator[TickResult]:
        """The lane's results in order, as ticks make them; ends after :meth:`close`."""
        while True:
            self._unread_bytes = 0
            while self._outbox:
                yield self._outbox.popleft()
            if self._closed:
                return
            self._ready.clear()
            await self._ready.wait()

    @property
    def unread_ms(self) -> float:
        """Caller audio delivered to the session and not yet taken (ms)."""
        return sum(r.pcm.size for r in self._outbox) * 1000.0 / self.fmt.sample_rate

    def unread(self) -> list[TickResult]:
        """Take every result the session has not read yet (in order)."""
        out = list(self._outbox)
        self._outbox.clear()
        return out

    def close(self) -> None:
        """Leave the engine (queued frames are dropped; :meth:`drain` first to keep them)."""
        self._closed = True
        self._ready.set()
        self.engine._detach(self)

    # ------------------------------------------------------------------ the engine's side
    def take(self) -> bytes:
        """The queued bytes, joined (an odd trailing L16 byte waits for the next frame)."""
        data = self._queue[0] if len(self._queue) == 1 else b"".join(self._queue)
        self._queue.clear()
        self._queued_bytes = 0
        if self.fmt.encoding is Encoding.L16:
            if self._carry:
                data = self._carry + data
            self._carry, data = (data[-1:], data[:-1]) if len(data) % 2 else (b"", data)
        return data

    def place(self, n: int) -> tuple[int, float]:
        """Account ``n`` decoded samples: their first sample's timeline index and the arrival ms."""
        start = (self._origin or 0) + self._samples
        self._samples += n
        return start, self._last_ms

    @staticmethod
    def _aligned(out: np.ndarray, skip: int) -> tuple[np.ndarray, int]:
        drop = min(skip, out.size)
        return out[drop:], skip - drop

    def align_vad(self, out: np.ndarray) -> np.ndarray:
        """The VAD resampler's output, time-aligned (its first ``delay`` samples dropped)."""
        if self._vad_skip:
            out, self._vad_skip = self._aligned(out, self._vad_skip)
        return out

    def align_model(self, out: np.ndarray) -> np.ndarray:
        """The model resampler's output, time-aligned (its first ``delay`` samples dropped)."""
        if self._model_skip:
            out, self._model_skip = self._aligned(out, self._model_skip)
        return out

    def model_bytes(self, data: bytes, vad_pcm: np.ndarray, model_pcm: np.ndarray | None) -> bytes:
        """The tick's audio in the model's format: the carrier's bytes straight through, the
        VAD's L16, or ``model_pcm`` (already at the model's rate, aligned) encoded."""
        if self._passthrough:
            return data
        if self._model_is_vad:
            return vad_pcm.astype("<i2", copy=False).tobytes()
        return encode(model_pcm, self.model_format.encoding)  # type: ignore[arg-type]

    def apply_barge_mode(self) -> None:
        """Give the VAD the latest barge-in mode before this tick's audio."""
        if self.barge_mode != self._applied_barge:
            self.vad.agent_speaking(self.barge_mode)
            self._applied_barge = self.barge_mode

    def deliver(self, result: TickResult) -> None:
        """Queue ``result`` for the session; wake its task only when there is something to act
        on now: VAD events, listener actions, an error, or at least :attr:`wake_bytes` of model
        audio since it last woke (so a call's task wakes about once per model message, not once
        per frame; the results in between wait in order)."""
        result.voicing = self.vad.voicing()
        self._outbox.append(result)
        self._unread_bytes += len(result.model_audio)
        if result.vad or result.actions or result.error is not None or self._unread_bytes >= self.wake_bytes:
            self._ready.set()
