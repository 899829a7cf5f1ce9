"""WebSocket client plumbing the realtime socket bridges share (OpenAI Realtime, Gemini Live).

The asyncio half of :mod:`gateway.llm.common` (which stays pure): how a bridge opens its model
socket and names a refused handshake, the close code of a dropped socket, and a bounded close.
Everything about one model's messages and setup stays in its bridge module.

Reconnects after a dropped socket have a per-call budget (:class:`ReconnectBudget`): at most
:data:`RECONNECT_LIMIT` (5) in any :data:`RECONNECT_WINDOW_S` (10 minutes) sliding window; the
next drop fails the call (``model_disconnected``), so a server that accepts and then drops every
session cannot keep a call reconnecting for ever. Each drop inside the window also starts
:func:`open_with_retries` one step further along its backoff (0 s only for the first).
Planned renewals (OpenAI rollovers, Gemini ``goAway``) are not counted.

Sources: ``websockets`` asyncio client (https://websockets.readthedocs.io/en/stable/reference/
asyncio/client.html): ``connect`` options, ``InvalidStatus`` for a non-101 answer,
``ConnectionClosed.rcvd`` (``None`` when no close frame arrived: RFC 6455 §7.1.5 code 1006).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.proxy import get_proxy
from websockets.uri import parse_uri

from gateway.llm.base import BridgeFailed
from gateway.llm.common import WIRE_LOG
from gateway.resolver import default_resolver

__all__ = [
    "open_socket", "close_code", "close_quietly", "open_with_retries", "ReconnectBudget",
    "RECONNECT_LIMIT", "RECONNECT_WINDOW_S",
]  # fmt: skip

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Reconnects (after drops) a call may make in any :data:`RECONNECT_WINDOW_S`.
RECONNECT_LIMIT = 5
#: The sliding window (s) of :data:`RECONNECT_LIMIT`.
RECONNECT_WINDOW_S = 600.0


class ReconnectBudget:
    """At most ``limit`` reconnects in any ``window_s`` sliding window (one budget per call).

    Args:
        limit: reconnects allowed per window (0: none).
        window_s: the window (s).
        clock: monotonic seconds (tests inject a fake one).
    """

    def __init__(self, limit: int = RECONNECT_LIMIT, window_s: float = RECONNECT_WINDOW_S, *,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.limit = max(0, limit)
        self.window_s = window_s
        self._clock = clock
        self._times: deque[float] = deque()

    @property
    def recent(self) -> int:
        """Reconnects taken in the current window."""
        now = self._clock()
        while self._times and now - self._times[0] >= self.window_s:
            self._times.popleft()
        return len(self._times)

    def take(self) -> bool:
        """Count one reconnect; False (nothing counted) when the window's budget is spent."""
        if self.recent >= self.limit:
            return False
        self._times.append(self._clock())
        return True

    def refusal(self, peer: str) -> str:
        """The message of the failure once the budget is spent."""
        return (f"{peer} dropped the connection more than {self.limit} times in "
                f"{self.window_s:g} s: not reconnecting again")  # fmt: skip


async def open_socket(
    url: str,
    headers: dict[str, str],
    *,
    peer: str,
    open_timeout_s: float,
    auth_text: str | None = None,
) -> ClientConnection:
    """Open a model socket: 16 MiB messages, no compression, 20 s pings, the redacting logger.

    Args:
        url: the ``wss://`` endpoint.
        headers: handshake headers (credentials; :data:`WIRE_LOG` blanks them in debug logs).
        peer: the model's name for error messages (``openai``, ``gemini`` …).
        open_timeout_s: handshake time limit (s).
        auth_text: message for HTTP 401/403, before `` (HTTP <status>)``; default
            ``"<peer> refused the connection"``.

    Raises:
        BridgeFailed: ``model_auth`` (HTTP 401/403), ``model_connect`` (any other refusal,
            unreachable host, timeout, bad URL); messages name the peer and status, never a key.
    """
    try:
        async with asyncio.timeout(open_timeout_s):  # resolution, connection and handshake
            return await _connect(url, headers, open_timeout_s)
    except InvalidStatus as exc:
        status = exc.response.status_code
        refused = f"{peer} refused the connection"
        if status in (401, 403):
            raise BridgeFailed("model_auth", f"{auth_text or refused} (HTTP {status})") from None
        raise BridgeFailed("model_connect", f"{refused} (HTTP {status})") from None
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        raise BridgeFailed("model_connect", f"cannot connect to {peer}: {type(exc).__name__}") from None


