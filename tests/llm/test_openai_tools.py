"""Tool declarations and HTTPS forwarding (gateway.llm.tools), and tool calls over the wire."""

from __future__ import annotations

import json

import httpx
import pytest

from gateway.formats import PCMU_8K
from gateway.llm.base import AgentConfig, BridgeFailed, ResponseDone
from gateway.llm.openai_realtime import OpenAIRealtimeBridge, openai_backend
from gateway.llm.tool_runner import ToolRunner
from gateway.llm.tools import (
    ToolCall,
    ToolConfigError,
    gemini_function_declaration,
    openai_tool,
    parse_tools,
)
from gateway.netpolicy import OutboundPolicy
from tests.llm.conformance import check_openai_client_event, check_openai_server_event
from tests.llm.fake_servers import Collector, FakeRealtimeServer, Reply, Say

BOOK = {
    "name": "book_slot",
    "description": "Book a slot",
    "parameters": {"type": "object", "properties": {"day": {"type": "string"}}},
    "url": "https://tools.example.com/book",
    "secret": "tool_token",
    "timeout_s": 2,
}
SECRETS = {"tool_token": "tok-very-secret-42"}


def runner(handler) -> ToolRunner:
    return ToolRunner(parse_tools([BOOK], SECRETS), client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))


def test_parse_accepts_openai_and_chat_completions_shapes():
    flat = parse_tools([{"type": "function", "name": "a", "url": "https://x/a"}])
    nested = parse_tools([{"type": "function", "function": {"name": "b", "parameters": {"type": "object"}}, "url": "https://x/b"}])
    assert flat[0].parameters == {"type": "object", "properties": {}}
    assert nested[0].name == "b" and nested[0].parameters == {"type": "object"}
    [spec] = parse_tools([BOOK], SECRETS)
    assert spec.bearer == "tok-very-secret-42" and "tok-very-secret" not in repr(spec)
    assert openai_tool(spec) == {"type": "function", "name": "book_slot", "description": "Book a slot", "parameters": BOOK["parameters"]}
    assert gemini_function_declaration(spec)["parametersJsonSchema"] == BOOK["parameters"]


@pytest.mark.parametrize("bad", [
    {"name": "x", "url": "http://tools.example.com/x"},  # plain http to a host nobody allowed
    {"name": "x", "url": "ftp://tools.example.com/x"},
    {"name": "x"},  # nowhere to forward to
    {"name": "bad name", "url": "https://x/y"},
    {"name": "x", "url": "https://x/y", "secret": "missing"},
    {"name": "x", "url": "https://169.254.169.254/latest/meta-data"},  # cloud metadata
    {"name": "x", "url": "https://10.0.0.5/x"},
    {"name": "x", "url": "https://[::ffff:192.168.1.1]/x"},  # IPv4-mapped private
    {"name": "x", "url": "http://127.0.0.1:9000/x"},  # loopback port, not allow-listed
    {"name": "x", "url": "https://localhost/x"},
])  # fmt: skip
def test_parse_rejects_bad_declarations(bad):
    with pytest.raises(ToolConfigError):
        parse_tools([bad], SECRETS, policy=OutboundPolicy())


def test_without_a_policy_only_the_url_shape_is_checked():
    """At call start the bridge has no policy: the runner's client checks the target then."""
    assert parse_tools([{"name": "x", "url": "http://10.0.0.5/x"}])[0].url == "http://10.0.0.5/x"
    with pytest.raises(ToolConfigError):
        parse_tools([{"name": "x", "url": "ftp://tools.example.com/x"}])


def test_http_to_loopback_needs_the_operator_allow_list():
    allow = OutboundPolicy(("127.0.0.1:9000",))
    assert parse_tools([{"name": "x", "url": "http://127.0.0.1:9000/x"}], policy=allow)[0].url.startswith("http://127.0.0.1")
    with pytest.raises(ToolConfigError):
        parse_tools([{"name": "x", "url": "http://127.0.0.1:9001/x"}], policy=allow)  # another port


async def test_call_posts_arguments_with_bearer_and_returns_json():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"booked": True, "day": "thu"})

    r = runner(handler)
    out = await r.call(ToolCall("c1", "book_slot", '{"day": "thu"}'))
    assert json.loads(out) == {"booked": True, "day": "thu"}
    [req] = seen
    assert req.method == "POST" and str(req.url) == BOOK["url"]
    assert json.loads(req.content) == {"day": "thu"}
    assert req.headers["authorization"] == "Bearer tok-very-secret-42"
    assert req.headers["x-tool-name"] == "book_slot" and req.headers["x-tool-call-id"] == "c1"
    assert "tok-very-secret" not in repr(r)
    await r.aclose()


@pytest.mark.parametrize(("response", "expected"), [
    (httpx.Response(500, text="boom"), "HTTP 500"),
    (httpx.TimeoutException("slow"), "timed out"),
    (httpx.ConnectError("refused"), "unreachable"),
])  # fmt: skip
async def test_tool_failures_become_error_outputs(response, expected):
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(response, Exception):
            raise response
        return response

    out = json.loads(await runner(handler).call(ToolCall("c1", "book_slot", "{}")))
    assert expected in out["error"]


async def test_unknown_tool_and_bad_arguments_are_errors_not_exceptions():
    r = runner(lambda req: httpx.Response(200))
    assert "unknown tool" in json.loads(await r.call(ToolCall("c", "nope", "{}")))["error"]
    assert "not a JSON object" in json.loads(await r.call(ToolCall("c", "book_slot", "[1]")))["error"]


async def test_bad_tool_declaration_fails_the_start():
    bridge = OpenAIRealtimeBridge(openai_backend("gpt-realtime", url="ws://127.0.0.1:9/v1/realtime"), "k")
    with pytest.raises(BridgeFailed) as info:
        await bridge.start(AgentConfig(tools=({"name": "x", "url": "ftp://evil.example/x"},)), PCMU_8K)
    assert info.value.code == "tool_config"


@pytest.mark.usefixtures("shared_audio")
async def test_function_call_is_forwarded_and_answered_over_the_wire():
    posted: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content))
        return httpx.Response(200, json={"booked": "thursday 9:00"})

    async with FakeRealtimeServer(
        replies=[Reply(call=("book_slot", {"day": "thursday"})), Reply([Say("caller/confirm")])]
    ) as srv:
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        bridge = OpenAIRealtimeBridge(openai_backend("gpt-realtime", url=srv.url), "test", tool_client=client)
        await bridge.start(AgentConfig(tools=(BOOK,), secrets=SECRETS, greeting="Hi"), PCMU_8K)
        tools = srv.session["tools"]
        assert tools == [{"type": "function", "name": "book_slot", "description": "Book a slot", "parameters": BOOK["parameters"]}]
        async with Collector(bridge) as c:
            # the call, then the spoken answer
            await c.wait_for(lambda: len([e for e in c.of(ResponseDone) if e.response_id.startswith("resp_")]) == 2)
            assert c.items()
        assert posted == [{"day": "thursday"}]
        [out] = srv.function_outputs
        assert out["output"] == '{"booked":"thursday 9:00"}'
        assert [m["type"] for m in srv.received].count("response.create") == 2
        for m in srv.received:
            check_openai_client_event(m)
        for e in srv.sent:
            check_openai_server_event(e)
