"""``gateway.client`` against a served gateway over real HTTP on loopback, outbound calls
through the carrier simulator: typed results, the API's errors, ``wait_for_call``."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
import pytest_asyncio

from gateway.api.control import ControlOut
from gateway.api.outbound_schemas import OutboundCallCreated
from gateway.api.schemas import CallCreated, CallOut
from gateway.client import AsyncGatewayClient, CallWaitTimeout, GatewayClient, GatewayConnectionError, GatewayError
from gateway.client.core import TERMINAL
from tests.client.harness import AGENT, LISTENER, QUIET, RINGING, Served, outbound_gateway
from tests.postcall.fake_chat import FakeChat, answer

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def chat():
    """The post-call step's chat-completions endpoint: every answer confirms the visit."""
    with FakeChat([answer("The agent greeted the callee, who confirmed the visit.", confirmed=True)]) as fake:
        yield fake


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gw(tmp_path_factory, local_engines, chat: FakeChat):
    async with outbound_gateway(tmp_path_factory.mktemp("client"), local_engines, postcall_base_url=chat.base_url,
                                postcall_poll_s=0.1) as served:  # fmt: skip
        yield served


@pytest_asyncio.fixture(loop_scope="module")
async def client(gw: Served):
    async with AsyncGatewayClient(gw.url, api_key=gw.key, timeout=10) as c:
        yield c


async def test_sync_client_places_a_call_and_wait_for_call_returns_the_finished_record(gw: Served):
    def run() -> tuple[OutboundCallCreated, CallOut, float]:
        with GatewayClient(gw.url, api_key=gw.key, timeout=10) as c:
            placed = c.place_call(to=QUIET, **{k: v for k, v in AGENT.items() if k != "systemPrompt"},
                                  system_prompt=AGENT["systemPrompt"])  # a Python name, sent as systemPrompt
            t = time.monotonic()
            return placed, c.wait_for_call(placed.call_id, timeout=60), time.monotonic() - t

    placed, rec, waited = await asyncio.to_thread(run)
    assert isinstance(placed, OutboundCallCreated) and placed.status == "queued" and placed.to == QUIET
    assert isinstance(rec, CallOut) and rec.id == placed.call_id
    assert rec.status == "completed", rec
    assert rec.ended_at is not None and rec.direction == "outbound" and rec.carrier_account_id == gw.account_id
    assert [t.to for t in rec.transitions][-1] == "completed"
    assert rec.post_call.status == "completed" and rec.summary, rec  # no conversation: no model call needed
    assert rec.extracted == {} and waited < 30


async def test_wait_for_call_returns_the_summary_and_extracted_fields_of_the_post_call_step(client, chat):
    placed = await client.place_call(to=LISTENER, system_prompt="You confirm visits.",
                                     first_message="Hello, this is the clinic calling about your visit.",
                                     fields=[{"name": "confirmed", "type": "boolean",
                                              "description": "Did the callee confirm?"}])  # fmt: skip
    rec = await client.wait_for_call(placed.call_id, timeout=60)
    assert rec.status == "completed" and [t.role for t in rec.transcript][:1] == ["agent"], rec.transcript
    assert rec.post_call.status == "completed" and rec.post_call.error is None, rec.post_call
    assert rec.summary == "The agent greeted the callee, who confirmed the visit."
    assert rec.extracted == {"confirmed": True}
    sent = chat.requests[-1].body
    assert "Hello, this is the clinic calling" in json.dumps(sent["messages"])
    assert sent["response_format"]["type"] == "json_schema"


