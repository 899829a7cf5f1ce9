"""The delivery worker's limits, against a real receiver on loopback: a dead endpoint holds at
most its share of the slots (then one, once it timed out), a backlog drains as fast as the
receivers answer, a delivery whose report cannot render backs off and fails, a report is
rendered once for all its destinations and off the event loop, and shutdown is bounded even
when the database hangs."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from gateway.netpolicy import OutboundPolicy
from gateway.store import CallConfig, Store
from gateway.webhooks import WebhookWorker, report_renderer

from tests.webhooks.conftest import Receiver
from tests.webhooks.test_worker import endpoint, new_call


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'gw.db'}")
    s.create_all()
    yield s
    s.close()


async def _render(call_id: str) -> dict:
    return {"id": call_id}


def worker(store: Store, rec: Receiver, **kw: object) -> WebhookWorker:
    policy = OutboundPolicy((f"127.0.0.1:{rec.port}",))
    opts = {"retry_scale": 0.001, "timeout_s": 2.0, "poll_s": 0.02, "render": _render, **kw}
    return WebhookWorker(store, policy, **opts)  # type: ignore[arg-type]


async def test_a_dead_endpoint_holds_only_its_share(store: Store, receiver: Receiver) -> None:
    """Eight rows to an endpoint that never answers and one to another: the other is
    delivered while the dead one has its two attempts in flight; once they timed out, the
    dead endpoint gets one attempt at a time (each new one a time limit after the last)."""
    dead = endpoint(store, receiver, "/dead")
    for _ in range(8):
        new_call(store)
    endpoint(store, receiver, "/ok", events=["call.ringing"])
    store.set_call_status(new_call(store), "ringing")
    receiver.hang["/dead"] = 10.0
    w = worker(store, receiver, concurrency=4, per_destination=2, timeout_s=0.3, poll_s=0.5)
    w.start()
    try:
        await receiver.wait(lambda: len(receiver.accepted("/ok")) == 1, timeout_s=5)
        dead_rows = [r for r in store.list_outbox() if r.endpoint_id == dead]
        assert all(r.attempts == 0 for r in dead_rows), "the good delivery waited for a dead attempt"
        assert len([d for d in receiver.got if d.path == "/dead"]) <= 2
        await receiver.wait(lambda: len([d for d in receiver.got if d.path == "/dead"]) >= 4, timeout_s=5)
    finally:
        await w.aclose(timeout_s=0.05)
    arrivals = [d.at for d in receiver.got if d.path == "/dead"]
    assert arrivals[1] - arrivals[0] < 0.2  # two at once, its share of four slots
    assert arrivals[3] - arrivals[2] >= 0.25  # after time-outs: one at a time
    assert max(r.attempts for r in store.list_outbox() if r.endpoint_id == dead) <= 2


async def test_a_backlog_drains_faster_than_one_pass_per_poll(store: Store, receiver: Receiver) -> None:
    """Two slots, a one-second poll, eight instant answers: all delivered well inside one poll
    (each finished attempt wakes the loop)."""
    endpoint(store, receiver, "/a")
    for _ in range(8):
        new_call(store)
    w = worker(store, receiver, concurrency=2, per_destination=2, poll_s=1.0)
    t0 = time.monotonic()
    w.start()
    try:
        await receiver.wait(lambda: len(receiver.accepted()) == 8, timeout_s=5)
        elapsed = time.monotonic() - t0
        await receiver.wait(lambda: w.counts.get("delivered", 0) == 8, timeout_s=5)
    finally:
        await w.aclose()
    assert elapsed < 0.8, f"8 deliveries through 2 slots took {elapsed:.2f} s"


async def test_a_report_that_cannot_render_backs_off_and_fails(store: Store, receiver: Receiver) -> None:
    endpoint(store, receiver, "/a", events=["call.report"])
    call = new_call(store)
    store.enqueue_call_report(call)
    renders: list[float] = []

    async def render(cid: str) -> dict:
        renders.append(time.monotonic())
        raise ValueError("a record the view cannot hold")

    w = worker(store, receiver, render=render, retry_scale=1e-6, lease_s=5.0)
    w.start()
    try:
        async with asyncio.timeout(5):
            while (row := store.list_outbox(call_id=call)[0]).status == "pending":
                await asyncio.sleep(0.01)
    finally:
        await w.aclose()
    assert row.status == "failed" and row.attempts == 8 and len(renders) == 8
    assert row.last_error is not None and "internal error (ValueError)" in row.last_error
    assert receiver.got == []


async def test_a_report_is_rendered_once_off_the_loop(store: Store, receiver: Receiver) -> None:
    """Two endpoints and the call's own URL get the same report: one render, in the worker's
    own threads (neither the event loop's nor asyncio's default executor's)."""
    endpoint(store, receiver, "/a", events=["call.report"])
    endpoint(store, receiver, "/b", events=["call.report"])
    call = new_call(store)
    assert store.enqueue_call_report(call) == 2
    threads: list[str] = []

    class View(BaseModel):
        call_id: str

    async def view(rec: object) -> View:
        threads.append(threading.current_thread().name)
        return View(call_id=rec.id)  # type: ignore[attr-defined]

    w = worker(store, receiver, render=report_renderer(store, view))
    w.start()
    try:
        await receiver.wait(lambda: len(receiver.accepted()) == 2)
    finally:
        await w.aclose()
    assert len(threads) == 1 and threads[0].startswith("webhooks")
    a, b = receiver.accepted()
    assert a.payload["data"] == b.payload["data"] == {"call_id": call} and a.verified and b.verified


class _HungStore:
    """A store whose claim hangs (a database that stopped answering)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.threads: list[str] = []

    def claim_webhooks(self, owner: str, **kw: object) -> list:
        self.threads.append(threading.current_thread().name)
        self.release.wait(5)
        return []


async def test_shutdown_is_bounded_when_a_claim_hangs() -> None:
    hung = _HungStore()
    w = WebhookWorker(hung, OutboundPolicy(), render=_render, poll_s=0.01)  # type: ignore[arg-type]
    w.start()
    try:
        async with asyncio.timeout(2):
            while not hung.threads:
                await asyncio.sleep(0.005)
        t0 = time.monotonic()
        await w.aclose(timeout_s=0.1)
        assert time.monotonic() - t0 < 0.5
        assert w.start().done() and hung.threads[0].startswith("webhooks")
    finally:
        hung.release.set()