async def _connect(url: str, headers: dict[str, str], open_timeout_s: float) -> ClientConnection:
    """Resolve the host on the resolver pool, then connect to each address in turn (TLS and
    ``Host`` still use the name). With an environment proxy for ``url``, websockets connects
    through it as before."""
    options: dict[str, Any] = dict(
        additional_headers=headers, open_timeout=open_timeout_s, max_size=2**24, compression=None,
        ping_interval=20, ping_timeout=20, logger=WIRE_LOG,
    )  # fmt: skip
    uri = parse_uri(url)
    if get_proxy(uri) is not None:
        return await connect(url, **options)
    if uri.secure:
        options["ssl"] = _ws_ssl_context()
    infos = await default_resolver().getaddrinfo(uri.host, uri.port, type=socket.SOCK_STREAM,
                                                 timeout_s=open_timeout_s)  # fmt: skip
    addrs = list(dict.fromkeys(str(info[4][0]) for info in infos))
    error: OSError | None = None
    for addr in addrs:
        try:
            return await connect(url, host=addr, port=uri.port, proxy=None, **options)
        except OSError as exc:  # refused or unreachable: the next address
            error = exc
    raise error or OSError(f"{uri.host} resolves to no address")


_ssl_context: ssl.SSLContext | None = None


def _ws_ssl_context() -> ssl.SSLContext:
    """One client TLS context for every model socket (``ssl.create_default_context()``, what
    websockets builds per connection for ``wss://``), created on first use."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = ssl.create_default_context()
    return _ssl_context


def close_code(exc: ConnectionClosed) -> int:
    """The close code the peer sent, or 1006 (abnormal closure) if no close frame arrived."""
    return exc.rcvd.code if exc.rcvd else 1006


async def close_quietly(ws: ClientConnection | None, *, timeout_s: float) -> None:
    """Close ``ws`` (if any), waiting at most ``timeout_s`` for the closing handshake; never raises
    for a peer that is slow or already gone."""
    if ws is None:
        return
    try:
        async with asyncio.timeout(timeout_s):
            await ws.close()
    except (TimeoutError, OSError):
        pass


async def open_with_retries(
    open_once: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    backoff_s: Sequence[float],
    stop: Callable[[], bool],
    peer: str,
    escalate: int = 0,
) -> tuple[T | None, int]:
    """Open a model session again after a drop (or for a new one), with bounded retries.

    Attempt ``i`` (from 0) waits ``backoff_s[i + escalate]`` first (the last delay repeats);
    each attempt's own waits are ``open_once``'s (its handshake and setup timeouts).

    Args:
        open_once: one attempt (connect and set up), raising :class:`BridgeFailed` on failure.
        attempts: at most this many attempts (at least 1).
        backoff_s: delays (s) before each attempt.
        stop: checked before each attempt: true (the bridge is closing) ends the loop.
        peer: the model's name for log lines.
        escalate: backoff steps to skip (earlier drops in the reconnect window: a server that
            keeps dropping is not retried at once).

    Returns:
        ``(what open_once returned, attempts used)``; ``(None, n)`` if ``stop()`` turned true.

    Raises:
        BridgeFailed: ``model_auth`` at once (a refused key does not get better), else the last
            failure once every attempt failed.
    """
    delays = tuple(backoff_s) or (0.0,)
    last: BridgeFailed | None = None
    for attempt in range(max(1, attempts)):
        delay = delays[min(attempt + max(0, escalate), len(delays) - 1)]
        if delay > 0:
            await asyncio.sleep(delay)
        if stop():
            return None, attempt
        try:
            return await open_once(), attempt + 1
        except BridgeFailed as exc:
            if exc.code == "model_auth":
                raise
            last = exc
            log.warning("%s: attempt %d to open a session failed: %s", peer, attempt + 1, exc)
    assert last is not None
    raise last
