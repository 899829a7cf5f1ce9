"""Bad input on the media socket: clear close codes for bad URLs, counted-and-skipped frames.

Each test drives a real WebSocket on loopback with raw frames (not the simulated caller), so
it can send exactly the malformed thing under test.
"""

from __future__ import annotations

import re

import asyncio
import time

import orjson
import pybase64
import pytest
import websockets
from websockets.asyncio.client import connect

from gateway.simulator.dialects import TwilioCaller
from gateway.store import CallConfig

pytestmark = pytest.mark.slow


async def close_code_of(url: str, headers: dict[str, str] | None = None) -> tuple[int | None, str]:
    """Connect, wait for the server to close, return (code, reason)."""
    async with connect(url, open_timeout=5, additional_headers=headers) as ws:
        try:
            await asyncio.wait_for(ws.recv(), 5)
        except websockets.ConnectionClosed:
            pass
        await ws.wait_closed()
        return ws.close_code, ws.close_reason


async def wait_started(gw, call_id: str) -> None:
    """Wait (up to 4 s) until the live call view shows the session has processed ``start``."""
    for _ in range(200):
        rec = await gw.call_record(call_id, final=False)
        if any(e["kind"] == "started" for e in rec["events"]):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the call never started")


@pytest.fixture
async def gw(gateway):
    return await gateway()


async def test_wrong_token_is_refused_with_4401(gw):
    call = await gw.create_inline_call()
    url = call["streamUrl"].rsplit("/", 1)[0] + "/not-the-token"
    assert await close_code_of(url) == (4401, "invalid stream token")
    rec = await gw.call_record(call["callId"], final=False)
    assert rec["status"] == "queued"  # a bad token does not burn the call


async def test_unknown_call_is_refused_with_4404(gw):
    call = await gw.create_inline_call()
    url = call["streamUrl"].replace(call["callId"], "call_doesnotexist")
    assert (await close_code_of(url))[0] == 4404


async def test_wrong_carrier_in_path_is_refused_with_4400(gw):
    call = await gw.create_inline_call(connectionType="twilio")
    assert (await close_code_of(call["streamUrl"].replace("/twilio/", "/telnyx/")))[0] == 4400
    assert (await close_code_of(call["streamUrl"].replace("/twilio/", "/nosuch/")))[0] == 4400


async def test_expired_token_is_refused_with_4410(gw):
    store = gw.services.store
    rec, token = store.create_call(CallConfig(), "twilio", ttl_s=0.05)
    time.sleep(0.1)
    url = f"{gw.ws}/stream/twilio/{rec.id}/{token}"
    assert (await close_code_of(url))[0] == 4410


async def test_second_socket_for_a_streaming_call_is_refused_with_4409(gw):
    call = await gw.create_inline_call(firstSpeaker="user")
    dialect = TwilioCaller()
    async with connect(call["streamUrl"]) as first:
        for frame in dialect.opening({}):
            await first.send(frame)
        code, reason = await close_code_of(call["streamUrl"])
        assert code == 4409, reason
        await first.send(dialect.stop())
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(first.recv(), 5)
    rec = await gw.call_record(call["callId"])
    assert rec["status"] == "completed"
    # The finished call cannot be streamed again either.
    assert (await close_code_of(call["streamUrl"]))[0] == 4409


async def test_malformed_frames_are_counted_and_skipped_and_the_call_survives(gw):
    call = await gw.create_inline_call(firstSpeaker="user")
    d = TwilioCaller()
    good = d.media(b"\xff" * 160)
    async with connect(call["streamUrl"], max_size=2**20) as ws:
        for frame in d.opening({"customer": "42"}):
            await ws.send(frame)
        await ws.send(good)
        await ws.send("{not json")
        await ws.send(orjson.dumps({"event": "media", "streamSid": d.stream_sid,
                                    "media": {"payload": "%%%not-base64%%%"}}).decode())
        await ws.send(orjson.dumps({"event": "media", "streamSid": d.stream_sid,
                                    "media": {"payload": pybase64.b64encode(b"\xff" * 70_000).decode()}}).decode())
        await ws.send(orjson.dumps({"event": "wobble", "streamSid": d.stream_sid}).decode())
        await ws.send(orjson.dumps({"event": "media", "streamSid": d.stream_sid}).decode())
        await ws.send(b"\x00\x01binary on a text protocol")
        await ws.send(d.dtmf("7"))
        for _ in range(5):
            await ws.send(d.media(b"\xff" * 160))  # the call still takes audio
        await ws.send(d.stop())
        await ws.wait_closed()
        assert ws.close_code == 1000
    rec = await gw.call_record(call["callId"])
    assert rec["status"] == "completed" and rec["endReason"] == "carrier_stop"
    errors = rec["metrics"]["protocolErrors"]
    assert errors == {"malformed_json": 1, "bad_base64": 1, "oversize": 1, "missing_field": 1,
                      "unexpected_binary": 1}, errors
    assert rec["metrics"]["unhandledEvents"] == {"wobble": 1}
    assert rec["metrics"]["framesIn"] == 6
    kinds = [e["kind"] for e in rec["events"]]
    assert "dtmf" in kinds and kinds.count("protocol_error") == 5
    # Error details never carry audio payloads.
    assert all("%%%" not in str(e["data"]) for e in rec["events"])