async def test_async_client_reads_calls_and_errors_carry_the_api_code_message_and_fields(gw: Served, client):
    created = await client.create_inline_call(system_prompt="Test.", voice="joe", language="en-US", greeting="Hi.",
                                              connection_type="raw")  # fmt: skip
    assert isinstance(created, CallCreated) and created.instructions is None
    rec = await client.get_call(created.call_id)
    assert rec.status == "queued" and rec.connection_type == "raw" and rec.config.greeting == "Hi."

    with pytest.raises(GatewayError) as bad:
        await client.place_call(to="12", system_prompt="x", ring_timeout=1)
    assert bad.value.status == 422 and bad.value.code == "validation_error"
    assert {f.field for f in bad.value.fields} >= {"to", "ringTimeout"}, bad.value.fields
    assert "ringTimeout" in str(bad.value)

    with pytest.raises(GatewayError) as missing:
        await client.get_call("call_nope")
    assert (missing.value.status, missing.value.code, missing.value.fields) == (404, "not_found", [])

    with pytest.raises(GatewayError) as not_live:
        await client.hangup(created.call_id)  # never streamed here
    assert (not_live.value.status, not_live.value.code) == (409, "not_live")

    async with AsyncGatewayClient(gw.url, api_key="wrong") as anon:
        with pytest.raises(GatewayError) as unauth:
            await anon.get_call(created.call_id)
    assert (unauth.value.status, unauth.value.code) == (401, "unauthorized")


async def test_wait_for_call_times_out_clearly_then_a_hangup_cancels_the_ringing_call(client):
    placed = await client.place_call(to=RINGING, system_prompt="x", ring_timeout=60)
    t = time.monotonic()
    with pytest.raises(CallWaitTimeout) as late:
        await client.wait_for_call(placed.call_id, timeout=0.6)
    assert 0.5 < time.monotonic() - t < 3
    assert late.value.call_id == placed.call_id and late.value.last is not None
    assert late.value.last.status not in TERMINAL
    assert f"not finished after 0.6 s (status {late.value.last.status}" in str(late.value)
    for _ in range(100):  # the carrier's call id arrives with its first answer
        done = await client.hangup(placed.call_id) if (await client.get_call(placed.call_id)).carrier_call_id else None
        if done is not None:
            break
        await asyncio.sleep(0.05)
    assert isinstance(done, ControlOut) and done.via == "carrier"
    ended = await client.wait_for_call(placed.call_id, timeout=20)
    assert ended.status == "canceled", ended


async def test_no_answer_is_a_connection_error_with_the_request_limit():
    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()  # read nothing, answer nothing
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with AsyncGatewayClient(f"http://127.0.0.1:{port}", api_key="k", timeout=0.3) as slow:
            t = time.monotonic()
            with pytest.raises(GatewayConnectionError) as timed_out:
                await slow.get_call("call_1")
            assert timed_out.value.code == "timeout" and timed_out.value.status is None
            assert time.monotonic() - t < 2
    finally:
        release.set()
        server.close()
        await server.wait_closed()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with GatewayClient(f"http://127.0.0.1:{closed}", api_key="k", timeout=2) as down:
        with pytest.raises(GatewayConnectionError) as refused:
            down.get_call("call_1")
    assert refused.value.code == "network"



async def test_list_calls_pages_newest_first_with_filters(client):
    first = await client.create_inline_call(system_prompt="A.", voice="joe", language="en-US", greeting="",
                                            connection_type="raw")  # fmt: skip
    second = await client.create_inline_call(system_prompt="B.", voice="joe", language="en-US", greeting="",
                                             connection_type="raw")  # fmt: skip
    page = await client.list_calls(limit=2, direction="inbound", status="queued")
    assert [c.id for c in page.calls] == [second.call_id, first.call_id]
    assert page.pagination.limit == 2 and page.pagination.offset == 0 and page.pagination.total >= 2
    rest = await client.list_calls(limit=1, offset=1, direction="inbound", status="queued")
    assert [c.id for c in rest.calls] == [first.call_id]
    since = page.calls[0].created_at
    assert page.calls[1].created_at < since
    newest = await client.list_calls(start_date=since, direction="inbound")  # a datetime, sent as ISO 8601
    assert [c.id for c in newest.calls] == [second.call_id]
    with pytest.raises(GatewayError) as bad:
        await client.list_calls(limit=0)
    assert bad.value.code == "validation_error" and [f.field for f in bad.value.fields] == ["limit"]
