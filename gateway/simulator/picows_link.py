"""A light socket for simulated callers: picows, and one shared send clock for every caller.

The load driver runs hundreds of :class:`~gateway.simulator.caller.SimulatedCaller` in one
process; with the ``websockets`` client each caller costs two tasks, a timer per 20 ms tick and
an awaited ``send`` (an async context manager) per frame, and the driver, not the gateway,
became the limit near 200 calls. Here (``SimulatedCaller(link="picows")``):

* the socket is a picows client (``picows.ws_connect``): the gateway's messages arrive in a
  callback (:class:`_Listener`), parsed by the same dialect and handled by the same caller code;
  sends are synchronous writes to the transport (picows buffers them; nothing awaits per frame);
* one :class:`SendClock` per event loop drives every caller's 20 ms ticks: it wakes every
  ``slot_ms`` (5 ms) and ticks the callers whose phase is that slot, so one timer serves all
  callers and their sends stay spread over each 20 ms (as carriers' are; not a burst of every
  call at once). A caller's schedule starts at a slot boundary, ≤ ``slot_ms`` after it
  connected; a late wake runs every slot it missed (each caller catches up its missed ticks,
  as the per-caller ticker does), and each tick's lateness against the caller's own schedule
  is its ``send_slip_ms``, the driver-bound figure, measured as before.

What the caller sends and when (messages, sizes, pacing, script) and every measurement are the
caller's own code in both links: only who calls it differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from picows import WSCloseCode, WSListener, WSMsgType, WSTransport, ws_connect
from picows.common import WSInvalidStatusError

if TYPE_CHECKING:
    from gateway.simulator.caller import SimulatedCaller, Step

__all__ = ["SendClock", "run_picows"]

_FRAME_S = 0.020
_ABNORMAL_CLOSURE = 1006
_NO_STATUS = 1005  # RFC 6455 §7.1.5: a close frame without a status code  # RFC 6455 §7.1.5: closed without a close frame (as websockets reports it)


class SendClock:
    """One timer for the 20 ms ticks of every caller on this event loop.

    Args:
        slot_ms: the wake period (ms); 20 must be a multiple of it. Callers are spread over the
            ``20 / slot_ms`` phases round-robin as they join.
    """

    def __init__(self, slot_ms: float = 5.0) -> None:
        phases = round(20.0 / slot_ms)
        if phases < 1 or abs(phases * slot_ms - 20.0) > 1e-9:
            raise ValueError(f"20 ms must be a multiple of slot_ms, not {slot_ms}")
        self.slot_s = slot_ms / 1000.0
        self._buckets: list[list[SimulatedCaller]] = [[] for _ in range(phases)]
        self._grid0: float | None = None
        self._next = 0  # next slot to run
        self._joined = 0
        self._task: asyncio.Task[None] | None = None
        self.tick_errors = 0

    def join(self, caller: SimulatedCaller) -> float:
        """Add ``caller``; returns its schedule's start (``time.monotonic()`` s), the first slot
        of its phase from now on, ≤ 20 ms away."""
        now = time.monotonic()
        if self._grid0 is None or self._task is None or self._task.done():
            self._grid0, self._next = now, 0
            self._task = asyncio.get_running_loop().create_task(self._run())
        phases = len(self._buckets)
        phase = self._joined % phases
        self._joined += 1
        slot = max(self._next, int((now - self._grid0) / self.slot_s) + 1)
        slot += (phase - slot) % phases
        self._buckets[phase].append(caller)
        return self._grid0 + slot * self.slot_s

    def leave(self, caller: SimulatedCaller) -> None:
        """Stop ticking ``caller`` (no frame of it is sent after this returns)."""
        for bucket in self._buckets:
            with contextlib.suppress(ValueError):
                bucket.remove(caller)

    async def _run(self) -> None:
        phases = len(self._buckets)
        while any(self._buckets):
            now = time.monotonic()
            while self._grid0 + self._next * self.slot_s <= now:
                for caller in tuple(self._buckets[self._next % phases]):
                    if caller._t0 <= now:  # its schedule has begun
                        self._tick(caller, now)
                self._next += 1
            delay = self._grid0 + self._next * self.slot_s - time.monotonic()
            await asyncio.sleep(max(0.0, delay))
        self._task = None

    def _tick(self, caller: SimulatedCaller, now: float) -> None:
        """Every tick of ``caller`` due by ``now`` (one, unless the clock woke late); none once
        its socket has closed (as the websockets link, whose send then raises)."""
        if caller._closed.is_set():
            self.leave(caller)
            return
        try:
            while caller._t0 + caller._tick * _FRAME_S <= now:
                caller._tick_now(now)
        except Exception as exc:  # noqa: BLE001 - one caller's failure ends that caller, not the clock
            self.tick_errors += 1
            self.leave(caller)
            caller._fail(exc)


class _Listener(WSListener):
    """The gateway's messages into the caller; its close handshake answered."""

    def __init__(self, caller: SimulatedCaller) -> None:
        self.caller = caller
        self._parts: list[bytes] = []
        self._parts_type: WSMsgType | None = None

    def on_ws_frame(self, transport: WSTransport, frame) -> None:
        t = frame.msg_type
        caller = self.caller
        if t is WSMsgType.CLOSE:
            code = frame.get_close_code()
            caller.report.close_code = int(code.value) or _NO_STATUS  # a close frame without a code
            caller.report.close_reason = frame.get_close_reason() or ""
            caller._close_received = True
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if t not in (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION):
            return  # ping (answered by picows) / pong
        if not frame.fin or t is WSMsgType.CONTINUATION:  # a fragmented message: join it
            if t is not WSMsgType.CONTINUATION:
                self._parts_type = t
            self._parts.append(frame.get_payload_as_bytes())
            if not frame.fin:
                return
            data, t, self._parts, self._parts_type = b"".join(self._parts), self._parts_type, [], None
            message = data.decode() if t is WSMsgType.TEXT else data
        else:
            message = frame.get_payload_as_utf8_text() if t is WSMsgType.TEXT else frame.get_payload_as_bytes()
        try:
            caller._on_frame(message)
        except Exception as exc:  # noqa: BLE001 - e.g. a message the carrier would reject
            caller._fail(exc)
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.caller._close_received and self.caller.report.close_code is None:
            self.caller.report.close_code = _ABNORMAL_CLOSURE
        self.caller._set_closed()


