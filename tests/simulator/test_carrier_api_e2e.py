"""The simulator's voicemail callee end to end: the real SDK places a call through the carrier
simulator, whose callee plays the recorded greeting and beep into a real gateway (uvicorn on
loopback); the call is created with ``POST /calls/inline`` and its callbacks go to the test's
receiver. The whole outbound path through the gateway's own API and callback routes, for every
carrier, is ``tests/e2e/test_outbound_calls.py``.
"""

from __future__ import annotations

import pytest

from gateway.dialer import OutboundRequest, make_dialer
from gateway.simulator.carrier_api import CarrierSimulator, ScriptBook
from tests.dialer.harness import CallbackReceiver, serve
from tests.e2e.conftest import gateway  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow

ACCOUNTS = {"twilio": {"account_sid": "AC" + "3" * 32, "auth_token": "e2e-twilio-token"}}


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
