"""The delivery worker against a real receiver on loopback: signatures, retries, 410, SSRF,
leases shared by two workers (two nodes), a worker dying mid-attempt, the call report."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gateway.netpolicy import OutboundPolicy
from gateway.store import CallConfig, Store
from gateway.webhooks import WebhookWorker

from tests.webhooks.conftest import Receiver

FAST = {"retry_scale": 0.001, "timeout_s": 2.0, "poll_s": 0.02}


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gw.db'}"


@pytest.fixture
def store(db: str) -> Store:
    s = Store(db)
    s.create_all()
    yield s
    s.close()


async def _render(call_id: str) -> dict:
    return {"id": call_id, "summary": "a test call"}


def worker(store: Store, rec: Receiver, **kw: object) -> WebhookWorker:
    policy = OutboundPolicy((f"127.0.0.1:{rec.port}",))
    return WebhookWorker(store, policy, render=_render, rng=random.Random(7), **{**FAST, **kw})  # type: ignore[arg-type]


def endpoint(store: Store, rec: Receiver, path: str, **kw: object) -> str:
    ep, secret = store.create_webhook_endpoint(rec.url(path), **kw)  # type: ignore[arg-type]
    rec.secrets[path] = secret
    return ep.id


def new_call(store: Store, **kw: object) -> str:
    return store.create_call(CallConfig(), "twilio", **kw)[0].id  # type: ignore[arg-type]


async def test_events_signed_retried_and_delivered_once(store: Store, receiver: Receiver) -> None:
    endpoint(store, receiver, "/a")
    receiver.answer = lambda path, msg_id, attempt: 500 if attempt <= 2 else 204
    call = new_call(store)
    store.set_call_status(call, "ringing")
    w = worker(store, receiver)
    w.start()
    try:
        await receiver.wait(lambda: len(receiver.accepted()) == 2)
    finally:
        await w.aclose()
    rows = store.list_outbox(call_id=call)
    assert [r.event_type for r in rows] == ["call.queued", "call.ringing"]
    assert all(r.status == "delivered" and r.attempts == 3 and r.last_status == 204 for r in rows)
    assert all(d.verified for d in receiver.got) and len(receiver.got) == 6
    for r in rows:  # one webhook-id per row, the same on each attempt, the same body each time
        mine = [d for d in receiver.got if d.id == r.id]
        assert len(mine) == 3 and len({d.body for d in mine}) == 1
        assert mine[0].payload["type"] == r.event_type and mine[0].payload["data"]["callId"] == call
    bad = Webhook("whsec_" + "QUJD" * 8)  # the receiver with the wrong secret, or a tampered body
    d = receiver.got[0]
    with pytest.raises(WebhookVerificationError):
        bad.verify(d.body, d.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(receiver.secrets["/a"]).verify(d.body.replace(b"queued", b"ringing"), d.headers)


async def test_two_workers_share_the_outbox_without_doubling(db: str, store: Store, receiver: Receiver) -> None:
    endpoint(store, receiver, "/a")
    receiver.answer = lambda path, msg_id, attempt: 503 if attempt == 1 else 200
    calls = [new_call(store) for _ in range(15)]
    other = Store(db)  # a second node on the same database
    try:
        a, b = worker(store, receiver), worker(other, receiver)
        a.start(), b.start()
        try:
            await receiver.wait(lambda: len(receiver.accepted()) == len(calls))
            await asyncio.sleep(0.1)  # a doubled delivery would show now
        finally:
            await asyncio.gather(a.aclose(), b.aclose())
    finally:
        other.close()
    ids = [d.id for d in receiver.accepted()]
    assert len(ids) == len(set(ids)) == 15 and all(receiver.attempts(i) == 2 for i in ids)
    assert a.counts.get("delivered", 0) + b.counts.get("delivered", 0) == 15
    assert all(r.status == "delivered" for r in store.list_outbox())


async def test_gone_disables_the_endpoint(store: Store, receiver: Receiver) -> None:
    ep = endpoint(store, receiver, "/gone")
    keep = endpoint(store, receiver, "/ok")
    receiver.answer = lambda path, msg_id, attempt: 410 if path == "/gone" else 204
    call = new_call(store)
    w = worker(store, receiver)
    w.start()
    try:
        await receiver.wait(lambda: len(receiver.got) == 2)
        await receiver.wait(lambda: store.list_webhook_endpoints()[0].disabled_at is not None)
        store.set_call_status(call, "ringing")  # after the 410: nothing more for that endpoint
        await receiver.wait(lambda: len(receiver.accepted("/ok")) == 2)
    finally:
        await w.aclose()
    gone = [e for e in store.list_webhook_endpoints() if e.id == ep][0]
    assert gone.disabled_reason and "410" in gone.disabled_reason
    assert [d.path for d in receiver.got].count("/gone") == 1
    rows = {(r.endpoint_id, r.event_type): r for r in store.list_outbox(call_id=call)}
    assert rows[(ep, "call.queued")].status == "disabled" and (ep, "call.ringing") not in rows
    assert rows[(keep, "call.ringing")].status == "delivered"


async def test_call_url_gone_stops_that_calls_url(store: Store, receiver: Receiver) -> None:
    _, secret = store.rotate_call_url_secret()
    receiver.secrets["/call"] = secret
    receiver.answer = lambda path, msg_id, attempt: 410
    call = store.create_call(CallConfig(), "twilio")[0].id
    with store._session() as s, s.begin():  # the column H2's creation sets
        from gateway.store.models import Call

        s.get(Call, call).webhook_url = receiver.url("/call")
    store.set_call_status(call, "ringing")
    w = worker(store, receiver)
    w.start()
    try:
        await receiver.wait(lambda: len(receiver.got) == 1)
        await receiver.wait(lambda: all(r.status == "disabled" for r in store.list_outbox(call_id=call)))
        store.apply_carrier_status(call, "in_progress")
        await asyncio.sleep(0.1)
    finally:
        await w.aclose()
    assert len(receiver.got) == 1 and receiver.got[0].verified
    assert [r.event_type for r in store.list_outbox(call_id=call)] == ["call.ringing"]


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/x", "https://localhost:{port}/x", "http://[::1]:{port}/x"])
async def test_ssrf_refused_at_delivery(store: Store, receiver: Receiver, url: str) -> None:
    """A target the policy does not allow is never connected to, whatever the row says (the
    route refuses it at creation too; a row written otherwise is still checked)."""
    store.create_webhook_endpoint(url.format(port=receiver.port))
    new_call(store)
    w = WebhookWorker(store, OutboundPolicy(), render=_render, **FAST)  # type: ignore[arg-type]
    w.start()
    try:
        async with asyncio.timeout(5):
            while not (rows := store.list_outbox()) or rows[0].attempts < 2:
                await asyncio.sleep(0.01)
    finally:
        await w.aclose()
    assert receiver.got == []
    assert rows[0].status == "pending" and "refused by the outbound policy" in (rows[0].last_error or "")


async def test_worker_dying_mid_attempt_loses_nothing(db: str, store: Store, receiver: Receiver) -> None:
    """A worker cancelled while its request hangs keeps the lease; another takes the row once
    the lease lapses, with the same webhook-id (at-least-once)."""
    endpoint(store, receiver, "/a")
    receiver.hang_s = 1.0
    new_call(store)
    a = worker(store, receiver, lease_s=0.4)
    a.start()
    await receiver.wait(lambda: len(receiver.got) == 1)
    await a.aclose(timeout_s=0.01)  # dies: the attempt is cancelled, its outcome never written
    (row,) = store.list_outbox()
    assert row.status == "pending" and row.attempts == 0
    receiver.hang_s = 0.0
    b = worker(store, receiver, lease_s=0.4)
    b.start()
    try:
        await receiver.wait(lambda: len(receiver.got) == 2, timeout_s=5)
        await receiver.wait(lambda: store.list_outbox()[0].status == "delivered", timeout_s=5)
    finally:
        await b.aclose()
    assert receiver.got[0].id == receiver.got[1].id == row.id


async def test_call_report_rendered_once_and_call_url_secret(store: Store, receiver: Receiver) -> None:
    """The report's body is rendered at its first attempt and kept; a per-call URL waits (retried)
    until the tenant has a call-URL secret, and is signed with it."""
    endpoint(store, receiver, "/a", events=["call.report"])
    call = new_call(store)
    with store._session() as s, s.begin():
        from gateway.store.models import Call

        s.get(Call, call).webhook_url = receiver.url("/call")
    assert store.enqueue_call_report(call) == 2
    receiver.answer = lambda path, msg_id, attempt: 500 if attempt == 1 and path == "/a" else 204
    renders: list[str] = []

    async def render(cid: str) -> dict:
        renders.append(cid)
        return {"id": cid, "n": len(renders)}

    w = WebhookWorker(store, OutboundPolicy((f"127.0.0.1:{receiver.port}",)), render=render, **FAST)  # type: ignore[arg-type]
    w.start()
    try:
        await receiver.wait(lambda: len(receiver.accepted("/a")) == 1)
        per_call = [r for r in store.list_outbox(call_id=call) if r.endpoint_id is None and r.event_type == "call.report"]
        assert per_call[0].attempts >= 1 and "no signing secret" in (per_call[0].last_error or "")
        assert receiver.accepted("/call") == []
        receiver.secrets["/call"] = store.rotate_call_url_secret()[1]
        await receiver.wait(lambda: len(receiver.accepted("/call")) == 1)
    finally:
        await w.aclose()
    mine = [d for d in receiver.got if d.path == "/a"]
    assert len(mine) == 2 and mine[0].body == mine[1].body and mine[0].payload["data"] == {"id": call, "n": 1}
    assert all(d.verified for d in receiver.got)
    assert [r.event_type for r in store.list_outbox(call_id=call) if r.endpoint_id is not None] == ["call.report"]
