"""Name resolution for outbound connections on a few threads of its own (never the default executor).

``loop.getaddrinfo`` runs ``socket.getaddrinfo`` in the event loop's default executor, which
``asyncio.to_thread`` (every store call) shares; a timeout cancels the future, not the thread,
so a handful of lookups to a resolver that never answers (glibc: timeout × attempts × servers,
often 10–30 s) would make every store call wait. :class:`ResolverPool` runs lookups on
:data:`RESOLVER_THREADS` daemon threads and refuses a new lookup (:class:`ResolverBusy`) while
:data:`RESOLVER_MAX_PENDING` are queued or running, so lookups cannot pile up; a lookup whose
caller gave up before a thread took it is skipped. :func:`default_resolver` is the process-wide
pool (created lazily; daemon threads never hold up the interpreter's exit).

Users: :mod:`gateway.outbound` (tool calls, webhooks) and :mod:`gateway.llm.ws_client` (model
endpoints).
"""

from __future__ import annotations

import asyncio
import queue
import socket
import threading
from typing import Any

__all__ = ["ResolverBusy", "ResolverPool", "default_resolver", "RESOLVER_THREADS", "RESOLVER_MAX_PENDING"]

#: Threads of the process-wide pool (lookups running at once).
RESOLVER_THREADS = 4
#: Lookups queued or running at most; more are refused at once.
RESOLVER_MAX_PENDING = 64

AddrInfo = tuple[Any, ...]  # one ``socket.getaddrinfo`` entry: (family, type, proto, canonname, sockaddr)


class ResolverBusy(OSError):
    """Too many lookups are pending (or the pool is closed): refused without queueing."""


class ResolverPool:
    """``socket.getaddrinfo`` on ``threads`` daemon threads, at most ``max_pending`` lookups
    queued or running.

    Args:
        threads: worker threads (started on first use).
        max_pending: lookups queued or running before new ones are refused.
    """

    def __init__(self, threads: int = RESOLVER_THREADS, max_pending: int = RESOLVER_MAX_PENDING) -> None:
        self._threads_wanted = max(1, threads)
        self._max_pending = max(1, max_pending)
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0
        self._threads: list[threading.Thread] = []
        self._closed = False

    @property
    def pending(self) -> int:
        """Lookups queued or running now."""
        return self._pending

    async def getaddrinfo(self, host: str, port: int | str | None, *, type: int = 0,
                          timeout_s: float) -> list[AddrInfo]:  # fmt: skip
        """``socket.getaddrinfo(host, port, type=type)`` on the pool's threads.

        Raises:
            ResolverBusy: ``max_pending`` lookups are pending, or the pool is closed.
            OSError: the lookup failed (``socket.gaierror``).
            TimeoutError: no answer in ``timeout_s`` (the thread goes on; the answer is dropped).
        """
        with self._lock:
            if self._closed:
                raise ResolverBusy("the resolver is closed")
            if self._pending >= self._max_pending:
                raise ResolverBusy(f"{self._pending} DNS lookups pending")
            self._pending += 1
            if len(self._threads) < self._threads_wanted:
                self._start_thread()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[AddrInfo]] = loop.create_future()
        self._queue.put((host, port, type, loop, fut))
        async with asyncio.timeout(timeout_s):
            return await fut

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._work, name=f"resolver-{len(self._threads)}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            host, port, type_, loop, fut = item
            result: Any = None
            try:
                if not fut.done():  # else the caller gave up (timeout, cancellation) before its turn
                    result = socket.getaddrinfo(host, port, type=type_)
            except Exception as exc:  # noqa: BLE001 - handed to the caller
                result = exc
            finally:
                with self._lock:  # before the answer: the caller sees it counted out
                    self._pending -= 1
            if result is None:
                continue
            try:
                loop.call_soon_threadsafe(_settle, fut, result)
            except RuntimeError:  # the caller's loop is closed
                pass

    def close(self) -> None:
        """Refuse new lookups and let the threads end after the ones running (no wait)."""
        with self._lock:
            self._closed = True
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)


def _settle(fut: asyncio.Future[Any], result: Any) -> None:
    if fut.done():
        return
    if isinstance(result, BaseException):
        fut.set_exception(result)
    else:
        fut.set_result(result)


_default: ResolverPool | None = None
_default_lock = threading.Lock()


def default_resolver() -> ResolverPool:
    """The process-wide :class:`ResolverPool` (:data:`RESOLVER_THREADS`,
    :data:`RESOLVER_MAX_PENDING`), created on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ResolverPool()
        return _default
