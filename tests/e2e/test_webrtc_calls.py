"""End to end: WebRTC calls through the real gateway on loopback, a Python aiortc peer as the browser.

Everything is real: uvicorn, the offer route, aiortc on both sides (ICE host candidates on
127.0.0.1, DTLS, SRTP, SCTP), Opus both ways, the call session with Silero VAD, the local agent
(pocketsphinx, Piper), the playout ledger acknowledged from the outbound track, the SQLite
record and the two-channel recording. The peer is :class:`gateway.simulator.webrtc_caller.WebRtcCaller`.
"""

from __future__ import annotations

import asyncio
import time
import wave

import httpx
import numpy as np
import pytest

from gateway.simulator.caller import SimulatedCaller, WaitForAgent, Say
from gateway.simulator.dialects import TwilioCaller
from gateway.simulator.run import to_rate
from gateway.simulator.webrtc_caller import OfferRefused, WebRtcCaller
from tests.conftest import load_wav

pytestmark = pytest.mark.slow

GREETING = "Hello, thanks for calling. How can I help you today?"
LONG_GREETING = ("Hello and welcome. This is a long greeting so that you have plenty of time to talk over me, "
                 "which is exactly what this test is about. Thank you for your patience.")


def line(shared_audio, rel: str, rate: int = 16000) -> np.ndarray:
    pcm, r = load_wav(shared_audio / rel)
    return to_rate(pcm, r, rate)


def words(rec: dict, role: str) -> list[str]:
    return " ".join(t["text"] for t in rec["transcript"] if t["role"] == role).split()


async def webrtc_call(gw, **body) -> tuple[dict, WebRtcCaller]:
    call = await gw.create_inline_call(connectionType="webrtc", **body)
    peer = WebRtcCaller(call["offerUrl"])
    await peer.connect()
    return call, peer


async def test_webrtc_call_is_understood_answered_and_recorded(gateway, shared_audio):
    gw = await gateway()
    call, peer = await webrtc_call(gw)
    try:
        await peer.wait_for_agent(timeout_s=20, quiet_s=1.0)  # the greeting
        await peer.say(line(shared_audio, "speech/cards-003.wav"))
        await peer.wait_for_agent(timeout_s=20, quiet_s=1.0)  # the reply
        await peer.hangup()
        ended = await peer.wait_for_message("ended", timeout_s=10)
    finally:
        await peer.close()
    rec = await gw.call_record(call["callId"])
    assert rec["status"] == "completed" and rec["endReason"] == "carrier_stop", rec
    assert ended == {"type": "ended", "status": "completed", "endReason": "carrier_stop"}
    assert "clubs" in words(rec, "user"), rec["transcript"]
    agent = [t["text"] for t in rec["transcript"] if t["role"] == "agent"]
    assert agent[0] == GREETING and any("clubs" in t for t in agent[1:]), agent
    # the data channel carried the transcript as the record has it, and the agent's states
    sent = {m["index"]: m for m in peer.of_type("transcript")}
    assert [sent[i]["text"] for i in sorted(sent)] == [t["text"] for t in rec["transcript"]]
    states = [m["state"] for m in peer.of_type("state")]
    assert states[0] == "listening" and "speaking" in states and "thinking" in states, states
    kinds = {m["kind"] for m in peer.of_type("event")}
    assert {"started", "caller_speech_start", "caller_speech_end", "ended"} <= kinds, kinds
    # the recording: caller left, agent right, at the session's 16 kHz
    with wave.open(rec["recording"]["path"], "rb") as w:
        assert (w.getnchannels(), w.getframerate()) == (2, 16000)
        stereo = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    assert np.abs(stereo[:, 0]).max() > 1000 and np.abs(stereo[:, 1]).max() > 1000
    assert rec["metrics"]["marksAcked"] > 5 and rec["metrics"]["framesIn"] > 100
