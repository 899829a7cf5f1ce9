"""The Twilio dialer: the real ``twilio`` SDK against the carrier simulator, on loopback sockets.

The simulator plays the callee (scripts by number), posts signed status callbacks to a receiver
that checks each with the dialer's ``verify_callback``, and opens the media stream in Twilio's
dialect to a listening WebSocket.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse

import pytest
from twilio.request_validator import RequestValidator

from gateway.dialer import CarrierError, NotSupported, OutboundRequest, make_dialer
from gateway.dialer.twilio import stream_twiml
from gateway.simulator.carrier_api import ApiFault, CarrierSimulator, ScriptBook, person, simple
from tests.dialer.harness import CallbackReceiver, MediaSink, free_port, serve

CREDS = {"account_sid": "AC" + "5" * 32, "auth_token": "twilio-auth-token-0123"}
FROM = "+15550009999"


@contextlib.asynccontextmanager
async def rig(scripts: ScriptBook | None = None, *, timeout_s: float = 5.0):
    """Simulator + dialer pointed at it + callback receiver + media sink."""
    sim = CarrierSimulator({"twilio": CREDS}, scripts=scripts)
    sink = MediaSink()
    async with sim.serving() as api, sink.running():
        dialer = make_dialer("twilio", api_base_url=api, timeout_s=timeout_s)
        receiver = CallbackReceiver(make_dialer("twilio"), CREDS, "twilio")
        async with serve(receiver.app) as base:
            receiver.base_url = base
            try:
                yield sim, dialer, receiver, sink
            finally:
                dialer.close()


def request(receiver: CallbackReceiver, sink: MediaSink, to: str, **kw) -> OutboundRequest:
    return OutboundRequest("call-1", to, FROM, f"{sink.url}/stream/twilio/call-1/tok3n",
                           receiver.status_url("call-1"), parameters={"callId": "call-1"}, **kw)


def quick_person(**kw):
    return person(listen_timeout_s=0.3, answer_pause_ms=100, **kw)


async def test_answered_call_streams_in_twilio_dialect_and_every_callback_verifies():
    book = ScriptBook({"+15551230001": quick_person()})
    async with rig(book) as (sim, dialer, receiver, sink):
        placed = await dialer.place(request(receiver, sink, "+15551230001"), CREDS)
        assert placed.carrier_call_id.startswith("CA") and len(placed.carrier_call_id) == 34
        call = await sim.wait_done(placed.carrier_call_id, 30)

    assert call.error is None
    assert call.request["ring_timeout_s"] == 30
    # the stream: Twilio's connected + start (our call SID, the TwiML's <Parameter>), then media
    events = sink.json_events()
    assert sink.paths == ["/stream/twilio/call-1/tok3n"]
    signature = sink.headers[0]["x-twilio-signature"]  # the upgrade is signed over the stream URL
    assert RequestValidator(CREDS["auth_token"]).validate(f"{sink.url}/stream/twilio/call-1/tok3n", {}, signature)
    assert [e["event"] for e in events[:2]] == ["connected", "start"]
    assert events[1]["start"]["callSid"] == placed.carrier_call_id
    assert events[1]["start"]["customParameters"] == {"callId": "call-1"}
    media = [e for e in events if e["event"] == "media"]
    assert len(media) > 50 and events[-1]["event"] == "stop"
    # callbacks: all signed correctly, with a duplicate and a late one, each answered 204
    assert all(r.verified for r in receiver.received)
    assert [s for _, s in call.callbacks] == [204] * len(call.callbacks)
    assert receiver.statuses() == ["initiated", "ringing", "ringing", "in_progress", "completed", "completed",
                                   "in_progress"]
    seqs = [r.event.sequence for r in receiver.received]
    assert seqs[1] == seqs[2] and seqs[4] == seqs[5], "a retry carries the sequence it had"
    assert seqs[6] < seqs[4], "the late callback is older than the final one"
    assert receiver.received[4].event.detail["CallDuration"].isdigit()


@pytest.mark.parametrize("kind, status", [("busy", "busy"), ("no_answer", "no_answer"), ("failed", "failed"),
                                          ("declined", "declined")])
async def test_unanswered_outcomes_reach_their_status_without_media(kind, status):
    book = ScriptBook({"+15551230002": simple(kind, ring_ms=100)})
    async with rig(book) as (sim, dialer, receiver, sink):
        placed = await dialer.place(request(receiver, sink, "+15551230002"), CREDS)
        await sim.wait_done(placed.carrier_call_id, 10)
        await dialer.hang_up(placed.carrier_call_id, CREDS)  # already ended (21220): success
    assert receiver.statuses() == ["initiated", "ringing", "ringing", status, "ringing"]
    assert all(r.verified for r in receiver.received)
    assert sink.frames == []


async def test_no_answer_rings_no_longer_than_the_ring_timeout():
    book = ScriptBook({"+15551230003": simple("no_answer", ring_ms=60_000)})
    async with rig(book) as (sim, dialer, receiver, sink):
        placed = await dialer.place(request(receiver, sink, "+15551230003", ring_timeout_s=1), CREDS)
        call = await sim.wait_done(placed.carrier_call_id, 5)
    assert call.status == "no_answer"


async def test_tampered_callbacks_fail_verification():
    book = ScriptBook({"+15551230004": simple("busy", ring_ms=50)})
    async with rig(book) as (sim, dialer, receiver, sink):
        placed = await dialer.place(request(receiver, sink, "+15551230004"), CREDS)
        await sim.wait_done(placed.carrier_call_id, 10)
    good = receiver.received[-2]  # the busy callback
    check = make_dialer("twilio").verify_callback
    assert check(good.method, good.url, good.headers, good.body, CREDS)
    body = good.body.replace(b"CallStatus=busy", b"CallStatus=completed")
    assert body != good.body and not check(good.method, good.url, good.headers, body, CREDS)
    assert not check(good.method, good.url.replace("/status/call-1", "/status/call-2"), good.headers, good.body,
                     CREDS)
    forged = dict(good.headers, **{"x-twilio-signature": "AAAA" + good.headers["x-twilio-signature"][4:]})
    assert not check(good.method, good.url, forged, good.body, CREDS)
    unsigned = {k: v for k, v in good.headers.items() if k != "x-twilio-signature"}
    assert not check(good.method, good.url, unsigned, good.body, CREDS)
    assert not check(good.method, good.url, good.headers, good.body, dict(CREDS, auth_token="another-token"))


async def test_a_receiver_refuses_a_forged_callback_with_403():
    async with rig() as (sim, dialer, receiver, sink):
        import httpx

        async with httpx.AsyncClient() as http:
            r = await http.post(receiver.status_url("call-1"), data={"CallSid": "CA" + "0" * 32,
                                                                      "CallStatus": "completed"},
                                headers={"X-Twilio-Signature": "bm90LWEtc2lnbmF0dXJl"})
    assert r.status_code == 403 and receiver.received[-1].verified is False


async def test_carrier_errors_become_carrier_error_with_twilio_code_and_message():
    book = ScriptBook({"+15551230005": ApiFault(400, "21211", "Invalid 'To' Phone Number: +15551230005"),
                       "+15551230006": ApiFault(503, "20503", "Service unavailable")})
    async with rig(book) as (sim, dialer, receiver, sink):
        with pytest.raises(CarrierError) as bad_to:
            await dialer.place(request(receiver, sink, "+15551230005"), CREDS)
        with pytest.raises(CarrierError) as down:
            await dialer.place(request(receiver, sink, "+15551230006"), CREDS)
        with pytest.raises(CarrierError) as auth:
            await dialer.place(request(receiver, sink, "+15551230001"), dict(CREDS, auth_token="wrong"))
        with pytest.raises(CarrierError) as creds:
            await dialer.place(request(receiver, sink, "+15551230001"), {"account_sid": CREDS["account_sid"]})
    assert (bad_to.value.code, bad_to.value.status) == ("21211", 400)
    assert "Invalid 'To' Phone Number" in bad_to.value.message
    assert (down.value.code, down.value.status) == ("20503", 503)
    assert (auth.value.code, auth.value.status) == ("20003", 401)
    assert creds.value.code == "credentials" and "auth_token" in creds.value.message
    assert sim.calls == {}


async def test_unreachable_or_silent_api_is_a_carrier_error_within_the_timeout():
    dead = make_dialer("twilio", api_base_url=f"http://127.0.0.1:{free_port()}", timeout_s=2)
    req = OutboundRequest("c", "+15551230001", FROM, "wss://gw.example/stream/twilio/c/t", "https://gw.example/cb")
    with pytest.raises(CarrierError) as refused:
        await dead.place(req, CREDS)
    assert refused.value.code == "network"

    async def never_answers(reader, writer):
        await asyncio.sleep(30)

    server = await asyncio.start_server(never_answers, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    slow = make_dialer("twilio", api_base_url=f"http://127.0.0.1:{port}", timeout_s=0.5)
    t0 = asyncio.get_running_loop().time()
    with pytest.raises(CarrierError) as timed_out:
        await slow.place(req, CREDS)
    assert timed_out.value.code == "timeout"
    assert asyncio.get_running_loop().time() - t0 < 2.0
    server.close()
    dead.close()
    slow.close()


async def test_hang_up_ends_a_live_call_and_an_ended_or_unknown_call_is_success():
    book = ScriptBook({"+15551230007": simple("silence", silence_ms=30_000, answer_pause_ms=0)})
    async with rig(book) as (sim, dialer, receiver, sink):
        placed = await dialer.place(request(receiver, sink, "+15551230007"), CREDS)
        await asyncio.wait_for(sink.started.wait(), 10)
        t0 = asyncio.get_running_loop().time()
        await dialer.hang_up(placed.carrier_call_id, CREDS)
        call = await sim.wait_done(placed.carrier_call_id, 10)
        assert asyncio.get_running_loop().time() - t0 < 5, "the callee hung up at once"
        await dialer.hang_up(placed.carrier_call_id, CREDS)  # 21220: already ended
        await dialer.hang_up("CA" + "f" * 32, CREDS)  # 20404: no such call
        with pytest.raises(CarrierError) as denied:
            await dialer.hang_up(placed.carrier_call_id, dict(CREDS, auth_token="wrong"))
    assert call.hung_up_by_api and call.status == "completed"
    assert call.report is not None and sink.json_events()[-1]["event"] == "stop"
    assert denied.value.code == "20003"


async def test_hang_up_while_ringing_cancels_the_call():
    book = ScriptBook({"+15551230008": quick_person(ring_ms=5000)})
    async with rig(book) as (sim, dialer, receiver, sink):
        placed = await dialer.place(request(receiver, sink, "+15551230008"), CREDS)
        await asyncio.sleep(0.3)
        await dialer.hang_up(placed.carrier_call_id, CREDS)
        call = await sim.wait_done(placed.carrier_call_id, 3)
    assert call.status == "canceled" and receiver.statuses()[-1] == "canceled" and sink.frames == []


async def test_dtmf_is_not_supported_over_rest_so_the_session_plays_tones():
    dialer = make_dialer("twilio")
    with pytest.raises(NotSupported) as exc:
        await dialer.send_dtmf("CA" + "0" * 32, "123", CREDS)
    assert isinstance(exc.value, CarrierError) and exc.value.code == "not_supported"


def test_parse_callback_reads_twilio_fields_and_refuses_strangers():
    dialer = make_dialer("twilio")
    body = urllib.parse.urlencode({"CallSid": "CA" + "1" * 32, "CallStatus": "no-answer", "SequenceNumber": "3",
                                   "Timestamp": "Tue, 01 Dec 2026 16:05:49 +0000"}).encode()
    ev = dialer.parse_callback("POST", "https://gw.example/cb", {}, body)
    assert (ev.status, ev.raw_status, ev.sequence) == ("no_answer", "no-answer", 3.0)
    assert ev.at == 1796141149.0
    declined = body.replace(b"no-answer", b"busy") + b"&SipResponseCode=603"
    assert dialer.parse_callback("POST", "https://gw.example/cb", {}, declined).status == "declined"
    with pytest.raises(ValueError):
        dialer.parse_callback("POST", "https://gw.example/cb", {}, b"CallSid=CA1&CallStatus=exploded")
    with pytest.raises(ValueError):
        dialer.parse_callback("POST", "https://gw.example/cb", {}, b"CallStatus=completed")


def test_stream_twiml_is_connect_stream_with_escaped_url_and_parameters():
    xml = stream_twiml("wss://gw.example/stream/twilio/c1/a&b", {"callId": 'c"1'})
    assert "<Connect><Stream url=\"wss://gw.example/stream/twilio/c1/a&amp;b\">" in xml
    assert '<Parameter name="callId" value="c&quot;1" />' in xml
    with pytest.raises(ValueError, match="query string"):
        stream_twiml("wss://gw.example/stream?token=x")


async def test_the_carrier_ends_an_answered_call_at_its_time_limit():
    book = ScriptBook({"+15551230009": simple("silence", silence_ms=30_000, answer_pause_ms=0)})
    async with rig(book) as (sim, dialer, receiver, sink):
        placed = await dialer.place(request(receiver, sink, "+15551230009", max_duration_s=1), CREDS)
        call = await sim.wait_done(placed.carrier_call_id, 10)
    assert call.request["time_limit_s"] == 1 and not call.hung_up_by_api
    assert call.status == "completed" and 0.8 <= call.report.frames_sent * 0.02 <= 2.5
