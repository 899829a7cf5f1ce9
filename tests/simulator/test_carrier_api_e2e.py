"""Outbound calls end to end: the real SDK places a call through the carrier simulator, whose
callee opens the media stream to a real gateway (uvicorn on loopback, the local agent) and speaks
real recordings; the gateway's record ends ``completed`` with a transcript of both sides.

The call is created with ``POST /calls/inline`` (its stream URL goes into the
:class:`~gateway.dialer.OutboundRequest`); the status callbacks go to the test's receiver,
which checks each with the dialer (the gateway's own callback routes come later).
"""

from __future__ import annotations

import pytest

from gateway.dialer import OutboundRequest, make_dialer
from gateway.simulator.carrier_api import CarrierSimulator, ScriptBook, line_from_wav, person
from tests.dialer.harness import CallbackReceiver, serve
from tests.e2e.conftest import gateway  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow

ACCOUNTS = {
    "twilio": {"account_sid": "AC" + "3" * 32, "auth_token": "e2e-twilio-token"},
    "plivo": {"auth_id": "MAZJKXNZQ2ODBMMJEXNG", "auth_token": "e2e-plivo-token"},
}
CALLEE = "+15557770001"


@pytest.mark.parametrize("kind", ["twilio", "plivo"])
async def test_outbound_call_through_the_simulator_completes_with_a_transcript(kind, gateway, shared_audio):  # noqa: F811
    # with Twilio's auth token set the gateway refuses unsigned Twilio streams: the simulator signs its upgrade
    gw = await gateway(twilio_auth_token=ACCOUNTS["twilio"]["auth_token"])
    created = await gw.create_inline_call(connectionType=kind)
    hello = line_from_wav(shared_audio / "caller/hello.wav")
    clubs = line_from_wav(shared_audio / "speech/cards-003.wav")  # "seven of clubs"
    book = ScriptBook({CALLEE: person(hello, clubs, answer_pause_ms=300, listen_timeout_s=20)})
    sim = CarrierSimulator({kind: ACCOUNTS[kind]}, scripts=book)
    receiver = CallbackReceiver(make_dialer(kind), ACCOUNTS[kind], kind, stream_url=created["streamUrl"])
    async with sim.serving() as api, serve(receiver.app) as base:
        receiver.base_url = base
        dialer = make_dialer(kind, api_base_url=api)
        req = OutboundRequest(created["callId"], CALLEE, "+15550009999", created["streamUrl"],
                              receiver.status_url(created["callId"]), answer_url=receiver.answer_url(created["callId"]))
        placed = await dialer.place(req, ACCOUNTS[kind])
        call = await sim.wait_done(placed.carrier_call_id, 90)
        dialer.close()
    rec = await gw.call_record(created["callId"])

    assert call.error is None and call.report is not None
    assert rec["status"] == "completed", rec
    user = " ".join(t["text"] for t in rec["transcript"] if t["role"] == "user").lower()
    agent = [t["text"] for t in rec["transcript"] if t["role"] == "agent"]
    assert agent and agent[0].startswith("Hello, thanks for calling"), rec["transcript"]
    assert "clubs" in user, rec["transcript"]
    assert any("clubs" in t for t in agent[1:]), "the local agent answers with what it heard"
    # the callee heard the agent: a greeting's worth of audio came back down the stream
    assert call.report.agent_audio_ms > 1500
    # every callback verified; the callee's status sequence ended completed
    assert receiver.received and all(r.verified for r in receiver.received)
    assert "completed" in receiver.statuses()


async def test_a_voicemail_callee_plays_its_greeting_and_beep_into_the_gateway(gateway, shared_audio):  # noqa: F811
    """The voicemail script over Twilio: the gateway's recording of the caller side holds the
    greeting and then the 700 Hz beep, in that order, as a detector in the call loop will hear them."""
    import wave

    import numpy as np

    gw = await gateway()
    created = await gw.create_inline_call(connectionType="twilio")
    book = ScriptBook.from_recordings(shared_audio)
    number = "+15550100002"  # the voicemail
    sim = CarrierSimulator({"twilio": ACCOUNTS["twilio"]}, scripts=book)
    receiver = CallbackReceiver(make_dialer("twilio"), ACCOUNTS["twilio"], "twilio")
    async with sim.serving() as api, serve(receiver.app) as base:
        receiver.base_url = base
        dialer = make_dialer("twilio", api_base_url=api)
        req = OutboundRequest(created["callId"], number, "+15550009999", created["streamUrl"],
                              receiver.status_url(created["callId"]))
        placed = await dialer.place(req, ACCOUNTS["twilio"])
        call = await sim.wait_done(placed.carrier_call_id, 60)
        dialer.close()
    rec = await gw.call_record(created["callId"])
    assert rec["status"] == "completed" and call.error is None
    with wave.open(rec["recording"]["path"], "rb") as w:
        caller = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)[:, 0].astype(float)
    frames = caller[: caller.size // 160 * 160].reshape(-1, 160)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # 50 Hz bins
    near_700 = power[:, 13:16].sum(axis=1) / (power.sum(axis=1) + 1e-9)
    tonal = (near_700 > 0.8) & (np.sqrt((frames**2).mean(axis=1)) > 300)  # a loud, narrow 700 Hz frame
    beep_frames = np.flatnonzero(tonal)
    assert 15 <= beep_frames.size <= 30, "about 0.43 s of 700 Hz tone"
    loud = np.flatnonzero(np.sqrt((frames**2).mean(axis=1)) > 300)
    assert loud[0] < beep_frames[0] - 50, "the greeting comes first, then the beep"
