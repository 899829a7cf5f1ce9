"""A call's reconnects after drops are bounded (gateway.llm.ws_client.ReconnectBudget): a model
server that accepts every session and then drops it ends the call with ``model_disconnected``
instead of reconnecting for ever; and a Gemini socket is never left open by a failed setup."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from websockets.asyncio.server import serve

from gateway.formats import L16_16K, PCMU_8K
from gateway.llm import gemini_live
from gateway.llm.base import AgentConfig, BridgeError, SessionRenewed
from gateway.llm.gemini_live import GeminiLiveBridge
from gateway.llm.openai_realtime import OpenAIRealtimeBridge, openai_backend
from gateway.llm.ws_client import ReconnectBudget, open_with_retries
from tests.llm.fake_servers import Collector, FakeLiveServer, FakeRealtimeServer


def test_the_budget_is_a_sliding_window():
    now = [0.0]
    budget = ReconnectBudget(3, 60.0, clock=lambda: now[0])
    assert [budget.take() for _ in range(4)] == [True, True, True, False]
    assert budget.recent == 3
    now[0] = 59.9
    assert not budget.take()
    now[0] = 60.0  # the first three leave the window together
    assert budget.recent == 0 and budget.take()
    assert not ReconnectBudget(0, 60.0).take()


async def test_earlier_drops_start_further_along_the_backoff():
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(s: float) -> None:
        slept.append(s)
        await real_sleep(0)

    async def ok() -> str:
        return "ws"

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(asyncio, "sleep", fake_sleep)
        for escalate in (0, 1, 2, 5):
            await open_with_retries(ok, attempts=3, backoff_s=(0.0, 0.25, 1.0), stop=lambda: False,
                                    peer="x", escalate=escalate)  # fmt: skip
    assert slept == [0.25, 1.0, 1.0]  # 0 s (not slept) only for a first drop


class DroppingRealtimeServer(FakeRealtimeServer):
    """Accepts every session (``session.updated``), then cuts the connection 20 ms later."""

    async def _on(self, msg):
        await super()._on(msg)
        if msg.get("type") == "session.update":
            asyncio.get_running_loop().call_later(0.02, self.drop)


async def test_openai_server_that_keeps_dropping_ends_the_call():
    async with DroppingRealtimeServer() as srv:
        bridge = OpenAIRealtimeBridge(openai_backend("gpt-realtime", url=srv.url), "test",
                                      backoff_s=(0.0, 0.01), reconnect_limit=5)  # fmt: skip
        await bridge.start(AgentConfig(first_speaker="user"), PCMU_8K)
        async with Collector(bridge) as c:
            await c.wait_for(lambda: c.finished, timeout=10)
        [err] = c.of(BridgeError)
        assert err.code == "model_disconnected" and err.fatal and "5 times" in err.message
        assert len(c.of(SessionRenewed)) == bridge.reconnects == 5
        assert len(srv.handshakes) == 1 + 5


async def test_gemini_server_that_keeps_dropping_ends_the_call():
    async with FakeLiveServer() as srv:
        bridge = GeminiLiveBridge("gemini-live-test", "test", url=srv.url, backoff_s=(0.0, 0.01),
                                  reconnect_limit=3)  # fmt: skip

        async def keep_dropping() -> None:
            seen = 0
            while True:
                await srv.wait_for(lambda: srv.connections > seen and srv._conn is not None)
                seen = srv.connections
                await srv.issue_handle()  # resumable: only the budget can end this
                await asyncio.sleep(0.02)
                srv.drop()

        await bridge.start(AgentConfig(first_speaker="user"), L16_16K)
        dropper = asyncio.create_task(keep_dropping())
        try:
            async with Collector(bridge) as c:
                await c.wait_for(lambda: c.finished, timeout=10)
        finally:
            dropper.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await dropper
        [err] = c.of(BridgeError)
        assert err.code == "model_disconnected" and err.fatal and "3 times" in err.message
        assert bridge.reconnects == 3 and srv.connections == 1 + 3


@pytest.mark.parametrize("how", ["cancelled", "bug"])
async def test_gemini_setup_failure_never_leaves_the_socket_open(monkeypatch, how):
    """A server that accepts and never answers ``setup``: cancelling the start (or a bug while
    reading) aborts the socket, as the OpenAI bridge does."""
    opened = []
    real_open = gemini_live.open_socket

    async def spy(*args, **kwargs):
        ws = await real_open(*args, **kwargs)
        opened.append(ws)
        return ws

    async def silent(conn):  # never answers setup; ends when the client's socket goes
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await conn.wait_closed()

    monkeypatch.setattr(gemini_live, "open_socket", spy)
    async with serve(silent, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        bridge = GeminiLiveBridge("gemini-live-test", "test", url=f"ws://127.0.0.1:{port}/ws", setup_timeout_s=30)
        if how == "bug":
            monkeypatch.setattr(gemini_live.LiveProtocol, "setup_message", lambda self: {1, 2})  # not JSON
        start = asyncio.create_task(bridge.start(AgentConfig(first_speaker="user"), L16_16K))
        await asyncio.sleep(0.3)
        if how == "cancelled":
            start.cancel()
        with pytest.raises((asyncio.CancelledError, TypeError)):
            await start
        [ws] = opened
        assert ws.transport.is_closing()
