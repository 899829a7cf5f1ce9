"""End to end: real recordings as Twilio (and raw) calls through the gateway to the local agent.

Everything is real: uvicorn on loopback, the WebSocket handshake on a per-call URL, μ-law at
8 kHz paced in real time by the simulated caller, Silero VAD, pocketsphinx, Piper, the playout
ledger with marks, the SQLite record and the two-channel recording.
"""

from __future__ import annotations

import wave

import numpy as np
import pytest

from gateway.audio.silero import SileroModel
from gateway.audio.vad import SileroScorer, VadGate, VoiceDetector
from gateway.simulator.caller import BargeIn, Say, SimulatedCaller, WaitForAgent
from gateway.simulator.dialects import RawCaller, TwilioCaller
from gateway.simulator.run import to_rate
from tests.conftest import load_wav

pytestmark = pytest.mark.slow


def speech_ms(pcm: np.ndarray, rate: int) -> float:
    """Milliseconds of ``pcm`` that Silero scores as speech (at 8 or 16 kHz)."""
    det = VoiceDetector(SileroScorer(SileroModel(), rate), VadGate(rate, min_speech_ms=100, min_silence_ms=200))
    events = det.process(pcm)
    total, start = 0, None
    for e in events:
        if type(e).__name__ == "SpeechStart":
            start = e.sample
        elif start is not None:
            total += e.sample - start
            start = None
    if start is not None:
        total += pcm.size - start
    return 1000.0 * total / rate


def line(shared_audio, rel: str, rate: int) -> np.ndarray:
    pcm, r = load_wav(shared_audio / rel)
    return to_rate(pcm, r, rate)


async def test_twilio_call_on_real_speech_is_understood_and_answered(gateway, shared_audio):
    gw = await gateway()
    call = await gw.create_inline_call(connectionType="twilio")
    assert call["streamUrl"].startswith("ws://127.0.0.1:") and call["callId"] in call["streamUrl"]
    assert "<Connect><Stream" in call["instructions"]["body"]

    caller = SimulatedCaller(call["streamUrl"], TwilioCaller())
    report = await caller.run([
        WaitForAgent(timeout_s=20, quiet_ms=1000),
        Say(line(shared_audio, "speech/cards-003.wav", 8000), "seven of clubs"),
        WaitForAgent(timeout_s=20, quiet_ms=1200),
    ])
    rec = await gw.call_record(call["callId"])

    assert rec["status"] == "completed", rec
    assert rec["endReason"] == "carrier_stop"
    user_turns = [t["text"] for t in rec["transcript"] if t["role"] == "user"]
    agent_turns = [t["text"] for t in rec["transcript"] if t["role"] == "agent"]
    assert any("clubs" in t for t in user_turns), rec["transcript"]
    assert agent_turns[0].startswith("Hello, thanks for calling")
    assert any("clubs" in t for t in agent_turns[1:]), "the echo agent answers with what it heard"
    # The caller heard agent audio that a VAD scores as speech: greeting and reply.
    assert speech_ms(report.heard, 8000) > 3000
    # Pacing: the caller received whole 20 ms frames, and acknowledged marks.
    assert report.marks_acked > 5 and rec["metrics"]["marksAcked"] > 5
    assert report.turn_latency_ms and report.turn_latency_ms[0] < 10_000
    # The record's spans and response time: the caller's turn from the gateway's VAD, the reply
    # after it with its end of speech → first audio (gateway turn mode measures each reply).
    caller_turn = next(t for t in rec["transcript"] if t["speaker"] == "caller")
    reply = rec["transcript"][rec["transcript"].index(caller_turn) + 1]
    assert caller_turn["startMs"] < caller_turn["endMs"] <= reply["startMs"] < reply["endMs"], rec["transcript"]
    assert 0 < reply["latencyMs"] < 10_000 and {"turn": rec["transcript"].index(reply), "ms": reply["latencyMs"]} in (
        rec["latency"]["turns"])  # fmt: skip
    # The record keeps a two-channel recording: caller left, agent right.
    path = rec["recording"]["path"]
    with wave.open(path, "rb") as w:
        assert (w.getnchannels(), w.getframerate()) == (2, 8000)
        stereo = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    assert speech_ms(stereo[:, 0].copy(), 8000) > 1000  # the caller's line
    assert speech_ms(stereo[:, 1].copy(), 8000) > 3000  # the agent's greeting and reply


async def test_barge_in_clears_the_carrier_and_tells_the_model_what_was_heard(gateway, shared_audio):
    gw = await gateway()
    call_greeting = ("Hello and welcome. This is a long greeting so that you have plenty of time to "
                     "talk over me, which is exactly what this test is about. Thank you for your patience.")
    call = await gw.create_inline_call(connectionType="twilio", interruptible=True, greeting=call_greeting)
    interrupt = line(shared_audio, "caller/interrupt.wav", 8000)
    report = await SimulatedCaller(call["streamUrl"], TwilioCaller()).run([
        BargeIn(interrupt, after_ms=1500, timeout_s=20),
        WaitForAgent(timeout_s=20, quiet_ms=1200),
    ])
    rec = await gw.call_record(call["callId"])

    assert report.clears >= 1, report.log
    barge = [e for e in rec["events"] if e["kind"] == "barge_in"]
    assert barge, rec["events"]
    heard_ms = barge[0]["data"]["heardMs"]
    played_ms = report.played_before_clear_ms[0]
    # The model is told what the caller heard, from acknowledged marks: consistent with what
    # the caller actually played (marks every 100 ms, plus the clear's travel time).
    assert 1000 <= played_ms
    assert abs(heard_ms - played_ms) <= 150, (heard_ms, played_ms)
    # The agent stopped: no greeting audio arrives after the clear until the caller's turn
    # has been recognised and answered (well over a second later).
    clear_at = report.clear_at_ms[0]
    soon_after = [t for t in report.media_arrivals_ms if clear_at < t < clear_at + 1000]
    assert soon_after == []
    greeting = next(t for t in rec["transcript"] if t["role"] == "agent")
    assert greeting["interrupted"] is True and greeting["heardMs"] == heard_ms
    full = call_greeting.split()
    kept = greeting["text"].split()
    assert 0 < len(kept) < len(full) and kept == full[: len(kept)]  # cut to what was heard
    # Reaction time from the caller's speech onset to the clear (measured, not asserted tight).
    assert report.barge_in_reaction_ms and report.barge_in_reaction_ms[0] < 2000
    assert rec["metrics"]["bargeIns"] >= 1


async def test_raw_protocol_client_at_16k(gateway, shared_audio):
    gw = await gateway()
    call = await gw.create_inline_call(connectionType="raw", firstSpeaker="user")
    assert call["instructions"] is None
    report = await SimulatedCaller(call["streamUrl"], RawCaller(sample_rate=16000)).run([
        Say(line(shared_audio, "speech/goforward.wav", 16000), "go forward"),
        WaitForAgent(timeout_s=20, quiet_ms=1200),
    ])
    rec = await gw.call_record(call["callId"])
    assert rec["status"] == "completed"
    user = " ".join(t["text"] for t in rec["transcript"] if t["role"] == "user")
    assert "forward" in user and "meters" in user  # wideband L16 end to end
    assert rec["transcript"][0]["role"] == "user"  # firstSpeaker=user: no greeting
    assert speech_ms(report.heard, 16000) > 1000
