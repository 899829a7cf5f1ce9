"""One WebRTC call as its session's :class:`~gateway.session.common.Transport`.

:class:`WebRtcTransport` speaks the internal frame protocol of :mod:`gateway.carriers.webrtc`
to the session (the adapter there parses it) and aiortc to the peer:

* :meth:`~WebRtcTransport.receive` returns, in order: the ``start`` frame (once connected),
  then control frames (mark acknowledgements, ``cleared``, the page's data channel messages)
  and the caller's audio (20 ms L16 chunks), and last a ``stop`` frame when the peer went away
  (its connection closed or failed, its audio track ended, or no audio came for
  :data:`MEDIA_TIMEOUT_S`); then ``None``. Audio waits in a bounded queue
  (:data:`MAX_AUDIO_FRAMES`, the oldest dropped past it, counted); page messages too
  (:data:`MAX_PAGE_PENDING`). Marks are bounded by the ledger's own mark limit.
* :meth:`~WebRtcTransport.send` takes the adapter's frames: audio onto the paced track, a mark
  to acknowledge from what the track emits, ``clear`` to drop the track's queue at once.
* :meth:`~WebRtcTransport.observe` is the session's optional observer hook: journal events,
  transcript turns and the end go to the page on the ``events`` data channel
  (:mod:`gateway.webrtc.state`), with the agent state the track and the events imply.
  Messages wait (bounded) until the channel opens; past :data:`MAX_CHANNEL_BUFFER` bytes
  unsent, further messages are dropped and counted.
* :meth:`~WebRtcTransport.close` sends what is left on the channel (bounded), then closes the
  peer connection (bounded: :data:`CLOSE_S`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

import orjson

from gateway.carriers.webrtc import CLEARED_FRAME, mark_frame, page_frame, start_frame, stop_frame
from gateway.carriers.events import Frame
from gateway.webrtc.state import AgentState, ended_message, event_message, transcript_message
from gateway.webrtc.tracks import InboundAudio, PacedTrack

__all__ = ["WebRtcTransport", "MEDIA_TIMEOUT_S", "MAX_AUDIO_FRAMES", "MAX_PAGE_PENDING", "MAX_CHANNEL_BUFFER",
           "CLOSE_S", "CHANNEL_LABEL"]  # fmt: skip

log = logging.getLogger("gateway.webrtc")

#: The data channel the page opens for the call's live view (SPEC12 §4).
CHANNEL_LABEL = "events"
#: No caller audio frame for this long (s) once connected: the peer is gone (a browser sends
#: frames continuously, silence included, even with its track muted).
MEDIA_TIMEOUT_S = 10.0
#: Caller audio chunks (20 ms) waiting for the session: 5 s.
MAX_AUDIO_FRAMES = 250
#: Page messages waiting for the session; more are dropped (counted).
MAX_PAGE_PENDING = 64
#: Messages to the page queued before its channel opens; bytes left unsent on an open channel
#: past which messages are dropped (counted).
MAX_CHANNEL_PENDING = 256
MAX_CHANNEL_BUFFER = 1 << 20
#: Bounds at close (s): flushing the data channel, then closing the peer connection.
FLUSH_S = 0.5
CLOSE_S = 1.5


class WebRtcTransport:
    """The session's transport over one aiortc peer connection (module docstring).

    Args:
        pc: the call's ``RTCPeerConnection`` (remote offer set, answer made).
        sample_rate: the session's rate (Hz) for both directions.
        label: the stream id the ``start`` frame carries (for the record's ``streamId``).

    Attributes:
        track: the outbound :class:`~gateway.webrtc.tracks.PacedTrack` (add it to ``pc``).
        stop_reason: why the peer went away (``None`` while it is there).
        dropped: counts of what a bound dropped (``audio``, ``page``, ``channel``).
    """

    def __init__(self, pc: Any, *, sample_rate: int = 16000, label: str = "") -> None:
        self.pc = pc
        self.sample_rate = sample_rate
        self.label = label
        self.track = PacedTrack(sample_rate, on_mark=self._acked, on_frame=self._emitted)
        self.closed = False
        self.stop_reason: str | None = None
        self.dropped = {"audio": 0, "page": 0, "channel": 0}
        self._audio: deque[bytes] = deque()
        self._control: deque[str] = deque()  # mark acknowledgements (bounded by the ledger's marks), cleared
        self._page: deque[str] = deque()  # the page's messages (MAX_PAGE_PENDING)
        self._wake = asyncio.Event()
        self._started = False
        self._start_sent = False
        self._stop_sent = False
        self._remote: Any = None  # the caller's audio track
        self._reader: asyncio.Task | None = None
        self._channel: Any = None
        self._pending: deque[str] = deque(maxlen=MAX_CHANNEL_PENDING)
        self._state = AgentState()
        self._t0 = time.monotonic()

    # ------------------------------------------------------------------ the peer's side
    def remote_track(self, track: Any) -> None:
        """aiortc's ``track`` event: keep the first audio track (others are ignored)."""
        if track.kind == "audio" and self._remote is None:
            self._remote = track

    @property
    def has_audio(self) -> bool:
        """Whether the peer's audio track has arrived."""
        return self._remote is not None

    def data_channel(self, channel: Any) -> None:
        """aiortc's ``datachannel`` event: the page's ``events`` channel (others are ignored)."""
        if channel.label != CHANNEL_LABEL or self._channel is not None:
            return
        self._channel = channel
        channel.on("message", self._page_message)
        if channel.readyState == "open":
            self._flush_pending()
        else:
            channel.on("open", self._flush_pending)

    def start(self) -> None:
        """The connection is up: the session's ``start`` is due and the caller's audio is read."""
        if self._started:
            return
        self._started = True
        self._t0 = time.monotonic()  # the session's clock starts now (build_session follows)
        self._states(self._state.connected())
        self._reader = asyncio.ensure_future(self._read_audio())
        self._wake.set()

    def peer_gone(self, reason: str) -> None:
        """The peer went away (``peer_closed``, ``peer_failed``, ``media_timeout`` …): the session
        gets ``stop`` after the audio already queued. The first reason is kept."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self._wake.set()

    async def _read_audio(self) -> None:
        """The caller's decoded audio → 20 ms chunks at the session's rate, into the bounded queue."""
        from aiortc.mediastreams import MediaStreamError

        track, inbound, audio = self._remote, InboundAudio(self.sample_rate), self._audio
        while True:
            try:
                async with asyncio.timeout(MEDIA_TIMEOUT_S):
                    frame = await track.recv()
            except MediaStreamError:
                return self.peer_gone("peer_closed")
            except TimeoutError:
                return self.peer_gone("media_timeout")
            try:
                chunks = inbound.convert(frame)
            except Exception:  # noqa: BLE001 - a frame PyAV cannot convert: the call ends, it never hangs
                log.warning("webrtc: the caller's audio could not be converted", exc_info=True)
                return self.peer_gone("media_error")
            for chunk in chunks:
                if len(audio) >= MAX_AUDIO_FRAMES:
                    audio.popleft()
                    self.dropped["audio"] += 1
                audio.append(chunk)
            self._wake.set()

    def _page_message(self, message: str | bytes) -> None:
        if len(self._page) >= MAX_PAGE_PENDING:
            self.dropped["page"] += 1
            return
        self._page.append(page_frame(message))
        self._wake.set()

    # ------------------------------------------------------------------ the session's side
    async def receive(self) -> Frame | None:
        """The next frame for the adapter (module docstring), or ``None`` once closed."""
        while True:
            if self.closed or self._stop_sent:
                return None
            if self._started and not self._start_sent:
                self._start_sent = True
                return start_frame(self.label, self.sample_rate)
            if self._start_sent:
                if self._control:
                    return self._control.popleft()
                if self._page:
                    return self._page.popleft()
                if self._audio:
                    return self._audio.popleft()
            if self.stop_reason is not None:
                self._stop_sent = True
                return stop_frame(self.stop_reason)
            self._wake.clear()
            await self._wake.wait()  # woken by audio, a control frame, stop or close

    async def send(self, frame: Frame) -> None:
        """One adapter frame: audio onto the track, or a ``mark`` / ``clear`` (never blocks)."""
        if self.closed:
            return
        if type(frame) is bytes:
            self.track.push(frame)
            return
        msg = orjson.loads(frame)
        if msg.get("event") == "mark":
            self.track.mark(msg["name"])
        elif msg.get("event") == "clear":
            for name in self.track.clear():
                self._acked(name)
            self._control.append(CLEARED_FRAME)
            self._states(self._state.cleared())
            self._wake.set()

    def _acked(self, name: str) -> None:
        self._control.append(mark_frame(name))
        self._wake.set()

    def _emitted(self, agent_audio: bool) -> None:
        states = self._state.emitted(agent_audio)
        if states:
            self._states(states)

    def observe(self, kind: str, payload: dict[str, Any]) -> None:
        """The session's observer hook: ``("event", journal event)``, ``("turn", {"index",
        "turn"})``, ``("ended", {"status", "endReason"})`` → data channel messages; a
        ``("moment", journal event)`` the record left out (its bounds) only moves the agent
        state (``thinking`` after the 200th ``caller_speech_end`` too). Never raises."""
        try:
            if kind in ("event", "moment"):
                if kind == "event":
                    self._to_page(event_message(payload))
                states = self._state.event(payload.get("kind", ""))
                if states:
                    self._states(states)
            elif kind == "turn":
                self._to_page(transcript_message(payload["index"], payload["turn"]))
            elif kind == "ended":
                self._to_page(ended_message(payload.get("status", ""), payload.get("endReason", "")))
        except Exception:  # noqa: BLE001 - the page's view must never hurt the call
            log.warning("webrtc: could not send %s to the page", kind, exc_info=True)

    def _states(self, states: list[str]) -> None:
        at_ms = int((time.monotonic() - self._t0) * 1000)
        for state in states:
            self._to_page({"type": "state", "state": state, "atMs": at_ms})

    def _to_page(self, message: dict[str, Any]) -> None:
        text = orjson.dumps(message).decode()
        channel = self._channel
        if channel is None or channel.readyState != "open":
            if len(self._pending) == self._pending.maxlen:
                self.dropped["channel"] += 1
            self._pending.append(text)
        elif channel.bufferedAmount > MAX_CHANNEL_BUFFER:
            self.dropped["channel"] += 1
        else:
            self._send(channel, text)

    def _flush_pending(self) -> None:
        """The channel opened (aiortc's ``open`` event): send what waited."""
        channel = self._channel
        while self._pending and channel is not None and channel.readyState == "open":
            self._send(channel, self._pending.popleft())

    def _send(self, channel: Any, text: str) -> None:
        """``channel.send``, never raising into aiortc's event emitter (which would re-raise an
        unhandled handler error inside its SCTP code): a message over the peer's largest
        (``max-message-size``, 64 KiB by default) or a channel closing under it is dropped, counted."""
        try:
            channel.send(text)
        except Exception:  # noqa: BLE001 - aiortc's InvalidStateError, ValueError (too long)
            self.dropped["channel"] += 1
            log.debug("webrtc: a message to the page was dropped", exc_info=True)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Flush the data channel (bounded), stop the tracks, close the peer connection (bounded)."""
        if self.closed:
            return
        self.closed = True
        self._wake.set()
        if self._reader is not None:
            self._reader.cancel()
        if any(self.dropped.values()) or self.track.dropped_bytes:  # what the bounds cost, once per call
            log.info("webrtc %s: dropped %d caller audio chunks, %d page messages, %d messages to the page, "
                     "%d bytes of agent audio", self.label, self.dropped["audio"], self.dropped["page"],
                     self.dropped["channel"], self.track.dropped_bytes)  # fmt: skip
        channel = self._channel
        if channel is not None and channel.readyState == "open":
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_S):
                    while channel.bufferedAmount > 0 and channel.readyState == "open":
                        await asyncio.sleep(0.02)
            await asyncio.sleep(0.05)  # the SCTP stack sends what it took
        await close_peer(self.pc)
        self.track.stop()
        if self._reader is not None:
            await asyncio.wait([self._reader], timeout=0.5)  # cancelled above: it ends at once


async def close_peer(pc: Any) -> None:
    """``pc.close()``, bounded by :data:`CLOSE_S`; a failure is logged, never raised."""
    try:
        async with asyncio.timeout(CLOSE_S):
            await pc.close()
    except Exception:  # noqa: BLE001 - closing must not fail the call's finalisation
        log.warning("webrtc: closing the peer connection failed", exc_info=True)