async def test_frame_over_the_socket_limit_closes_with_1009_and_the_record_is_final(gw):
    call = await gw.create_inline_call(firstSpeaker="user")
    d = TwilioCaller()
    async with connect(call["streamUrl"], max_size=2**22) as ws:
        for frame in d.opening({}):
            await ws.send(frame)
        await wait_started(gw, call["callId"])
        await ws.send("x" * (2 << 20))
        await ws.wait_closed()
        assert ws.close_code == 1009
    rec = await gw.call_record(call["callId"])
    assert (rec["status"], rec["endReason"]) == ("completed", "carrier_closed"), (rec["endReason"], rec["error"], rec["events"])


async def test_socket_closed_before_start_finalises_the_call_as_failed(gw):
    call = await gw.create_inline_call()
    async with connect(call["streamUrl"]) as ws:
        await ws.send(orjson.dumps({"event": "connected", "protocol": "Call"}).decode())
    rec = await gw.call_record(call["callId"])
    assert rec["status"] == "failed"
    assert rec["error"]["code"] == "no_start"


async def test_twilio_signature_is_checked_when_an_auth_token_is_set(gateway):
    from twilio.request_validator import RequestValidator

    gw = await gateway(twilio_auth_token="auth-token-123")
    call = await gw.create_inline_call(firstSpeaker="user")
    assert (await close_code_of(call["streamUrl"]))[0] == 4403  # unsigned
    forged = RequestValidator("another-token").compute_signature(call["streamUrl"], {})
    async with connect(call["streamUrl"], additional_headers={"X-Twilio-Signature": forged}) as ws:
        await ws.wait_closed()
        assert ws.close_code == 4403
    rec = await gw.call_record(call["callId"], final=False)
    assert rec["status"] == "queued"  # refused sockets do not burn the call
    good = RequestValidator("auth-token-123").compute_signature(call["streamUrl"], {})
    d = TwilioCaller()
    async with connect(call["streamUrl"], additional_headers={"X-Twilio-Signature": good}) as ws:
        for frame in d.opening({}):
            await ws.send(frame)
        await ws.send(d.stop())
        await ws.wait_closed()
        assert ws.close_code == 1000
    assert (await gw.call_record(call["callId"]))["status"] == "completed"


async def test_metrics_count_finished_calls_and_protocol_errors(gw):
    import httpx

    call = await gw.create_inline_call(firstSpeaker="user")
    d = TwilioCaller()
    async with connect(call["streamUrl"]) as ws:
        for frame in d.opening({}):
            await ws.send(frame)
        await ws.send("{not json")
        for _ in range(5):
            await ws.send(d.media(b"\xff" * 160))
        await ws.send(d.stop())
        await ws.wait_closed()
    await gw.call_record(call["callId"])
    async with httpx.AsyncClient(base_url=gw.http) as c:  # no API key: scraped like /health
        text = (await c.get("/metrics")).text
    assert 'gateway_calls_total{carrier="twilio",end_reason="carrier_stop",status="completed"} 1.0' in text
    assert 'gateway_protocol_errors_total{carrier="twilio",kind="malformed_json"} 1.0' in text
    assert "gateway_calls_live 0.0" in text
    # the media engine's gauges: the call's frames went through at least one pass; none attached now
    assert "gateway_media_engine_lanes 0.0" in text
    ticks = float(re.search(r"^gateway_media_engine_ticks (\S+)$", text, re.M).group(1))
    assert ticks >= 1


async def test_a_peer_that_leaves_during_the_handshake_still_gets_a_final_record(gw, monkeypatch):
    """The call is claimed before the upgrade completes: if the peer is gone by then, the
    record must still be finalised (it used to stay in_progress forever)."""
    import base64
    import os

    store = gw.services.store
    claim = store.mark_call_started

    def slow_claim(*args, **kwargs):  # a slow database: the peer hangs up meanwhile
        time.sleep(0.3)
        return claim(*args, **kwargs)

    monkeypatch.setattr(store, "mark_call_started", slow_claim)
    call = await gw.create_inline_call(connectionType="raw")
    port = int(gw.ws.rsplit(":", 1)[1])  # the media listener in use
    path = call["streamUrl"].split(f":{port}", 1)[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())  # fmt: skip
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.close()
    for _ in range(100):
        rec = await gw.call_record(call["callId"], final=False)
        if rec["status"] not in ("queued", "in_progress"):
            break
        await asyncio.sleep(0.05)
    assert (rec["status"], rec["endReason"]) == ("failed", "carrier_closed_before_start")
    assert call["callId"] not in gw.services.live
