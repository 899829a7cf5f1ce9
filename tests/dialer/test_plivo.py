"""The Plivo dialer: the real ``plivo`` SDK against the carrier simulator, on loopback sockets.

The simulated callee POSTs the answer URL (signed), follows the ``<Stream>`` of the XML the
receiver serves (built by :func:`gateway.carriers.instructions.instruction_document`), streams
in Plivo's dialect, and posts signed ring / hangup callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse

import httpx
import pytest

from gateway.dialer import CarrierError, OutboundRequest, make_dialer
from gateway.simulator.carrier_api import ApiFault, CarrierSimulator, ScriptBook, person, simple
from tests.dialer.harness import CallbackReceiver, MediaSink, serve

CREDS = {"auth_id": "MAZJKXNZQ2ODBMMJEXNG", "auth_token": "plivo-auth-token-0123"}
FROM = "+15550009999"


@contextlib.asynccontextmanager
async def rig(scripts: ScriptBook | None = None):
    sim = CarrierSimulator({"plivo": CREDS}, scripts=scripts)
    sink = MediaSink()
    async with sim.serving() as api, sink.running():
        dialer = make_dialer("plivo", api_base_url=api, timeout_s=5)
        receiver = CallbackReceiver(make_dialer("plivo"), CREDS, "plivo")
        async with serve(receiver.app) as base:
            receiver.base_url = base
            receiver.stream_url = f"{sink.url}/stream/plivo/call-1/tok3n"
            try:
                yield sim, dialer, receiver, sink
            finally:
                dialer.close()


def request(receiver: CallbackReceiver, to: str, **kw) -> OutboundRequest:
    return OutboundRequest("call-1", to, FROM, receiver.stream_url, receiver.status_url("call-1"),
                           answer_url=receiver.answer_url("call-1"), **kw)


async def test_answered_call_fetches_the_answer_url_and_streams_in_plivo_dialect():
    book = ScriptBook({"+15551230001": person(listen_timeout_s=0.3, answer_pause_ms=100)})
    async with rig(book) as (sim, dialer, receiver, sink):
        receiver.parameters = {"callId": "call1"}
        placed = await dialer.place(request(receiver, "+15551230001", ring_timeout_s=20), CREDS)
        call = await sim.wait_done(placed.carrier_call_id, 30)

    assert call.error is None and call.request["ring_timeout_s"] == 20
    assert sink.paths == ["/stream/plivo/call-1/tok3n"]
    events = sink.json_events()
    start = events[0]
    assert start["event"] == "start" and start["start"]["callId"] == placed.carrier_call_id
    assert start["start"]["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000}
    assert "callId=call1" in start["extra_headers"]
    assert sum(e["event"] == "media" for e in events) > 50
    # the answer URL was POSTed, signed, as Event=StartApp; then ring/hangup callbacks
    answer = [r for r in receiver.received if "/answer/" in r.url]
    assert len(answer) == 1 and answer[0].verified and answer[0].event.status == "in_progress"
    assert all(r.verified for r in receiver.received)
    assert receiver.statuses() == ["ringing", "ringing", "completed", "completed", "ringing"]
    final = [r.event for r in receiver.received if r.event.status == "completed"][0]
    assert final.detail["HangupCause"] == "NORMAL_CLEARING" and final.sequence == 3.0


@pytest.mark.parametrize("kind, status", [("busy", "busy"), ("no_answer", "no_answer"), ("failed", "failed"),
                                          ("declined", "declined")])
async def test_unanswered_outcomes_reach_their_status(kind, status):
    book = ScriptBook({"+15551230002": simple(kind, ring_ms=100)})
    async with rig(book) as (sim, dialer, receiver, sink):
        placed = await dialer.place(request(receiver, "+15551230002"), CREDS)
        await sim.wait_done(placed.carrier_call_id, 10)
        await dialer.hang_up(placed.carrier_call_id, CREDS)  # 404 twice: already ended, success
    assert receiver.statuses() == ["ringing", "ringing", status, "ringing"]
    assert all(r.verified for r in receiver.received) and sink.frames == []


async def test_tampered_callbacks_fail_v3_verification():
    book = ScriptBook({"+15551230003": simple("busy", ring_ms=50)})
    async with rig(book) as (sim, dialer, receiver, sink):
        placed = await dialer.place(request(receiver, "+15551230003"), CREDS)
        await sim.wait_done(placed.carrier_call_id, 10)
    good = [r for r in receiver.received if r.event.status == "busy"][0]
    check = make_dialer("plivo").verify_callback
    assert check(good.method, good.url, good.headers, good.body, CREDS)
    body = good.body.replace(b"CallStatus=busy", b"CallStatus=completed")
    assert not check(good.method, good.url, good.headers, body, CREDS)
    assert not check(good.method, good.url + "?x=1", good.headers, good.body, CREDS)
    assert not check(good.method, good.url, dict(good.headers, **{"x-plivo-signature-v3-nonce": "1"}), good.body,
                     CREDS)
    forged = dict(good.headers, **{"x-plivo-signature-v3": "QUFBQQ=="})
    assert not check(good.method, good.url, forged, good.body, CREDS)
    assert not check(good.method, good.url, {}, good.body, CREDS)
    assert not check(good.method, good.url, good.headers, good.body, dict(CREDS, auth_token="other"))


async def test_a_forged_answer_url_request_gets_403_and_no_stream_xml():
    async with rig() as (sim, dialer, receiver, sink):
        async with httpx.AsyncClient() as http:
            r = await http.post(receiver.answer_url("call-1"), data={"Event": "StartApp", "CallUUID": "x"},
                                headers={"X-Plivo-Signature-V3": "QUFBQQ==", "X-Plivo-Signature-V3-Nonce": "12"})
    assert r.status_code == 403 and b"Stream" not in r.content


async def test_carrier_errors_carry_plivo_http_status_and_message():
    book = ScriptBook({"+15551230004": ApiFault(400, "400", "invalid destination number")})
    async with rig(book) as (sim, dialer, receiver, sink):
        with pytest.raises(CarrierError) as bad_to:
            await dialer.place(request(receiver, "+15551230004"), CREDS)
        with pytest.raises(CarrierError) as auth:
            await dialer.place(request(receiver, "+15551230001"), dict(CREDS, auth_token="wrong"))
        with pytest.raises(CarrierError) as no_answer_url:
            await dialer.place(OutboundRequest("c", "+15551230001", FROM, receiver.stream_url,
                                               receiver.status_url("c")), CREDS)
    assert (bad_to.value.code, bad_to.value.status, bad_to.value.message) == ("400", 400, "invalid destination number")
    assert (auth.value.code, auth.value.status) == ("401", 401)
    assert no_answer_url.value.code == "invalid_request"
    assert sim.calls == {}


async def test_dtmf_goes_through_the_rest_api_to_the_live_call():
    book = ScriptBook({"+15551230005": simple("silence", silence_ms=30_000, answer_pause_ms=0)})
    async with rig(book) as (sim, dialer, receiver, sink):
        placed = await dialer.place(request(receiver, "+15551230005"), CREDS)
        await asyncio.wait_for(sink.started.wait(), 10)
        await dialer.send_dtmf(placed.carrier_call_id, "12#", CREDS)
        with pytest.raises(CarrierError) as bad:
            await dialer.send_dtmf(placed.carrier_call_id, "12x", CREDS)
        await dialer.hang_up(placed.carrier_call_id, CREDS)
        call = await sim.wait_done(placed.carrier_call_id, 10)
        with pytest.raises(CarrierError) as ended:
            await dialer.send_dtmf(placed.carrier_call_id, "1", CREDS)
    assert call.dtmf == ["12#"]
    assert bad.value.code == "invalid_request"
    assert (ended.value.code, ended.value.status) == ("404", 404)


async def test_hang_up_ends_a_live_call_or_cancels_a_ringing_one():
    book = ScriptBook({"+15551230006": simple("silence", silence_ms=30_000, answer_pause_ms=0),
                       "+15551230007": person(ring_ms=5000)})
    async with rig(book) as (sim, dialer, receiver, sink):
        live = await dialer.place(request(receiver, "+15551230006"), CREDS)
        await asyncio.wait_for(sink.started.wait(), 10)
        await dialer.hang_up(live.carrier_call_id, CREDS)
        live_call = await sim.wait_done(live.carrier_call_id, 5)
        ringing = await dialer.place(request(receiver, "+15551230007"), CREDS)
        await asyncio.sleep(0.3)
        await dialer.hang_up(ringing.carrier_call_id, CREDS)
        ringing_call = await sim.wait_done(ringing.carrier_call_id, 3)
        await dialer.hang_up(live.carrier_call_id, CREDS)  # already ended: success
    assert live_call.hung_up_by_api and live_call.status == "completed" and live_call.report is not None
    assert ringing_call.status == "canceled"
    hangups = [r.event for r in receiver.received if r.event.raw_status in ("completed", "cancel")]
    assert [e.status for e in hangups][:1] == ["completed"] and hangups[-1].status == "canceled"


def test_parse_callback_reads_plivo_events():
    dialer = make_dialer("plivo")

    def form(**fields) -> bytes:
        return urllib.parse.urlencode(fields).encode()

    ring = dialer.parse_callback("POST", "https://gw/cb", {}, form(RequestUUID="r1", CallUUID="c1", Event="Ring",
                                                                   CallStatus="ringing"))
    assert (ring.carrier_call_id, ring.status, ring.sequence) == ("r1", "ringing", 1.0)
    timeout = dialer.parse_callback("POST", "https://gw/cb", {}, form(RequestUUID="r1", Event="Hangup",
                                                                      CallStatus="timeout"))
    assert timeout.status == "no_answer"
    rejected = dialer.parse_callback("POST", "https://gw/cb", {}, form(RequestUUID="r1", Event="Hangup",
                                                                       CallStatus="busy", HangupCause="CALL_REJECTED"))
    assert rejected.status == "declined"
    with pytest.raises(ValueError):
        dialer.parse_callback("POST", "https://gw/cb", {}, form(RequestUUID="r1", Event="Hangup", CallStatus="odd"))
    with pytest.raises(ValueError):
        dialer.parse_callback("POST", "https://gw/cb", {}, form(Event="Ring"))


async def test_the_carrier_ends_an_answered_call_at_its_time_limit():
    book = ScriptBook({"+15551230009": simple("silence", silence_ms=30_000, answer_pause_ms=0)})
    async with rig(book) as (sim, dialer, receiver, sink):
        placed = await dialer.place(request(receiver, "+15551230009", max_duration_s=1), CREDS)
        call = await sim.wait_done(placed.carrier_call_id, 10)
    assert call.request["time_limit_s"] == 1 and not call.hung_up_by_api
    assert call.status == "completed" and 0.8 <= call.report.frames_sent * 0.02 <= 2.5
