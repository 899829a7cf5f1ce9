"""The local agent's speech engines as its bridge sees them: async, in worker processes.

:class:`LocalEngines` is the asyncio facade over :class:`~gateway.llm.local.pool.WorkerPool`:
it awaits the pool's thread-safe futures from whichever event loop calls it (the pool is not
bound to a loop, so one pool can serve several apps or test loops). Every await is bounded:
the pool kills a worker whose request outlives its deadline, and the facade adds its own outer
limit in case the pool itself is wedged.

Formats: recognition takes 16 kHz int16 little-endian mono bytes; synthesis returns int16
little-endian bytes at :attr:`LocalEngines.sample_rate` (the voice's rate, 22,050 Hz).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future

from gateway.llm.local.engines import voice_sample_rate
from gateway.llm.local.pool import (
    EngineError,
    UtteranceHandle,
    WorkerBusy,
    WorkerCrashed,
    WorkerPool,
    WorkerTimeout,
)

__all__ = ["LocalEngines", "RemoteUtterance", "EngineError", "WorkerBusy", "WorkerCrashed", "WorkerTimeout"]

_GRACE_S = 5.0


async def _bounded(fut: Future, limit_s: float, *, shared: bool = False):
    """Await a pool future for at most ``limit_s``; a ``shared`` one is never cancelled."""
    waiter = asyncio.wrap_future(fut)
    try:
        return await asyncio.wait_for(asyncio.shield(waiter) if shared else waiter, limit_s)
    except TimeoutError:
        if not shared:
            fut.cancel()
        raise WorkerTimeout(f"no answer from the engine pool within {limit_s:.0f} s") from None


class RemoteUtterance:
    """One caller utterance recognised in a worker process while it is spoken.

    :meth:`feed` and :meth:`abort` never block; :meth:`finish` awaits the text.
    """

    def __init__(self, engines: LocalEngines, handle: UtteranceHandle) -> None:
        self._engines = engines
        self._handle = handle

    def feed(self, pcm: bytes) -> None:
        """Queue the next audio: 16 kHz int16 little-endian mono bytes."""
        self._engines.pool.feed(self._handle, pcm)

    async def finish(self) -> str:
        """The recognised text, lower case (``""`` if nothing was recognised).

        Raises:
            EngineError: recognition failed (``WorkerCrashed`` if its worker died,
                ``WorkerTimeout`` if it took too long).
        """
        return await _bounded(self._engines.pool.finish(self._handle), self._engines.limit_s)

    def abort(self) -> None:
        """Drop the utterance: its pending audio is not decoded, its decoder is released."""
        self._engines.pool.abort(self._handle)


class LocalEngines:
    """The process-wide recognition and synthesis engines shared by every local-agent call.

    Args:
        workers: worker processes in the pool (``GATEWAY_LOCAL_WORKERS``).
        max_decoders: concurrent utterances per worker.
        request_timeout_s: the most one request may run once its worker took it up (s).
        queue_timeout_s: the most one request may wait for its worker (s); then it fails
            with :class:`WorkerBusy`.
        max_queue: requests that may wait per worker; more are refused (:class:`WorkerBusy`).
        start_timeout_s: the most a worker may take to load its models (s).
        niceness: added to the workers' nice value (the media loop wins the CPU).
    """

    def __init__(self, *, workers: int = 2, max_decoders: int = 4, request_timeout_s: float = 20.0,
                 queue_timeout_s: float = 30.0, max_queue: int = 8, start_timeout_s: float = 120.0,
                 niceness: int = 10) -> None:
        self.pool = WorkerPool(size=workers, max_decoders=max_decoders, request_timeout_s=request_timeout_s,
                               queue_timeout_s=queue_timeout_s, max_queue=max_queue,
                               start_timeout_s=start_timeout_s, niceness=niceness)
        #: Output rate of synthesis (Hz), read from the voice's config file without loading it.
        self.sample_rate = voice_sample_rate()
        #: Outer limit on any one await (s): a worker's start, a wait in its queue and a
        #: request, plus a grace.
        self.limit_s = start_timeout_s + queue_timeout_s + request_timeout_s + _GRACE_S

    def start(self) -> None:
        """Start the worker processes (returns at once; they load their models meanwhile)."""
        self.pool.start()

    def warm_up(self, timeout_s: float = 180.0) -> None:
        """Start the workers and block until each has loaded and calibrated (tools and tests).

        Raises:
            TimeoutError: the workers were not ready within ``timeout_s``.
        """
        self.pool.wait_ready(timeout_s)

    async def ready(self) -> None:
        """Start the workers and wait until each is ready (bounded by the pool's start limit)."""
        self.pool.start()
        await _bounded(self.pool.ready, self.limit_s, shared=True)

    def begin(self, band: str = "wide") -> RemoteUtterance:
        """Start recognising an utterance (``band``: ``narrow`` for 8 kHz carriers, else ``wide``).

        Raises:
            EngineError: no worker is running at this instant; :class:`WorkerBusy` if the
                workers' queues are full.
        """
        return RemoteUtterance(self, self.pool.begin(band))

    async def synthesize(self, text: str) -> bytes:
        """``text`` spoken by the bundled voice: int16 little-endian bytes at :attr:`sample_rate`.

        Raises:
            EngineError: synthesis failed (see :meth:`RemoteUtterance.finish`).
        """
        return await _bounded(self.pool.synthesize(text), self.limit_s)

    def close(self) -> None:
        """Stop the workers; requests still in flight fail with :class:`EngineError`."""
        self.pool.close()
