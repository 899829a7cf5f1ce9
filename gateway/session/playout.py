"""The agent's side of one call: model audio → transcode → playout ledger → paced carrier frames.

:class:`Playout` owns the :class:`~gateway.audio.playout.PlayoutLedger`, the transcoder from the
model's output format to the carrier's, and the send lock that keeps media frames, marks and
``clear`` leaving in the ledger's order. Frames leave from :meth:`Playout.pump`, called by the
model task when new audio arrives (so the first frames leave at once) and by the pacer
(:meth:`Playout.run`), which wakes every ``send_every_ms`` while audio plays (or once per
message, when messages are longer) and otherwise waits for audio. Each media message carries up
to ``message_ms`` of audio, as far as the carrier adapter allows (its ``max_message_ms``, a
whole number of its ``frame_ms``; an adapter that does not say takes one frame per message):
Vonage takes exactly 20 ms, Exotel its own chunk size, the base64 JSON carriers larger
messages; marks go at message boundaries. What the caller heard (ms of each item) comes from
the ledger's mark accounting (interpolated by play time inside a message, as inside a frame);
:meth:`Playout.clear` (barge-in) sends the carrier ``clear`` first, under the send lock so it
follows any frame already taken from the queue, then drops the queue and returns what was heard.
:meth:`Playout.pause` and :meth:`Playout.resume` (pause-then-commit barge-in) stop and restart
the release without a ``clear``; a ``clear`` while paused ends the pause.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from gateway.audio.playout import Heard, PlayoutLedger
from gateway.carriers import events as ev
from gateway.clock import Clock
from gateway.codecs.transcode import Transcoder, decode
from gateway.engine.echo import EchoStage
from gateway.formats import AudioFormat, Encoding
from gateway.recording_guard import BestEffortRecording
from gateway.session.common import CallStats

__all__ = ["Playout", "message_frames"]

_SILENCE_BYTE = {Encoding.PCMU: 0xFF, Encoding.PCMA: 0xD5, Encoding.L16: 0x00}


def message_frames(adapter: ev.CarrierAdapter, message_ms: float) -> int:
    """Frames (of ``adapter.frame_ms``) per media message for at most ``message_ms`` of audio.

    Capped by the adapter's ``max_message_ms`` (``frame_ms`` if it has none: one frame per
    message), rounded down to whole frames, at least one.
    """
    frame_ms = adapter.frame_ms
    allowed = getattr(adapter, "max_message_ms", frame_ms)
    return max(1, int(min(message_ms, allowed) // frame_ms))


class Playout:
    """Paced agent audio for one call, and what the caller heard of it.

    Args:
        adapter: the carrier adapter (makes media, mark and clear frames).
        fmt: the carrier's audio format.
        model_format: the model bridge's output format.
        send: the carrier socket's ``send``.
        clock: the call's clock; ``t0`` (s, on it) is the call's start.
        stats: the call's counters (``frames_out`` frames and ``messages_out`` media messages
            sent, ``marks_acked``).
        recorder: the call's recording, or ``None``.
        echo: the call's :class:`~gateway.engine.echo.EchoStage` (given each message's audio at
            its play position as the echo reference; truncated at a ``clear``), or ``None``.
        lead_ms: agent audio kept buffered at the carrier ahead of real time (ms).
        mark_every: frames between marks (a mark goes at the first message boundary after).
        send_every_ms: the pacer's wake period while audio plays (ms).
        message_ms: agent audio per carrier media message at most (ms); the adapter's
            ``max_message_ms`` caps it, and it is rounded down to whole frames (at least one).

    Attributes:
        playing_at: clock time (s) at which audio was last found playing after a pump, or
            ``None`` (for the inactivity timer: agent audio is activity).
    """

    def __init__(
        self,
        adapter: ev.CarrierAdapter,
        fmt: AudioFormat,
        model_format: AudioFormat,
        send: Callable[[ev.Frame], Awaitable[None]],
        clock: Clock,
        t0: float,
        stats: CallStats,
        *,
        recorder: BestEffortRecording | None = None,
        echo: EchoStage | None = None,
        lead_ms: float = 80.0,
        mark_every: int = 5,
        send_every_ms: float = 40.0,
        message_ms: float = 20.0,
    ) -> None:
        self.adapter = adapter
        self.fmt = fmt
        frame_ms = adapter.frame_ms
        self.ledger = PlayoutLedger(
            frame_bytes=fmt.bytes_for_ms(frame_ms),
            frame_ms=frame_ms,
            silence_byte=_SILENCE_BYTE[fmt.encoding],
            lead_ms=lead_ms,
            mark_every=mark_every,
            has_marks=adapter.has_marks,
            message_frames=message_frames(adapter, message_ms),
        )
        self._from_model = Transcoder(model_format, fmt)
        self._send = send
        self._clock = clock
        self._t0 = t0
        self._stats = stats
        self._recorder = recorder
        self._echo = echo
        self._slack_ms = max(0.0, send_every_ms - self.ledger.message_frames * frame_ms)
        self._ready = asyncio.Event()
        self._lock = asyncio.Lock()  # frames, marks and clear leave in the ledger's order
        self.playing_at: float | None = None

    def _ms(self) -> float:
        return (self._clock.now() - self._t0) * 1000.0

    def enqueue(self, item_id: str, audio: bytes) -> None:
        """Queue agent audio (bytes in the model's output format) of item ``item_id``."""
        self.ledger.enqueue(item_id, self._from_model.process(audio))
        self._ready.set()

    def end_item(self, item_id: str) -> None:
        """The model finished item ``item_id``: its last partial frame may leave."""
        self.ledger.end_item(item_id)
        self._ready.set()

    def playing(self, now_ms: float) -> bool:
        """Whether the caller is hearing (or about to hear) agent audio at ``now_ms``."""
        return self.ledger.playing(now_ms)

    def acknowledge(self, name: str, now_ms: float) -> None:
        """The carrier echoed mark ``name``: the audio before it has played."""
        if self.ledger.acknowledge(name, now_ms):
            self._stats.marks_acked += 1

    async def send(self, frame: ev.Frame) -> None:
        """Send a carrier frame of its own (e.g. Plivo ``sendDTMF``), in order with the media."""
        async with self._lock:
            await self._send(frame)

    async def pump(self) -> None:
        """Send every message now due (media, then its mark), in the ledger's order."""
        ledger, adapter, send, stats, recorder = self.ledger, self.adapter, self._send, self._stats, self._recorder
        echo = self._echo
        async with self._lock:
            now_ms = self._ms()
            for frame in ledger.due(now_ms):
                await send(adapter.media(frame.payload))
                stats.frames_out += frame.frames
                stats.messages_out += 1
                if frame.mark is not None:
                    mark = adapter.mark(frame.mark)
                    if mark is not None:
                        await send(mark)
                if recorder is not None or echo is not None:
                    at = int(frame.play_at_ms * self.fmt.sample_rate / 1000)
                    pcm = decode(frame.payload, self.fmt.encoding)
                    if recorder is not None:
                        recorder.agent(pcm, at)
                    if echo is not None:  # the echo reference: what plays, where it plays
                        echo.reference(pcm, at)
            if ledger.playing(now_ms):
                self.playing_at = self._clock.now()

    async def run(self) -> None:
        """The pacer: keep the carrier topped up on the clock while agent audio plays."""
        ledger = self.ledger
        while True:
            await self.pump()
            nxt = ledger.next_due_ms()
            if nxt is None:
                self._ready.clear()
                if ledger.next_due_ms() is None:
                    await self._ready.wait()
            else:
                await self._clock.sleep(max(0.0, nxt + self._slack_ms - self._ms()) / 1000.0)

    async def pause(self) -> None:
        """Stop sending agent audio now (pause-then-commit barge-in): the carrier plays out its
        lead; what is queued, and what the model sends meanwhile, waits. A mark goes after the
        last message sent when it had none (the ledger asks for it), under the send lock, so
        the caller's heard ms stays exact through the pause."""
        mark = self.ledger.pause(self._ms())  # at once: nothing more leaves from here on
        if mark is None:
            return
        async with self._lock:  # after any message already taken from the queue
            frame = self.adapter.mark(mark) if self.ledger.paused else None
            if frame is not None:
                await self._send(frame)

    async def resume(self) -> float:
        """Send again from the next unsent frame (play times shifted by the pause); how long it
        was paused (ms; 0 if it was not)."""
        paused_ms = self.ledger.resume(self._ms())
        self._ready.set()
        await self.pump()
        return paused_ms

    async def clear(self) -> tuple[Heard | None, list[Heard], float]:
        """Barge-in: the carrier ``clear`` first, then drop the queue; what was heard, and when.

        Returns:
            what the caller heard of the item playing (``None`` if nothing had played); every
            item the clear cut (that one, and any queued or unplayed after it, heard 0 ms:
            :meth:`~gateway.audio.playout.PlayoutLedger.clear_all`); and the ms from the call's
            start at which the queue was dropped.
        """
        async with self._lock:  # after any frames already taken from the queue
            await self._send(self.adapter.clear())
            now_ms = self._ms()
            heard = self.ledger.heard(now_ms)
            cut = self.ledger.clear_all(now_ms)
            if self._echo is not None:  # what the clear dropped never played, so never echoes
                self._echo.truncate(int(now_ms * self.fmt.sample_rate / 1000))
        self._from_model.reset()
        return heard, cut, now_ms
