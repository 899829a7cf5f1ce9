"""Telnyx dialer: the real ``telnyx`` SDK against the simulated Call Control API on loopback.

Signed webhooks are checked (tampered, re-keyed, stale and unsigned ones refused), read into the
lifecycle vocabulary, duplicates and late re-deliveries keep their order key, carrier errors
become :class:`CarrierError` with Telnyx's code, hang-up of an ended call succeeds, and an
answered call streams (PCMU, rtp mode) to a real gateway whose record ends ``completed``.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import sys
import time
import types

import orjson
import pytest

from gateway.dialer.base import CarrierError, OutboundRequest, make_dialer
from gateway.dialer.telnyx import HANGUP_CAUSES, TelnyxDialer
from gateway.simulator.carrier_api import ApiFault, ScriptBook, line_from_wav, person, simple
from gateway.simulator.carrier_api import telnyx as sim_telnyx
from tests.dialer.harness import CallbackReceiver, MediaSink, check_resends_refused, check_timeout_then_network
from tests.dialer.harness import loopback as harness_loopback
from tests.e2e.conftest import gateway  # noqa: F401 - the real gateway fixture

FROM = "+15550109999"
BUSY, NO_ANSWER, FAILED, DECLINED = "+15550100005", "+15550100006", "+15550100007", "+15550100008"
FAULTY, RINGING_LONG = "+15550100090", "+15550100091"

# Telnyx's documented call.hangup example (developers.telnyx.com/api-reference/callbacks/call-hangup)
HANGUP_EXAMPLE = {"data": {
    "record_type": "event", "event_type": "call.hangup", "id": "0ccc7b54-4df3-4bca-a65a-3da1ecc777f0",
    "occurred_at": "2018-02-02T22:25:27.521992Z",
    "payload": {
        "call_control_id": "v3:MdI91X4lWFEs7IgbBEOT9M4AigoY08M0WWZFISt1Yw2axZ_IiE4pqg",
        "connection_id": "7267xxxxxxxxxxxxxx", "call_leg_id": "428c31b6-7af4-4bcb-b7f5-5013ef9657c1",
        "call_session_id": "428c31b6-7af4-4bcb-b7f5-5013ef9657c1", "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
        "from": "+35319605860", "to": "+35319605860", "start_time": "2018-02-02T22:20:27.521992Z",
        "state": "hangup", "hangup_cause": "call_rejected", "hangup_source": "caller", "sip_hangup_cause": "603",
    }}}  # fmt: skip


@pytest.fixture
def account() -> dict[str, str]:
    return sim_telnyx.new_account()


def signed(account: dict[str, str], body: bytes, stamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if stamp is None else stamp)
    return {"Telnyx-Signature-Ed25519": sim_telnyx.sign(account["private_key"], ts, body), "Telnyx-Timestamp": ts}


def test_make_dialer_builds_the_telnyx_dialer() -> None:
    dialer = make_dialer("telnyx", api_base_url="http://127.0.0.1:9/")
    assert isinstance(dialer, TelnyxDialer) and dialer.kind == "telnyx"
    dialer.close()


def test_only_webhooks_signed_with_the_account_key_in_time_are_accepted(account: dict[str, str]) -> None:
    now = [time.time()]
    dialer = TelnyxDialer(clock=lambda: now[0])
    body = orjson.dumps(HANGUP_EXAMPLE)
    url = "https://gw.example.com/callbacks/telnyx/c1"
    good = signed(account, body, int(now[0]))
    other = sim_telnyx.new_account()
    assert dialer.verify_callback("POST", url, good, body, account)
    assert dialer.verify_callback("POST", url, {k.lower(): v for k, v in good.items()}, body, account)
    cases = {
        "tampered body": (good, body.replace(b"call_rejected", b"normal_clearing"), account),
        "other timestamp": ({**good, "Telnyx-Timestamp": str(int(now[0]) - 1)}, body, account),
        "other account's key": (good, body, other),
        "signed by another key": (signed(other, body, int(now[0])), body, account),
        "no signature": ({"Telnyx-Timestamp": good["Telnyx-Timestamp"]}, body, account),
        "no timestamp": ({"Telnyx-Signature-Ed25519": good["Telnyx-Signature-Ed25519"]}, body, account),
        "signature not base64": ({**good, "Telnyx-Signature-Ed25519": "%%%"}, body, account),
        "timestamp not a number": ({**good, "Telnyx-Timestamp": "soon"}, body, account),
        "no public key": (good, body, {**account, "public_key": ""}),
        "public key not 32 bytes": (good, body, {**account, "public_key": base64.b64encode(b"x" * 31).decode()}),
    }
    for name, (headers, payload, creds) in cases.items():
        assert not dialer.verify_callback("POST", url, headers, payload, creds), name
    now[0] += 301  # 300 s tolerance, as the SDK's verifier
    assert not dialer.verify_callback("POST", url, good, body, account)
    now[0] -= 2
    assert dialer.verify_callback("POST", url, good, body, account)


@pytest.fixture
def sdk_verifier(monkeypatch: pytest.MonkeyPatch):
    """The SDK's own ``verify_webhook_signature``, its PyNaCl calls served by ``cryptography``
    (PyNaCl, the ``telnyx[webhooks]`` extra, is not installed): Ed25519 is deterministic, so
    only the SDK's headers, message and tolerance are under test."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from telnyx.lib import webhook_verification

    class BadSignatureError(Exception):
        pass

    class VerifyKey:
        def __init__(self, key: bytes) -> None:
            self._key = Ed25519PublicKey.from_public_bytes(key)

        def verify(self, message: bytes, signature: bytes) -> None:
            try:
                self._key.verify(signature, message)
            except InvalidSignature:
                raise BadSignatureError from None

    nacl = types.ModuleType("nacl")
    nacl.signing = types.SimpleNamespace(VerifyKey=VerifyKey)
    nacl.exceptions = types.SimpleNamespace(BadSignatureError=BadSignatureError)
    for name, module in (("nacl", nacl), ("nacl.signing", nacl.signing), ("nacl.exceptions", nacl.exceptions)):
        monkeypatch.setitem(sys.modules, name, module)

    def verify(body: bytes, headers: dict[str, str], key: str) -> bool:
        try:
            webhook_verification.verify_webhook_signature(body, headers, key)
        except webhook_verification.WebhookVerificationError:
            return False
        return True

    return verify


