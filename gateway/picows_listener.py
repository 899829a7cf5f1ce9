"""The high-density media listener: carrier streams served by picows in the app's event loop.

With ``GATEWAY_MEDIA_LISTENER=picows`` the app's lifespan starts a :class:`PicowsMediaListener`
on ``GATEWAY_HOST``:``GATEWAY_MEDIA_PORT`` and the REST API hands out stream URLs on it
(:func:`gateway.api.urls.stream_url`, base from operator settings only). A stream is admitted
and served by :func:`gateway.streams.run_stream`, the same rules, close codes, Twilio signature
check (against the URL the carrier was given) and call sessions as the Starlette route; a
refused socket is upgraded and closed at once with its code. picows completes the upgrade
before the (asynchronous) admission, so the sockets of one call are admitted in the order they
connected: the first wins, as on the Starlette route, which admits before its upgrade. Paths
other than ``[<prefix>]/stream/{carrier}/{call_id}/{token}`` get ``404``; each upgrade request
is logged (``gateway.media``, INFO, ``"WebSocket <path>"``; the token is masked by
:mod:`gateway.logs`' handler filter).

The WebSocket protocol is picows's (RFC 6455): it answers pings, checks frames, refuses
frames over ``MAX_MESSAGE`` bytes with close code 1009, as uvicorn's ``ws_max_size`` does for
the Starlette route. :class:`PicowsTransport` adds what the session's
:class:`~gateway.session.common.Transport` needs: text frames as ``str``, binary as ``bytes``
(fragmented messages reassembled, at most ``MAX_MESSAGE`` bytes), a peer's close answered and
the socket closed, a bounded receive queue (reading from the socket pauses above
``RECV_HIGH_FRAMES`` frames or ``RECV_HIGH_BYTES`` bytes queued and resumes below a quarter of
them) and bounded sends (see :meth:`PicowsTransport.send`).

Sources: picows 2.3.1 ``WSListener`` / ``WSTransport`` (``picows/picows.pyx``); asyncio's flow
control (``pause_writing`` / ``resume_writing`` above the write buffer's high-water mark).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from urllib.parse import unquote

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSProtocolError, WSTransport, WSUpgradeRequest, ws_create_server

from gateway.api.urls import media_base, stream_path
from gateway.carriers import events as ev
from gateway.streams import Refusal, StreamRequest, run_stream

__all__ = ["PicowsMediaListener", "PicowsTransport", "MAX_MESSAGE"]

log = logging.getLogger("gateway.media")

#: Largest message taken (bytes), as the Starlette route's ``ws_max_size``.
MAX_MESSAGE = 1 << 20
#: Queued inbound frames above which reading from the socket pauses (~5 s of 20 ms frames).
RECV_HIGH_FRAMES = 256
#: Queued inbound bytes above which reading from the socket pauses.
RECV_HIGH_BYTES = 2 * MAX_MESSAGE
#: A send waiting this long (s) for the peer to drain gives up and drops the socket; the
#: session ends the call as ``carrier_stalled`` well before (its ``SEND_STALL_S``, 5 s).
SEND_LIMIT_S = 30.0
#: How long (s) a socket waits for an earlier socket of the same call to be admitted or refused.
ADMIT_ORDER_S = 10.0
#: How long (s) a close waits for the peer's close frame before dropping the connection.
CLOSE_WAIT_S = 2.0

_TEXT, _BINARY, _CONT, _CLOSE = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION, WSMsgType.CLOSE


class PicowsTransport:
    """One picows connection as the session's :class:`~gateway.session.common.Transport`.

    Fed by :class:`_StreamListener`'s callbacks (the event loop's thread; nothing blocks).
    ``closed`` turns true once a close was sent or received or the connection is gone.
    """

    def __init__(self, ws: WSTransport) -> None:
        self.ws = ws
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._frames: deque[ev.Frame] = deque()
        self._queued_bytes = 0
        self._reading_paused = False
        self._eof = False  # nothing more will be queued
        self._waiter: asyncio.Future[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._sending_since: float | None = None
        self._gone = asyncio.Event()  # the connection is disconnected

    # ------------------------------------------------------------ listener side
    def _push(self, frame: ev.Frame) -> None:
        self._frames.append(frame)
        self._queued_bytes += len(frame)
        self._wake()
        if not self._reading_paused and (len(self._frames) > RECV_HIGH_FRAMES or self._queued_bytes > RECV_HIGH_BYTES):
            self._reading_paused = True
            self.ws.underlying_transport.pause_reading()

    def _peer_closed(self, frame: WSFrame) -> None:
        """The peer's close frame: answered (its code echoed, RFC 6455 §5.5.1), then dropped."""
        if not self.ws.is_close_frame_sent:
            code = frame.get_close_code()
            if code in (WSCloseCode.NO_INFO, 1005):
                self.ws.send_close()
            else:
                self.ws.send_close(code)
        self.ws.disconnect()
        self._end()

    def _disconnected(self) -> None:
        self._gone.set()
        self._end()

    def _end(self) -> None:
        self.closed = True
        self._eof = True
        self._writable.set()  # a send waiting for the peer gives up
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _pause_writing(self) -> None:
        self._writable.clear()

    def _resume_writing(self) -> None:
        self._writable.set()

    # ------------------------------------------------------------ session side
    async def receive(self) -> ev.Frame | None:
        """The next message (text: ``str``, binary: ``bytes``), or ``None`` once the peer has
        closed and every message queued before has been taken."""
        frames = self._frames
        while not frames:
            if self._eof:
                return None
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                if self._waiter is waiter:  # a cancelled receive never clears another's waiter
                    self._waiter = None
        frame = frames.popleft()
        self._queued_bytes -= len(frame)
        if self._reading_paused and len(frames) <= RECV_HIGH_FRAMES // 4 and self._queued_bytes <= RECV_HIGH_BYTES // 4:
            self._reading_paused = False
            if not self._eof:
                self.ws.underlying_transport.resume_reading()
        return frame

    async def send(self, frame: ev.Frame) -> None:
        """Send one message (``str``: text, else binary); a no-op once closed.

        While the socket's write buffer is over its high-water mark (the peer stopped reading),
        waits for it to drain first: :meth:`send_pending_s` tells the session how long, and
        after :data:`SEND_LIMIT_S` the connection is dropped.
        """
        if self.closed:
            return
        if not self._writable.is_set():
            self._sending_since = time.monotonic()
            try:
                await asyncio.wait_for(self._writable.wait(), SEND_LIMIT_S)
            except TimeoutError:
                log.warning("carrier socket took nothing for %.0f s; dropped", SEND_LIMIT_S)
                self.ws.disconnect(graceful=False)
                self._end()
                return
            finally:
                self._sending_since = None
            if self.closed:
                return
        self.ws.send(_TEXT if isinstance(frame, str) else _BINARY, frame)

    def send_pending_s(self) -> float:
        """How long the send in progress has waited for the peer to take it (s; 0: none)."""
        since = self._sending_since
        return 0.0 if since is None else time.monotonic() - since

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame with ``code`` and ``reason`` (at most 123 bytes, RFC 6455 §5.5),
        wait up to :data:`CLOSE_WAIT_S` for the peer's answer, then close the connection."""
        already = self.closed
        self.closed = True
        if self._gone.is_set():
            return
        if not already and not self.ws.is_close_frame_sent:
            self.ws.send_close(code, reason.encode()[:123])
        try:
            await asyncio.wait_for(self._gone.wait(), CLOSE_WAIT_S)
        except TimeoutError:
            self.ws.disconnect(graceful=False)
        finally:
            self.ws.disconnect()  # a no-op once gone


