"""The carrier media stream's Starlette WebSocket as a call session's transport.

:class:`StarletteTransport` adapts :class:`starlette.websockets.WebSocket` to
:class:`gateway.session.common.Transport` for :mod:`gateway.app`'s stream endpoint: text frames
come back as ``str``, binary frames as ``bytes``, and a disconnect (or a socket already gone) as
``None``; a send to a closed peer marks the transport closed rather than raising.
"""

from __future__ import annotations

import contextlib
import time

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from gateway.carriers import events as ev

__all__ = ["StarletteTransport", "StarletteChannel"]


class StarletteTransport:
    """A Starlette WebSocket as the session's :class:`~gateway.session.Transport`."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.closed = False
        self._sending_since: float | None = None

    async def receive(self) -> ev.Frame | None:
        if self.closed:
            return None
        try:
            msg = await self.ws.receive()
        except (WebSocketDisconnect, RuntimeError):
            self.closed = True
            return None
        if msg["type"] == "websocket.disconnect":
            self.closed = True
            return None
        text = msg.get("text")
        return text if text is not None else (msg.get("bytes") or b"")

    async def send(self, frame: ev.Frame) -> None:
        if self.closed:
            return
        self._sending_since = time.monotonic()
        try:
            if isinstance(frame, str):
                await self.ws.send_text(frame)
            else:
                await self.ws.send_bytes(frame)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.closed = True  # the receive side sees the close and ends the call
        finally:
            self._sending_since = None

    def send_pending_s(self) -> float:
        """How long the send in progress has waited for the peer to take it (s; 0: none)."""
        since = self._sending_since
        return 0.0 if since is None else time.monotonic() - since

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.ws.application_state == WebSocketState.CONNECTED and not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                await self.ws.close(code, reason)


class StarletteChannel:
    """The Starlette route's :class:`gateway.streams.StreamChannel`: a refused socket is
    accepted and then closed at once with the refusal's code, so the client sees why."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    async def refuse(self, refusal) -> None:
        await self.ws.accept()
        await self.ws.close(refusal.code, refusal.reason)

    async def accept(self) -> StarletteTransport:
        await self.ws.accept()
        return StarletteTransport(self.ws)
