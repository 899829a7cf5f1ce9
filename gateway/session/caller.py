"""The caller path of one call: carrier audio → decode → resample → VAD, and model chunks.

Per inbound frame (the carrier's payload, in the call's :class:`~gateway.formats.AudioFormat`):
the frame is decoded to int16 PCM when the recording or the VAD needs it and recorded on the
call's timeline (samples at the carrier's rate from the call's start); it is converted for the
VAD when the VAD runs at another rate (8 or 16 kHz L16, ``aligned`` so 20 ms stays 20 ms); and
it is buffered for the model in the model's input format, sent as one message once
``model_chunk_ms`` of audio is waiting (and flushed at once before every turn event, by
:meth:`CallerPath.flush`); while :attr:`CallerPath.muted` (a policy's ``MuteCaller``) the
chunks are dropped instead. The VAD's events come back to the session, which owns what they
mean (turns, barge-in).

No per-frame task, timer or future: one awaited VAD call (a batched runner may wait for its
tick) and, once a chunk is full, one awaited model send.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import numpy as np

from gateway.audio.budget import AudioBudget
from gateway.codecs.transcode import Transcoder, decode
from gateway.formats import AudioFormat, Encoding
from gateway.recording_guard import BestEffortRecording
from gateway.session.common import CallEnded
from gateway.vadrun import VadCue, VadEnd, VadRunner, VadStart

if TYPE_CHECKING:
    from gateway.engine import Hear, MediaEngine, TickResult
    from gateway.engine.echo import EchoStage

__all__ = ["CallerPath", "TickCallerPath", "MAX_UNREAD_MS"]

#: Caller audio a session on the media engine may leave untaken (ms) before its call ends
#: ``caller_stalled``: per frame, a stuck model send holds the carrier task (and the carrier's
#: TCP); per tick, the carrier task goes on reading, so this is the bound instead. 15 s: above
#: the :class:`AudioBudget`'s 10 s burst, so audio a client may send at once (a recorded
#: utterance: the engine turns it into results in one tick) never trips it, nor do a few
#: seconds of a starved machine; the backlog stays small (15 s of 16 kHz L16 is 480 KB).
MAX_UNREAD_MS = 15000.0


class CallerPath:
    """Caller audio from the carrier to the VAD and the model, for one call.

    Args:
        fmt: the carrier's audio format.
        vad: this call's VAD runner (its ``sample_rate`` is 8 or 16 kHz).
        model_format: the model bridge's input format.
        send_to_model: the bridge's ``send_audio`` (bytes in ``model_format``).
        recorder: the call's recording, or ``None``.
        model_chunk_ms: audio per model message (ms).
        echo: the call's :class:`~gateway.engine.echo.EchoStage` (the VAD runs at the carrier's
            rate): each decoded frame goes through it on the call's sample clock before the VAD;
            the recording and the model get the frame as it came.
    """

    __slots__ = ("fmt", "vad", "_send", "_recorder", "_at_carrier_rate", "_passthrough", "_to_vad", "_to_model",
                 "_buf", "_chunk_bytes", "_samples", "_origin", "_barge_mode", "budget", "muted", "echo")  # fmt: skip

    def __init__(
        self,
        fmt: AudioFormat,
        vad: VadRunner,
        model_format: AudioFormat,
        send_to_model: Callable[[bytes], Awaitable[None]],
        *,
        recorder: BestEffortRecording | None = None,
        model_chunk_ms: float = 40.0,
        echo: EchoStage | None = None,
    ) -> None:
        self.fmt = fmt
        self.echo = echo
        if echo is not None:
            echo.bind(vad)  # its double-talk rule judges the VAD's chunks
        self.vad = vad
        self._send = send_to_model
        self._recorder = recorder
        self._at_carrier_rate = vad.sample_rate == fmt.sample_rate
        self._to_vad: Transcoder | None = None
        if not self._at_carrier_rate:
            self._to_vad = Transcoder(fmt, AudioFormat(Encoding.L16, vad.sample_rate), aligned=True)
        self._passthrough = model_format == fmt  # G.711 straight through
        self._to_model: Transcoder | None = None
        if not self._passthrough and (self._to_vad is None or model_format != self._to_vad.dst):
            self._to_model = Transcoder(fmt, model_format, aligned=True)
        self._buf = bytearray()
        self._chunk_bytes = max(1, model_format.bytes_for_ms(model_chunk_ms))
        self._samples = 0
        self._origin: int | None = None
        self._barge_mode = False
        self.budget = AudioBudget()
        self.muted = False  # True: caller audio is not sent to the model (dropped)

    def admit(self, payload: bytes, now_ms: float) -> str | None:
        """``None`` if this frame's audio is within the call's :class:`AudioBudget`, else the
        protocol-error kind that refuses it (the frame must then be dropped, not fed)."""
        return self.budget.admit(self.fmt.ms_for_bytes(len(payload)), now_ms)

    async def feed(self, payload: bytes, now_ms: float, barge_mode: bool) -> list[VadStart | VadEnd | VadCue]:
        """One caller frame in; the VAD's events for it out.

        Args:
            payload: the carrier frame's audio (bytes in :attr:`fmt`).
            now_ms: ms from the call's start (places the first frame on the recording).
            barge_mode: whether agent audio is playing on an interruptible call (the VAD
                then asks for more speech before it confirms a start).
        """
        fmt = self.fmt
        if self._origin is None:
            self._origin = int(now_ms * fmt.sample_rate / 1000)
        pcm = None
        recorder = self._recorder
        if self._at_carrier_rate or recorder is not None:
            pcm = decode(payload, fmt.encoding)
            if recorder is not None:
                recorder.caller(pcm, self._origin + self._samples)
        self._samples += fmt.samples_for_bytes(len(payload))
        converted = None
        if self._to_vad is not None:
            converted = self._to_vad.process(payload)
            pcm = np.frombuffer(converted, dtype="<i2")
        if self._passthrough:
            self._buf += payload
        elif self._to_model is None:
            self._buf += converted  # type: ignore[operator] - the VAD's L16 is the model's format
        else:
            self._buf += self._to_model.process(payload)
        if len(self._buf) >= self._chunk_bytes:
            await self.flush()
        if barge_mode != self._barge_mode:
            self.vad.agent_speaking(barge_mode)
            self._barge_mode = barge_mode
        if self.echo is not None:
            pcm = self.echo.caller(pcm, now_ms)
        return await self.vad.process(pcm)

    async def flush(self) -> None:
        """Send the buffered caller audio to the model now (before a turn event); drop it if muted."""
        if self._buf:
            chunk = bytes(self._buf)
            self._buf.clear()
            if not self.muted:
                await self._send(chunk)


class TickCallerPath(CallerPath):
    """The caller path on the per-tick :class:`~gateway.engine.MediaEngine`.

    :meth:`submit` queues each frame on the call's :class:`~gateway.engine.Lane` without
    awaiting; the engine decodes, converts and scores the queued audio of every call once per
    tick, and the session's caller task takes each :class:`~gateway.engine.TickResult` through
    :meth:`take` (recording and model audio here; VAD events and listener actions are the
    session's). Same arguments as :class:`CallerPath` (``echo`` goes to the lane: the engine
    runs it), plus ``engine`` and ``hear`` (the session's synchronous listener for
    answering-machine detection).
    """

    __slots__ = ("lane", "ending")

    def __init__(self, fmt: AudioFormat, vad: VadRunner, model_format: AudioFormat,
                 send_to_model: Callable[[bytes], Awaitable[None]], *, engine: MediaEngine,
                 hear: Hear | None = None, recorder: BestEffortRecording | None = None,
                 model_chunk_ms: float = 40.0, echo: EchoStage | None = None) -> None:
        super().__init__(fmt, vad, model_format, send_to_model, recorder=recorder, model_chunk_ms=model_chunk_ms,
                         echo=echo)  # fmt: skip
        self.lane = engine.attach(fmt, vad, model_format, hear, echo)  # type: ignore[arg-type]
        self.ending: Exception | None = None

    def submit(self, payload: bytes, now_ms: float, barge_mode: bool) -> None:
        """Queue one caller frame (bytes in :attr:`fmt`) for the next tick.

        Raises:
            CallEnded: ``caller_stalled``: the session has left more than
                :data:`MAX_UNREAD_MS` of caller audio untaken (its model sends are stuck), so
                the call ends rather than buffer without bound.
        """
        lane = self.lane
        lane.submit(payload, now_ms, barge_mode)
        if lane.unread_ms > MAX_UNREAD_MS:
            raise CallEnded("caller_stalled", "failed", "caller_stalled",
                            f"caller audio waited over {MAX_UNREAD_MS / 1000:.0f} s for the model")  # fmt: skip

    def finish(self, ending: Exception) -> None:
        """The carrier side ended: process what is queued now, then end the results with
        ``ending`` (the session's caller task raises it once it has taken every result)."""
        if self.ending is None:
            self.ending = ending
            self.lane.drain()
            self.lane.close()

    def close(self) -> None:
        """Leave the engine (the call is over, however it ended): what is still queued or not
        yet taken is processed and recorded first, so the recording keeps the caller's last words."""
        lane = self.lane
        try:
            lane.drain()
            for result in lane.unread():
                if self._recorder is not None and result.pcm.size:
                    self._recorder.caller(result.pcm, result.start_sample)
        except Exception:  # noqa: BLE001 - the call is over either way: its record must be finalised
            logging.getLogger("gateway.call").exception("the last caller audio could not be processed")
        finally:
            lane.close()

    async def take(self, result: TickResult) -> None:
        """Record ``result``'s audio and send it to the model (in ``model_chunk_ms`` messages)."""
        if self._recorder is not None and result.pcm.size:
            self._recorder.caller(result.pcm, result.start_sample)
        self._buf += result.model_audio
        if len(self._buf) >= self._chunk_bytes:
            await self.flush()
        self.lane.wake_bytes = max(1, self._chunk_bytes - len(self._buf))
