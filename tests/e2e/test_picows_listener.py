"""End to end on the picows media listener (``GATEWAY_MEDIA_LISTENER=picows``).

A real gateway on loopback serves its streams on picows (its own port) while the Starlette
route keeps serving the same URLs' paths on the HTTP port: simulated calls of every carrier
dialect to the local agent, barge-in with its heard-ms, refusals whose close codes and
reasons equal the Starlette route's, Twilio's signature on the upgrade, a client that drops
without a close, fragmented messages and pings, and SIGTERM on ``gateway serve``. The rest of
the end-to-end suite runs on picows with ``make test-e2e-picows``.
"""

from __future__ import annotations

import asyncio
import signal
import time

import numpy as np
import pytest
import websockets
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import connect

from gateway.simulator.caller import BargeIn, SimulatedCaller, WaitForAgent
from gateway.simulator.dialects import DIALECTS, TwilioCaller, make_dialect
from gateway.simulator.run import to_rate
from gateway.store import CallConfig
from tests.conftest import load_wav
from tests.e2e.gateway_process import KEY, GatewayProcess, LiveCall, free_port, wait_recorded
from tests.e2e.test_stream_errors import close_code_of, wait_started
from tests.llm.fake_servers import FakeRealtimeServer, Reply, Say

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
async def gw(gateway):
    return await gateway(media_listener="picows")


def starlette_url(gw, url: str) -> str:
    """The same stream on the app's own Starlette route."""
    return url.replace(gw.ws, gw.http.replace("http://", "ws://"))


async def test_every_carrier_dialect_is_served_on_picows(gw) -> None:
    assert gw.ws != gw.http.replace("http://", "ws://")  # the listener's own port

    async def one(name: str):
        call = await gw.create_inline_call(connectionType=name, greeting="Hello there, this is picows.")
        assert call["streamUrl"].startswith(f"{gw.ws}/stream/{name}/")
        report = await SimulatedCaller(call["streamUrl"], make_dialect(name)).run([WaitForAgent(timeout_s=30, quiet_ms=600)])
        return report, await gw.call_record(call["callId"])

    results = await asyncio.gather(*(one(name) for name in DIALECTS))
    for name, (report, rec) in zip(DIALECTS, results):
        ending = "carrier_stop" if make_dialect(name).stop() is not None else "carrier_closed"  # Plivo: no stop
        assert (rec["status"], rec["endReason"]) == ("completed", ending), (name, rec["error"])
        assert report.close_code == 1000, name
        assert report.agent_audio_ms > 1000 and np.abs(report.heard).max() > 1000, name  # the greeting was heard
        assert rec["metrics"]["framesIn"] > 10 and rec["metrics"]["framesOut"] > 3, name  # messages of up to 100 ms
        assert rec["transcript"][0]["text"].startswith("Hello there"), name


async def test_barge_in_on_picows_stops_the_agent_and_records_what_was_heard(gw, shared_audio) -> None:
    greeting = ("Hello and welcome. This is a long greeting so that you have plenty of time to "
                "talk over me, which is exactly what this test is about. Thank you for your patience.")
    call = await gw.create_inline_call(connectionType="twilio", interruptible=True, greeting=greeting)
    pcm, rate = load_wav(shared_audio / "caller/interrupt.wav")
    report = await SimulatedCaller(call["streamUrl"], TwilioCaller()).run([
        BargeIn(to_rate(pcm, rate, 8000), after_ms=1500, timeout_s=20),
        WaitForAgent(timeout_s=20, quiet_ms=1200),
    ])
    rec = await gw.call_record(call["callId"])
    assert report.clears >= 1, report.log
    heard_ms = next(e for e in rec["events"] if e["kind"] == "barge_in")["data"]["heardMs"]
    played_ms = report.played_before_clear_ms[0]
    assert played_ms >= 1000 and abs(heard_ms - played_ms) <= 150, (heard_ms, played_ms)
    said = next(t for t in rec["transcript"] if t["role"] == "agent")
    assert said["interrupted"] is True and said["heardMs"] == heard_ms
    clear_at = report.clear_at_ms[0]
    assert [t for t in report.media_arrivals_ms if clear_at < t < clear_at + 1000] == []


async def test_refusals_close_with_the_starlette_routes_codes_and_reasons(gw) -> None:
    call = await gw.create_inline_call(connectionType="twilio", firstSpeaker="user")
    url = call["streamUrl"]
    expired, token = gw.services.store.create_call(CallConfig(), "twilio", ttl_s=0.05)
    time.sleep(0.1)
    cases = {
        4401: url.rsplit("/", 1)[0] + "/not-the-token",
        4404: url.replace(call["callId"], "call_doesnotexist"),
        4400: url.replace("/twilio/", "/telnyx/"),
        4410: f"{gw.ws}/stream/twilio/{expired.id}/{token}",
    }
    for code, bad in cases.items():
        on_picows = await close_code_of(bad)
        assert on_picows[0] == code, (code, on_picows)
        assert on_picows == await close_code_of(starlette_url(gw, bad))
    assert (await close_code_of(url.replace("/twilio/", "/nosuch/")))[0] == 4400
    with pytest.raises(websockets.InvalidStatus, match="404"):
        await close_code_of(f"{gw.ws}/not/a/stream")
    dialect = TwilioCaller()
    async with connect(url) as first:  # while the call streams on picows, a second socket is refused
        for frame in dialect.opening({}):
            await first.send(frame)
        await wait_started(gw, call["callId"])
        busy = await close_code_of(url)
        assert busy[0] == 4409 and busy == await close_code_of(starlette_url(gw, url))
        await first.send(dialect.stop())
        await first.wait_closed()
        assert first.close_code == 1000
    assert (await gw.call_record(call["callId"]))["status"] == "completed"
    assert await close_code_of(url) == await close_code_of(starlette_url(gw, url)) == (4409, "call already streaming or ended")


