"""The MCP server through the ``mcp`` SDK's own client: over stdio (``gateway mcp`` as a
subprocess talking to a served gateway) and over streamable HTTP (``/mcp`` on the gateway,
behind the API key). Each lists the tools and places an outbound call through the carrier
simulator that completes; the endpoint refuses requests without a valid key."""

from __future__ import annotations

import json
import os
import sys

import httpx
import httpx2
import pytest
import pytest_asyncio
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from gateway.api.outbound_schemas import OutboundCallCreate
from gateway.api.schemas import CallOut
from gateway.client import AsyncGatewayClient
from gateway.mcp.tools import CallRef
from tests.client.harness import AGENT, QUIET, Served, outbound_gateway

pytestmark = pytest.mark.asyncio(loop_scope="module")

NAMES = {"place_call", "get_call", "list_calls", "hangup_call", "wait_for_call"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gw(tmp_path_factory, local_engines):
    async with outbound_gateway(tmp_path_factory.mktemp("mcp"), local_engines) as served:
        yield served


async def _tools_and_a_completed_call(client: Client) -> CallOut:
    """List the tools (schemas from the API's models), place a call, wait for its record."""
    listed = {t.name: t for t in (await client.list_tools()).tools}
    assert set(listed) == NAMES
    assert listed["place_call"].input_schema == OutboundCallCreate.model_json_schema(by_alias=True)
    assert listed["get_call"].input_schema == CallRef.model_json_schema(by_alias=True)
    assert listed["wait_for_call"].output_schema == CallOut.model_json_schema(by_alias=True, mode="serialization")

    placed = await client.call_tool("place_call", {"to": QUIET, **AGENT})
    assert not placed.is_error, placed.content
    call_id = placed.structured_content["callId"]
    assert placed.structured_content["status"] == "queued"
    done = await client.call_tool("wait_for_call", {"callId": call_id, "timeoutS": 60})
    assert not done.is_error, done.content
    rec = CallOut.model_validate(done.structured_content)
    assert rec.id == call_id and rec.status == "completed", rec
    assert rec.post_call.status in ("completed", "skipped"), rec.post_call  # final, as wait_for_call promises

    bad = await client.call_tool("place_call", {"to": "12", "systemPrompt": "x"})
    assert bad.is_error and '"validation_error"' in bad.content[0].text and '"to"' in bad.content[0].text
    listing = await client.call_tool("list_calls", {"limit": 5, "direction": "outbound"})
    assert call_id in [c["id"] for c in listing.structured_content["calls"]]
    read = await client.call_tool("get_call", {"callId": call_id})
    assert read.structured_content["id"] == call_id and read.structured_content["status"] == "completed"
    gone = await client.call_tool("hangup_call", {"callId": call_id})
    assert gone.is_error and '"not_live"' in gone.content[0].text, gone.content
    return rec


async def test_stdio_server_lists_the_tools_and_places_a_call_that_completes(gw: Served):
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "gateway.cli", "mcp", "--url", gw.url, "--api-key-env", "GW_MCP_KEY"],
        env={**os.environ, "GW_MCP_KEY": gw.key},
    )  # fmt: skip
    async with Client(params, read_timeout_seconds=90) as client:
        await _tools_and_a_completed_call(client)
        missing = await client.call_tool("get_call", {"callId": "call_nope"})
        assert missing.is_error and '"not_found"' in missing.content[0].text


async def test_http_endpoint_lists_the_tools_and_places_a_call_that_completes(gw: Served):
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {gw.key}"}, timeout=90) as http:
        async with Client(streamable_http_client(f"{gw.url}/mcp", http_client=http), read_timeout_seconds=90) as client:
            await _tools_and_a_completed_call(client)
            async with AsyncGatewayClient(gw.url, api_key=gw.key) as rest:  # a call that never streams
                queued = await rest.create_inline_call(system_prompt="x", voice="joe", language="en-US", greeting="",
                                                       connection_type="raw")  # fmt: skip
            late = await client.call_tool("wait_for_call", {"callId": queued.call_id, "timeoutS": 0.3})
            assert late.is_error and json.loads(late.content[0].text)["error"]["lastStatus"] == "queued", late.content
            bad = await client.call_tool("wait_for_call", {"callId": queued.call_id, "timeoutS": 601})
            assert bad.is_error and '"timeoutS"' in bad.content[0].text, bad.content


async def test_http_endpoint_refuses_requests_without_a_valid_key(gw: Served):
    ping = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    accept = {"Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
        for headers, message in (({}, "missing X-API-Key header"),
                                 ({"X-API-Key": "nope"}, "invalid or revoked API key"),
                                 ({"Authorization": "Bearer nope"}, "invalid or revoked API key")):  # fmt: skip
            r = await http.post("/mcp", json=ping, headers={**accept, **headers})
            assert r.status_code == 401, r.text
            assert r.json() == {"error": {"code": "unauthorized", "message": message}}
    async with httpx2.AsyncClient(timeout=10) as anon:
        with pytest.raises(Exception) as refused:
            async with Client(streamable_http_client(f"{gw.url}/mcp", http_client=anon)) as client:
                await client.list_tools()
    assert any(isinstance(e, MCPError) for e in _leaves(refused.value)), refused.value


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]
