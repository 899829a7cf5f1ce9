"""The post-call worker: a lifespan task that turns ended calls into summaries and fields.

It polls the store every ``GATEWAY_POSTCALL_POLL_S`` for calls waiting for results
(``post_call_status`` ``pending``, or ``running`` under a lapsed claim), claims up to
``GATEWAY_POSTCALL_CONCURRENCY`` at a time with a lease (:mod:`gateway.store.postcall`), and
for each decides (:meth:`PostCallWorker.compute`):

=================================  =====================================================
no chat endpoint configured        ``skipped``; summary and extracted null,
                                   ``post_call_error`` says the endpoint is not configured
no conversation (no turn of text:  ``completed``, summary from the call's status ("The call
never answered, nobody spoke)      was not answered."), every field null; no model call
otherwise                          the endpoint's summary and fields (:mod:`.chat`):
                                   ``completed``, or ``failed`` with the reason
=================================  =====================================================

It runs beside the calls, never in a call's media path: a call's hang-up only marks the
row ``pending`` in its own transaction, and nothing waits for the results. Bounds: each
call's work is cut off at half the lease (``failed``, "took longer than …"), so a claim
never lapses under a live worker and no row is worked on twice at once; a row claimed
``GATEWAY_POSTCALL_MAX_ATTEMPTS`` times without finishing (its worker stopped or crashed
each time) is given up as ``failed``. Stopping (:meth:`PostCallWorker.aclose`) cancels the
work in flight and hands those rows back, so the next start (or another node) does them.

Its blocking store calls (claims, finishes, the hand-back) run on its own small thread pool
(:data:`STORE_THREADS` threads), not asyncio's default executor, which the calls' own store
work (a hang-up's finalise, a stream's start) uses: a slow database under post-call load
never queues a live call's store work behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.postcall.chat import ChatExtractor, ExtractionFailed
from gateway.postcall.fields import Answer
from gateway.postcall.prompt import has_conversation, no_conversation_summary
from gateway.store.postcall import PostCallJob
from gateway.store.records import CallRecord

__all__ = ["PostCallWorker", "Outcome", "NOT_CONFIGURED", "STORE_THREADS"]

log = logging.getLogger("gateway.postcall")

#: ``post_call_error`` of a call whose results were skipped for want of an endpoint.
NOT_CONFIGURED = "post-call results are off: no chat endpoint is configured (GATEWAY_POSTCALL_BASE_URL)"
#: Threads of the worker's own pool for its store calls (each call is one short transaction).
STORE_THREADS = 2
#: How long (s) :meth:`PostCallWorker.aclose` waits for a store call still on the pool.
POOL_CLOSE_S = 5.0


class Extractor(Protocol):
    async def extract(self, call: CallRecord) -> Answer: ...
    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """What :meth:`PostCallWorker.compute` decided: ``finish_post_call``'s arguments."""

    status: str
    summary: str | None = None
    extracted: dict[str, Any] | None = None
    error: str | None = None


def _nulls(call: CallRecord) -> dict[str, Any]:
    return {str(f["name"]): None for f in call.post_call_fields or []}


