"""Shared pieces of the loopback fake servers (:mod:`tests.llm.fake_openai`, :mod:`tests.llm.fake_gemini`).

Real recorded speech from ``../shared/audio`` and its wire encodings, the recording base both
servers build on (serve on 127.0.0.1, log the handshakes, record every client message and every
message sent, notify waiters on each), and the bridge-side :class:`Collector`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.conftest import SHARED_AUDIO, load_wav

SERVER_LOG = logging.getLogger("tests.fake_server")


# ---------------------------------------------------------------------------- audio helpers


def speech(name: str, rate: int) -> np.ndarray:
    """A real recording (``caller/hello`` or ``speech/cards-001``) as int16 at ``rate`` Hz."""
    pcm, sr = load_wav(Path(SHARED_AUDIO) / f"{name}.wav")
    if sr == rate:
        return pcm
    n = int(round(len(pcm) * rate / sr))
    t = np.arange(n) * (sr / rate)
    return np.clip(np.round(np.interp(t, np.arange(len(pcm)), pcm.astype(np.float64))), -32768, 32767).astype("<i2")


def transcript_of(name: str) -> str:
    path = Path(SHARED_AUDIO) / f"{name}.txt"
    return path.read_text().strip() if path.exists() else name


def encode(pcm: np.ndarray, fmt: dict[str, Any]) -> tuple[bytes, int]:
    """``pcm`` (int16) in the session's wire format: (bytes, bytes per ms)."""
    kind = fmt.get("type")
    if kind in ("audio/pcmu", "audio/pcma"):
        try:
            from gateway.codecs import g711

            data = g711.ulaw_encode(pcm) if kind == "audio/pcmu" else g711.alaw_encode(pcm)
        except ImportError:  # pragma: no cover - codec layer not there yet
            import audioop

            raw = pcm.astype("<i2").tobytes()
            data = audioop.lin2ulaw(raw, 2) if kind == "audio/pcmu" else audioop.lin2alaw(raw, 2)
        return data, 8
    return pcm.astype("<i2").tobytes(), 2 * int(fmt.get("rate", 24000)) // 1000


# ---------------------------------------------------------------------------- server base


class _Recorder:
    """Shared bits: client message log, change notification, lifecycle, the live connection.

    Subclasses provide ``_check`` (the handshake), ``_handler`` (one connection) and ``_on``
    (one client message), and override ``_cancel_tasks`` to stop their background task.
    """

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self.handshakes: list[tuple[str, dict[str, str]]] = []
        self._changed = asyncio.Condition()
        self._server: Any = None
        self._conn: ServerConnection | None = None
        self.port = 0

    # lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._server = await serve(self._handler, "127.0.0.1", 0, process_request=self._check, logger=SERVER_LOG)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cancel_tasks()
        self._server.close()
        await self._server.wait_closed()

    def _cancel_tasks(self) -> None:
        """Cancel the server's background task (the reply being streamed), if any."""

    def _check(self, connection: ServerConnection, request: Any) -> Any:
        raise NotImplementedError

    async def _handler(self, conn: ServerConnection) -> None:
        raise NotImplementedError

    async def _on(self, msg: dict[str, Any]) -> None:
        raise NotImplementedError

    def _record_handshake(self, request: Any) -> dict[str, str]:
        """Log the upgrade request (path, lower-cased headers); return the headers."""
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        self.handshakes.append((request.path, headers))
        return headers

    # wire ------------------------------------------------------------------------------

    async def _send(self, record: dict[str, Any], wire: str | bytes) -> None:
        """Record ``record`` as sent, send ``wire`` on the live connection (if any), notify."""
        self.sent.append(record)
        if self._conn is not None:
            try:
                await self._conn.send(wire)
            except ConnectionClosed:
                pass
        await self._notify()

    async def _receive(self, conn: ServerConnection) -> None:
        """Record and handle every client message until ``conn`` ends (may raise ConnectionClosed)."""
        async for raw in conn:
            msg = json.loads(raw)
            self.received.append(msg)
            await self._on(msg)
            await self._notify()

    def drop(self) -> None:
        """Cut the TCP connection without a close frame."""
        if self._conn is not None:
            self._conn.transport.abort()

    # observation -----------------------------------------------------------------------

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds (re-checked on every message in or out)."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(predicate)

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m.get("type") == type_]


# ---------------------------------------------------------------------------- bridge side


class Collector:
    """Runs ``bridge.events()`` in a task (as the call session does) and records the events.

    ``async with Collector(bridge) as c`` closes the bridge and waits for the events to end.
    """

    def __init__(self, bridge: Any) -> None:
        self.bridge = bridge
        self.events: list[Any] = []
        self.finished = False
        self._cond = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        try:
            async for ev in self.bridge.events():
                self.events.append(ev)
                async with self._cond:
                    self._cond.notify_all()
        finally:
            self.finished = True
            async with self._cond:
                self._cond.notify_all()

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.bridge.close()
        assert self._task is not None
        async with asyncio.timeout(5):
            await self._task

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            async with self._cond:
                await self._cond.wait_for(lambda: predicate() or self.finished)
        assert predicate(), f"events ended first: {[e for e in self.events if type(e).__name__ != 'AudioOut']}"

    def of(self, cls: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]

    def audio(self, item_id: str | None = None) -> bytes:
        return b"".join(e.audio for e in self.events if type(e).__name__ == "AudioOut" and (item_id is None or e.item_id == item_id))

    def items(self) -> list[str]:
        return list(dict.fromkeys(e.item_id for e in self.events if type(e).__name__ == "AudioOut"))
