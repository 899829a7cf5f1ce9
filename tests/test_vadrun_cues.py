"""Barge-in cues (``VadCue``): a likely onset over agent audio before Silero confirms speech.

The caller's audio here is a real recording, with a band-limited noise burst in front of it
standing for an unvoiced onset ("s", "sh", "f": 1.8–3.9 kHz on a phone line), which Silero
scores low until the vowel; the line carries white noise at −50 dBFS.
"""

from __future__ import annotations

import numpy as np
import pytest

from gateway.simulator.run import to_rate
from gateway.vadrun import CUE_CHUNKS, VadCue, VadFactory, VadStart
from tests.conftest import load_wav


def fricative(ms: int, rate: int, dbfs: float = -20.0) -> np.ndarray:
    n = rate * ms // 1000
    x = np.fft.rfft(np.random.default_rng(0).normal(size=n))
    f = np.fft.rfftfreq(n, 1 / rate)
    x[(f < 1800) | (f > 3900)] = 0
    y = np.fft.irfft(x, n)
    y *= 10 ** (dbfs / 20) * 32768 / np.sqrt(np.mean(y**2))
    return y * np.minimum(1.0, np.arange(n) / (rate * 0.01))


def line(shared_audio, rate: int, burst_ms: int = 0, lead_s: float = 0.5) -> tuple[np.ndarray, int]:
    """Noise, then (at the returned sample) the burst and the recording."""
    pcm, r = load_wav(shared_audio / "speech" / "goforward.wav")
    lead = int(lead_s * rate)
    parts = [np.zeros(lead), fricative(burst_ms, rate) if burst_ms else np.zeros(0), to_rate(pcm, r, rate).astype(float)]
    x = np.concatenate(parts)
    x += np.random.default_rng(1).normal(size=x.size) * 10 ** (-50 / 20) * 32768
    return np.clip(x, -32768, 32767).astype(np.int16), lead


async def events(runner, pcm: np.ndarray) -> list:
    frame = runner.sample_rate // 50
    out = []
    for i in range(0, pcm.size - frame + 1, frame):
        out += await runner.process(pcm[i : i + frame])
    return out


def runner(kind: str = "silero", rate: int = 8000, *, cues: bool = True, speaking: bool = True, gate=lambda a, b: True):
    r = VadFactory(kind, batched=False).create(rate)
    r.cues, r.echo_gate, r.cue_gate = cues, gate, gate
    r.agent_speaking(speaking)
    return r


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_an_unvoiced_onset_cues_a_pause_long_before_silero_confirms(shared_audio, rate):
    pcm, burst_at = line(shared_audio, rate, burst_ms=150)
    got = await events(runner(rate=rate), pcm)
    cues = [e for e in got if isinstance(e, VadCue)]
    (start,) = [e for e in got if isinstance(e, VadStart)]
    chunk = 256 if rate == 8000 else 512
    assert abs(cues[0].onset_sample - burst_at) <= chunk  # the burst's chunk
    assert got.index(cues[0]) < got.index(start)
    # decided CUE_CHUNKS chunks after its onset (at most one 20 ms frame later)
    assert cues[0].confirm_delay_ms <= CUE_CHUNKS * 32 + 20
    # the recording's own onset comes after its leading silence: a cue again, before Silero's
    assert any(c.onset_sample == start.onset_sample for c in cues)
    (alone,) = [e for e in await events(runner(rate=rate, cues=False), pcm) if isinstance(e, VadStart)]
    assert alone == start  # cues change no VAD decision


async def test_no_cue_without_agent_audio_the_rule_or_a_silero_detector(shared_audio):
    pcm, _ = line(shared_audio, 8000, burst_ms=150)
    for r in (runner(speaking=False), runner(cues=False), runner(gate=None), runner("webrtc")):
        assert not [e for e in await events(r, pcm) if isinstance(e, VadCue)]
    refused = runner(gate=lambda a, b: False)  # the double-talk rule: it is the agent's echo
    assert not [e for e in await events(refused, pcm) if isinstance(e, VadCue)]


async def test_line_noise_alone_makes_no_cue():
    x = np.random.default_rng(3).normal(size=8000 * 5) * 10 ** (-40 / 20) * 32768
    assert not [e for e in await events(runner(), x.astype(np.int16)) if isinstance(e, VadCue)]


@pytest.mark.parametrize(("gap_ms", "expected"), [(100, 1), (400, 2)])
async def test_one_cue_per_burst_until_the_line_is_quiet_again(gap_ms, expected):
    rate = 8000
    noise = np.random.default_rng(4).normal(size=rate * 3) * 10 ** (-50 / 20) * 32768
    x = noise.copy()
    for at in (1.0, 1.0 + 0.15 + gap_ms / 1000):  # two 150 ms bursts
        i = int(at * rate)
        x[i : i + rate * 150 // 1000] += fricative(150, rate)
    cues = [e for e in await events(runner(), np.clip(x, -32768, 32767).astype(np.int16)) if isinstance(e, VadCue)]
    assert len(cues) == expected
