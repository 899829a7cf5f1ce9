"""Vonage dialer: the real ``vonage`` SDK against the simulated Voice API on loopback.

The SDK only speaks ``https://``; the dialer sends it to a loopback simulator over plain HTTP
(and refuses plain HTTP anywhere else). Signed event webhooks are checked with the SDK's JWT
verifier plus the ``payload_hash`` claim (tampered bodies, other secrets and unsigned events are
refused), read into the lifecycle vocabulary, retries keep their order key, problem-JSON errors
become :class:`CarrierError`, hang-up of an ended call succeeds, and an answered call streams
L16 to a real gateway whose record ends ``completed``.
"""

from __future__ import annotations

import asyncio
import functools
import time

import jwt
import orjson
import pytest

from gateway.dialer.base import CarrierError, NotSupported, OutboundRequest, make_dialer
from gateway.dialer.vonage import STATUSES, VonageDialer, payload_hash
from gateway.simulator.carrier_api import ApiFault, ScriptBook, line_from_wav, person, simple
from gateway.simulator.carrier_api import vonage as sim_vonage
from tests.dialer.harness import CallbackReceiver, MediaSink, check_resends_refused, check_timeout_then_network
from tests.dialer.harness import loopback as harness_loopback
from tests.e2e.conftest import gateway  # noqa: F401 - the real gateway fixture

FROM = "+15550109999"
BUSY, NO_ANSWER, FAILED, DECLINED = "+15550100005", "+15550100006", "+15550100007", "+15550100008"
FAULTY, RINGING_LONG = "+15550100090", "+15550100091"

# An event webhook as Vonage documents it (developer.vonage.com/en/voice/voice-api/webhook-reference)
COMPLETED = {"from": "447700900000", "to": "447700900001", "uuid": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
             "conversation_uuid": "CON-aaaaaaaa-bbbb-cccc-dddd-0123456789ab", "status": "completed",
             "direction": "outbound", "timestamp": "2020-01-01T14:00:00.000Z", "rate": "0.1", "price": "0.2",
             "duration": "60", "start_time": "2020-01-01T13:59:00.000Z", "end_time": "2020-01-01T14:00:00.000Z",
             "network": "65512"}  # fmt: skip


@pytest.fixture(scope="module")
def account() -> dict[str, str]:
    return sim_vonage.new_account()  # an RSA key pair: made once for the module


def bearer(account: dict[str, str], body: bytes, **kw) -> dict[str, str]:
    token = sim_vonage.signed_token(account["signature_secret"], body, application_id=account["application_id"],
                                    api_key=account["api_key"], **kw)
    return {"Authorization": f"Bearer {token}"}


def test_make_dialer_builds_the_vonage_dialer_and_refuses_plain_http_off_loopback() -> None:
    dialer = make_dialer("vonage", api_base_url="http://127.0.0.1:9")
    assert isinstance(dialer, VonageDialer) and dialer.kind == "vonage"
    dialer.close()
    make_dialer("vonage", api_base_url="https://api-eu.vonage.com").close()
    for bad in ("http://api.nexmo.com", "http://10.0.0.1:8080", "ftp://127.0.0.1", "https://h/p?q=1"):
        with pytest.raises(ValueError):
            make_dialer("vonage", api_base_url=bad)


