"""A simulated WebRTC caller: a Python aiortc peer standing in for a browser (tests, benchmarks).

:class:`WebRtcCaller` does what the playground page does, with no browser: it opens a peer
connection with one audio track (its "microphone": 20 ms frames at real time, silence unless a
line is playing) and the ``events`` data channel made *before* the offer, posts the offer to the
call's offer URL, applies the answer, and then records, with their arrival times (monotonic s):

* the agent audio it receives (decoded, resampled to ``sample_rate``; :attr:`WebRtcCaller.heard`
  and :attr:`WebRtcCaller.frames`, one ``(arrival s, rms)`` per 20 ms);
* every data channel message (:attr:`WebRtcCaller.messages`, ``(arrival s, dict)``).

:meth:`WebRtcCaller.say` plays a line (e.g. a real recording from ``../shared/audio``) and
tells when its speech started (the first 20 ms frame above :data:`ONSET_RMS`) left the track;
with agent audio arriving meanwhile that is speaking over the agent (barge-in), and
:meth:`WebRtcCaller.agent_stop_after` measures when the agent audio stopped at this peer.

Run it against a gateway on loopback: aioice's loopback host candidates
(:func:`gateway.webrtc.ice.include_loopback`) are switched on for this process too.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import orjson

from gateway.webrtc.ice import include_loopback
from gateway.webrtc.tracks import InboundAudio, PacedTrack, set_jitter_frames

__all__ = ["WebRtcCaller", "OfferRefused", "SpokenLine", "ONSET_RMS", "AUDIBLE_RMS", "speech_onset"]

#: A caller frame (20 ms, int16) at or above this RMS starts the line's speech.
ONSET_RMS = 300.0
#: A received frame at or above this RMS is agent audio (decoded silence is ~0).
AUDIBLE_RMS = 100.0


class OfferRefused(Exception):
    """The offer URL answered ``status`` with the API's error ``body``."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"offer refused: {status} {body}")
        self.status, self.body = status, body


@dataclass
class SpokenLine:
    """When a line left the caller's track (monotonic s): its first frame, its speech onset
    (the first frame at :data:`ONSET_RMS`), and its end (``None`` until it finished)."""

    started_at: float | None = None
    onset_at: float | None = None
    ended_at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


def speech_onset(pcm: np.ndarray, rate: int, threshold: float = ONSET_RMS) -> int:
    """The sample where ``pcm``'s first 20 ms frame with RMS ≥ ``threshold`` starts (0 if none)."""
    n = rate // 50
    for i in range(0, len(pcm) - n + 1, n):
        if np.sqrt(np.mean(pcm[i:i + n].astype(np.float64) ** 2)) >= threshold:
            return i
    return 0


