"""Hostile tool endpoints (real loopback HTTP): whatever a tool answers, the model gets an output.

A tool answering JSON nested 100k deep, an endless body or a one-byte trickle must neither
kill the background call (the model would never get an output and never answer again) nor
keep it running past the tool's ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

import pytest

from gateway.formats import PCMU_8K
from gateway.llm.base import AgentConfig, ResponseDone
from gateway.llm.openai_realtime import OpenAIRealtimeBridge, openai_backend
from gateway.llm.tool_runner import ToolRunner
from gateway.llm.tools import ToolCall, parse_tools
from gateway.netpolicy import OutboundPolicy
from gateway.outbound import outbound_client
from tests.llm.fake_servers import Collector, FakeRealtimeServer, Reply, Say

DEEP = b"[" * 100_000 + b"]" * 100_000


class HostileTool:
    """A loopback HTTP/1.1 server answering every POST in one of these ways (``mode``):

    ``deep``: 200 KB of JSON nested 100k deep; ``huge``: an endless body (1 MiB chunks, as fast
    as the client reads); ``trickle``: one byte every 100 ms, forever; ``ok``: ``{"ok":true}``.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sent = 0  # body bytes written
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task] = set()

    async def __aenter__(self) -> HostileTool:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._conns):
            task.cancel()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/tool"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(asyncio.current_task())
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
            await reader.readexactly(length)
            if self.mode in ("deep", "ok"):
                body = DEEP if self.mode == "deep" else b'{"ok":true}'
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)  # fmt: skip
                self.sent += len(body)
                await writer.drain()
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
            chunk = b"7" * (1 << 20) if self.mode == "huge" else b" "
            while True:
                writer.write(chunk)
                await writer.drain()
                self.sent += len(chunk)
                if self.mode == "trickle":
                    await asyncio.sleep(0.1)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._conns.discard(asyncio.current_task())
            writer.close()


def _runner(url: str, timeout_s: float = 1.0) -> ToolRunner:
    spec = {"name": "lookup", "url": url, "timeout_s": timeout_s}
    policy = OutboundPolicy(("127.0.0.1",))
    return ToolRunner(parse_tools([spec], policy=policy), client=outbound_client(policy))


async def test_json_nested_100k_deep_is_an_output_not_a_dead_task():
    async with HostileTool("deep") as tool:
        r = _runner(tool.url)
        out = await r.call(ToolCall("c1", "lookup", "{}"))
        await r.aclose()
    assert out.startswith("[[[[") and len(out) == 16_000  # passed on as (cut) text


async def test_an_endless_body_is_read_up_to_the_cap_only():
    async with HostileTool("huge") as tool:
        r = _runner(tool.url, timeout_s=5.0)
        began = time.monotonic()
        out = await r.call(ToolCall("c1", "lookup", "{}"))
        took = time.monotonic() - began
        await r.aclose()
    assert out == "7" * 16_000
    assert took < 2.0
    assert tool.sent < 64 << 20  # the server stopped being read long before 64 MiB


async def test_a_trickling_tool_hits_the_overall_deadline(caplog):
    async with HostileTool("trickle") as tool:
        r = _runner(tool.url, timeout_s=0.5)
        began = time.monotonic()
        with caplog.at_level(logging.WARNING, "gateway.llm.tool_runner"):
            out = await r.call(ToolCall("c1", "lookup", "{}"))
        took = time.monotonic() - began
        await r.aclose()
    assert json.loads(out) == {"error": "tool lookup timed out"}
    assert 0.4 < took < 1.5  # httpx's per-read timeout alone would never fire
    assert tool.sent >= 3


async def test_an_unexpected_failure_still_hands_an_output_on(monkeypatch):
    async with HostileTool("ok") as tool:
        r = _runner(tool.url)

        def broken(self, body: bytes, encoding: str) -> str:
            raise RecursionError("maximum recursion depth exceeded")

        monkeypatch.setattr(ToolRunner, "_output", broken)
        got: list[str] = []
        done = asyncio.Event()

        async def then(call: ToolCall, output: str) -> None:
            got.append(output)
            done.set()

        r.submit(ToolCall("c1", "lookup", "{}"), then)
        async with asyncio.timeout(3):
            await done.wait()
        await r.aclose()
    assert json.loads(got[0]) == {"error": "tool lookup failed"}


async def test_refusal_at_resolution_is_logged_as_a_policy_refusal(caplog):
    r = ToolRunner(parse_tools([{"name": "lookup", "url": "https://localtest.invalid/x"}]),
                   client=outbound_client(OutboundPolicy()))  # fmt: skip
    with caplog.at_level(logging.WARNING, "gateway.llm.tool_runner"):
        out = await r.call(ToolCall("c1", "lookup", "{}"))
    await r.aclose()
    assert "unreachable" in json.loads(out)["error"]
    assert "refused by the outbound policy" in caplog.text and "does not resolve" in caplog.text


@pytest.mark.usefixtures("shared_audio")
@pytest.mark.parametrize("mode", ["deep", "huge", "trickle"])
async def test_the_model_gets_the_output_and_answers_again(mode):
    async with HostileTool(mode) as tool, FakeRealtimeServer(
        replies=[Reply(call=("lookup", {})), Reply([Say("caller/confirm")])]
    ) as srv:
        policy = OutboundPolicy(("127.0.0.1",))
        bridge = OpenAIRealtimeBridge(openai_backend("gpt-realtime", url=srv.url), "test",
                                      tool_client=outbound_client(policy))  # fmt: skip
        tools = ({"name": "lookup", "url": tool.url, "timeout_s": 0.5},)
        await bridge.start(AgentConfig(tools=tools, greeting="Hi"), PCMU_8K)
        try:
            async with Collector(bridge) as c:
                await c.wait_for(lambda: len([e for e in c.of(ResponseDone)
                                              if e.response_id.startswith("resp_")]) == 2)  # fmt: skip
        finally:
            with contextlib.suppress(Exception):
                await bridge.close()
        [out] = srv.function_outputs
        assert out["output"]
        assert [m["type"] for m in srv.received].count("response.create") == 2
        assert bridge.protocol.idle