def test_only_events_signed_with_the_secret_over_this_body_are_accepted(account) -> None:
    dialer = VonageDialer()
    body = orjson.dumps(COMPLETED)
    url = "https://gw.example.com/callbacks/vonage/c1"
    good = bearer(account, body)
    assert dialer.verify_callback("POST", url, good, body, account)
    assert dialer.verify_callback("POST", url, {"authorization": good["Authorization"]}, body, account)
    other = {**account, "signature_secret": "another-secret-of-the-same-length-0123456789abcdef"}
    unhashed = jwt.encode({"iat": int(time.time()), "application_id": account["application_id"]},
                          account["signature_secret"], algorithm="HS256")
    cases = {
        "tampered body": (good, body.replace(b"completed", b"answered"), account),
        "other secret": (good, body, other),
        "signed with another secret": (bearer(other, body), body, account),
        "no authorization": ({}, body, account),
        "not bearer": ({"Authorization": good["Authorization"].replace("Bearer", "Basic")}, body, account),
        "not a JWT": ({"Authorization": "Bearer abc.def"}, body, account),
        "no payload_hash claim": ({"Authorization": f"Bearer {unhashed}"}, body, account),
        "other application": (good, body, {**account, "application_id": "00000000-0000-0000-0000-000000000000"}),
        "no secret": (good, body, {**account, "signature_secret": ""}),
        "expired": ({"Authorization": "Bearer " + jwt.encode({"exp": 1, "payload_hash": payload_hash(body)},
                                                             account["signature_secret"], algorithm="HS256")},
                    body, account),
    }
    for name, (headers, payload, creds) in cases.items():
        assert not dialer.verify_callback("POST", url, headers, payload, creds), name


def test_the_documented_completed_event_reads_as_completed() -> None:
    event = VonageDialer().parse_callback("POST", "u", {}, orjson.dumps(COMPLETED))
    assert (event.carrier_call_id, event.status, event.raw_status) == (COMPLETED["uuid"], "completed", "completed")
    assert event.at == pytest.approx(1577887200.0) and event.sequence == event.at
    assert event.detail["duration"] == "60" and event.detail["conversation_uuid"].startswith("CON-")


@pytest.mark.parametrize(("raw", "status"), [*STATUSES.items(), ("transfer", None)])
def test_statuses_map_to_the_lifecycle(raw: str, status: str | None) -> None:
    event = VonageDialer().parse_callback("POST", "u", {}, orjson.dumps({**COMPLETED, "status": raw}))
    assert (event.status, event.raw_status) == (status, raw)


def test_an_event_without_status_changes_nothing_and_unreadable_ones_raise() -> None:
    dialer = VonageDialer()
    dtmf = dialer.parse_callback("POST", "u", {}, orjson.dumps({"uuid": "u1", "dtmf": {"digits": "1"}}))
    assert (dtmf.status, dtmf.raw_status) == (None, "event")
    for body in (b"nope", b"[1]", b'{"status": "answered"}', b'{"uuid": ""}'):
        with pytest.raises(ValueError):
            dialer.parse_callback("POST", "u", {}, body)


#: (dialer, receiver, simulator) with the simulator and the callback receiver served.
loopback = functools.partial(harness_loopback, "vonage")


def request(receiver: CallbackReceiver, to: str, *, call_id: str = "call-1", stream_url: str = "ws://127.0.0.1:9/s",
            **kw) -> OutboundRequest:
    kw.setdefault("sample_rate", 16000)
    return OutboundRequest(call_id=call_id, to=to, from_=FROM, stream_url=stream_url, codec="L16",
                           status_callback_url=receiver.status_url(call_id), parameters={"agent": "desk"}, **kw)


@pytest.mark.parametrize(("to", "final", "raw"), [
    (BUSY, "busy", "busy"), (NO_ANSWER, "no_answer", "timeout"), (FAILED, "failed", "failed"),
    (DECLINED, "declined", "rejected"),
])  # fmt: skip
async def test_unanswered_calls_end_in_their_status_through_signed_events(account, to, final, raw) -> None:
    async with loopback(account) as (dialer, receiver, sim):
        placed = await dialer.place(request(receiver, to, ring_timeout_s=5), account)
        call = await sim.wait_done(placed.carrier_call_id, 20)
        # what the SDK sent, as the simulated API read it
        assert (call.to, call.from_, call.request["ring_timeout_s"]) == (to, FROM, 5)
        endpoint = call.request["endpoint"]
        assert endpoint == {"uri": "ws://127.0.0.1:9/s", "content-type": "audio/l16;rate=16000",
                            "headers": {"agent": "desk"}, "type": "websocket"}
        assert call.request["event_url"] == receiver.status_url("call-1") and call.request["event_method"] == "POST"

        assert all(r.verified for r in receiver.received) and [s for _, s in call.callbacks] == [204] * 5
        events = [r.event for r in receiver.received]
        assert {e.carrier_call_id for e in events} == {placed.carrier_call_id}
        assert [e.status for e in events] == ["initiated", "ringing", "ringing", final, "ringing"]
        assert events[-2].raw_status == raw
        _, ring, dup, end, late = events
        assert dup.sequence == ring.sequence == late.sequence < end.sequence  # retries keep their order key
        await dialer.hang_up(placed.carrier_call_id, account)  # not active (404): success