class WebRtcCaller:
    """A WebRTC peer calling the gateway's offer URL (module docstring).

    Args:
        offer_url: the call's ``offerUrl``.
        sample_rate: the rate (Hz) lines are given in and received audio is kept at.
        ice_servers: ``RTCIceServer`` objects for this peer (none: host candidates).
        jitter_frames: this peer's jitter buffer (frames of 20 ms before decoding; aiortc's
            default 4 is 80 ms, more than a browser's adaptive buffer holds on loopback, which
            runs at 20 to 40 ms): what "at the peer" timings include.
    """

    def __init__(self, offer_url: str, *, sample_rate: int = 16000, ice_servers: list | None = None,
                 jitter_frames: int = 1) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection

        include_loopback()
        self.offer_url = offer_url
        self.sample_rate = sample_rate
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers or []))
        self.mic = PacedTrack(sample_rate, on_mark=self._line_mark)
        self.channel = self.pc.createDataChannel("events")
        self.frames: list[tuple[float, float]] = []
        self.messages: list[tuple[float, dict]] = []
        self._heard = bytearray()
        self._lines: dict[str, SpokenLine] = {}
        self._seq = 0
        self._reader: asyncio.Task | None = None
        self._opened = asyncio.Event()
        self._changed = asyncio.Event()
        self.channel.on("open", self._opened.set)
        self.channel.on("message", self._message)
        self.pc.on("track", self._track)
        sender = self.pc.addTrack(self.mic)
        receiver = next(t.receiver for t in self.pc.getTransceivers() if t.sender is sender)
        set_jitter_frames(receiver, jitter_frames)

    # ------------------------------------------------------------------ connection
    async def connect(self, *, timeout_s: float = 10.0) -> None:
        """Offer, answer, and wait for the connection and the data channel.

        Raises:
            OfferRefused: the offer URL answered with an error.
            TimeoutError: not connected within ``timeout_s``.
        """
        from aiortc import RTCSessionDescription

        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"type": "offer", "sdp": self.pc.localDescription.sdp}
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            r = await client.post(self.offer_url, json=body)
        if r.status_code != 200:
            raise OfferRefused(r.status_code, r.json() if r.content else None)
        answer = r.json()
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        async with asyncio.timeout(timeout_s):
            await self._opened.wait()

    async def close(self) -> None:
        """Close the peer connection (the gateway sees the caller gone)."""
        await self.pc.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.wait([self._reader], timeout=1.0)

    def send(self, message: dict) -> None:
        """Send one JSON message on the ``events`` channel (``{"type": "hangup"}`` …)."""
        self.channel.send(orjson.dumps(message).decode())

    async def hangup(self) -> None:
        """``{"type": "hangup"}`` on the data channel."""
        self.send({"type": "hangup"})

    # ------------------------------------------------------------------ the caller's line
    def play(self, pcm: np.ndarray) -> SpokenLine:
        """Queue ``pcm`` (int16 at ``sample_rate``) on the microphone track; returns at once."""
        self._seq += 1
        key, line = f"l{self._seq}", SpokenLine()
        self._lines[key] = line
        onset = speech_onset(pcm, self.sample_rate)
        data = np.ascontiguousarray(pcm, dtype="<i2").tobytes()
        self.mic.mark(f"{key}:start")
        self.mic.push(data[: 2 * onset])
        self.mic.mark(f"{key}:onset")
        self.mic.push(data[2 * onset:])
        self.mic.mark(f"{key}:end")
        return line

    async def say(self, pcm: np.ndarray, *, timeout_s: float = 60.0) -> SpokenLine:
        """Play ``pcm`` and wait until it has all left the track."""
        line = self.play(pcm)
        async with asyncio.timeout(timeout_s):
            await line.done.wait()
        return line

    def _line_mark(self, name: str) -> None:
        key, _, what = name.partition(":")
        line, now = self._lines[key], time.monotonic()
        if what == "start":
            line.started_at = now
        elif what == "onset":
            line.onset_at = now
        else:
            line.ended_at = now
            line.done.set()

    # ------------------------------------------------------------------ what it receives
    def _track(self, track: Any) -> None:
        if track.kind == "audio" and self._reader is None:
            self._reader = asyncio.ensure_future(self._read(track))

    async def _read(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        inbound = InboundAudio(self.sample_rate)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            for chunk in inbound.convert(frame):
                pcm = np.frombuffer(chunk, dtype="<i2").astype(np.float64)
                self.frames.append((now, float(np.sqrt(np.mean(pcm * pcm)))))
                self._heard += chunk
            self._changed.set()

    def _message(self, text: Any) -> None:
        if isinstance(text, str):
            self.messages.append((time.monotonic(), orjson.loads(text)))
            self._changed.set()

    @property
    def heard(self) -> np.ndarray:
        """Every received frame as int16 at ``sample_rate`` (silence included)."""
        return np.frombuffer(bytes(self._heard), dtype="<i2")

    def audible(self, since: float = 0.0, until: float = float("inf")) -> list[float]:
        """Arrival times (monotonic s) of agent audio frames in ``[since, until)``."""
        return [t for t, rms in self.frames if since <= t < until and rms >= AUDIBLE_RMS]

    def agent_stop_after(self, at: float, *, gap_s: float = 0.5) -> float | None:
        """When agent audio playing at ``at`` stopped: the arrival of its last frame before a gap of
        at least ``gap_s`` with none (``None``: it never stopped in what was received)."""
        last = None
        for t in self.audible(since=at):
            if last is not None and t - last >= gap_s:
                return last
            last = t
        if last is None:
            return at
        return last if self.frames and self.frames[-1][0] - last >= gap_s else None

    def of_type(self, kind: str) -> list[dict]:
        """The data channel messages of ``type`` ``kind``, in order."""
        return [m for _, m in self.messages if m.get("type") == kind]

    async def wait_for(self, predicate, *, timeout_s: float) -> None:
        """Wait until ``predicate()`` is true (checked on each frame and message).

        Raises:
            TimeoutError: not within ``timeout_s``.
        """
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def wait_for_agent(self, *, timeout_s: float = 20.0, quiet_s: float = 1.0, since: float | None = None) -> None:
        """Wait until agent audio arrived (after ``since``, default now) and then stopped for
        ``quiet_s``.

        Raises:
            TimeoutError: not within ``timeout_s``.
        """
        start = time.monotonic() if since is None else since

        def done() -> bool:
            heard = self.audible(since=start)
            return bool(heard) and bool(self.frames) and self.frames[-1][0] - heard[-1] >= quiet_s

        await self.wait_for(done, timeout_s=timeout_s)

    async def wait_for_message(self, type_: str, /, *, timeout_s: float = 10.0, **match: Any) -> dict:
        """The first data channel message of ``type`` ``type_`` whose fields equal ``match``."""
        def found() -> dict | None:
            return next((m for m in self.of_type(type_) if all(m.get(k) == v for k, v in match.items())), None)

        await self.wait_for(lambda: found() is not None, timeout_s=timeout_s)
        return found()  # type: ignore[return-value]