def _sender(transport: WSTransport):
    text, binary = WSMsgType.TEXT, WSMsgType.BINARY

    def send(frame) -> None:
        if type(frame) is str:
            transport.send(text, frame.encode())
        else:
            transport.send(binary, frame)

    return send


async def run_picows(caller: SimulatedCaller, script: list[Step], *, open_timeout_s: float = 10.0) -> None:
    """Connect ``caller`` over picows, play ``script`` on the shared clock, hang up.

    The caller's report holds the result (close code 4xx/5xx HTTP status, reason "rejected at
    handshake", when the upgrade is refused). Raises what failed the call otherwise (a message
    the carrier would reject: ValueError; a connection that could not be opened: OSError,
    TimeoutError), as the websockets link does."""
    clock = caller.clock if caller.clock is not None else SendClock()
    try:
        transport, _ = await asyncio.wait_for(
            ws_connect(lambda: _Listener(caller), caller.url, extra_headers=caller.headers or None,
                       max_frame_size=2**20, websocket_handshake_timeout=open_timeout_s, logger_name="simulator"),
            open_timeout_s)  # fmt: skip
    except WSInvalidStatusError as exc:
        caller.report.close_code = int(exc.response.status) if exc.response is not None else None
        caller.report.close_reason = "rejected at handshake"
        return
    caller._ws = transport
    caller._send = _sender(transport)
    try:
        caller._t0 = time.monotonic()
        for frame in caller.dialect.opening(caller.parameters):
            caller._send(frame)
        caller._t0 = clock.join(caller)
        await asyncio.sleep(max(0.0, caller._t0 - time.monotonic()))  # the script starts with the first frame
        try:
            await caller._play(script)
        finally:
            clock.leave(caller)  # no caller frame after the hang-up
        await _hang_up(caller, transport)
    finally:
        transport.disconnect()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(transport.wait_disconnected(), 2.0)
    if caller._failure is not None:
        raise caller._failure


async def _hang_up(caller: SimulatedCaller, transport: WSTransport) -> None:
    """As the websockets link: the stop message (if any), then read until the gateway closes
    (≤ ``drain_s``); else start the close handshake ourselves (≤ ``drain_s`` more)."""
    caller.report.hangup_at_ms = caller._now_ms()
    caller._hung_up = True
    if caller._closed.is_set():
        return
    stop = caller.dialect.stop()
    if stop is not None:
        caller._send(stop)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(caller._closed.wait(), caller.drain_s)
    if not caller._closed.is_set():
        transport.send_close(WSCloseCode.OK)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(caller._closed.wait(), caller.drain_s)
