"""The post-call worker on a real store and the fake chat server over loopback HTTP: results
stored, the skipped and no-conversation paths, and restart safety (a crashed worker's claim is
taken over once it lapses, a stopped worker hands its calls back, two workers never do one
call twice, a call that keeps stopping its worker is given up), a wake() during a claim not
lost, and the store calls on the worker's own thread pool."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from gateway.config import Settings
from gateway.postcall import NOT_CONFIGURED, ChatExtractor, PostCallWorker
from gateway.store import Store

from .conftest import ended_call
from .fake_chat import FakeChat, Reply, answer

FAST = {"poll_s": 0.02, "lease_s": 10.0}


def _worker(store: Store, chat: FakeChat | None, **kw: Any) -> PostCallWorker:
    ex = None
    if chat is not None:
        ex = ChatExtractor.from_settings(Settings(_env_file=None, postcall_base_url=chat.base_url, postcall_max_retries=0))
    return PostCallWorker(store, ex, **{**FAST, **kw})


async def _until(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _final(store: Store, call_id: str) -> Callable[[], bool]:
    return lambda: store.get_call(call_id).post_call_status in ("completed", "skipped", "failed")


async def test_an_ended_call_gets_its_summary_and_fields(store: Store, chat: FakeChat) -> None:
    chat.replies = [answer("Booked Friday at ten.", callback_time="noon", interested=True, party_size=2,
                           budget=None, tier="gold")]  # fmt: skip
    call_id = ended_call(store)
    worker = _worker(store, chat)
    worker.start()
    try:
        await _until(_final(store, call_id))
    finally:
        await worker.aclose()
    rec = store.get_call(call_id)
    assert (rec.post_call_status, rec.post_call_error, rec.summary) == ("completed", None, "Booked Friday at ten.")
    assert rec.extracted == {"callback_time": "noon", "interested": True, "party_size": 2, "budget": None,
                             "tier": "gold"}  # fmt: skip
    assert len(chat.requests) == 1


async def test_no_endpoint_configured_is_skipped_with_the_reason(store: Store) -> None:
    call_id = ended_call(store)
    worker = _worker(store, None)
    worker.start()
    try:
        await _until(_final(store, call_id))
    finally:
        await worker.aclose()
    rec = store.get_call(call_id)
    assert (rec.post_call_status, rec.summary, rec.extracted) == ("skipped", None, None)
    assert rec.post_call_error == NOT_CONFIGURED and "GATEWAY_POSTCALL_BASE_URL" in rec.post_call_error


async def test_a_call_without_conversation_is_summarised_without_the_model(store: Store, chat: FakeChat) -> None:
    unanswered = ended_call(store, transcript=[], status="no_answer")
    silent = ended_call(store, transcript=[{"role": "user", "text": "  ", "at_ms": 5}])
    worker = _worker(store, chat)
    outcome = await worker.compute(store.get_call(unanswered))
    assert outcome.status == "completed" and outcome.summary == "The call was not answered."
    assert outcome.extracted == {"callback_time": None, "interested": None, "party_size": None, "budget": None,
                                 "tier": None}  # fmt: skip
    assert (await worker.compute(store.get_call(silent))).summary == "The call connected, but nobody said anything."
    await worker.aclose()
    assert chat.requests == []


async def test_the_endpoint_failing_fails_the_results_with_its_reason(store: Store, chat: FakeChat) -> None:
    chat.replies = [Reply(status=503, error="model loading")]
    call_id = ended_call(store)
    worker = _worker(store, chat)
    worker.start()
    try:
        await _until(_final(store, call_id))
    finally:
        await worker.aclose()
    rec = store.get_call(call_id)
    assert rec.post_call_status == "failed" and rec.summary is None
    assert rec.post_call_error == "the chat endpoint answered HTTP 503", "the endpoint's words are only logged"


async def test_a_crashed_workers_claim_is_taken_over_when_its_lease_lapses(store: Store, chat: FakeChat) -> None:
    call_id = ended_call(store)
    (stale,) = store.claim_post_calls(lease_s=0.3)  # a worker that died holding the call
    worker = _worker(store, chat, lease_s=0.3)
    worker.start()
    try:
        await asyncio.sleep(0.1)
        assert store.get_call(call_id).post_call_status == "running" and chat.requests == []
        await _until(_final(store, call_id))
    finally:
        await worker.aclose()
    assert store.get_call(call_id).post_call_status == "completed" and len(chat.requests) == 1
    assert not store.finish_post_call(call_id, status="failed", error="late", claim=stale.claim)


async def test_a_stopped_worker_hands_its_call_back_and_the_next_start_finishes_it(store: Store, chat: FakeChat) -> None:
    chat.replies = [Reply(delay_s=0.6, content="{}"), answer("Done.")]
    call_id = ended_call(store)
    first = _worker(store, chat)
    first.start()
    await _until(lambda: len(chat.requests) == 1)
    await first.aclose()  # a shutdown in the middle of the request
    rec = store.get_call(call_id)
    assert rec.post_call_status == "pending" and rec.summary is None
    second = _worker(store, chat)
    second.start()
    try:
        await _until(_final(store, call_id))
    finally:
        await second.aclose()
    assert store.get_call(call_id).summary == "Done."
    assert store.claim_post_calls(lease_s=5) == []


async def test_two_workers_do_each_call_once(store: Store, chat: FakeChat) -> None:
    chat.replies = [Reply(delay_s=0.05, content=answer("ok").content)]
    ids = [ended_call(store, fields=[]) for _ in range(8)]
    workers = [_worker(store, chat, name=f"node{i}") for i in range(2)]
    for w in workers:
        w.start()
    try:
        await _until(lambda: all(_final(store, c)() for c in ids))
    finally:
        for w in workers:
            await w.aclose()
    assert len(chat.requests) == len(ids)  # one request per call, none twice


async def test_a_call_that_keeps_stopping_its_worker_is_given_up(store: Store, chat: FakeChat) -> None:
    call_id = ended_call(store)
    for _ in range(2):
        store.claim_post_calls(lease_s=0.01)  # two workers died on it
        await asyncio.sleep(0.02)
    worker = _worker(store, chat, max_attempts=2)
    worker.start()
    try:
        await _until(_final(store, call_id))
    finally:
        await worker.aclose()
    rec = store.get_call(call_id)
    assert rec.post_call_status == "failed" and "given up after 2 attempts" in rec.post_call_error
    assert chat.requests == []


async def test_work_longer_than_half_the_lease_fails(store: Store, chat: FakeChat) -> None:
    chat.replies = [Reply(delay_s=1.0, content="{}")]
    call_id = ended_call(store)
    worker = _worker(store, chat, lease_s=0.4)
    worker.start()
    try:
        await _until(_final(store, call_id))
    finally:
        await worker.aclose()
    rec = store.get_call(call_id)
    assert rec.post_call_status == "failed" and rec.post_call_error == "post-call results took longer than 0.2 s"


class _Watched:
    """The real store, its post-call calls' threads noted; a call ends during the first claim."""

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        self.store, self.loop, self.threads, self.claims = store, loop, set(), 0
        self.worker: PostCallWorker | None = None
        self.ended: str | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def claim_post_calls(self, **kw: Any) -> Any:
        self.threads.add(threading.current_thread().name)
        jobs = self.store.claim_post_calls(**kw)
        self.claims += 1
        if self.claims == 1:  # a served call ends while this claim runs, and wakes the worker
            self.ended = ended_call(self.store)
            self.loop.call_soon_threadsafe(self.worker.wake)
            time.sleep(0.05)  # the wake lands before the claim returns
        return jobs

    def finish_post_call(self, *args: Any, **kw: Any) -> Any:
        self.threads.add(threading.current_thread().name)
        return self.store.finish_post_call(*args, **kw)


async def test_a_wake_during_a_claim_is_not_lost_and_store_calls_use_the_workers_pool(store: Store) -> None:
    watched = _Watched(store, asyncio.get_running_loop())
    worker = watched.worker = _worker(watched, None, poll_s=30.0)  # type: ignore[arg-type]  # only a wake() looks soon
    worker.start()
    try:
        await _until(lambda: watched.ended is not None and _final(store, watched.ended)(), timeout_s=3.0)
    finally:
        await worker.aclose()
    assert store.get_call(watched.ended).post_call_status == "skipped"
    assert watched.threads and all(n.startswith("postcall-store_") for n in watched.threads), watched.threads
    assert not any(t.name.startswith("postcall-store_") for t in threading.enumerate()), "pool shut down"