def test_the_sdks_own_verifier_agrees_with_the_dialer(account: dict[str, str], sdk_verifier) -> None:
    dialer = TelnyxDialer()
    body = orjson.dumps(HANGUP_EXAMPLE)
    good = signed(account, body)
    other = sim_telnyx.new_account()
    cases = [(good, body, account), (good, body + b" ", account), (good, body, other),
             (signed(account, body, int(time.time()) - 400), body, account),
             ({**good, "Telnyx-Timestamp": str(int(good["Telnyx-Timestamp"]) + 1)}, body, account)]
    verdicts = [(sdk_verifier(b, h, c["public_key"]), dialer.verify_callback("POST", "u", h, b, c))
                for h, b, c in cases]
    assert verdicts == [(True, True)] + [(False, False)] * 4


def test_the_documented_hangup_example_reads_as_declined() -> None:
    event = TelnyxDialer().parse_callback("POST", "u", {}, orjson.dumps(HANGUP_EXAMPLE))
    assert event.carrier_call_id == HANGUP_EXAMPLE["data"]["payload"]["call_control_id"]
    assert (event.status, event.raw_status) == ("declined", "call.hangup")
    assert event.at == pytest.approx(1517610327.521992) and event.sequence == event.at
    assert event.detail["hangup_cause"] == "call_rejected" and event.detail["sip_hangup_cause"] == "603"
    assert event.detail["hangup_source"] == "caller" and event.detail["event_id"].startswith("0ccc7b54")


@pytest.mark.parametrize(("event_type", "cause", "status"), [
    ("call.initiated", None, "initiated"), ("call.answered", None, "in_progress"),
    *[("call.hangup", c, s) for c, s in HANGUP_CAUSES.items()], ("call.hangup", "new_cause", "failed"),
    ("streaming.started", None, None), ("streaming.stopped", None, None), ("call.machine.detection.ended", None, None),
])  # fmt: skip
def test_events_map_to_the_lifecycle(event_type: str, cause: str | None, status: str | None) -> None:
    data = {"event_type": event_type, "occurred_at": "2026-01-01T00:00:00Z",
            "payload": {"call_control_id": "v3:x", **({"hangup_cause": cause} if cause else {})}}
    event = TelnyxDialer().parse_callback("POST", "u", {}, orjson.dumps({"data": data}))
    assert (event.status, event.raw_status, event.carrier_call_id) == (status, event_type, "v3:x")


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"data": {}}', b'{"data": {"event_type": "call.answered"}}',
                                  b'{"data": {"event_type": "call.answered", "payload": {"call_control_id": ""}}}'])
def test_unreadable_webhooks_raise_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        TelnyxDialer().parse_callback("POST", "u", {}, body)


