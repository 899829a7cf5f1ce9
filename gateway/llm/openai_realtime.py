"""OpenAI Realtime (GA) bridge, also for Azure OpenAI, xAI and OpenAI-compatible servers.

The asyncio layer over ``websockets``: connect, send the outbox of the sans-I/O
:class:`~gateway.llm.openai_protocol.RealtimeProtocol`, read server events in
:meth:`~OpenAIRealtimeBridge.events`, forward function calls to HTTPS tools
(:mod:`gateway.llm.tool_runner`). The servers and their switches are in
:mod:`gateway.llm.openai_backends`; the names those modules define are re-exported here.

Handshake: ``Authorization: Bearer`` (no ``OpenAI-Beta`` header), Azure's ``api-key`` header.
A refused key (HTTP 401/403) fails :meth:`~OpenAIRealtimeBridge.start` with ``model_auth``.

Session rollover and reconnect: a hosted session lasts at most 60 minutes (the server then
sends ``error`` code ``session_expired``; platform.openai.com/docs/guides/realtime). Within
``rollover_window_s`` of the deadline (``session_limit_s - session_limit_margin_s`` after the
session opened) the bridge moves the call to a new session at the first moment between turns
(no response running or owed, the caller silent, every transcript in), at the deadline at the
latest; after an unexpected close (or an early ``session_expired``) it does the same at once.
The new session gets the agent's instructions and the conversation so far as items
(:mod:`gateway.llm.openai_history`), never the greeting; caller audio arriving meanwhile is
held (up to ``hold_limit_bytes``) and sent to it. Opening it is tried ``max_reconnects``
times with ``backoff_s`` between attempts; each success is reported as
:class:`~gateway.llm.base.SessionRenewed` by :meth:`~OpenAIRealtimeBridge.events`. A refused
key ends the call (fatal ``model_auth``), as do exhausted attempts (``model_disconnected``
after a drop, ``model_session_limit`` for a rollover).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Literal

import httpx
import orjson
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from gateway.formats import AudioFormat
from gateway.llm.base import (
    AgentConfig,
    BridgeError,
    BridgeEvent,
    BridgeFailed,
    ModelBridge,
    SessionRenewed,
    TurnVerdict,
)
from gateway.llm.common import WIRE_LOG, agent_tools, cut_heard_text, redact
from gateway.llm.openai_backends import (
    OPENAI_VOICES,
    XAI_VOICES,
    RealtimeBackend,
    azure_backend,
    choose_formats,
    compat_backend,
    openai_backend,
    xai_backend,
)
from gateway.llm.openai_protocol import AUTH_HINTS, RealtimeProtocol
from gateway.llm.tool_runner import ToolRunner
from gateway.llm.tools import ToolCall
from gateway.llm.ws_client import (
    RECONNECT_LIMIT,
    RECONNECT_WINDOW_S,
    ReconnectBudget,
    close_code,
    close_quietly,
    open_socket,
    open_with_retries,
)
from gateway.netpolicy import OutboundPolicy

__all__ = [
    "RealtimeBackend",
    "RealtimeProtocol",
    "OpenAIRealtimeBridge",
    "openai_backend",
    "azure_backend",
    "xai_backend",
    "compat_backend",
    "choose_formats",
    "cut_heard_text",
    "redact",
    "WIRE_LOG",
    "OPENAI_VOICES",
    "XAI_VOICES",
]

log = logging.getLogger(__name__)


class OpenAIRealtimeBridge(ModelBridge):
    """A call's connection to an OpenAI-Realtime-shaped server.

    Args:
        backend: which server (see :func:`openai_backend`, :func:`azure_backend`, …).
        api_key: credential for the handshake (never logged nor shown in ``repr``).
        tool_client: HTTP client for tool calls (the app's shared one; not closed here); without
            it the call's :class:`~gateway.llm.tool_runner.ToolRunner` makes (and closes) its
            own with ``tool_policy`` (default: no allow-list).
        clock: monotonic seconds, for the session limit (tests inject a fake one).
        session_limit_s: the server's session limit (OpenAI: 60 minutes).
        session_limit_margin_s: have moved to a new session this long before the limit (at
            most half the limit is used as margin).
        rollover_window_s: how long before that deadline to look for a moment between turns;
            default ``min(300, (limit - margin) / 2)``.
        connect_timeout_s: WebSocket handshake time limit (each attempt).
        setup_timeout_s: time allowed for ``session.updated`` after ``session.update``.
        poll_s: longest wait between session-limit checks while the server is silent.
        max_reconnects: attempts to open a replacement session before the call fails.
        reconnect_limit, reconnect_window_s: reconnects after drops allowed in any window (s);
            the next drop fails the call (``model_disconnected``); see
            :class:`~gateway.llm.ws_client.ReconnectBudget`.
        backoff_s: delays (s) before those attempts (the last one repeats).
        hold_limit_bytes: caller audio held while a replacement session opens (newer dropped).
    """

    def __init__(
        self,
        backend: RealtimeBackend,
        api_key: str,
        *,
        tool_client: httpx.AsyncClient | None = None,
        tool_policy: OutboundPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        session_limit_s: float = 3600.0,
        session_limit_margin_s: float = 30.0,
        rollover_window_s: float | None = None,
        connect_timeout_s: float = 10.0,
        setup_timeout_s: float = 10.0,
        poll_s: float = 0.5,
        max_reconnects: int = 4,
        backoff_s: Sequence[float] = (0.0, 0.25, 1.0, 2.0),
        hold_limit_bytes: int = 2 << 20,
        reconnect_limit: int = RECONNECT_LIMIT,
        reconnect_window_s: float = RECONNECT_WINDOW_S,
    ) -> None:
        self.name = backend.name
        self._backend = backend
        self.__key = api_key
        self._tool_client = tool_client
        self._tool_policy = tool_policy
        self._clock = clock
        self._limit_s = session_limit_s
        self._margin_s = session_limit_margin_s
        # A margin as long as the limit would renew the session at once, again and again.
        self._deadline_s = max(session_limit_s - session_limit_margin_s, session_limit_s / 2)
        default_window = min(300.0, self._deadline_s / 2)
        self._window_s = default_window if rollover_window_s is None else rollover_window_s
        self._connect_timeout_s = connect_timeout_s
        self._setup_timeout_s = setup_timeout_s
        self._poll_s = poll_s
        self._max_reconnects = max_reconnects
        self._backoff = tuple(backoff_s)
        self._budget = ReconnectBudget(reconnect_limit, reconnect_window_s, clock=clock)
        self._hold_limit = hold_limit_bytes
        self._config: AgentConfig | None = None
        self._wire: dict[str, Any] = {}
        self._ws: ClientConnection | None = None
        self._proto: RealtimeProtocol | None = None
        self._runner: ToolRunner | None = None
        self._early: deque[BridgeEvent] = deque()
        self._send_lock = asyncio.Lock()
        self._opened_at = 0.0  # clock() when the current session was opened
        self._live = False  # client events go to the socket (False while a session opens)
        self._held_bytes = 0
        self._closing = False
        #: Sessions renewed (rollovers, reconnects) and caller audio bytes dropped while held.
        self.rollovers = 0
        self.reconnects = 0
        self.dropped_bytes = 0

    def __repr__(self) -> str:
        b = self._backend
        return f"OpenAIRealtimeBridge(backend={b.name!r}, model={b.model!r})"

    @property
    def protocol(self) -> RealtimeProtocol:
        """The protocol state of the current session (after :meth:`start`)."""
        if self._proto is None:
            raise RuntimeError("bridge not started")
        return self._proto

    def _redact(self, text: str) -> str:
        return redact(text, self.__key)

    def _new_protocol(self, *, continuing: bool) -> tuple[RealtimeProtocol, dict[str, Any]]:
        """A fresh protocol and its ``session.update`` (taken out of the outbox: the first
        event of every attempt to open the session)."""
        assert self._config is not None
        proto = RealtimeProtocol(
            self._backend,
            self._config,
            wire_format=self._wire,
            audio_format=self.input_format,
            tools=self._runner.specs if self._runner is not None else (),
        )
        setup = proto.session_update(continuing=continuing)
        proto.data_to_send()
        return proto, setup

    async def _open(self, proto: RealtimeProtocol, setup: dict[str, Any]) -> ClientConnection:
        """Connect, send ``session.update`` and wait for ``session.updated``.

        Raises:
            BridgeFailed: ``model_auth``, ``model_connect`` or ``model_setup``.
        """
        b = self._backend
        ws = await open_socket(
            b.url,
            b.auth_headers(self.__key),
            peer=b.name,
            open_timeout_s=self._connect_timeout_s,
            auth_text=f"{b.name} rejected the credentials",
        )
        try:
            proto.session_ready = False
            try:
                await ws.send(orjson.dumps(setup).decode())
            except ConnectionClosed as exc:
                raise BridgeFailed("model_setup", f"{b.name} closed at once ({close_code(exc)})") from None
            await self._await_session(ws, proto)
        except BaseException:
            ws.transport.abort()  # no closing handshake to wait for (cancellation-safe)
            raise
        return ws

    async def start(self, config: AgentConfig, carrier_format: AudioFormat) -> None:
        tools = agent_tools(config)
        self._wire, fmt = choose_formats(self._backend, carrier_format)
        self.input_format = self.output_format = fmt
        self._config = config
        # xAI takes no interrupt_response: its VAD cuts the reply (see RealtimeCommands._turn_detection)
        self.model_interrupts = config.turn_mode != "gateway" and self._backend.session_style == "xai"
        self._runner = ToolRunner(tools, client=self._tool_client, policy=self._tool_policy)
        self._proto, setup = self._new_protocol(continuing=False)
        try:
            self._ws = await self._open(self._proto, setup)
            self._opened_at = self._clock()
            self._live = True
            if config.first_speaker == "agent":  # once per call: never in a later session
                self._proto.greeting()
            await self._flush()
        except BaseException:
            await self.close()
            raise
        log.info("%s realtime session ready (%s, %s)", self.name, self._backend.model, fmt)

    async def _await_session(self, ws: ClientConnection, proto: RealtimeProtocol) -> None:
        loop = asyncio.get_running_loop()
        wait_s = self._setup_timeout_s
        if not self._backend.require_session_updated:
            wait_s = min(wait_s, 2.0)  # some compatible servers never confirm: do not stall
        deadline = loop.time() + wait_s
        while not proto.session_ready:
            try:
                async with asyncio.timeout_at(deadline):
                    raw = await ws.recv()
            except TimeoutError:
                if self._backend.require_session_updated:
                    raise BridgeFailed(
                        "model_setup", f"{self.name} did not confirm the session"
                    ) from None
                return
            except ConnectionClosed as exc:
                raise BridgeFailed(
                    "model_setup", f"{self.name} closed during setup ({close_code(exc)})"
                ) from None
            for ev in proto.receive(raw):
                if isinstance(ev, BridgeError) and ev.fatal:
                    lowered = ev.message.lower()
                    code = "model_auth" if any(h in lowered for h in AUTH_HINTS) else "model_setup"
                    raise BridgeFailed(code, self._redact(ev.message))
                self._early.append(ev)

    async def _flush(self) -> None:
        """Send the current protocol's queued client events, in order (held while a session
        opens)."""
        async with self._send_lock:
            ws, proto = self._ws, self._proto
            if ws is None or proto is None or not self._live:
                return
            for event in proto.data_to_send():
                try:
                    await ws.send(orjson.dumps(event).decode())
                except ConnectionClosed:
                    return  # events() reports the disconnect

    async def send_audio(self, audio: bytes) -> None:
        if self._proto is None or self._closing:
            return
        if not self._live:
            if self._held_bytes + len(audio) > self._hold_limit:
                self.dropped_bytes += len(audio)
                return
            self._held_bytes += len(audio)
        self._proto.append_audio(audio)
        await self._flush()

    async def speech_started(self) -> None:
        if self._proto is not None and not self._closing:
            self._proto.speech_started()

    async def end_of_turn(self) -> None:
        if self._proto is None or self._closing:
            return
        self._proto.end_of_turn()
        await self._flush()

    async def interrupt(self, item_id: str | None, heard_ms: int) -> None:
        if self._proto is None or self._closing:
            return
        self._proto.interrupt(item_id, heard_ms)
        await self._flush()

    async def say(self, text: str) -> None:
        if self._proto is None or self._closing:
            return
        self._proto.say(text)
        await self._flush()

    async def turn_verdict(self, verdict: TurnVerdict) -> None:
        if self._proto is None or self._closing:
            return
        self._proto.turn_verdict(verdict)
        await self._flush()

    def _start_tools(self) -> None:
        assert self._proto is not None and self._runner is not None
        for call in self._proto.take_tool_calls():
            self._runner.submit(call, self._tool_output)

    async def _tool_output(self, call: ToolCall, output: str) -> None:
        if self._closing or self._proto is None:
            return
        self._proto.tool_output(call.call_id, output)  # the current session's: it knows the call
        await self._flush()

    def _rollover_due(self) -> bool:
        assert self._proto is not None
        age = self._clock() - self._opened_at
        deadline = self._deadline_s
        return age >= deadline or (age >= deadline - self._window_s and self._proto.idle)

    def _wait_s(self) -> float:
        """How long the next read may wait: the poll interval, less near the deadline."""
        age = self._clock() - self._opened_at
        return max(0.0, min(self._poll_s, self._deadline_s - age))

    async def _renew(self, reason: Literal["rollover", "reconnect"]) -> list[BridgeEvent]:
        """Move the call to a new session carrying the conversation; see the module doc.

        Returns the old session's last events, then :class:`SessionRenewed`, or a fatal
        :class:`BridgeError` if no session could be opened.
        """
        assert self._proto is not None
        escalate = self._budget.recent
        if reason == "reconnect" and not self._budget.take():
            await close_quietly(self._ws, timeout_s=1)
            message = self._budget.refusal(self.name)
            return [*self._proto.abort(), BridgeError("model_disconnected", message, fatal=True)]
        loop = asyncio.get_running_loop()
        began = loop.time()
        old, old_ws = self._proto, self._ws
        new, setup = self._new_protocol(continuing=True)
        self._live = False  # from here caller input queues in the new session's outbox
        self._held_bytes = 0
        out = old.abort()
        carried = new.carry_from(old)
        self._proto = new
        await close_quietly(old_ws, timeout_s=1)
        log.info("%s: %s to a new session (%d items carried)", self.name, reason, carried)
        try:
            ws, attempts = await open_with_retries(
                lambda: self._open(new, setup),
                attempts=self._max_reconnects,
                backoff_s=self._backoff,
                stop=lambda: self._closing,
                peer=self.name,
                escalate=escalate if reason == "reconnect" else 0,
            )
        except BridgeFailed as exc:
            failed = "model_disconnected" if reason == "reconnect" else "model_session_limit"
            code = "model_auth" if exc.code == "model_auth" else failed
            return [*out, BridgeError(code, self._redact(f"{reason} failed: {exc}"), fatal=True)]
        if ws is None or self._closing:
            await close_quietly(ws, timeout_s=1)
            return out
        self._ws, self._opened_at, self._live = ws, self._clock(), True
        await self._flush()
        if reason == "rollover":
            self.rollovers += 1
        else:
            self.reconnects += 1
        gap_ms = int((loop.time() - began) * 1000)
        out += [*self._early, SessionRenewed(reason, attempts, gap_ms, carried, new.replayed_bytes)]
        self._early.clear()
        return out

    async def events(self) -> AsyncIterator[BridgeEvent]:
        if self._ws is None or self._proto is None:
            raise RuntimeError("bridge not started")
        while self._early:
            yield self._early.popleft()
        while not self._closing:
            renew: Literal["rollover", "reconnect"] | None = None
            ws, proto = self._ws, self._proto
            if self._rollover_due():
                renew = "rollover"
            else:
                try:
                    async with asyncio.timeout(self._wait_s()):
                        raw = await ws.recv()
                except TimeoutError:
                    continue
                except ConnectionClosed as exc:
                    if self._closing:
                        break
                    log.warning("%s connection dropped (%s)", self.name, close_code(exc))
                    renew = "reconnect"
                else:
                    for ev in proto.receive(raw):
                        if isinstance(ev, BridgeError):
                            if ev.fatal and ev.code == "model_session_limit":
                                renew = "rollover"  # the server ended the session first
                                continue
                            ev = BridgeError(ev.code, self._redact(ev.message), ev.fatal)
                        yield ev
                    self._start_tools()
                    await self._flush()
            if renew is not None and not self._closing:
                renewed = await self._renew(renew)
                for ev in renewed:
                    yield ev
                if renewed and isinstance(renewed[-1], BridgeError):
                    break
        for transcript in self._proto.flush_transcripts():
            yield transcript

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._live = False
        if self._runner is not None:
            await self._runner.aclose()  # cancels tool calls still running
        await close_quietly(self._ws, timeout_s=2)