async def test_a_tampered_or_unsigned_event_is_refused(account) -> None:
    async with loopback(account) as (dialer, receiver, sim):
        placed = await dialer.place(request(receiver, BUSY), account)
        await sim.wait_done(placed.carrier_call_id, 20)
        original = receiver.received[-2]
        assert original.event.status == "busy"
        await check_resends_refused(sim, receiver, original, lambda headers: [
            (headers, original.body.replace(b'"busy"', b'"completed"')),
            ({k: v for k, v in headers.items() if k.lower() != "authorization"}, original.body)])


async def test_carrier_errors_become_carrier_errors_with_vonage_codes(account) -> None:
    book = ScriptBook()
    book.add(FAULTY, ApiFault(400, "validation", "Invalid 'to' number"))
    async with loopback(account, book) as (dialer, receiver, sim):
        with pytest.raises(CarrierError) as fault:
            await dialer.place(request(receiver, FAULTY), account)
        assert (fault.value.code, fault.value.status, fault.value.message) == ("validation", 400, "Invalid 'to' number")
        stranger = sim_vonage.new_account()
        with pytest.raises(CarrierError) as auth:
            await dialer.place(request(receiver, BUSY), {**account, "private_key": stranger["private_key"]})
        assert (auth.value.code, auth.value.status) == ("unauthorized", 401)
        assert auth.value.message == "Unauthorized: You did not provide correct credentials."
        for key in ("/etc/vonage.key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"):
            with pytest.raises(CarrierError) as bad_key:
                await dialer.place(request(receiver, BUSY), {**account, "private_key": key})
            assert bad_key.value.code == "credentials" and "AAAA" not in bad_key.value.message
        with pytest.raises(CarrierError) as creds:
            await dialer.place(request(receiver, BUSY), {"application_id": account["application_id"]})
        assert creds.value.code == "credentials" and "private_key" in creds.value.message
        assert sim.calls == {}


async def test_unreachable_and_silent_apis_are_network_and_timeout_errors(account) -> None:
    req = OutboundRequest(call_id="c", to=BUSY, from_=FROM, stream_url="ws://x/s", status_callback_url="http://x/cb")
    # the SDK takes whole s: a 0.5 s limit is 1 s
    await check_timeout_then_network(lambda url, limit: VonageDialer(api_base_url=url, timeout_s=limit), req, account,
                                     within_s=3)


async def test_dtmf_and_hang_up_while_ringing_cancel_the_call(account) -> None:
    book = ScriptBook()
    book.add(RINGING_LONG, simple("no_answer", ring_ms=10_000))
    async with loopback(account, book) as (dialer, receiver, sim):
        placed = await dialer.place(request(receiver, RINGING_LONG, ring_timeout_s=30), account)
        await dialer.send_dtmf(placed.carrier_call_id, "12#*", account)
        with pytest.raises(NotSupported):
            await dialer.send_dtmf(placed.carrier_call_id, "1A", account)  # A-D: in band instead
        with pytest.raises(ValueError):
            await dialer.send_dtmf(placed.carrier_call_id, "1x", account)
        await dialer.hang_up(placed.carrier_call_id, account)
        call = await sim.wait_done(placed.carrier_call_id, 10)
        assert call.request["dtmf"] == ["12#*"] and call.hung_up_by_api
        cancel = receiver.received[-1].event
        assert (cancel.status, cancel.raw_status) == ("canceled", "cancelled")
        with pytest.raises(CarrierError) as ended:
            await dialer.send_dtmf(placed.carrier_call_id, "1", account)
        assert (ended.value.code, ended.value.status) == ("not-found", 404)
        await dialer.hang_up(placed.carrier_call_id, account)


