"""``GATEWAY_MAX_CALLS``: at the limit, new calls get 503 + Retry-After and new streams 1013."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import connect

from gateway.api import RETRY_AFTER_S
from gateway.app import CLOSE_CODES
from gateway.simulator.dialects import TwilioCaller

INLINE = {"systemPrompt": "Be brief.", "voice": "joe", "language": "en-US", "greeting": "Hi!",
          "firstSpeaker": "user"}  # fmt: skip
AGENT = {**INLINE, "name": "Desk"}


def _assert_at_capacity(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == str(RETRY_AFTER_S)
    err = r.json()["error"]
    assert err["code"] == "unavailable" and "limit of 2 live calls" in err["message"]


async def test_new_calls_get_503_with_retry_after_at_the_limit(make_client: Any, settings: Any, api_key: str) -> None:
    live = [0]
    limited = settings.model_copy(update={"max_calls": 2})
    async with make_client(settings_=limited, live_calls=lambda: live[0]) as c:
        c.headers["X-API-Key"] = api_key
        agent = (await c.post("/agents", json=AGENT)).json()
        for n in (0, 1):
            live[0] = n
            assert (await c.post("/calls/inline", json=INLINE)).status_code == 201
            assert (await c.post("/calls/create", json={"agentId": agent["id"]})).status_code == 201
        for n in (2, 3):
            live[0] = n
            _assert_at_capacity(await c.post("/calls/inline", json=INLINE))
            _assert_at_capacity(await c.post("/calls/create", json={"agentId": agent["id"]}))
            # agents and records are not calls: they stay available
            assert (await c.post("/agents", json=AGENT)).status_code == 201
            assert (await c.get(f"/agents/{agent['id']}")).status_code == 200
        live[0] = 1
        assert (await c.post("/calls/inline", json=INLINE)).status_code == 201


async def _refused_with(url: str) -> tuple[int | None, str]:
    async with connect(url, open_timeout=5) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        await ws.wait_closed()
        return ws.close_code, ws.close_reason


async def _status(c: httpx.AsyncClient, call_id: str, until: str) -> dict:
    for _ in range(200):
        record = (await c.get(f"/calls/{call_id}")).json()
        if record["status"] == until:
            return record
        await asyncio.sleep(0.05)
    raise AssertionError(f"call {call_id} never became {until}: {record}")


async def _live_calls_drop_to(services: Any, n: int) -> None:
    """The record is final just before its session leaves the live set: wait (≤ 2 s) for it."""
    for _ in range(100):
        if services.live_calls() <= n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{services.live_calls()} calls still live, expected {n}")


@pytest.mark.slow
async def test_streams_and_calls_are_refused_while_the_gateway_is_full(served: Any) -> None:
    app, port, key = await served(max_calls=2)
    services = app.state.services
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}) as c:
        calls = [(await c.post("/calls/inline", json=INLINE)).json() for _ in range(3)]
        callers = [TwilioCaller() for _ in calls]
        async with contextlib.AsyncExitStack() as stack:
            sockets = []
            for call, d in zip(calls[:2], callers, strict=False):
                ws = await stack.enter_async_context(connect(call["streamUrl"], open_timeout=5))
                for frame in d.opening({}):
                    await ws.send(frame)
                sockets.append(ws)
                await _status(c, call["callId"], "in_progress")
            assert services.live_calls() == 2
            # the third stream is refused with 1013 and its token is not spent
            assert await _refused_with(calls[2]["streamUrl"]) == (
                CLOSE_CODES["at_capacity"], "gateway at its live call limit; try again later")  # fmt: skip
            assert CLOSE_CODES["at_capacity"] == 1013
            assert (await c.get(f"/calls/{calls[2]['callId']}")).json()["status"] == "queued"
            r = await c.post("/calls/inline", json=INLINE)
            assert r.status_code == 503 and r.headers["retry-after"] == str(RETRY_AFTER_S), r.text
            assert r.json()["error"]["code"] == "unavailable"
            # one call ends: a slot is free again, for a new call and for the refused stream
            await sockets[0].send(callers[0].stop())
            await asyncio.wait_for(sockets[0].wait_closed(), 10)
            await _status(c, calls[0]["callId"], "completed")
            await _live_calls_drop_to(services, 1)
            assert (await c.post("/calls/inline", json=INLINE)).status_code == 201
            d = callers[2]
            async with connect(calls[2]["streamUrl"], open_timeout=5) as third:
                for frame in d.opening({}):
                    await third.send(frame)
                await _status(c, calls[2]["callId"], "in_progress")
                await third.send(d.stop())
                await asyncio.wait_for(third.wait_closed(), 10)
                assert third.close_code == 1000
            await sockets[1].send(callers[1].stop())
            await asyncio.wait_for(sockets[1].wait_closed(), 10)
        await _status(c, calls[1]["callId"], "completed")
        await _live_calls_drop_to(services, 0)
