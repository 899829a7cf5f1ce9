"""Webhooks through the served gateway (real HTTP on loopback): the routes and their 4xx, and the
acceptance test: a receiver verifying every delivery with ``standardwebhooks``, failing the
first attempts, receives every event exactly once by ``webhook-id`` across a gateway restart
in the middle of the retry schedule."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import Settings
from gateway.llm.local.remote import LocalEngines
from gateway.simulator.demo import serve_in_background
from gateway.store import Store

from tests.webhooks.conftest import Receiver

INLINE = {
    "systemPrompt": "You answer the phone for a dental clinic.", "voice": "joe", "language": "en-US",
    "greeting": "Hello, Smile Dental, how can I help?", "connectionType": "twilio",
}  # fmt: skip


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def gateway(tmp_path: Path, receiver: Receiver) -> AsyncIterator[Callable[..., Any]]:
    """``start()`` → ``(base_url, store, stop)``: the gateway on a database kept across starts,
    its outbound policy allowing only the receiver; ``await stop()`` shuts it down cleanly."""
    engines = LocalEngines(workers=1)  # never started: no call runs media here
    running: list[Any] = []

    async def start() -> tuple[str, Store, Callable[[], Any]]:
        port = _port()
        settings = Settings(
            _env_file=None, host="127.0.0.1", port=port, public_url="", database_url=f"sqlite:///{tmp_path / 'gw.db'}",
            recordings_dir=tmp_path / "rec", outbound_allow=[f"127.0.0.1:{receiver.port}"],
            webhook_retry_scale=0.005, webhook_poll_s=0.02, webhook_timeout_s=2.0, warm_up=False,
        )  # fmt: skip
        server, task, app = await serve_in_background(settings, engines=engines, warm_up=False)
        running.append((server, task))

        async def stop() -> None:
            server.should_exit = True
            await asyncio.wait_for(task, 10)

        return f"http://127.0.0.1:{port}", app.state.services.store, stop

    yield start
    for server, task in running:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
    engines.close()


async def test_every_event_once_across_a_restart_mid_schedule(gateway: Callable[..., Any], receiver: Receiver) -> None:
    base, store, stop = await gateway()
    key, _ = store.create_api_key("t")
    phase = {"n": 1}
    receiver.answer = lambda path, msg_id, attempt: 503 if phase["n"] == 1 else 204  # fails until the restart
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, timeout=10) as http:
        r = await http.post("/webhook-endpoints", json={"url": receiver.url("/ep")})
        assert r.status_code == 201, r.text
        receiver.secrets["/ep"] = r.json()["secret"]
        r = await http.post("/webhook-call-secret")
        assert r.status_code == 201
        receiver.secrets["/call"] = r.json()["secret"]
        calls = []
        for _ in range(2):
            r = await http.post("/calls/inline", json={**INLINE, "webhookUrl": receiver.url("/call")})
            assert r.status_code == 201, r.text
            calls.append(r.json()["callId"])
    done, machine = calls
    store.apply_carrier_status(done, "ringing")
    store.apply_carrier_status(done, "in_progress")
    store.finalise_call(done, status="completed", end_reason="caller_hangup", duration_ms=4200)
    store.apply_carrier_status(machine, "in_progress")
    store.finalise_call(machine, status="voicemail", end_reason="voicemail", duration_ms=900)
    # no chat endpoint is configured: the post-call step finishes them "skipped", writing the reports
    await receiver.wait(lambda: sum(r.event_type == "call.report" for r in store.list_outbox()) == 4)
    assert {store.get_call(c).post_call_status for c in calls} == {"skipped"}
    rows = store.list_outbox()
    kinds = {(r.call_id, r.endpoint_id is None, r.event_type) for r in rows}
    expected = {"call.queued", "call.ringing", "call.answered", "call.ended", "call.report"}
    for call, types in ((done, expected), (machine, expected - {"call.ringing"} | {"call.voicemail"})):
        assert {(call, per_call, t) for per_call in (False, True) for t in types} <= kinds
    assert len(rows) == len(kinds) == 20

    await receiver.wait(lambda: all(receiver.attempts(r.id) >= 2 for r in rows))
    await stop()  # in the middle of the schedule: two attempts failed, the third is due in ~1.5 s
    assert receiver.accepted() == [] and all(r.status == "pending" for r in store.list_outbox())
    phase["n"] = 2

    base2, store2, _ = await gateway()
    # the third attempts (~1.5 s after the second; under load perhaps a fourth, ~9 s later)
    await receiver.wait(lambda: len(receiver.accepted()) >= len(rows), timeout_s=30)
    await receiver.wait(lambda: all(r.status == "delivered" for r in store2.list_outbox()))
    await asyncio.sleep(0.1)  # a doubled delivery would show now
    accepted = receiver.accepted()
    assert sorted(d.id for d in accepted) == sorted(r.id for r in rows)  # each webhook-id exactly once
    assert all(d.verified for d in receiver.got) and all(receiver.attempts(r.id) >= 3 for r in rows)
    by_id = {d.id: d for d in accepted}
    for r in rows:
        payload = by_id[r.id].payload
        assert payload["type"] == r.event_type and by_id[r.id].path == ("/call" if r.endpoint_id is None else "/ep")
        if r.event_type != "call.report":
            assert payload["data"]["callId"] == r.call_id
        else:  # the full record, as GET /calls/{id} shows it, after the post-call results
            record = payload["data"]
            assert record["id"] == r.call_id and record["status"] in ("completed", "voicemail")
            assert record["postCall"]["status"] == "skipped" and record["summary"] is None
            assert {"transcript", "transitions", "extracted", "durationSec"} <= set(record)
    async with httpx.AsyncClient(base_url=base2, timeout=10) as http:
        scrape = (await http.get("/metrics")).text
    assert f'gateway_webhook_attempts_total{{outcome="delivered"}} {len(rows)}.0' in scrape
    ended = [by_id[r.id].payload["data"] for r in rows if r.event_type == "call.ended" and r.call_id == done]
    assert ended[0]["status"] == "completed" and ended[0]["endReason"] == "caller_hangup"


async def test_routes_and_their_4xx(gateway: Callable[..., Any], receiver: Receiver) -> None:
    base, store, _ = await gateway()
    key, _ = store.create_api_key("t")
    other, _ = store.create_api_key("o", tenant="other")
    url = receiver.url("/ep")
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, timeout=10) as http:
        assert (await http.post("/webhook-endpoints", json={"url": url}, headers={"X-API-Key": "gw_nope"})).status_code == 401
        assert (await http.get("/webhook-endpoints", headers={"X-API-Key": ""})).status_code == 401
        assert (await http.post("/webhook-call-secret", headers={"X-API-Key": "gw_nope"})).status_code == 401
        bad = await http.post("/webhook-endpoints", content=b"{", headers={"content-type": "application/json"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
        assert (await http.post("/webhook-endpoints", content=b"url=x",
                                headers={"content-type": "application/x-www-form-urlencoded"})).status_code == 415
        for body, field in (
            ({"url": "https://10.0.0.1/hook"}, "url"), ({"url": "https://169.254.169.254/"}, "url"),
            ({"url": "http://example.com/hook"}, "url"), ({"url": "ftp://example.com/x"}, "url"),
            ({"url": url, "events": ["call.nope"]}, "events.0"), ({"url": url, "events": []}, "events"),
            ({"url": url, "events": ["call.ended", "call.ended"]}, "events"), ({"url": url, "secret": "x"}, "secret"),
            ({}, "url"),
        ):  # fmt: skip
            r = await http.post("/webhook-endpoints", json=body)
            assert r.status_code == 422, (body, r.text)
            assert r.json()["error"]["code"] == "validation_error"
            assert field in {f["field"] for f in r.json()["error"]["fields"]}, (body, r.json())
        r = await http.post("/webhook-endpoints", json={"url": url, "events": ["call.ended", "call.report"]})
        assert r.status_code == 201 and r.json()["secret"].startswith("whsec_")
        created = r.json()
        assert created["events"] == ["call.ended", "call.report"] and created["disabled"] is False
        listed = (await http.get("/webhook-endpoints")).json()["data"]
        assert [e["id"] for e in listed] == [created["id"]] and "secret" not in listed[0]
        assert (await http.get("/webhook-endpoints", headers={"X-API-Key": other})).json() == {"data": []}
        assert (await http.delete(f"/webhook-endpoints/{created['id']}", headers={"X-API-Key": other})).status_code == 404
        assert (await http.delete("/webhook-endpoints/whe_missing")).status_code == 404
        assert (await http.delete(f"/webhook-endpoints/{created['id']}")).status_code == 204
        assert (await http.delete(f"/webhook-endpoints/{created['id']}")).status_code == 404
        assert (await http.get("/webhook-endpoints")).json() == {"data": []}
        one, two = [(await http.post("/webhook-call-secret")).json() for _ in range(2)]
        assert one["secret"] != two["secret"] and two["secret"].startswith("whsec_")
        r = await http.get("/webhook-call-secret")
        assert r.status_code == 405 and r.headers["allow"] == "POST"
        r = await http.post("/calls/inline", json={**INLINE, "webhookUrl": "https://10.1.2.3/x"})
        assert r.status_code == 422 and "webhookUrl" in {f["field"] for f in r.json()["error"]["fields"]}
