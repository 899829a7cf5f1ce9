"""A simulated phone caller that speaks a carrier's media-stream protocol over a real WebSocket.

It behaves as the carrier does: it streams the caller's audio as continuous 20 ms frames in
real time (silence between lines: digital zero, or with ``noise`` the line noise of
:class:`~gateway.simulator.noise.LineNoise` between and under the lines, as a real line
carries), plays the gateway's audio out of a playback buffer at real time, echoes each mark
when the audio queued before it has played, and on ``clear`` empties the buffer and echoes
every pending mark at once (as Twilio does). What it "heard" is kept, time-aligned, so it can
be saved as a WAV and measured.

A call follows a script of steps: :class:`Say`, :class:`Pause`, :class:`WaitForAgent`,
:class:`BargeIn`, :class:`Backchannel`, :class:`Listen`, :class:`PressDigit`. Timings are measured on the caller's side, where a
person would notice them: turn latency (end of the caller's speech → first agent audio frame
received), barge-in reaction (onset of the caller's interrupting speech → ``clear``
received) and pacing lateness (:func:`pacing_lateness`: how long the caller's ear ran dry
inside an agent reply, every gap counted).

At hang-up the caller stops sending, sends the carrier's stop message (if it has one) and keeps
reading until the gateway closes the socket (bounded by ``drain_s``), as a carrier's media
server does: agent frames that arrive after the hang-up were in flight, not lost, and are
counted apart (``frames_after_hangup``).

With ``echo`` (:class:`~gateway.simulator.echo.EchoPath`) the caller returns what it is hearing
as echo on its own leg, as a phone line does: each frame it sends carries the echo of the agent
audio it played (delayed, filtered, ``return_loss_db`` down) mixed with its own speech and the
line noise, then encoded in the dialect's codec. The report gives the return loss achieved
(``echo_return_loss_db``), every gap in the agent audio the caller heard (``agent_gaps_ms``: a
pause) and the onset of each line spoken over the agent (``onsets``). Without ``echo`` nothing
of this costs anything (the load driver's frames are pre-encoded as before).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

import numpy as np
import websockets
from websockets.asyncio.client import connect

from gateway.codecs.transcode import decode, encode
from gateway.simulator.dialects import CallerDialect
from gateway.simulator.echo import EchoPath
from gateway.simulator.noise import LineNoise
from gateway.simulator.script import (Backchannel, BargeIn, CallerReport, Listen, Onset, Pause, PressDigit, Say,
                                      ScriptPlayer, Step, WaitForAgent, pacing_lateness, speech_bounds)

__all__ = ["Say", "Pause", "WaitForAgent", "BargeIn", "Backchannel", "Listen", "PressDigit", "Step", "CallerReport",
           "Onset", "SimulatedCaller", "speech_bounds", "pacing_lateness"]

_FRAME_MS = 20


class SimulatedCaller(ScriptPlayer):
    """One simulated call against a gateway stream URL.

    Args:
        url: the stream URL (``ws://…/stream/twilio/{callId}/{token}``).
        dialect: the carrier protocol to speak.
        parameters: custom parameters sent in the start message.
        hangup_quiet_ms: after the script, stay on the line this long before hanging up.
        noise: line noise sent between the lines and mixed under them (at the dialect's
            rate); ``None``: digital zero between lines (exact input for tests).
        drain_s: after hanging up, read what the gateway still sends for at most this long
            (s) until it closes the socket.
        headers: extra HTTP headers on the WebSocket upgrade (e.g. Twilio's
            ``X-Twilio-Signature``).
        keep_heard: keep what the caller heard (``report.heard``, decoded per 20 ms); off, the
            playback buffer keeps only byte counts (the load driver: every timing is the same).
        link: the socket's client: ``websockets`` (a task per caller for its 20 ms ticks and
            one for its reads) or ``picows`` (:mod:`gateway.simulator.picows_link`: reads in a
            callback, sends without awaiting, ticks from one shared :class:`SendClock`).
        clock: the shared send clock of ``link="picows"`` (one per event loop; a new one if None).
        echo: return the agent audio the caller plays on its own leg through this echo path
            (at the dialect's rate); ``None``: no echo.

    Raises:
        ValueError: an unknown link, or line noise or an echo path at another rate than the
            dialect's.
    """

    def __init__(self, url: str, dialect: CallerDialect, *, parameters: dict[str, str] | None = None,
                 hangup_quiet_ms: int = 300, noise: LineNoise | None = None, drain_s: float = 2.0,
                 headers: dict[str, str] | None = None, keep_heard: bool = True, link: str = "websockets",
                 clock=None, echo: EchoPath | None = None) -> None:
        if link not in ("websockets", "picows"):
            raise ValueError(f"link must be websockets or picows, not {link!r}")
        self.url = url
        self.keep_heard = keep_heard
        self.link = link
        self.clock = clock
        self.headers = dict(headers or {})
        self.dialect = dialect
        self.parameters = parameters or {}
        self.hangup_quiet_ms = hangup_quiet_ms
        self.noise = noise
        self.drain_s = drain_s
        if noise is not None and noise.sample_rate != dialect.audio_format.sample_rate:
            raise ValueError(f"line noise at {noise.sample_rate} Hz for a {dialect.audio_format.sample_rate} Hz line")
        if echo is not None and echo.sample_rate != dialect.audio_format.sample_rate:
            raise ValueError(f"echo path at {echo.sample_rate} Hz for a {dialect.audio_format.sample_rate} Hz line")
        self.echo = echo
        self._echo_energy = [0.0, 0.0]  # agent audio played, its echo sent (sums of squares)
        self._dry_since: float | None = None  # the ear ran out of agent audio (ms), no clear since
        fmt = dialect.audio_format
        self._frame_bytes = fmt.bytes_for_ms(_FRAME_MS)
        self._frame_samples = fmt.sample_rate * _FRAME_MS // 1000
        self._mouth: deque[np.ndarray] = deque()
        self._silence = encode(np.zeros(self._frame_samples, np.int16), fmt.encoding)
        # The line noise repeats every loop: each tick's noise row, and its noise-only frame encoded.
        self._noise_rows = noise.frames(self._frame_samples) if noise is not None else None
        self._noise_payloads = ([encode(_clip16(row), fmt.encoding) for row in self._noise_rows]
                                if self._noise_rows is not None else [])
        self._outbox: deque = deque()  # frames for the socket, in order
        self._waiters: list[tuple] = []  # (condition, future) of the script's waits
        self._failure: BaseException | None = None  # what failed the call (picows link)
        self._close_received = False  # the gateway's close frame arrived (picows link)
        self._playback: deque[tuple[str, bytes | str, float]] = deque()  # kind, data, arrival ms
        self._playback_bytes = 0
        self._heard: list[np.ndarray] = []
        self._t0 = 0.0
        self._tick = 0
        self._agent_playing_since: float | None = None
        self._last_agent_audio_ms: float | None = None
        self._speech_end_ms: float | None = None
        self._onset_ms: float | None = None
        self._arrivals: list[float] = []  # agent frames before the hang-up: arrival ms, audio ms
        self._durations: list[float] = []
        self._resets: list[float] = []  # clear received, ms
        self._turn_ends: list[float] = []  # the caller's lines ended, ms
        self._hung_up = False
        self._hang_up_requested = False
        self._hang_up_event = asyncio.Event()
        self._item_played_ms = 0.0  # agent audio played since the last clear
        self._ws = None
        self._closed = asyncio.Event()
        self.report = CallerReport(np.zeros(0, np.int16), fmt.sample_rate)

    def _now_ms(self) -> float:
        return (time.monotonic() - self._t0) * 1000.0

    def _note(self, what: str) -> None:
        self.report.log.append((round(self._now_ms(), 1), what))

    def request_hang_up(self) -> None:
        """Hang up now (the call was ended from outside, e.g. through the carrier's REST API):
        the script stops, the rest of the caller's line is dropped, and :meth:`run` hangs up as
        at the end of a script (stop message, then drain) and returns its report."""
        self._hang_up_requested = True
        self._hang_up_event.set()
        self._mouth.clear()
        self._wake()

    async def _sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if a hang-up is requested or the socket closes."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hang_up_event.wait(), seconds)

    async def run(self, script: list[Step]) -> CallerReport:
        """Connect, play the script in real time, hang up, and return the measurements."""
        if self.link == "picows":
            from gateway.simulator.picows_link import run_picows

            await run_picows(self, script)
            return self._finish()
        try:
            async with connect(self.url, max_size=2**20, open_timeout=10,
                               additional_headers=self.headers or None) as ws:
                self._ws = ws
                self._t0 = time.monotonic()
                for frame in self.dialect.opening(self.parameters):
                    await ws.send(frame)
                async with asyncio.TaskGroup() as tg:
                    ticker = tg.create_task(self._ticker())
                    receiver = tg.create_task(self._receiver())
                    await self._play(script)
                    ticker.cancel()
                    await asyncio.wait([ticker])  # no caller frame after the hang-up
                    await self._hang_up()
                    receiver.cancel()
        except* websockets.ConnectionClosed as group:
            self._record_close(group.exceptions[0].rcvd)
        except* websockets.InvalidStatus as group:
            self.report.close_code = group.exceptions[0].response.status_code
            self.report.close_reason = "rejected at handshake"
        if self._ws is not None and self.report.close_code is None and self._ws.close_code is not None:
            self.report.close_code = self._ws.close_code
            self.report.close_reason = self._ws.close_reason or ""
        return self._finish()

    def _finish(self) -> CallerReport:
        self.report.heard = np.concatenate(self._heard) if self._heard else np.zeros(0, np.int16)
        if self.echo is not None and self._echo_energy[1] > 0:
            played, echoed = self._echo_energy
            self.report.echo_return_loss_db = 10 * np.log10(max(played, 1e-12) / echoed)
        self.report.lateness_ms, self.report.turn_pauses_ms = pacing_lateness(
            self._arrivals, self._durations, resets_ms=self._resets, turn_ends_ms=self._turn_ends)
        return self.report

    async def _hang_up(self) -> None:
        """Stop (the carrier's stop message, if any), then read until the gateway closes the
        socket, at most ``drain_s``; without a stop message, the close handshake ends the call."""
        self.report.hangup_at_ms = self._now_ms()
        self._hung_up = True
        if self._closed.is_set():
            return
        stop = self.dialect.stop()
        if stop is not None:
            self._send(stop)
            await self._flush()
            with contextlib.suppress(TimeoutError):  # the gateway ends the call and closes the socket
                await asyncio.wait_for(self._closed.wait(), self.drain_s)
        if not self._closed.is_set():
            with contextlib.suppress(TimeoutError):  # frames sent before the gateway's close still arrive
                await asyncio.wait_for(self._ws.close(), self.drain_s)

    def _record_close(self, rcvd) -> None:
        if rcvd is not None:
            self.report.close_code = rcvd.code
            self.report.close_reason = rcvd.reason

    # ------------------------------------------------------------------ the script
    async def _wait_until(self, cond, timeout_s: float) -> None:
        """Until ``cond()`` holds (checked after every 20 ms tick, where the state it reads
        changes), the socket closes, a hang-up is requested, or ``timeout_s`` passes."""
        if self._closed.is_set() or self._hang_up_requested or cond():
            return
        fut = asyncio.get_running_loop().create_future()
        entry = (cond, fut)
        self._waiters.append(entry)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await fut
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    def _wake(self) -> None:
        """Resolve the script's waits whose condition now holds (all of them once the call ends)."""
        ending = self._closed.is_set() or self._hang_up_requested
        for cond, fut in self._waiters:
            if not fut.done() and (ending or cond()):
                fut.set_result(None)

    # ------------------------------------------------------------------ real-time engine
    async def _ticker(self) -> None:
        """Every 20 ms: one :meth:`_tick` (accumulating clock), its frames sent in order."""
        while True:
            self._tick_now(time.monotonic())
            await self._flush()
            delay = self._t0 + self._tick * _FRAME_MS / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    def _tick_now(self, now: float) -> None:
        """One 20 ms tick at ``now`` (``time.monotonic()``): send one mouth frame, play one ear
        frame, wake the script's waits.

        How late the tick ran against its schedule is kept (``send_slip_ms``): when the driving
        process is overloaded, it shows here first."""
        self.report.send_slip_ms.append(max(0.0, (now - self._t0) * 1000 - self._tick * _FRAME_MS))
        self._send(self.dialect.media(self._next_payload()))
        self.report.frames_sent += 1
        self._play_out()
        self._tick += 1
        if self._waiters:
            self._wake()

    def _mouth_payloads(self, frames: np.ndarray) -> list:
        """A line's frames ``(n, samples)`` int16, as they will go out: mixed with the noise of
        the tick each will be sent at (the next ticks after what the mouth holds) and encoded,
        in one pass over the line (elementwise as per frame: the same bytes). Without a
        repeating noise loop, or with echo, the frames stay PCM and are mixed when sent."""
        enc = self.dialect.audio_format.encoding
        rows = self._noise_rows
        if (rows is None and self.noise is not None) or self.echo is not None:
            return list(frames)
        if rows is not None:
            ticks = (self._tick + len(self._mouth) + np.arange(len(frames))) % len(rows)
            frames = _clip16(frames.astype(np.float64) + rows[ticks])
        data = encode(frames.reshape(-1), enc)
        step = len(data) // len(frames) if len(frames) else 0
        return [data[i:i + step] for i in range(0, len(data), step)] if step else []

    def _next_payload(self) -> bytes:
        """This tick's caller audio, encoded: a mouth frame (with the line noise under it, see
        :meth:`_mouth_payloads`), else the line noise alone (pre-encoded: the loop repeats),
        else digital zero."""
        fmt = self.dialect.audio_format
        rows = self._noise_rows
        if self.echo is not None:
            return encode(self._with_echo(), fmt.encoding)
        if self._mouth:
            item = self._mouth.popleft()
            if type(item) is bytes:
                return item
            return encode(self.noise.under(item), fmt.encoding)
        if rows is not None:
            return self._noise_payloads[self._tick % len(rows)]
        if self.noise is not None:
            return encode(self.noise.frame(self._frame_samples), fmt.encoding)
        return self._silence

    def _with_echo(self) -> np.ndarray:
        """This tick's frame with echo: the mouth's frame (or silence), the line noise, and
        the echo of what played up to the previous tick, mixed (int16)."""
        n = self._frame_samples
        x = self._mouth.popleft().astype(np.float64) if self._mouth else np.zeros(n)
        if self._noise_rows is not None:
            x += self._noise_rows[self._tick % len(self._noise_rows)]
        elif self.noise is not None:
            x += self.noise.next(n)
        echo = self.echo.pull(n)
        self._echo_energy[1] += float(echo @ echo)
        return _clip16(x + echo)

    def _play_out(self) -> None:
        """Play 20 ms from the playback buffer, echoing marks whose audio has played."""
        need = self._frame_bytes
        out = bytearray() if self.keep_heard or self.echo is not None else None
        got = 0
        playback = self._playback
        while playback and (need > 0 or playback[0][0] == "mark"):
            kind, data, arrival = playback[0]
            if kind == "mark":
                playback.popleft()
                self._ack(str(data))
                continue
            size = data if type(data) is int else len(data)
            take = min(need, size)
            if out is not None:
                out += data[:take]
            got += take
            need -= take
            if take == size:
                playback.popleft()
            else:
                playback[0] = (kind, (size - take) if type(data) is int else data[take:], arrival)
            self._playback_bytes -= take
        fmt = self.dialect.audio_format
        if got:
            self._item_played_ms += fmt.ms_for_bytes(got)
            self._last_agent_audio_ms = self._now_ms()
            self.report.agent_audio_ms += fmt.ms_for_bytes(got)
            if self._agent_playing_since is None:
                self._agent_playing_since = self._now_ms()
            if self._dry_since is not None:  # agent audio again, no clear since it stopped: a pause
                self.report.agent_gaps_ms.append((self._dry_since, self._now_ms()))
                self._dry_since = None
        else:
            if self._agent_playing_since is not None:
                self._dry_since = self._now_ms()
            self._agent_playing_since = None
        if out is not None:
            out += bytes(need) if fmt.encoding.value == "l16" else b"\xff" * need
            heard = decode(bytes(out), fmt.encoding)
            if self.keep_heard:
                self._heard.append(heard)
            if self.echo is not None:
                self.echo.push(heard)
                if got:
                    self._echo_energy[0] += float(np.dot(heard, heard.astype(np.float64)))

    def _ack(self, name: str) -> None:
        if self._hung_up:  # the carrier has left the call: nothing plays, nothing is acknowledged
            return
        frame = self.dialect.mark_played(name)
        if frame is not None:
            self._send(frame)
            self.report.marks_acked += 1

    def _send(self, frame) -> None:
        """Queue ``frame`` for the socket (sent in order by :meth:`_flush`)."""
        self._outbox.append(frame)

    async def _flush(self) -> None:
        outbox = self._outbox
        while outbox:
            await self._ws.send(outbox.popleft())

    async def _receiver(self) -> None:
        try:
            async for frame in self._ws:
                self._on_frame(frame)
                if self._outbox:
                    await self._flush()
        finally:
            self._set_closed()
            if self._ws.close_code is not None:
                self.report.close_code = self._ws.close_code
                self.report.close_reason = self._ws.close_reason or ""

    def _fail(self, exc: BaseException) -> None:
        """The call failed (``run`` raises ``exc`` once it has hung up)."""
        if self._failure is None:
            self._failure = exc
        self._set_closed()

    def _set_closed(self) -> None:
        self._closed.set()
        self._hang_up_event.set()  # the script's pauses end too: nobody is on the line
        self._wake()

    def _on_frame(self, frame) -> None:
        """One message from the gateway (raises ValueError for one the carrier would reject)."""
        now = self._now_ms()
        for msg in self.dialect.parse(frame):
            kind = msg.kind
            if kind == "media":
                self.report.frames_received += 1
                if self._hung_up:  # in flight at the hang-up: arrived, never played
                    self.report.frames_after_hangup += 1
                    continue
                size = len(msg.audio)
                self.report.media_arrivals_ms.append(now)
                self._arrivals.append(now)
                self._durations.append(self.dialect.audio_format.ms_for_bytes(size))
                if self._speech_end_ms is not None:
                    self.report.turn_latency_ms.append(now - self._speech_end_ms)
                    self._speech_end_ms = None
                keep = self.keep_heard or self.echo is not None
                self._playback.append(("media", msg.audio if keep else size, now))
                self._playback_bytes += size
            elif kind == "mark":
                self._playback.append(("mark", msg.name, now))
                if self._playback_bytes == 0 and len(self._playback) == 1:
                    self._playback.popleft()
                    self._ack(msg.name)
            elif kind == "clear":
                self._on_clear(now)

    def _on_clear(self, now: float) -> None:
        self.report.clears += 1
        self.report.clear_at_ms.append(now)
        self.report.played_before_clear_ms.append(self._item_played_ms)
        if self._onset_ms is not None:
            self.report.barge_in_reaction_ms.append(now - self._onset_ms)
            self._onset_ms = None
        self._item_played_ms = 0.0
        self._dry_since = None  # what stops now is not a pause
        self._agent_playing_since = None
        pending = [d for k, d, _ in self._playback if k == "mark"]
        self._playback.clear()
        self._playback_bytes = 0
        self._resets.append(now)
        for name in pending:
            self._ack(str(name))
        self._note("clear")


def _clip16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)