class _PicowsChannel:
    """:class:`gateway.streams.StreamChannel` of a connection upgraded before admission."""

    def __init__(self, transport: PicowsTransport) -> None:
        self.transport = transport

    async def refuse(self, refusal: Refusal) -> None:
        await self.transport.close(refusal.code, refusal.reason)

    async def accept(self) -> PicowsTransport:
        if self.transport._gone.is_set():
            raise ConnectionError("the peer left before the stream was admitted")
        return self.transport


class _StreamListener(WSListener):
    """picows callbacks of one stream connection: frames into its :class:`PicowsTransport`,
    and the stream served (:func:`gateway.streams.run_stream`) in a task of its own."""

    def __init__(self, owner: PicowsMediaListener, request: StreamRequest) -> None:
        super().__init__()
        self.owner, self.request = owner, request
        self.transport: PicowsTransport | None = None
        self._parts: list[bytes] = []  # a fragmented message so far
        self._parts_size = 0
        self._parts_text = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = PicowsTransport(transport)
        self.owner._spawn(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        t = self.transport
        kind = frame.msg_type
        if kind is _TEXT or kind is _BINARY:
            if frame.fin and not self._parts:
                t._push(_text(frame.get_payload_as_bytes()) if kind is _TEXT else frame.get_payload_as_bytes())
                return
            if self._parts:
                raise WSProtocolError(WSCloseCode.PROTOCOL_ERROR, "a new message inside a fragmented one")
            self._parts_text = kind is _TEXT
            self._add_part(frame)
        elif kind is _CONT:
            if not self._parts:
                raise WSProtocolError(WSCloseCode.PROTOCOL_ERROR, "a continuation frame with no message")
            self._add_part(frame)
        elif kind is _CLOSE:
            t._peer_closed(frame)

    def _add_part(self, frame: WSFrame) -> None:
        self._parts_size += frame.payload_size
        if self._parts_size > MAX_MESSAGE:
            raise WSProtocolError(WSCloseCode.MESSAGE_TOO_BIG, f"message over {MAX_MESSAGE} bytes")
        self._parts.append(frame.get_payload_as_bytes())
        if frame.fin:
            data = b"".join(self._parts)
            self._parts, self._parts_size = [], 0
            self.transport._push(_text(data) if self._parts_text else data)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.transport is not None:
            self.transport._disconnected()

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport._pause_writing()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.transport._resume_writing()


def _text(data: bytes) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise WSProtocolError(WSCloseCode.INVALID_TEXT, "a text message that is not UTF-8") from None


class PicowsMediaListener:
    """The picows server for carrier media streams (one per app; started by its lifespan).

    Args:
        services: the app's :class:`gateway.app.Services` (store, live calls, settings:
            ``host``, ``media_port`` and the stream URLs' base, :func:`media_base`).
    """

    def __init__(self, services) -> None:
        self.services = services
        settings = services.settings
        self.host, self.port = settings.host, settings.media_port
        self.base = media_base(settings)  # raises ValueError before anything listens
        prefix = re.escape(self.base.partition("://")[2].partition("/")[2].rstrip("/"))
        self._path = re.compile(rf"(?:/{prefix})?/stream/([^/]+)/([^/]+)/([^/]+)" if prefix else
                                r"/stream/([^/]+)/([^/]+)/([^/]+)")
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self._listeners: set[_StreamListener] = set()
        #: Call id → the admission in progress of the last socket that came for it.
        self._admissions: dict[str, asyncio.Future[None]] = {}

    async def start(self) -> None:
        """Listen on ``host``:``media_port``. Raises OSError (e.g. the port is taken)."""
        self._server = await ws_create_server(
            self._route, self.host, self.port, max_frame_size=MAX_MESSAGE, websocket_handshake_timeout=5,
            enable_auto_pong=True, logger_name="media",
        )
        log.info("picows media listener on %s:%d (stream URLs %s/stream/…)", self.host, self.port, self.base)

    def _route(self, request: WSUpgradeRequest) -> _StreamListener | None:
        """The listener of a stream path (``None``: 404)."""
        path = request.path.decode("latin-1").partition("?")[0]
        match = self._path.fullmatch(path)
        log.info('"WebSocket %s" %s', path, "upgrade" if match else "404")
        if match is None:
            return None
        carrier, call_id, token = (unquote(part) for part in match.groups())
        url = self.base + stream_path(carrier, call_id, token)
        return _StreamListener(self, StreamRequest(carrier, call_id, token, request.headers, url))

    def _spawn(self, listener: _StreamListener) -> None:
        self._listeners.add(listener)
        task = asyncio.get_running_loop().create_task(self._serve(listener))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, listener: _StreamListener) -> None:
        """Admit and serve one connection; admissions of one call id go in arrival order."""
        transport, call_id = listener.transport, listener.request.call_id
        before = self._admissions.get(call_id)
        mine = self._admissions[call_id] = asyncio.get_running_loop().create_future()

        def admitted() -> None:
            if not mine.done():
                mine.set_result(None)
            if self._admissions.get(call_id) is mine:
                del self._admissions[call_id]

        try:
            if before is not None:  # an earlier socket for this call is being admitted
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(before), ADMIT_ORDER_S)
            await run_stream(self.services, listener.request, _PicowsChannel(transport), admitted)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one stream's bug never takes the listener down
            log.exception("stream %s failed", listener.request.call_id)
            await transport.close(1011, "internal error")
        finally:
            admitted()
            self._listeners.discard(listener)
            if not transport._gone.is_set():
                await transport.close(1000, "")

    def stop_listening(self) -> None:
        """Accept no new connections (those open go on)."""
        if self._server is not None:
            self._server.close()

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Stop listening, close what is still open with 1001 "going away", wait up to
        ``timeout_s`` for the streams' tasks, then cancel what is left (a session still
        finalises its record when cancelled)."""
        self.stop_listening()
        for listener in list(self._listeners):
            transport = listener.transport
            if transport is not None and not transport.closed:  # not a session's yet, or stuck
                transport.closed = True
                transport.ws.send_close(WSCloseCode.GOING_AWAY, b"going away")
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=timeout_s)
        for listener in list(self._listeners):
            if listener.transport is not None:
                listener.transport.ws.disconnect(graceful=False)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
