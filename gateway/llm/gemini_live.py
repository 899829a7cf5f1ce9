"""Gemini Live bridge (``BidiGenerateContent`` over WebSocket) with seamless resumption.

:class:`GeminiLiveBridge` is the asyncio layer over ``websockets`` and the sans-I/O
:class:`~gateway.llm.gemini_protocol.LiveProtocol` (re-exported here). On ``goAway`` or an
abnormal close it reconnects with the latest handle **without dropping the call**: caller
input sent since that handle was issued is replayed, input arriving during the gap is buffered
and sent after ``setupComplete``, and the greeting is never sent again.

Endpoint (ai.google.dev/api/live): ``wss://generativelanguage.googleapis.com/ws/
google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent``; the key goes in
the ``x-goog-api-key`` header as the ``google-genai`` SDK sends it (the ``?key=`` query form the
docs also show would put the key into URLs that end up in logs). Audio: input L16 16 kHz
(``audio/pcm;rate=16000``), output L16 24 kHz. A rejected key shows up as a close frame
(1007/1008 "API key not valid") after ``setup``, or as HTTP 401/403 on the handshake.

Replay follows the SDK's documented advice for ``last_consumed_client_message_index``
("buffer messages sent since last SessionResumptionTokenUpdate"); the exact index
(``transparent`` resumption) is Vertex-only, so input in flight while a handle is issued may
be missing from the resumed state.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from gateway.formats import L16_16K, L16_24K, AudioFormat
from gateway.llm.base import (
    AgentConfig,
    BridgeError,
    BridgeEvent,
    BridgeFailed,
    ModelBridge,
    TurnVerdict,
)
from gateway.llm.common import agent_tools, redact
from gateway.llm.gemini_protocol import GEMINI_VOICES, LiveProtocol
from gateway.llm.tool_runner import ToolRunner
from gateway.llm.tools import ToolCall
from gateway.llm.ws_client import (
    RECONNECT_LIMIT,
    RECONNECT_WINDOW_S,
    ReconnectBudget,
    close_code,
    close_quietly,
    open_socket,
)
from gateway.netpolicy import OutboundPolicy

__all__ = ["LiveProtocol", "GeminiLiveBridge", "GEMINI_LIVE_URL", "GEMINI_VOICES"]

log = logging.getLogger(__name__)

GEMINI_LIVE_URL = (
    "wss://generativelanguage.googleapis.com/ws/"
    "google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
)
#: Words in a close reason that mean the key was refused.
_AUTH_HINTS = ("api key", "api_key", "permission", "unauthenticated", "unauthorized", "credential")


def _failed(events: list[BridgeEvent]) -> bool:
    return bool(events) and isinstance(events[-1], BridgeError) and events[-1].fatal


class GeminiLiveBridge(ModelBridge):
    """A call's connection to Gemini Live.

    Args:
        model: model name, e.g. ``gemini-2.5-flash-native-audio-preview-09-2025``.
        api_key: Gemini API key (never logged nor shown in ``repr``).
        url: the ``BidiGenerateContent`` WebSocket endpoint (tests point it at loopback).
        tool_client: HTTP client for tool calls (the app's shared one; not closed here); without
            it the call's tool runner makes (and closes) its own with ``tool_policy``.
        connect_timeout_s: handshake time limit; setup_timeout_s: wait for ``setupComplete``.
        max_reconnects: attempts per resumption before the call fails.
        replay_limit_bytes: cap on caller input kept for replay (oldest dropped first).
        backoff_s: delays between reconnect attempts (each earlier drop in the reconnect
            window starts one step further).
        reconnect_limit, reconnect_window_s: resumptions after drops allowed in any window
            (s); the next drop fails the call (``model_disconnected``). ``goAway`` resumptions
            are not counted. See :class:`~gateway.llm.ws_client.ReconnectBudget`.
    """

    name = "gemini"

    def __init__(
        self,
        model: str,
        api_key: str,
        *,
        url: str = GEMINI_LIVE_URL,
        tool_client: httpx.AsyncClient | None = None,
        tool_policy: OutboundPolicy | None = None,
        connect_timeout_s: float = 10.0,
        setup_timeout_s: float = 10.0,
        max_reconnects: int = 4,
        replay_limit_bytes: int = 8 * 1024 * 1024,
        backoff_s: Sequence[float] = (0.0, 0.25, 1.0, 2.0),
        reconnect_limit: int = RECONNECT_LIMIT,
        reconnect_window_s: float = RECONNECT_WINDOW_S,
    ) -> None:
        self._model = model
        self.__key = api_key
        self._url = url
        self._tool_client = tool_client
        self._tool_policy = tool_policy
        self._connect_timeout_s = connect_timeout_s
        self._setup_timeout_s = setup_timeout_s
        self._max_reconnects = max_reconnects
        self._replay_limit = replay_limit_bytes
        self._backoff = tuple(backoff_s) or (0.0,)
        self._budget = ReconnectBudget(reconnect_limit, reconnect_window_s)
        self._escalate = 0  # backoff steps to skip in the resumption under way
        self.input_format = L16_16K
        self.output_format = L16_24K
        self._proto: LiveProtocol | None = None
        self._runner: ToolRunner | None = None
        self._ws: ClientConnection | None = None
        self._live = False  # input goes straight to the socket (False while resuming)
        self._since_handle: deque[str] = deque()  # input sent since the latest handle
        self._since_bytes = 0
        self._unsent: list[str] = []  # input that arrived while resuming
        self._send_lock = asyncio.Lock()
        self._early: deque[BridgeEvent] = deque()
        self._closing = False
        self.reconnects = 0

    def __repr__(self) -> str:
        return f"GeminiLiveBridge(model={self._model!r})"

    @property
    def protocol(self) -> LiveProtocol:
        """The protocol state (after :meth:`start`)."""
        if self._proto is None:
            raise RuntimeError("bridge not started")
        return self._proto

    def _redact(self, text: str) -> str:
        return redact(text, self.__key)

    async def _open(self) -> tuple[ClientConnection, list[BridgeEvent]]:
        """Connect, send ``setup`` (with the latest handle) and wait for ``setupComplete``."""
        assert self._proto is not None
        ws = await open_socket(
            self._url,
            {"x-goog-api-key": self.__key},
            peer="gemini",
            open_timeout_s=self._connect_timeout_s,
        )
        proto = self._proto
        proto.setup_complete = False
        proto.go_away = False
        early: list[BridgeEvent] = []
        try:
            try:
                await ws.send(orjson.dumps(proto.setup_message()).decode())
                async with asyncio.timeout(self._setup_timeout_s):
                    while not proto.setup_complete:
                        early += proto.receive(await ws.recv())
            except TimeoutError:
                raise BridgeFailed("model_setup", "gemini did not complete the setup") from None
            except ConnectionClosed as exc:
                reason = self._redact(exc.rcvd.reason if exc.rcvd else "")
                label = "model_auth" if any(h in reason.lower() for h in _AUTH_HINTS) else "model_setup"
                message = f"gemini closed during setup ({close_code(exc)} {reason})".strip()
                raise BridgeFailed(label, message) from None
        except BaseException:  # failure, cancellation or a bug: never leave the socket open
            ws.transport.abort()  # no closing handshake to wait for (cancellation-safe)
            raise
        return ws, early

    async def start(self, config: AgentConfig, carrier_format: AudioFormat) -> None:
        tools = agent_tools(config)
        self._proto = LiveProtocol(config, self._model, tools)
        self._runner = ToolRunner(tools, client=self._tool_client, policy=self._tool_policy)
        try:
            self._ws, early = await self._open()
            self._early.extend(early)
            self._live = True
            greeting = self._proto.greeting_message() if config.first_speaker == "agent" else None
            if greeting is not None:  # sent once per call, never replayed on resumption
                await self._ws.send(orjson.dumps(greeting).decode())
        except BaseException:
            await self.close()
            raise
        log.info("gemini live session ready (%s)", self._model)

    async def _send_input(self, msg: dict[str, Any], *, replay: bool = True) -> None:
        """Send caller input, keeping it for replay (unless ``replay`` is False); buffer it
        while resuming."""
        text = orjson.dumps(msg).decode()
        async with self._send_lock:
            if self._live and self._ws is not None:
                try:
                    await self._ws.send(text)
                except ConnectionClosed:
                    self._live = False
                    self._unsent.append(text)
                    return
                if not replay:
                    return
                self._since_handle.append(text)
                self._since_bytes += len(text)
                while self._since_bytes > self._replay_limit and self._since_handle:
                    self._since_bytes -= len(self._since_handle.popleft())
            else:
                self._unsent.append(text)

    async def send_audio(self, audio: bytes) -> None:
        if self._proto is None or self._closing or not audio:
            return
        for chunk in self._proto.input_audio(audio):
            await self._send_input(self._proto.audio_message(chunk))

    async def turn_verdict(self, verdict: TurnVerdict) -> None:
        if self._proto is None or self._closing:
            return
        for chunk in self._proto.turn_verdict(verdict):
            await self._send_input(self._proto.audio_message(chunk))

    async def speech_started(self) -> None:
        if self._proto is None or self._closing or self._proto.config.turn_mode != "gateway":
            return
        msg = self._proto.activity_start()
        if msg is not None:
            await self._send_input(msg)

    async def end_of_turn(self) -> None:
        if self._proto is None or self._closing or self._proto.config.turn_mode != "gateway":
            return
        msg = self._proto.activity_end()
        if msg is not None:
            await self._send_input(msg)

    async def interrupt(self, item_id: str | None, heard_ms: int) -> None:
        if self._proto is not None:
            self._proto.interrupt(item_id, heard_ms)

    async def say(self, text: str) -> None:
        if self._proto is None or self._closing or not text.strip():
            return
        await self._send_input(self._proto.say_message(text), replay=False)

    def _start_tools(self) -> None:
        assert self._proto is not None and self._runner is not None
        for call in self._proto.take_tool_calls():
            self._runner.submit(call, self._tool_output)

    async def _tool_output(self, call: ToolCall, output: str) -> None:
        assert self._proto is not None
        if not self._closing:
            await self._send_input(self._proto.tool_response(call, output))

    async def _resume(self) -> list[BridgeEvent]:
        """Reconnect with the latest handle and replay caller input the new session lacks.

        Raises:
            BridgeFailed: every attempt failed, or the key was rejected.
        """
        assert self._proto is not None
        self._live = False
        out = self._proto.abort_turn()
        if self._proto.handle is None:
            # Nothing to resume: a fresh session would answer the whole call's input again.
            raise BridgeFailed(
                "model_disconnected", "gemini connection lost before any resumption handle"
            )
        await close_quietly(self._ws, timeout_s=1)
        last: BridgeFailed | None = None
        for attempt in range(self._max_reconnects):
            await asyncio.sleep(self._backoff[min(attempt + self._escalate, len(self._backoff) - 1)])
            if self._closing:
                return out
            try:
                ws, early = await self._open()
            except BridgeFailed as exc:
                last = exc
                if exc.code == "model_auth":
                    raise
                if exc.code == "model_setup" and self._proto.handle:
                    # The handle may have expired: go on in a fresh session rather than hang up.
                    log.warning("gemini refused the resumption handle; starting a fresh session")
                    self._proto.handle = None
                continue
            out += early
            async with self._send_lock:
                try:
                    for text in self._since_handle:
                        await ws.send(text)
                    for text in self._unsent:
                        await ws.send(text)
                except ConnectionClosed:
                    self._ws = ws
                    return out  # events() sees the closure and resumes again
                for text in self._unsent:
                    self._since_handle.append(text)
                    self._since_bytes += len(text)
                self._unsent.clear()
                self._ws = ws
                self._live = True
            self.reconnects += 1
            log.info("gemini session resumed (attempt %d)", attempt + 1)
            return out
        raise last or BridgeFailed("model_disconnected", "gemini connection lost")

    async def events(self) -> AsyncIterator[BridgeEvent]:
        if self._proto is None or self._ws is None:
            raise RuntimeError("bridge not started")
        proto = self._proto
        while self._early:
            yield self._early.popleft()
        while not self._closing:
            ws = self._ws
            try:
                raw = await ws.recv()
            except ConnectionClosed as exc:
                if self._closing:
                    break
                log.info("gemini connection closed (%s); resuming", close_code(exc))
                resumed = await self._try_resume(dropped=True)
                for ev in resumed:
                    yield ev
                if _failed(resumed):
                    break
                continue
            for ev in proto.receive(raw):
                yield ev
            if proto.take_handle_update():
                self._since_handle.clear()  # the new handle's state includes all of it
                self._since_bytes = 0
            self._start_tools()
            if proto.go_away and not self._closing:
                resumed = await self._try_resume()
                for ev in resumed:
                    yield ev
                if _failed(resumed):
                    break
        for transcript in proto.flush_transcripts():
            yield transcript

    async def _try_resume(self, *, dropped: bool = False) -> list[BridgeEvent]:
        """Resume (see :meth:`_resume`); a drop takes one reconnect from the call's budget."""
        self._escalate = self._budget.recent if dropped else 0
        if dropped and not self._budget.take():
            assert self._proto is not None
            events = self._proto.abort_turn()
            return [*events, BridgeError("model_disconnected", self._budget.refusal("gemini"), fatal=True)]
        try:
            return await self._resume()
        except BridgeFailed as exc:
            if self._closing:
                return []
            fatal_code = "model_auth" if exc.code == "model_auth" else "model_disconnected"
            return [BridgeError(fatal_code, self._redact(str(exc)), fatal=True)]

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._live = False
        if self._runner is not None:
            await self._runner.aclose()  # cancels tool calls still running
        await close_quietly(self._ws, timeout_s=2)
