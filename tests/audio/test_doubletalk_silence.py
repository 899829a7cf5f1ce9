"""Double-talk gate on a caller leg of digital silence (carriers send μ-law 0xFF / L16 zeros
before the caller speaks): the caller's speech over the agent must still pass."""

from __future__ import annotations

import numpy as np

from gateway.audio.aec import EchoCanceller
from gateway.audio.doubletalk import DoubleTalkGate
from tests.audio.test_aec import voices  # noqa: F401  (the fixture)

RATE, FRAME, CHUNK = 8000, 160, 256


def test_caller_speech_after_digital_silence_passes_while_the_agent_plays(voices):  # noqa: F811
    n = 6 * RATE
    agent, caller = np.resize(voices[0], n), np.resize(voices[1], n)
    ref = (agent[:n].astype(np.float64) * 10 ** (-26 / 20)).astype(np.int16)  # a quiet agent (≈ −48 dBFS)
    leg = np.zeros(n, np.int16)  # digital silence: no line noise, no echo
    onset = 2 * RATE
    talk = caller[: n - onset].astype(np.float64)
    talk *= 10 ** (-15 / 20) * 32768 / max(1.0, np.sqrt(np.mean(talk ** 2)))  # a −15 dBFS caller
    leg[onset:] = np.clip(talk, -32768, 32767).astype(np.int16)
    aec, gate = EchoCanceller(RATE), DoubleTalkGate(RATE)
    for o in range(0, n, FRAME):
        aec.reference(ref[o:o + FRAME], o)
        gate.feed(aec.process(leg[o:o + FRAME], o), o)
    verdicts = [gate.decide(s, s + CHUNK) for s in range(onset, n - CHUNK, CHUNK)]
    loud = [v for v in verdicts if v.residual_dbfs > -40]  # the chunks where the caller is voiced
    assert loud and sum(v.agent for v in loud) >= 0.5 * len(loud)  # the agent plays under most of it
    assert sum(v.allowed for v in loud) >= 0.9 * len(loud), [v.floor_dbfs for v in loud[:5]]
    assert all(v.floor_dbfs < -60 for v in verdicts)  # the floor stays near the silence's, not the speech's
