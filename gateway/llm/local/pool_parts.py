"""The worker pool's pieces: its errors, a worker slot and what is in flight on it, and the
handle of one utterance (see :mod:`gateway.llm.local.pool`)."""

from __future__ import annotations

import queue
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

from gateway.llm.local.process import NoProcess, WorkerProcess

__all__ = ["EngineError", "WorkerBusy", "WorkerCrashed", "WorkerTimeout", "UtteranceHandle"]


class EngineError(RuntimeError):
    """A recognition or synthesis request failed: it costs the turn, not the call."""


class WorkerBusy(EngineError):
    """The workers are overloaded: the request was refused, or waited in the queue too long."""


class WorkerCrashed(EngineError):
    """The worker process serving the request died (or was killed) before answering."""


class WorkerTimeout(WorkerCrashed):
    """The request's deadline passed; its worker was killed and is being replaced."""


@dataclass(slots=True, eq=False)
class _Request:
    """A request sent to a worker: ``sent_at`` / ``started_at`` are ``time.monotonic()`` s;
    ``dropped``: a ``drop`` was sent (the future failed or was cancelled); the entry stays
    until the worker answers it or confirms it skipped it (``dropped``)."""

    future: Future
    sent_at: float
    started_at: float | None = None
    dropped: bool = False


class _Worker:
    """One worker process, its pipe, and what is in flight on it (guarded by the pool lock)."""

    def __init__(self, index: int, process: WorkerProcess | NoProcess, conn: Any) -> None:
        self.index = index
        self.process = process
        self.conn = conn
        self.pid: int | None = process.pid
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.inflight: dict[int, _Request] = {}
        self.open: set[int] = set()
        self.started_at = time.monotonic()
        self.ready_at: float | None = None
        self.heard_at = 0.0  # when it last said anything (ready, started, an answer)
        self.dead: str | None = None
        self.replacing = False

    @classmethod
    def unstarted(cls, index: int, reason: str) -> _Worker:
        """A dead slot whose process could not be started (replaced by the supervisor)."""
        w = cls(index, NoProcess(), None)
        w.dead = f"engine worker {index} could not start: {reason}"
        return w

    @property
    def load(self) -> int:
        return len(self.inflight) + len(self.open)

    @property
    def queued(self) -> int:
        """Requests sent and not yet taken up by the worker (dropped ones aside)."""
        return sum(1 for r in self.inflight.values() if r.started_at is None and not r.dropped)


@dataclass(eq=False)
class UtteranceHandle:
    """One utterance being recognised on one worker (from :meth:`WorkerPool.begin`)."""

    uid: int
    worker: _Worker
    closed: bool = False
    result: Future | None = field(default=None, repr=False)


def _resolve(fut: Future, *, result: Any = None, error: BaseException | None = None) -> None:
    try:
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(result)
    except InvalidStateError:
        pass  # cancelled by whoever was waiting: nobody wants the answer