class PostCallWorker:
    """Claims ended calls and stores their post-call results (see the module docstring).

    Args:
        store: the gateway's :class:`~gateway.store.repo.Store`.
        extractor: the chat endpoint's :class:`~gateway.postcall.chat.ChatExtractor`;
            ``None``: not configured (results are ``skipped``).
        poll_s, concurrency, lease_s, max_attempts: the ``GATEWAY_POSTCALL_*`` settings.
        name: start of each claim token (the node id).
    """

    def __init__(
        self, store: Any, extractor: Extractor | None, *, poll_s: float = 1.0, concurrency: int = 2,
        lease_s: float = 600.0, max_attempts: int = 3, name: str = "postcall",
    ) -> None:  # fmt: skip
        self.store, self.extractor = store, extractor
        self.poll_s, self.concurrency, self.lease_s, self.max_attempts = poll_s, concurrency, lease_s, max_attempts
        self.name = name
        self._active: dict[asyncio.Task[None], PostCallJob] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def from_settings(cls, store: Any, settings: Any) -> PostCallWorker:
        """A worker with the settings' endpoint (if any) and ``GATEWAY_POSTCALL_*`` bounds."""
        return cls(
            store, ChatExtractor.from_settings(settings), poll_s=settings.postcall_poll_s,
            concurrency=settings.postcall_concurrency, lease_s=settings.postcall_lease_s,
            max_attempts=settings.postcall_max_attempts, name=settings.node_id,
        )  # fmt: skip

    @property
    def work_limit_s(self) -> float:
        """How long one call's results may take (s): half the lease."""
        return self.lease_s / 2

    def start(self) -> None:
        """Start polling (in the running event loop)."""
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._loop(), name="postcall-worker")

    def wake(self) -> None:
        """Look for waiting calls now rather than at the next poll."""
        self._wake.set()

    async def _store_call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` (a blocking store method) on the worker's own pool."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=STORE_THREADS, thread_name_prefix="postcall-store")
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def compute(self, call: CallRecord) -> Outcome:
        """The results of ``call`` (see the module docstring's table). Never raises
        :class:`ExtractionFailed` (it becomes a ``failed`` outcome)."""
        if self.extractor is None:
            return Outcome("skipped", error=NOT_CONFIGURED)
        if not has_conversation(call):
            return Outcome("completed", summary=no_conversation_summary(call), extracted=_nulls(call))
        try:
            answer = await self.extractor.extract(call)
        except ExtractionFailed as exc:
            return Outcome("failed", error=str(exc))
        return Outcome("completed", summary=answer.summary, extracted=answer.extracted)

    async def _loop(self) -> None:
        while True:
            free = self.concurrency - len(self._active)
            jobs: list[PostCallJob] = []
            self._wake.clear()  # before the claim: a wake() while it runs is for a later claim
            if free > 0:
                try:
                    jobs = await self._store_call(
                        self.store.claim_post_calls, lease_s=self.lease_s, limit=free, prefix=self.name
                    )
                except Exception:  # the database is down: try again at the next poll
                    log.exception("post-call worker: claiming calls failed")
            for job in jobs:
                task = asyncio.create_task(self._run(job), name=f"postcall-{job.call.id}")
                self._active[task] = job
                task.add_done_callback(self._done)
            if jobs and len(jobs) == free:
                continue  # every free slot filled: maybe more are waiting
            with contextlib.suppress(TimeoutError):  # not wait_for: on 3.11 it can drop a cancel
                async with asyncio.timeout(self.poll_s):
                    await self._wake.wait()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._active.pop(task, None)
        self._wake.set()  # a slot is free

    async def _run(self, job: PostCallJob) -> None:
        call = job.call
        if job.attempts > self.max_attempts:
            outcome = Outcome("failed", error=f"given up after {self.max_attempts} attempts: the worker stopped "
                                              "each time before the results were stored")  # fmt: skip
        else:
            try:
                async with asyncio.timeout(self.work_limit_s):
                    outcome = await self.compute(call)
            except TimeoutError:
                outcome = Outcome("failed", error=f"post-call results took longer than {self.work_limit_s:g} s")
            except Exception as exc:  # a bug of ours: the row must not stay claimed
                log.exception("post-call results of call %s failed", call.id)
                outcome = Outcome("failed", error=f"internal error ({type(exc).__name__})")
        stored = await self._store_call(
            self.store.finish_post_call, call.id, status=outcome.status, summary=outcome.summary,
            extracted=outcome.extracted, error=outcome.error, claim=job.claim,
        )  # fmt: skip
        if stored:
            log.info("call %s: post-call results %s%s", call.id, outcome.status,
                     f" ({outcome.error})" if outcome.error else "")  # fmt: skip
        else:  # its claim was taken (a node_lost call's real outcome arrived): they are redone
            log.info("call %s: post-call results dropped: the row was claimed anew", call.id)

    async def aclose(self) -> None:
        """Stop: cancel the poll and the work in flight, hand unfinished rows back, close the
        endpoint's client and the store pool (waiting up to :data:`POOL_CLOSE_S` for a store
        call on it). Cancellation-safe; idempotent.

        Raises:
            Exception: the hand-back's store error (the client and pool are closed all the same).
        """
        loop_task, self._loop_task = self._loop_task, None
        if loop_task is not None:
            loop_task.cancel()
            await asyncio.gather(loop_task, return_exceptions=True)
        active = dict(self._active)
        for task in active:
            task.cancel()
        await asyncio.gather(*active, return_exceptions=True)
        claims = [(job.call.id, job.claim) for task, job in active.items() if task.cancelled()]
        try:
            if claims:
                handed = await self._store_call(self.store.release_post_calls, claims)
                log.info("post-call worker stopped: %d call(s) handed back for the next start", handed)
        finally:
            try:
                if self.extractor is not None:
                    await self.extractor.aclose()
            finally:
                await self._close_pool()

    async def _close_pool(self) -> None:
        """Shut the store pool down: queued calls dropped, a running one waited for up to
        :data:`POOL_CLOSE_S` on a helper thread (then left to finish on its own, logged)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        pool.shutdown(wait=False, cancel_futures=True)
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        waiter = threading.Thread(target=_join_pool, args=(pool, loop, done), name="postcall-pool-close", daemon=True)
        waiter.start()
        try:
            await asyncio.wait_for(asyncio.shield(done), POOL_CLOSE_S)
        except TimeoutError:
            log.warning("post-call worker: a store call still running after %g s; left to finish", POOL_CLOSE_S)


def _join_pool(pool: ThreadPoolExecutor, loop: asyncio.AbstractEventLoop, done: asyncio.Future[None]) -> None:
    """Wait (on a helper thread) for ``pool``'s threads, then resolve ``done`` in ``loop``."""
    pool.shutdown(wait=True)
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))
