"""OpenAI Realtime (GA) bridge, also for Azure OpenAI, xAI and OpenAI-compatible servers.

The asyncio layer over ``websockets``: connect, send the outbox of the sans-I/O
:class:`~gateway.llm.openai_protocol.RealtimeProtocol`, read server events in
:meth:`~OpenAIRealtimeBridge.events`, forward function calls to HTTPS tools
(:mod:`gateway.llm.tool_runner`), end the call before the 60-minute session limit. The servers
and their switches are in :mod:`gateway.llm.openai_backends`; the names those modules define
are re-exported here.

Handshake: ``Authorization: Bearer`` (no ``OpenAI-Beta`` header), Azure's ``api-key`` header.
A refused key (HTTP 401/403) fails :meth:`~OpenAIRealtimeBridge.start` with ``model_auth``; a
dropped connection ends :meth:`~OpenAIRealtimeBridge.events` with a fatal
``model_disconnected`` error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

import httpx
import orjson
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from gateway.formats import AudioFormat
from gateway.llm.base import AgentConfig, BridgeError, BridgeEvent, BridgeFailed, ModelBridge
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
from gateway.llm.ws_client import close_code, close_quietly, open_socket

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
        tool_client: HTTP client for tool calls (tests); one is created otherwise.
        clock: monotonic seconds, for the session limit (tests inject a fake one).
        session_limit_s: the server's session limit (OpenAI: 60 minutes).
        session_limit_margin_s: end the call this long before the limit.
        connect_timeout_s: WebSocket handshake time limit.
        setup_timeout_s: time allowed for ``session.updated`` after ``session.update``.
        poll_s: longest wait between session-limit checks while the server is silent.
    """

    def __init__(
        self,
        backend: RealtimeBackend,
        api_key: str,
        *,
        tool_client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        session_limit_s: float = 3600.0,
        session_limit_margin_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        setup_timeout_s: float = 10.0,
        poll_s: float = 0.5,
    ) -> None:
        self.name = backend.name
        self._backend = backend
        self.__key = api_key
        self._tool_client = tool_client
        self._clock = clock
        self._limit_s = session_limit_s
        self._margin_s = session_limit_margin_s
        self._connect_timeout_s = connect_timeout_s
        self._setup_timeout_s = setup_timeout_s
        self._poll_s = poll_s
        self._ws: ClientConnection | None = None
        self._proto: RealtimeProtocol | None = None
        self._runner: ToolRunner | None = None
        self._early: deque[BridgeEvent] = deque()
        self._send_lock = asyncio.Lock()
        self._deadline = float("inf")
        self._closing = False

    def __repr__(self) -> str:
        b = self._backend
        return f"OpenAIRealtimeBridge(backend={b.name!r}, model={b.model!r})"

    @property
    def protocol(self) -> RealtimeProtocol:
        """The protocol state (after :meth:`start`)."""
        if self._proto is None:
            raise RuntimeError("bridge not started")
        return self._proto

    def _redact(self, text: str) -> str:
        return redact(text, self.__key)

    async def _connect(self) -> ClientConnection:
        b = self._backend
        return await open_socket(
            b.url,
            b.auth_headers(self.__key),
            peer=b.name,
            open_timeout_s=self._connect_timeout_s,
            auth_text=f"{b.name} rejected the credentials",
        )

    async def start(self, config: AgentConfig, carrier_format: AudioFormat) -> None:
        tools = agent_tools(config)
        wire, fmt = choose_formats(self._backend, carrier_format)
        self.input_format = self.output_format = fmt
        self._proto = RealtimeProtocol(
            self._backend, config, wire_format=wire, audio_format=fmt, tools=tools
        )
        self._runner = ToolRunner(tools, client=self._tool_client)
        self._ws = await self._connect()
        self._deadline = self._clock() + self._limit_s - self._margin_s
        try:
            self._proto.session_update()
            await self._flush()
            await self._await_session()
            if config.first_speaker == "agent":
                self._proto.greeting()
                await self._flush()
        except BaseException:
            await self.close()
            raise
        log.info("%s realtime session ready (%s, %s)", self.name, self._backend.model, fmt)

    async def _await_session(self) -> None:
        assert self._ws is not None and self._proto is not None
        loop = asyncio.get_running_loop()
        wait_s = self._setup_timeout_s
        if not self._backend.require_session_updated:
            wait_s = min(wait_s, 2.0)  # some compatible servers never confirm: do not stall
        deadline = loop.time() + wait_s
        while not self._proto.session_ready:
            try:
                async with asyncio.timeout_at(deadline):
                    raw = await self._ws.recv()
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
            for ev in self._proto.receive(raw):
                if isinstance(ev, BridgeError) and ev.fatal:
                    lowered = ev.message.lower()
                    code = "model_auth" if any(h in lowered for h in AUTH_HINTS) else "model_setup"
                    raise BridgeFailed(code, self._redact(ev.message))
                self._early.append(ev)

    async def _flush(self) -> None:
        """Send the protocol's queued client events, in order."""
        if self._ws is None or self._proto is None:
            return
        async with self._send_lock:
            for event in self._proto.data_to_send():
                try:
                    await self._ws.send(orjson.dumps(event).decode())
                except ConnectionClosed:
                    return  # events() reports the disconnect

    async def send_audio(self, audio: bytes) -> None:
        if self._proto is None or self._closing:
            return
        self._proto.append_audio(audio)
        await self._flush()

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

    def _start_tools(self) -> None:
        assert self._proto is not None and self._runner is not None
        for call in self._proto.take_tool_calls():
            self._runner.submit(call, self._tool_output)

    async def _tool_output(self, call: ToolCall, output: str) -> None:
        assert self._proto is not None
        if self._closing:
            return
        self._proto.tool_output(call.call_id, output)
        await self._flush()

    async def events(self) -> AsyncIterator[BridgeEvent]:
        if self._ws is None or self._proto is None:
            raise RuntimeError("bridge not started")
        ws, proto = self._ws, self._proto
        while self._early:
            yield self._early.popleft()
        while not self._closing:
            remaining = self._deadline - self._clock()
            if remaining <= 0:
                yield BridgeError(
                    "model_session_limit",
                    f"{self.name} session limit reached ({self._limit_s / 60:.0f} min)",
                    fatal=True,
                )
                break
            try:
                async with asyncio.timeout(min(remaining, self._poll_s)):
                    raw = await ws.recv()
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                if self._closing:
                    break
                yield BridgeError(
                    "model_disconnected",
                    f"{self.name} connection dropped ({close_code(exc)})",
                    fatal=True,
                )
                break
            for ev in proto.receive(raw):
                if isinstance(ev, BridgeError):
                    ev = BridgeError(ev.code, self._redact(ev.message), ev.fatal)
                yield ev
            self._start_tools()
            await self._flush()
        for transcript in proto.flush_transcripts():
            yield transcript

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._runner is not None:
            await self._runner.aclose()  # cancels tool calls still running
        await close_quietly(self._ws, timeout_s=2)