#: (dialer, receiver, simulator) with the simulator and the callback receiver served.
loopback = functools.partial(harness_loopback, "telnyx")


def request(receiver: CallbackReceiver, to: str, *, call_id: str = "call-1", stream_url: str = "ws://127.0.0.1:9/s",
            **kw) -> OutboundRequest:
    return OutboundRequest(call_id=call_id, to=to, from_=FROM, stream_url=stream_url,
                           status_callback_url=receiver.status_url(call_id), parameters={"agent": "desk"}, **kw)


@pytest.mark.parametrize(("to", "final", "cause"), [
    (BUSY, "busy", "user_busy"), (NO_ANSWER, "no_answer", "timeout"), (FAILED, "failed", "unspecified"),
    (DECLINED, "declined", "call_rejected"),
])  # fmt: skip
async def test_unanswered_calls_end_in_their_status_through_signed_webhooks(account, to, final, cause) -> None:
    async with loopback(account) as (dialer, receiver, sim):
        placed = await dialer.place(request(receiver, to, ring_timeout_s=5), account)
        call = await sim.wait_done(placed.carrier_call_id, 20)
        # what the SDK sent, as the simulated API read it
        assert call.request["stream_bidirectional_mode"] == "rtp" and call.request["stream_track"] == "inbound_track"
        assert call.request["stream_bidirectional_codec"] == "PCMU" and call.request["connection_id"] == account["connection_id"]
        assert call.request["ring_timeout_s"] == 5 and call.request["webhook_url"] == receiver.status_url("call-1")
        assert orjson.loads(base64.b64decode(call.request["client_state"])) == {"call_id": "call-1", "agent": "desk"}

        assert all(r.verified for r in receiver.received) and [s for _, s in call.callbacks] == [204] * 5
        events = [r.event for r in receiver.received]
        assert {e.carrier_call_id for e in events} == {placed.carrier_call_id}
        # initiated, its re-delivery (duplicate), the hangup, then a late re-delivery of initiated
        assert [e.status for e in events] == ["initiated", "initiated", "initiated", final, "initiated"]
        first, dup, _, end, late = events
        assert (dup.sequence, dup.detail["event_id"]) == (first.sequence, first.detail["event_id"])
        assert late.sequence == first.sequence < end.sequence and end.detail["hangup_cause"] == cause
        await dialer.hang_up(placed.carrier_call_id, account)  # already ended (90018): success


async def test_a_tampered_or_unsigned_webhook_is_refused(account) -> None:
    async with loopback(account) as (dialer, receiver, sim):
        placed = await dialer.place(request(receiver, BUSY), account)
        await sim.wait_done(placed.carrier_call_id, 20)
        original = receiver.received[-2]  # the call.hangup
        assert original.event.status == "busy"
        await check_resends_refused(sim, receiver, original, lambda headers: [
            (headers, original.body.replace(b"user_busy", b"normal_clearing")),
            ({k: v for k, v in headers.items() if not k.startswith("telnyx-")}, original.body)])


async def test_carrier_errors_become_carrier_errors_with_telnyx_codes(account) -> None:
    book = ScriptBook()
    book.add(FAULTY, ApiFault(422, "10016", "Destination number is not a valid phone number"))
    async with loopback(account, book) as (dialer, receiver, sim):
        with pytest.raises(CarrierError) as fault:
            await dialer.place(request(receiver, FAULTY), account)
        assert (fault.value.code, fault.value.status) == ("10016", 422)
        assert fault.value.message == "Destination number is not a valid phone number"
        with pytest.raises(CarrierError) as auth:
            await dialer.place(request(receiver, BUSY), {**account, "api_key": "KEYwrong"})
        assert (auth.value.code, auth.value.status, auth.value.message) == (
            "10009", 401, "Authentication failed: The API key is invalid.")  # fmt: skip
        with pytest.raises(CarrierError) as conn:
            await dialer.place(request(receiver, BUSY), {**account, "connection_id": "123"})
        assert conn.value.code == "10015" and "connection_id" in conn.value.message
        with pytest.raises(CarrierError) as unknown:
            await dialer.hang_up("v3:unknown", account)
        assert (unknown.value.code, unknown.value.status) == ("10005", 404)
        with pytest.raises(CarrierError) as creds:
            await dialer.place(request(receiver, BUSY), {"api_key": account["api_key"]})
        assert creds.value.code == "credentials" and "connection_id" in creds.value.message
        assert sim.calls == {}


