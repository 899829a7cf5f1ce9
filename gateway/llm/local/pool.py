"""A small pool of engine worker processes for the local agent (recognition and synthesis).

Each worker is a fresh interpreter started with ``subprocess`` (never a fork of a process that
runs an event loop and threads; unlike ``multiprocessing``'s spawn, the parent's ``__main__`` is
not re-run) that runs :func:`gateway.llm.local.worker.main` on a ``multiprocessing`` pipe. The gateway
talks to it over one duplex pipe through two threads of its own (a sender draining an
unbounded outbox, so the caller never blocks on a full pipe, and a receiver resolving
``concurrent.futures.Future`` objects), plus one supervisor thread for the whole pool:

- an utterance sticks to the worker it began on (its decoder lives there): ``begin``,
  ``feed`` and ``finish`` of one handle go to the same process, in order;
- a worker handles one request at a time and says ``("started", rid)`` when it takes one up,
  so time spent queued behind other requests is not mistaken for a hang. A worker with
  requests outstanding must say something (``started``, an answer) at least every
  ``request_timeout_s``: one that stays silent longer (a request running too long, or audio
  feeds that never end) is killed as hung;
- time in the queue has its own, larger bound (``queue_timeout_s``): a request still waiting
  then fails with :class:`WorkerBusy` and is skipped by the worker (``drop``, confirmed by
  ``dropped``), which lives on; a worker silent while it owes answers is still killed;
- admission control: ``begin`` and ``synthesize`` on a worker with ``max_queue`` requests
  already waiting raise :class:`WorkerBusy` at once (the turn fails, the queue stays short);
- a worker that dies (exit code, EOF on its pipe, killed for a deadline) fails its in-flight
  requests and the open utterances on it with :class:`WorkerCrashed`, and a replacement is
  started (with back-off while workers keep dying before they are ready);
- recognition priors are calibrated by the first worker and handed to every later one;
- a failure to start a process at all (``EAGAIN``, ``EMFILE``) is retried with back-off by the
  supervisor, which survives it; meanwhile requests fail at once with an :class:`EngineError`
  that says why.

Nothing here blocks without a limit, and nothing uses asyncio or the default thread pool: the
async facade is :class:`gateway.llm.local.remote.LocalEngines`, which awaits these futures.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import multiprocessing
import threading
import time
from concurrent.futures import Future
from typing import Any

from gateway.llm.local.pool_parts import (
    EngineError,
    UtteranceHandle,
    WorkerBusy,
    WorkerCrashed,
    WorkerTimeout,
    _Request,
    _resolve,
    _Worker,
)
from gateway.llm.local.process import WorkerProcess

__all__ = ["WorkerPool", "UtteranceHandle", "EngineError", "WorkerBusy", "WorkerCrashed", "WorkerTimeout"]

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 30.0


class WorkerPool:
    """Worker processes running pocketsphinx and Piper, shared by every local-agent call.

    Args:
        size: worker processes (``GATEWAY_LOCAL_WORKERS``).
        max_decoders: concurrent utterances per worker (one pocketsphinx decoder each).
        request_timeout_s: the most a request may run once its worker took it up, and the
            longest a worker with requests outstanding may stay silent (s); beyond it the
            worker is killed as hung.
        queue_timeout_s: the most a request may wait before its worker takes it up (s); beyond
            it the request fails with :class:`WorkerBusy` (the worker lives on).
        max_queue: requests that may wait per worker; ``begin`` and ``synthesize`` beyond it
            raise :class:`WorkerBusy`.
        start_timeout_s: the most a worker may take to load its models (s).
        niceness: added to each worker's nice value, so pacing calls wins the CPU.
    """

    def __init__(self, *, size: int = 2, max_decoders: int = 4, request_timeout_s: float = 20.0,
                 queue_timeout_s: float = 30.0, max_queue: int = 8, start_timeout_s: float = 120.0,
                 niceness: int = 10) -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one worker")
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.size = size
        self.request_timeout_s = request_timeout_s
        self.queue_timeout_s = queue_timeout_s
        self.max_queue = max_queue
        self._start_timeout_s = start_timeout_s
        self._config: dict[str, Any] = {"max_decoders": max_decoders, "niceness": niceness, "cmn_priors": None}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._workers: list[_Worker] = []
        self._ids = itertools.count(1)
        self._started = False
        self._closing = False
        self._young_deaths = 0
        self._spawn_failures = 0
        self._spawn_error: str | None = None
        self._respawn_at = 0.0
        self.restarts = 0
        #: Requests a worker confirmed it skipped, never run (they had outwaited the queue bound).
        self.skipped = 0
        #: Resolved once every first-generation worker has loaded its models.
        self.ready: Future = Future()

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the workers and the supervisor (idempotent; returns at once)."""
        with self._lock:
            if self._started or self._closing:
                return
            self._started = True
        atexit.register(self.close)  # workers ignore SIGTERM: kill them when this process exits
        workers = [self._first_spawn(i) for i in range(self.size)]
        with self._lock:
            self._workers = workers
        threading.Thread(target=self._supervise, name="engine-pool-supervisor", daemon=True).start()

    def wait_ready(self, timeout_s: float) -> None:
        """Start if needed and block until every worker is ready.

        Raises:
            TimeoutError: they were not ready within ``timeout_s`` seconds.
        """
        self.start()
        self.ready.result(timeout=timeout_s)

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop every worker (killed: they hold nothing worth saving); fail what is in flight."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            workers = list(self._workers)
        atexit.unregister(self.close)
        self._wake.set()
        for w in workers:
            self._retire(w, "the engine pool closed")
        deadline = time.monotonic() + timeout_s
        for w in workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
        if not self.ready.done():
            _resolve(self.ready, error=EngineError("the engine pool closed before it was ready"))

    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        with self._lock:
            return [w.pid for w in self._workers if w.dead is None and w.pid is not None]

    # ----------------------------------------------------------------- requests
    def begin(self, band: str) -> UtteranceHandle:
        """Open an utterance on the least-loaded worker (no reply: failures surface at finish).

        Raises:
            EngineError: the pool is closed or has no live worker; :class:`WorkerBusy` if the
                chosen worker already has ``max_queue`` requests waiting.
        """
        w = self._pick(admit=True)
        handle = UtteranceHandle(next(self._ids), w)
        with self._lock:
            if w.dead is None:
                w.open.add(handle.uid)
                w.outbox.put(("begin", handle.uid, band))
        return handle

    def feed(self, handle: UtteranceHandle, pcm: bytes) -> None:
        """Queue 16 kHz int16 audio for the utterance (never blocks)."""
        if not handle.closed and handle.worker.dead is None and pcm:
            handle.worker.outbox.put(("feed", handle.uid, pcm))

    def finish(self, handle: UtteranceHandle) -> Future:
        """End the utterance: a future of its text, or of an :class:`EngineError`."""
        if handle.result is None:
            handle.closed = True
            w = handle.worker
            with self._lock:
                w.open.discard(handle.uid)
            handle.result = self._request(w, lambda rid: ("finish", rid, handle.uid), "recognition")
        return handle.result

    def abort(self, handle: UtteranceHandle) -> None:
        """Drop the utterance: its queued audio is not decoded and its decoder is released."""
        if handle.result is not None and not handle.result.done():
            handle.result.cancel()
        if handle.closed and handle.result is None:
            return
        handle.closed = True
        w = handle.worker
        with self._lock:
            w.open.discard(handle.uid)
            if w.dead is None:
                w.outbox.put(("abort", handle.uid))

    def synthesize(self, text: str) -> Future:
        """A future of ``text`` spoken: int16 little-endian bytes at the voice's rate.

        Raises:
            EngineError: as :meth:`begin` (refused at once; the future's errors come later).
        """
        return self._request(self._pick(admit=True), lambda rid: ("tts", rid, text), "synthesis")

    def _request(self, w: _Worker, build, what: str) -> Future:
        fut: Future = Future()
        rid = next(self._ids)
        with self._lock:
            dead = w.dead
            if dead is None:
                w.inflight[rid] = _Request(fut, time.monotonic())
                w.outbox.put(build(rid))
        if dead is not None:
            _resolve(fut, error=WorkerCrashed(f"{what} failed: {dead}"))
        return fut

    def _pick(self, *, admit: bool = False) -> _Worker:
        """The least-loaded live worker (ready ones first); ``admit``: refuse a full queue."""
        self.start()
        with self._lock:
            if self._closing:
                raise EngineError("the engine pool is closed")
            alive = [w for w in self._workers if w.dead is None]
            if not alive:
                raise WorkerCrashed(self._spawn_error or "no engine worker is running (a replacement is starting)")
            w = min(alive, key=lambda w: (w.ready_at is None, w.queued, w.load))
            if admit and w.queued >= self.max_queue:
                raise WorkerBusy(f"the engine workers are busy ({w.queued} requests waiting on the least loaded)")
            return w

    # ----------------------------------------------------------------- workers
    def _spawn(self, index: int) -> _Worker:
        """Start a worker process and its two threads.

        Raises:
            OSError: no pipe or process (``EMFILE``, ``EAGAIN``); RuntimeError: no thread.
                Nothing is left behind.
        """
        parent, child = multiprocessing.Pipe(duplex=True)
        with self._lock:
            config = dict(self._config)
        try:
            process = WorkerProcess.start(child.fileno())
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        w = _Worker(index, process, parent)
        w.outbox.put(config)  # the worker's first message: how to set itself up
        try:
            threading.Thread(target=self._send_loop, args=(w,), name=f"engine-{index}-send", daemon=True).start()
            threading.Thread(target=self._recv_loop, args=(w,), name=f"engine-{index}-recv", daemon=True).start()
        except BaseException:
            w.outbox.put(None)
            process.kill()
            parent.close()
            raise
        log.info("engine worker %d starting (pid %s)", index, process.pid)
        return w

    def _first_spawn(self, index: int) -> _Worker:
        """:meth:`_spawn`, or a dead slot the supervisor fills later if the process cannot start."""
        try:
            return self._spawn(index)
        except Exception as exc:  # noqa: BLE001 - EAGAIN/EMFILE: retried by the supervisor
            return _Worker.unstarted(index, self._spawn_failed(index, exc))

    def _spawn_failed(self, index: int, exc: Exception) -> str:
        """Note a failed start: back off (0.5 s doubling to 30 s); the reason callers see."""
        with self._lock:
            self._spawn_failures += 1
            delay = min(_MAX_BACKOFF_S, 0.5 * 2 ** (self._spawn_failures - 1))
            self._respawn_at = time.monotonic() + delay
            reason = f"{type(exc).__name__}: {exc}"
            self._spawn_error = f"no engine worker is running: one could not be started ({reason}); retrying in {delay:g} s"
        log.error("engine worker %d could not be started (%s); retrying in %g s", index, reason, delay)
        return reason

    def _send_loop(self, w: _Worker) -> None:
        while True:
            msg = w.outbox.get()
            if msg is None:
                return
            try:
                w.conn.send(msg)
            except (OSError, ValueError, EOFError):
                self._retire(w, "its pipe broke")
                return

    def _recv_loop(self, w: _Worker) -> None:
        while True:
            try:
                msg = w.conn.recv()
            except (EOFError, OSError, ValueError):
                break
            except Exception:  # noqa: BLE001 - an unreadable message: the worker is unusable
                log.exception("engine worker %d sent an unreadable message", w.index)
                break
            if msg[0] == "ready":
                self._on_ready(w, msg[1], msg[2])
                continue
            with self._lock:
                w.heard_at = time.monotonic()
                if msg[0] == "started":
                    entry = w.inflight.get(msg[1])
                    if entry is not None:
                        entry.started_at = w.heard_at
                    continue
                entry = w.inflight.pop(msg[1], None)  # answered, or skipped ("dropped")
                if msg[0] == "dropped":
                    self.skipped += 1
            if entry is not None and msg[0] != "dropped":  # a dropped one has failed already
                if msg[0] == "ok":
                    _resolve(entry.future, result=msg[2])
                else:
                    _resolve(entry.future, error=EngineError(str(msg[2])))
        w.process.join(1.0)
        self._retire(w, f"exit code {w.process.exitcode}")
        w.conn.close()

    def _on_ready(self, w: _Worker, pid: int, priors: dict[str, str]) -> None:
        with self._lock:
            w.pid, w.ready_at = pid, time.monotonic()
            w.heard_at = w.ready_at
            self._young_deaths = 0
            if not self._config["cmn_priors"]:
                self._config["cmn_priors"] = priors
            all_ready = len(self._workers) == self.size and all(x.ready_at for x in self._workers)
        log.info("engine worker %d ready (pid %d) in %.1f s", w.index, pid, w.ready_at - w.started_at)
        if all_ready and not self.ready.done():
            _resolve(self.ready, result=None)

    def _retire(self, w: _Worker, reason: str, error: type[WorkerCrashed] = WorkerCrashed) -> None:
        """Mark ``w`` dead, kill it, fail its requests with ``error``; replace it (unless closing
        or backing off)."""
        with self._lock:
            if w.dead is not None:
                return
            w.dead = f"engine worker {w.index} (pid {w.pid}) stopped: {reason}"
            failed = [entry.future for entry in w.inflight.values()]
            w.inflight.clear()
            w.open.clear()
            closing = self._closing
            if not closing and w.ready_at is None:
                self._young_deaths += 1  # died loading its models: back off before the next
            delay = 0.0 if self._young_deaths == 0 else min(_MAX_BACKOFF_S, 0.5 * 2 ** self._young_deaths)
            self._respawn_at = time.monotonic() + delay
        w.outbox.put(None)  # the sender stops; the receiver sees EOF and closes the pipe
        if w.process.is_alive():
            w.process.kill()
        if not closing:
            log.warning("%s; failing %d request(s)", w.dead, len(failed))
        for fut in failed:
            _resolve(fut, error=error(w.dead))
        if not closing and delay == 0.0:
            self._replace(w)
        self._wake.set()

    def _replace(self, w: _Worker) -> None:
        """Start a fresh process for dead ``w``'s slot (``w`` keeps the slot until it is up)."""
        with self._lock:
            if self._closing or w.replacing or w not in self._workers:
                return
            w.replacing = True
        try:
            fresh = self._spawn(w.index)
        except Exception as exc:  # noqa: BLE001 - EAGAIN/EMFILE: the supervisor retries later
            self._spawn_failed(w.index, exc)
            with self._lock:
                w.replacing = False
            return
        with self._lock:
            self._spawn_failures, self._spawn_error = 0, None
            closing = self._closing
            if not closing:
                self._workers[self._workers.index(w)] = fresh
                self.restarts += 1
        if closing:
            self._retire(fresh, "the engine pool closed")

    def _supervise(self) -> None:
        """Every 0.25 s: retire dead, unstarted or hung workers, expire long-queued requests,
        restart after back-off. An unexpected error is logged, never the end of this thread."""
        while True:
            self._wake.wait(0.25)
            self._wake.clear()
            with self._lock:
                if self._closing:
                    return
                workers = list(self._workers)
                respawn_at = self._respawn_at
            try:
                self._sweep(workers, respawn_at)
            except Exception:  # noqa: BLE001 - the supervisor must outlive any one failure
                log.exception("engine pool supervisor: sweep failed; carrying on")

    def _sweep(self, workers: list[_Worker], respawn_at: float) -> None:
        now = time.monotonic()
        for w in workers:
            if w.dead is None:
                reason = self._check(w, now)
                if reason:
                    self._retire(w, *reason)
            elif now >= respawn_at:
                self._replace(w)

    def _check(self, w: _Worker, now: float) -> tuple[str, type[WorkerCrashed]] | None:
        """Why ``w`` must be retired (reason, error for its requests), or ``None``; fails
        requests that waited longer than ``queue_timeout_s`` and drops them from its queue."""
        if w.process.exitcode is not None:
            return f"exit code {w.process.exitcode}", WorkerCrashed
        if w.ready_at is None:
            if now - w.started_at > self._start_timeout_s:
                return f"not ready after {self._start_timeout_s:g} s", WorkerTimeout
            return None
        expired: list[Future] = []
        with self._lock:
            silent_since = max(w.heard_at, w.ready_at)
            for rid, req in w.inflight.items():
                if now - max(req.sent_at, silent_since) > self.request_timeout_s:
                    running = any(r.started_at is not None for r in w.inflight.values())
                    what = "a request took" if running else "the worker made no progress for"
                    return f"{what} longer than {self.request_timeout_s:g} s", WorkerTimeout
                if req.dropped:
                    continue
                if req.future.done():  # cancelled by whoever was waiting
                    req.dropped = True
                elif req.started_at is None and now - max(req.sent_at, w.ready_at) > self.queue_timeout_s:
                    req.dropped = True
                    expired.append(req.future)
                if req.dropped:
                    w.outbox.put(("drop", rid))
        for fut in expired:
            _resolve(fut, error=WorkerBusy(f"the request waited longer than {self.queue_timeout_s:g} s "
                                           f"for engine worker {w.index}"))
        return None
