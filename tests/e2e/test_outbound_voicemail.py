"""Voicemail detection on real outbound calls: the carrier simulator's callee plays generated
openings (``tests/audio/fixtures/amd``: espeak-ng / Piper voices, noise, beeps; none from
``../shared``) into the gateway over Twilio's dialect; the call loop's detector decides, and the
call's voicemail policy acts on it.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from gateway.simulator.carrier_api import CalleeScript, ScriptBook, line_from_wav
from tests.e2e.test_outbound_calls import CALLEE, outbound  # noqa: F401  (the fixture)
from tests.e2e.conftest import gateway  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).parents[1] / "audio" / "fixtures" / "amd"
MESSAGE = "Hello, this is the test desk. Please call us back about your order. Goodbye."


def _book(kind: str, wav: str, **kw) -> ScriptBook:
    line = line_from_wav(FIXTURES / wav)
    return ScriptBook({CALLEE: CalleeScript(kind, (line,), beep=None, answer_pause_ms=0, **kw)})


def _channels(rec: dict) -> tuple[np.ndarray, np.ndarray, int]:
    with wave.open(rec["recording"]["path"], "rb") as w:
        rate = w.getframerate()
        both = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2).astype(float)
    return both[:, 0], both[:, 1], rate


def _first_loud_ms(x: np.ndarray, rate: int, rms: float = 300.0) -> float | None:
    n = rate // 50
    frames = x[: x.size // n * n].reshape(-1, n)
    loud = np.flatnonzero(np.sqrt((frames**2).mean(axis=1)) > rms)
    return None if loud.size == 0 else float(loud[0] * 20)


async def test_a_voicemail_with_a_beep_gets_the_message_after_the_beep(outbound):
    ob = await outbound("twilio", _book("voicemail", "machine-jenny-beep.wav", silence_ms=12000))
    placed = await ob.place(CALLEE, voicemail={"detect": True, "action": "leave_message", "message": MESSAGE,
                                               "holdGreetingMs": 4000})  # fmt: skip
    rec = await ob.final(placed["callId"], timeout_s=90)
    assert rec["status"] == "voicemail" and rec["endReason"] == "voicemail_message_left", rec
    vm = rec["voicemail"]
    assert vm["verdict"] == "machine_end_beep" and vm["action"] == "message_left", vm
    assert 0 <= vm["decidedMs"] - vm["beepEndMs"] <= 250, vm  # decided within 250 ms of the beep's end
    caller, agent, rate = _channels(rec)
    # the beep: loud, narrow-band frames in the callee's channel; the message starts after it
    n = rate // 50
    frames = caller[: caller.size // n * n].reshape(-1, n)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    peak = power.max(axis=1) / (power.sum(axis=1) + 1e-9)
    tonal = np.flatnonzero((peak > 0.5) & (np.sqrt((frames**2).mean(axis=1)) > 300))
    assert tonal.size >= 8, "the beep is in the callee's channel"
    beep_end_ms = float(tonal[-1] * 20 + 20)
    first_agent_ms = _first_loud_ms(agent, rate)
    assert first_agent_ms is not None and first_agent_ms >= beep_end_ms, (first_agent_ms, beep_end_ms)
    assert any(t["role"] == "agent" and "call us back" in t["text"] for t in rec["transcript"]), rec["transcript"]
    steps = [t["to"] for t in rec["transitions"]]
    assert steps[-1] == "voicemail" and "in_progress" in steps


async def test_a_voicemail_is_hung_up_on_with_status_voicemail(outbound):
    ob = await outbound("twilio", _book("voicemail", "machine-david-piper.wav", silence_ms=10000))
    placed = await ob.place(CALLEE, voicemail={"detect": True, "action": "hangup", "holdGreetingMs": 4000})
    rec = await ob.final(placed["callId"], timeout_s=60)
    assert rec["status"] == "voicemail" and rec["endReason"] == "voicemail_hangup", rec
    assert rec["voicemail"]["verdict"].startswith("machine") and rec["voicemail"]["action"] == "hung_up"
    assert rec["durationMs"] < 14000, "hung up on the greeting, not after the box's silence"
    sim_call = await ob.sim.wait_done(rec["carrierCallId"], 30)
    assert sim_call.hung_up_by_api, "hung up through the carrier's REST API"


async def test_a_person_is_never_hung_up_on_and_hears_the_greeting_after_the_verdict(outbound):
    ob = await outbound("twilio", _book("person", "human-hello-piper.wav", listen_timeout_s=25))
    placed = await ob.place(CALLEE, voicemail={"detect": True, "action": "hangup", "holdGreetingMs": 3000})
    rec = await ob.final(placed["callId"], timeout_s=90)
    assert rec["status"] == "completed" and rec["endReason"] == "carrier_stop", rec
    vm = rec["voicemail"]
    assert vm["verdict"] == "human" and vm["decidedMs"] < 3000, vm
    agent = [t for t in rec["transcript"] if t["role"] == "agent"]
    assert agent and agent[0]["text"].startswith("Hello, this is the test desk calling"), rec["transcript"]
    _caller, agent_ch, rate = _channels(rec)
    first_agent_ms = _first_loud_ms(agent_ch, rate)
    assert first_agent_ms is not None and first_agent_ms >= vm["decidedMs"] - 100, (first_agent_ms, vm)