async def test_unreachable_and_silent_apis_are_network_and_timeout_errors(account) -> None:
    req = OutboundRequest(call_id="c", to=BUSY, from_=FROM, stream_url="ws://x/s", status_callback_url="http://x/cb")
    await check_timeout_then_network(lambda url, limit: TelnyxDialer(api_base_url=url, timeout_s=limit), req, account,
                                     within_s=2.5)


async def test_dtmf_and_hang_up_while_ringing_cancel_the_call(account) -> None:
    book = ScriptBook()
    book.add(RINGING_LONG, simple("no_answer", ring_ms=10_000))
    async with loopback(account, book) as (dialer, receiver, sim):
        placed = await dialer.place(request(receiver, RINGING_LONG, ring_timeout_s=30), account)
        await dialer.send_dtmf(placed.carrier_call_id, "12#A", account)
        with pytest.raises(ValueError):
            await dialer.send_dtmf(placed.carrier_call_id, "1x", account)
        await dialer.hang_up(placed.carrier_call_id, account)
        call = await sim.wait_done(placed.carrier_call_id, 10)
        assert call.request["dtmf"] == ["12#A"] and call.hung_up_by_api
        hangup = receiver.received[-1].event
        assert (hangup.status, hangup.detail["hangup_cause"], hangup.detail["hangup_source"]) == (
            "canceled", "originator_cancel", "caller")  # fmt: skip
        with pytest.raises(CarrierError) as ended:
            await dialer.send_dtmf(placed.carrier_call_id, "1", account)
        assert (ended.value.code, ended.value.status) == ("90018", 422)
        await dialer.hang_up(placed.carrier_call_id, account)


async def test_hang_up_ends_a_live_streaming_call_at_once(account) -> None:
    book = ScriptBook()
    book.add(RINGING_LONG, simple("silence", silence_ms=30_000, answer_pause_ms=0, ring_ms=50))
    sink = MediaSink()
    async with sink.running(), loopback(account, book) as (dialer, receiver, sim):
        placed = await dialer.place(request(receiver, RINGING_LONG, stream_url=sink.url + "/s"), account)
        await asyncio.wait_for(sink.started.wait(), 10)
        t = time.monotonic()
        await dialer.hang_up(placed.carrier_call_id, account)
        call = await sim.wait_done(placed.carrier_call_id, 10)
        assert time.monotonic() - t < 5, "the callee hung up at once"
        await dialer.hang_up(placed.carrier_call_id, account)  # 90018 now: success
    assert call.hung_up_by_api and call.status == "completed" and sink.json_events()[-1]["event"] == "stop"
    hangup = next(r.event for r in receiver.received if r.event.raw_status == "call.hangup")
    assert (hangup.status, hangup.detail["hangup_source"]) == ("completed", "caller")


async def test_an_answered_call_streams_in_telnyx_rtp_dialect(account) -> None:
    book = ScriptBook()
    book.add(RINGING_LONG, simple("silence", silence_ms=600, ring_ms=50))
    sink = MediaSink()
    async with sink.running(), loopback(account, book) as (dialer, receiver, sim):
        placed = await dialer.place(request(receiver, RINGING_LONG, stream_url=sink.url + "/stream/telnyx/c/t"), account)
        call = await sim.wait_done(placed.carrier_call_id, 20)
    events = sink.json_events()
    assert sink.paths == ["/stream/telnyx/c/t"] and [e["event"] for e in events[:2]] == ["connected", "start"]
    start = events[1]["start"]
    assert start["call_control_id"] == placed.carrier_call_id
    assert start["media_format"] == {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}
    assert orjson.loads(base64.b64decode(start["client_state"])) == {"call_id": "call-1", "agent": "desk"}
    assert sum(e["event"] == "media" for e in events) >= 25 and events[-1]["event"] == "stop"
    statuses = [r.event.status for r in receiver.received]
    # initiated (+ two re-deliveries for ringing), answered, hangup (+ its duplicate), the late answered
    assert statuses == ["initiated"] * 3 + ["in_progress", "completed", "completed", "in_progress"]
    assert receiver.received[4].event.detail["hangup_cause"] == "normal_clearing"
    assert receiver.received[6].event.sequence == receiver.received[3].event.sequence
    assert all(r.verified for r in receiver.received) and call.report is not None


@pytest.mark.slow
async def test_an_answered_call_reaches_the_gateway_and_its_record_completes(account, gateway, shared_audio) -> None:  # noqa: F811
    gw = await gateway()
    created = await gw.create_inline_call(connectionType="telnyx", firstSpeaker="user")
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
    assert [r.event.status for r in receiver.received][:4] == ["initiated"] * 3 + ["in_progress"]
    assert "completed" in [r.event.status for r in receiver.received]