async def test_hang_up_ends_a_live_streaming_call_at_once(account) -> None:
    book = ScriptBook()
    book.add(RINGING_LONG, simple("silence", silence_ms=30_000, answer_pause_ms=0, ring_ms=50))
    sink = MediaSink()
    async with sink.running(), loopback(account, book) as (dialer, receiver, sim):
        placed = await dialer.place(request(receiver, RINGING_LONG, stream_url=sink.url + "/s"), account)
        for _ in range(500):
            if len(sink.frames) > 1:
                break
            await asyncio.sleep(0.02)
        t = time.monotonic()
        await dialer.hang_up(placed.carrier_call_id, account)
        call = await sim.wait_done(placed.carrier_call_id, 10)
        assert time.monotonic() - t < 5, "the callee hung up at once"
        await dialer.hang_up(placed.carrier_call_id, account)  # 404 now: success
    assert len(sink.frames) > 1 and call.hung_up_by_api and call.status == "completed"
    assert [r.event.status for r in receiver.received][3:5] == ["in_progress", "completed"]


async def test_an_answered_call_streams_in_vonage_websocket_dialect(account) -> None:
    book = ScriptBook()
    book.add(RINGING_LONG, simple("silence", silence_ms=600, ring_ms=50))
    sink = MediaSink()
    async with sink.running(), loopback(account, book) as (dialer, receiver, sim):
        placed = await dialer.place(request(receiver, RINGING_LONG, stream_url=sink.url + "/stream/vonage/c/t"), account)
        call = await sim.wait_done(placed.carrier_call_id, 20)
        for _ in range(100):  # Vonage has no stop message: the sink sees the socket close
            if len(sink.frames) > 1 and call.report is not None:
                break
            await asyncio.sleep(0.02)
    assert sink.paths == ["/stream/vonage/c/t"]
    hello = orjson.loads(sink.frames[0])
    assert hello == {"event": "websocket:connected", "content-type": "audio/l16;rate=16000", "agent": "desk"}
    audio = sink.frames[1:]
    assert len(audio) >= 25 and all(isinstance(f, bytes) and len(f) == 640 for f in audio)  # 20 ms at 16 kHz
    statuses = [r.event.status for r in receiver.received]
    assert statuses == ["initiated", "ringing", "ringing", "in_progress", "completed", "completed", "in_progress"]
    completed = receiver.received[4].event
    assert int(completed.detail["duration"]) >= 0 and receiver.received[6].event.sequence < completed.sequence
    assert all(r.verified for r in receiver.received)


@pytest.mark.slow
async def test_an_answered_call_reaches_the_gateway_and_its_record_completes(account, gateway, shared_audio) -> None:  # noqa: F811
    gw = await gateway()
    created = await gw.create_inline_call(connectionType="vonage", firstSpeaker="user")
    book = ScriptBook()
    book.add(RINGING_LONG, person(line_from_wav(shared_audio / "speech/cards-003.wav"), listen_timeout_s=20))
    async with loopback(account, book, timeout_s=10) as (dialer, receiver, sim):
        req = request(receiver, RINGING_LONG, call_id=created["callId"], stream_url=created["streamUrl"])
        placed = await dialer.place(req, account)
        call = await sim.wait_done(placed.carrier_call_id, 60)
        await dialer.hang_up(placed.carrier_call_id, account)  # ended already: success
    rec = await gw.call_record(created["callId"])
    assert rec["status"] == "completed", rec
    roles = [t["role"] for t in rec["transcript"]]
    assert "user" in roles and "agent" in roles, rec["transcript"]
    assert call.report is not None and call.report.frames_received > 0
    statuses = [r.event.status for r in receiver.received]
    assert statuses[:4] == ["initiated", "ringing", "ringing", "in_progress"] and "completed" in statuses