async def test_twilio_signature_is_checked_against_the_picows_url(gateway) -> None:
    gw = await gateway(media_listener="picows", twilio_auth_token="auth-token-123")
    call = await gw.create_inline_call(firstSpeaker="user")
    url = call["streamUrl"]
    assert (await close_code_of(url))[0] == 4403  # unsigned
    for wrong in (RequestValidator("another-token").compute_signature(url, {}),
                  RequestValidator("auth-token-123").compute_signature(starlette_url(gw, url), {})):
        assert await close_code_of(url, {"X-Twilio-Signature": wrong}) == (4403, "missing or invalid X-Twilio-Signature")
    assert (await gw.call_record(call["callId"], final=False))["status"] == "queued"
    good = RequestValidator("auth-token-123").compute_signature(url, {})
    d = TwilioCaller()
    async with connect(url, additional_headers={"X-Twilio-Signature": good}) as ws:
        for frame in d.opening({}):
            await ws.send(frame)
        await ws.send(d.stop())
        await ws.wait_closed()
        assert ws.close_code == 1000
    assert (await gw.call_record(call["callId"]))["status"] == "completed"


async def test_a_client_that_drops_without_a_close_leaves_a_final_record(gw) -> None:
    call = await gw.create_inline_call(firstSpeaker="user")
    d = TwilioCaller()
    ws = await connect(call["streamUrl"])
    for frame in d.opening({}):
        await ws.send(frame)
    for _ in range(10):
        await ws.send(d.media(b"\xff" * 160))
    await wait_started(gw, call["callId"])
    ws.transport.abort()  # TCP reset: no close frame
    rec = await gw.call_record(call["callId"])
    assert (rec["status"], rec["endReason"]) == ("completed", "carrier_closed"), rec["error"]
    assert rec["metrics"]["framesIn"] == 10
    assert call["callId"] not in gw.services.live


async def test_fragmented_messages_are_reassembled_and_pings_answered(gw) -> None:
    call = await gw.create_inline_call(firstSpeaker="user")
    d = TwilioCaller()
    connected, start = d.opening({"customer": "42"})
    async with connect(call["streamUrl"]) as ws:
        await ws.send(connected)
        await ws.send([start[:50], start[50:120], start[120:]])  # one text message in three frames
        await asyncio.wait_for(await ws.ping(b"are you there"), 5)  # picows answers with a pong
        for _ in range(5):
            await ws.send(d.media(b"\xff" * 160))
        await ws.send(d.stop())
        await ws.wait_closed()
        assert ws.close_code == 1000
    rec = await gw.call_record(call["callId"])
    assert (rec["status"], rec["endReason"]) == ("completed", "carrier_stop")
    assert rec["metrics"]["framesIn"] == 5 and not rec["metrics"].get("protocolErrors")


async def test_sigterm_ends_picows_calls_as_shutdown_and_stops_listening(tmp_path, shared_audio) -> None:
    media_port = free_port()
    async with FakeRealtimeServer(api_key=KEY, replies=[Reply([Say("speech/cards-001")])]) as model:
        gw = GatewayProcess(tmp_path, openai_realtime_url=model.url, openai_api_key=KEY, media_listener="picows",
                            media_port=str(media_port))  # fmt: skip
        try:
            await gw.start()
            created = await gw.create_call()
            assert created["streamUrl"].startswith(f"ws://127.0.0.1:{media_port}/stream/twilio/")
            call = LiveCall(created["streamUrl"])
            await wait_recorded(gw, created["callId"], seconds=1.0)
            t0 = time.monotonic()
            gw.signal(signal.SIGTERM)
            code = await gw.wait(10)
            exit_s = time.monotonic() - t0
            report = await call.report()
        finally:
            gw.stop()
    assert exit_s < 5.0 and code in (0, -signal.SIGTERM), gw.log
    assert (report.close_code, report.close_reason) == (1001, "shutdown")
    rec = gw.stored(created["callId"])
    assert (rec.status, rec.end_reason, rec.error_code) == ("completed", "shutdown", None)
    assert '"WebSocket /stream/twilio/' in gw.log and created["streamUrl"].rsplit("/", 1)[1] not in gw.log


async def test_a_listener_that_stopped_listening_refuses_new_sockets_and_keeps_its_calls(gw) -> None:
    """Shutdown's first step (:meth:`PicowsMediaListener.stop_listening`, called by
    :class:`gateway.serving.GatewayServer` before the calls are asked to end)."""
    call = await gw.create_inline_call(firstSpeaker="user")
    port = int(gw.ws.rsplit(":", 1)[1])
    d = TwilioCaller()
    async with connect(call["streamUrl"]) as ws:
        for frame in d.opening({}):
            await ws.send(frame)
        await wait_started(gw, call["callId"])
        gw.services.media.stop_listening()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        for _ in range(5):
            await ws.send(d.media(b"\xff" * 160))
        await ws.send(d.stop())
        await ws.wait_closed()
        assert ws.close_code == 1000
    rec = await gw.call_record(call["callId"])
    assert (rec["status"], rec["endReason"], rec["metrics"]["framesIn"]) == ("completed", "carrier_stop", 5)
