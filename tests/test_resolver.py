"""DNS for outbound connections runs on its own bounded pool (gateway.resolver), never on the
default executor that ``asyncio.to_thread`` (every store call) uses."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest

from gateway.llm.base import BridgeFailed
from gateway.llm.tool_runner import ToolRunner
from gateway.llm.tools import ToolCall, parse_tools
from gateway.llm.ws_client import open_socket
from gateway.netpolicy import OutboundPolicy
from gateway.outbound import outbound_client
from gateway.resolver import ResolverBusy, ResolverPool


@pytest.fixture
def dead_resolver(monkeypatch):
    """``socket.getaddrinfo`` for ``*.slow.test`` blocks (a resolver that never answers) until
    the test ends; other names resolve as usual. Yields the list of names asked."""
    release = threading.Event()
    asked: list[str] = []
    real = socket.getaddrinfo

    def slow(host, *args, **kwargs):
        if str(host).endswith("slow.test"):
            asked.append(host)
            release.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "timed out")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    yield asked
    release.set()


async def _to_thread_delay() -> float:
    began = time.monotonic()
    await asyncio.to_thread(lambda: None)
    return time.monotonic() - began


async def test_tool_calls_to_a_dead_resolver_do_not_starve_to_thread(dead_resolver):
    specs = parse_tools([{"name": "t", "url": "https://api.slow.test/x", "timeout_s": 2}])
    runner = ToolRunner(specs, client=outbound_client(OutboundPolicy()))
    calls = [asyncio.create_task(runner.call(ToolCall(f"c{i}", "t", "{}"))) for i in range(12)]
    await asyncio.sleep(0.2)  # every lookup has been handed to a thread (or queued)
    assert dead_resolver  # the lookups really block
    delays = [await _to_thread_delay() for _ in range(5)]
    assert max(delays) < 0.05, delays
    outputs = await asyncio.gather(*calls)
    assert all("error" in json.loads(o) for o in outputs)
    await runner.aclose()


async def test_model_endpoint_connects_resolve_on_the_pool(dead_resolver):
    opening = asyncio.create_task(open_socket("ws://model.slow.test:9/v1", {}, peer="compat", open_timeout_s=1.0))
    openings = [opening] + [
        asyncio.create_task(open_socket(f"ws://m{i}.slow.test:9/v1", {}, peer="compat", open_timeout_s=1.0))
        for i in range(8)
    ]
    await asyncio.sleep(0.2)
    assert "model.slow.test" in dead_resolver
    assert await _to_thread_delay() < 0.05
    for task in openings:
        with pytest.raises(BridgeFailed) as info:
            await task
        assert info.value.code == "model_connect"


async def test_the_pool_refuses_lookups_beyond_its_bound(dead_resolver):
    pool = ResolverPool(threads=1, max_pending=2)
    first = [asyncio.create_task(pool.getaddrinfo(f"h{i}.slow.test", 443, timeout_s=5)) for i in range(2)]
    await asyncio.sleep(0.05)
    began = time.monotonic()
    with pytest.raises(ResolverBusy):
        await pool.getaddrinfo("h3.slow.test", 443, timeout_s=5)
    assert time.monotonic() - began < 0.05  # refused at once, not queued
    for task in first:
        task.cancel()
    pool.close()


async def test_a_lookup_whose_caller_gave_up_is_skipped(dead_resolver):
    pool = ResolverPool(threads=1, max_pending=4)
    blocked = asyncio.create_task(pool.getaddrinfo("a.slow.test", 443, timeout_s=5))
    await asyncio.sleep(0.05)
    with pytest.raises(TimeoutError):
        await pool.getaddrinfo("b.slow.test", 443, timeout_s=0.05)  # queued behind a.slow.test
    assert pool.pending == 2
    blocked.cancel()
    pool.close()


async def test_the_pool_resolves_and_reports_failures():
    pool = ResolverPool(threads=2)
    infos = await pool.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM, timeout_s=2)
    assert infos[0][4][0] == "127.0.0.1"
    with pytest.raises(OSError):
        await pool.getaddrinfo("nxdomain.invalid", 80, timeout_s=5)
    assert pool.pending == 0
    pool.close()
    with pytest.raises(ResolverBusy):
        await pool.getaddrinfo("127.0.0.1", 80, timeout_s=1)
