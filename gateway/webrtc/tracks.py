"""The media of one WebRTC call: the paced outbound track and the inbound decode → resample.

**Outbound** (:class:`PacedTrack`, an aiortc ``MediaStreamTrack``): the session's playout
ledger releases agent audio (L16 at the session's rate) a little ahead of real time
(``lead_ms``); :meth:`PacedTrack.push` queues it. aiortc's RTP sender awaits
:meth:`PacedTrack.recv` in a loop, and each call returns one 20 ms ``AudioFrame`` when it is
due on the track's real-time clock (silence when the queue is empty, so RTP flows
continuously and the browser's jitter buffer never starves). Frames leave at 48 kHz (Opus's
rate), upsampled here with a continuous resampler whose first output is padded to a whole
frame: handed 16 kHz frames, aiortc's Opus encoder would resample them itself through a
960-sample FIFO that holds back almost a whole frame (19 ms) of every frame. A frame's ``pts``
counts 48 kHz samples since the track started; the sender turns it into the packet's RTP
timestamp. A mark placed with :meth:`PacedTrack.mark` is acknowledged (``on_mark``) when the
track has emitted every byte queued before it, i.e. from the frames actually sent, so the
ledger's heard-ms is what went out on the wire (network and the browser's jitter buffer add a
few tens of ms on top). :meth:`PacedTrack.clear` drops the queue at once and returns the
pending marks (the session acknowledges them as cleared, as Twilio does). The queue is bounded
(:data:`MAX_QUEUE_MS`); audio past it is dropped and counted.

**Inbound** (:class:`InboundAudio`): aiortc decodes the browser's Opus (48 kHz stereo s16
``AudioFrame``) in the receiver's own decoder thread (``aiortc.rtcrtpreceiver.decoder_worker``,
one per call); :meth:`InboundAudio.convert` resamples it (PyAV ``AudioResampler``, FFmpeg's
swresample, in the event loop: a few µs per 20 ms frame) to mono s16 at the session's rate and
cuts it into 20 ms chunks.

CPU: the Opus *encode* of each outbound 20 ms frame runs in the event loop's default thread
pool (``RTCRtpSender._next_encoded_frame`` uses ``run_in_executor``), the *decode* in the
receiver's thread; libopus releases the GIL while it works, so neither holds the session's loop.
A call's WebRTC media (Opus both ways, SRTP, resampling, pacing, aiortc's RTP handling) cost
about 1.7 ms of CPU per 20 ms, 8 to 9 % of a core, measured on loopback with speech both ways
(two aiortc peers in one process, halved; a shared 2-core machine, so roughly).
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from collections.abc import Callable

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, AudioResampler

__all__ = ["PacedTrack", "InboundAudio", "FRAME_MS", "MAX_QUEUE_MS", "MAX_LAG_S", "set_jitter_frames",
           "prompt_audio_buffer"]

FRAME_MS = 20
#: Most agent audio the track queues (ms): the ledger keeps ~100 ms there, so more is a bug or
#: a stalled track; the excess is dropped (counted in :attr:`PacedTrack.dropped_bytes`).
MAX_QUEUE_MS = 2000
#: A frame due more than this long ago (s; the loop was busy) skips the frames missed: their
#: timestamps are left out (the browser conceals the gap) rather than sent late or in a burst,
#: so RTP timestamps keep following real time and the browser's adaptive jitter buffer does
#: not grow (every ms it grows is a ms later that a barge-in is heard). No audio is dropped.
MAX_LAG_S = 0.06


class PacedTrack(MediaStreamTrack):
    """Agent audio out, one 20 ms frame per 20 ms of real time (module docstring).

    Args:
        sample_rate: the session's rate (Hz) of the audio pushed.
        on_mark: called with a mark's name once the audio before it was emitted.
        on_frame: called after each frame with whether it carried agent audio (the agent state).
        clock: monotonic seconds (tests may pass another).
        out_rate: the rate (Hz) of the frames emitted, mono s16 (48,000: no resampling in the
            encoder; ``sample_rate``: frames as pushed).

    Attributes:
        emitted_bytes: agent audio bytes emitted so far; ``dropped_bytes``: dropped at the bound;
        ``skipped_frames``: frame times skipped after the loop was held up (:data:`MAX_LAG_S`).
    """

    kind = "audio"

    def __init__(self, sample_rate: int, *, on_mark: Callable[[str], None],
                 on_frame: Callable[[bool], None] | None = None, clock: Callable[[], float] = time.monotonic,
                 out_rate: int = 48000) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.out_rate = out_rate
        self.frame_samples = out_rate * FRAME_MS // 1000  # per emitted frame
        self._frame_bytes = 2 * (sample_rate * FRAME_MS // 1000)  # of pushed audio per frame
        self._max_bytes = 2 * sample_rate * MAX_QUEUE_MS // 1000
        self._time_base = fractions.Fraction(1, out_rate)
        self._up = AudioResampler(format="s16", layout="mono", rate=out_rate) if out_rate != sample_rate else None
        self._out = bytearray()  # resampled audio not yet emitted (the resampler's delay)
        self._silence = bytes(self._frame_bytes)
        self._queue = bytearray()
        self._marks: deque[tuple[int, str]] = deque()  # (queued position in bytes, name)
        self._on_mark, self._on_frame, self._clock = on_mark, on_frame, clock
        self.emitted_bytes = 0
        self.dropped_bytes = 0
        self.skipped_frames = 0
        self._pts = 0
        self._start: float | None = None

    @property
    def queued_ms(self) -> float:
        """Agent audio waiting in the queue (ms)."""
        return len(self._queue) * 500.0 / self.sample_rate

    def push(self, pcm: bytes) -> None:
        """Queue agent audio (mono s16 little-endian at ``sample_rate``; whole samples)."""
        room = self._max_bytes - len(self._queue)
        if len(pcm) > room:
            self.dropped_bytes += len(pcm) - max(room, 0)
            pcm = pcm[: max(room, 0)]
        self._queue += pcm

    def mark(self, name: str) -> None:
        """Acknowledge ``name`` once everything queued so far has been emitted (now, if nothing is)."""
        if not self._queue:
            self._on_mark(name)
        else:
            self._marks.append((self.emitted_bytes + len(self._queue), name))

    def clear(self) -> list[str]:
        """Drop the queued audio at once; the pending marks' names (in order), now settled."""
        self._queue.clear()
        names = [name for _, name in self._marks]
        self._marks.clear()
        return names

    async def recv(self) -> AudioFrame:
        """The next 20 ms frame, when it is due (aiortc's sender awaits this in a loop).

        Raises:
            MediaStreamError: the track was stopped.
        """
        if self.readyState != "live":
            raise MediaStreamError
        now = self._clock()
        if self._start is None:
            self._start = now
        due = self._start + self._pts / self.out_rate
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > MAX_LAG_S:  # the loop was held up: skip the missed timestamps, no burst
            missed = int((now - due) * self.out_rate) // self.frame_samples
            self._pts += missed * self.frame_samples
            self.skipped_frames += missed
        return self._next_frame()

    def _next_frame(self) -> AudioFrame:
        queue, n = self._queue, self._frame_bytes
        agent = bool(queue)
        if agent:
            chunk = bytes(queue[:n])
            del queue[:n]
            self.emitted_bytes += len(chunk)
            if len(chunk) < n:
                chunk += self._silence[len(chunk):]
        else:
            chunk = self._silence
        if self._up is not None:
            chunk = self._upsample(chunk)
        frame = AudioFrame.from_ndarray(np.frombuffer(chunk, dtype="<i2").reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.out_rate
        frame.pts = self._pts
        frame.time_base = self._time_base
        self._pts += self.frame_samples
        marks = self._marks
        while marks and marks[0][0] <= self.emitted_bytes:
            self._on_mark(marks.popleft()[1])
        if self._on_frame is not None:
            self._on_frame(agent)
        return frame

    def _upsample(self, chunk: bytes) -> bytes:
        """One 20 ms frame at ``out_rate``: the resampler's output, its first padded in front
        with silence to a whole frame (then every frame lags by the filter's delay only)."""
        frame = AudioFrame.from_ndarray(np.frombuffer(chunk, dtype="<i2").reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        out, n = self._out, 2 * self.frame_samples
        for part in self._up.resample(frame):  # type: ignore[union-attr]
            out += part.to_ndarray().tobytes()
        if len(out) < n:
            out[:0] = bytes(n - len(out))
        chunk = bytes(out[:n])
        del out[:n]
        return chunk


def set_jitter_frames(receiver: object, frames: int) -> bool:
    """Give an audio ``RTCRtpReceiver`` a jitter buffer of ``frames`` frames (aiortc's audio
    default is 4: 80 ms of delay on every packet).

    aiortc's buffer reorders, and waits on a missing packet, whatever its prefetch; the
    prefetch only adds delay: it releases a frame once ``frames`` later frames arrived. On
    loopback and LAN links less is enough, and every frame of delay here is a frame later that
    a barge-in is heard. With ``frames`` 1 the buffer is :func:`prompt_audio_buffer`'s: a packet
    that arrives in order with nothing waiting is released at once (an Opus frame is one
    packet), the rest goes through aiortc's buffer with a prefetch of 1. aiortc has no public
    option for it, so the receiver's private buffer (``_RTCRtpReceiver__jitter_buffer``, made in
    its ``__init__``) is replaced before any packet arrives. Returns False, changing nothing, if
    this aiortc version has no such attribute.
    """
    from aiortc.jitterbuffer import JitterBuffer

    name = "_RTCRtpReceiver__jitter_buffer"
    current = getattr(receiver, name, None)
    if not isinstance(current, JitterBuffer):
        return False
    if frames <= 1:
        setattr(receiver, name, prompt_audio_buffer(current.capacity))
    else:
        setattr(receiver, name, JitterBuffer(capacity=current.capacity, prefetch=frames))
    return True


def prompt_audio_buffer(capacity: int = 16) -> object:
    """aiortc's ``JitterBuffer`` (prefetch 1) releasing the next packet at once when nothing
    waits: the audio frame it carries is complete, so waiting for the one after it (20 ms, as
    aiortc does) only delays it. A gap or a reordered packet is aiortc's to handle as usual."""
    from aiortc.jitterbuffer import JitterBuffer, JitterFrame
    from aiortc.utils import uint16_add

    class PromptAudioBuffer(JitterBuffer):
        def add(self, packet):  # type: ignore[no-untyped-def]
            if self._origin is None or (packet.sequence_number == self._origin and not any(self._packets)):
                self._origin = uint16_add(packet.sequence_number, 1)
                return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)
            return super().add(packet)

    return PromptAudioBuffer(capacity=capacity, prefetch=1)


class InboundAudio:
    """The browser's decoded audio → mono s16 at ``sample_rate``, in 20 ms chunks.

    Args:
        sample_rate: the session's rate (Hz).
    """

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._resampler = AudioResampler(format="s16", layout="mono", rate=sample_rate)
        self._input: tuple[str, str, int] | None = None  # the frames' format, layout, rate
        self._chunk = 2 * sample_rate * FRAME_MS // 1000
        self._buf = bytearray()

    def convert(self, frame: AudioFrame) -> list[bytes]:
        """The whole 20 ms chunks ``frame`` completes (any rate and layout in; 0 or more out).

        A frame of another rate, layout or format than the ones before (the peer switched
        codec, e.g. Opus at 48 kHz to PCMU at 8 kHz: aiortc decodes each packet with its
        payload type's codec) gets a new resampler: PyAV's refuses such a frame (ValueError).
        """
        shape = (frame.format.name, frame.layout.name, frame.sample_rate)
        if shape != self._input:
            if self._input is not None:
                self._resampler = AudioResampler(format="s16", layout="mono", rate=self.sample_rate)
            self._input = shape
        for out in self._resampler.resample(frame):
            self._buf += out.to_ndarray().tobytes()
        n, buf = self._chunk, self._buf
        chunks = [bytes(buf[i:i + n]) for i in range(0, len(buf) - n + 1, n)]
        if chunks:
            del buf[: n * len(chunks)]
        return chunks
