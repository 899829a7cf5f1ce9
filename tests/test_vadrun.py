"""VAD runners: batched across calls equals per call; one ONNX run per tick; barge-in switch."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gateway.simulator.run import to_rate
from gateway.vadrun import VadEnd, VadFactory, VadStart
from tests.conftest import load_wav


def padded(shared_audio, name: str, rate: int) -> np.ndarray:
    pcm, r = load_wav(shared_audio / "speech" / name)
    x = to_rate(pcm, r, rate)
    return np.concatenate([np.zeros(rate // 2, np.int16), x, np.zeros(rate, np.int16)])


async def events_of(runner, pcm: np.ndarray, frame: int) -> list:
    out = []
    for i in range(0, pcm.size - frame + 1, frame):
        out += await runner.process(pcm[i : i + frame])
    return out


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_batched_silero_gives_each_call_the_events_it_would_get_alone(shared_audio, rate):
    files = ["goforward.wav", "cards-003.wav", "librivox-0880.wav"]
    signals = [padded(shared_audio, f, rate) for f in files]
    frame = rate // 50  # 20 ms, as carriers send
    alone = VadFactory("silero", batched=False)
    expected = [await events_of(alone.create(rate), s, frame) for s in signals]
    batched = VadFactory("silero", batched=True)
    got = await asyncio.gather(*(events_of(batched.create(rate), s, frame) for s in signals))
    assert got == expected
    assert all(any(isinstance(e, VadStart) for e in ev) and isinstance(ev[-1], VadEnd) for ev in got)
    # Calls share ticks: far fewer ONNX runs than chunks scored.
    assert batched.batcher.runs < batched.batcher.chunks_scored / 2


async def test_barge_in_confirmation_is_shorter_while_the_agent_speaks(shared_audio):
    pcm = padded(shared_audio, "goforward.wav", 8000)
    factory = VadFactory("silero", min_speech_ms=300, barge_in_min_speech_ms=96, batched=False)
    normal, barge = factory.create(8000), factory.create(8000)
    barge.agent_speaking(True)
    (n_start,) = [e for e in await events_of(normal, pcm, 160) if isinstance(e, VadStart)]
    (b_start,) = [e for e in await events_of(barge, pcm, 160) if isinstance(e, VadStart)]
    assert n_start.onset_sample == b_start.onset_sample  # same onset, decided sooner
    assert b_start.confirm_delay_ms + 150 < n_start.confirm_delay_ms


def test_vad_rates_and_kinds_are_checked():
    assert VadFactory.rate_for(8000) == 8000 and VadFactory.rate_for(48000) == 16000
    with pytest.raises(ValueError):
        VadFactory("silero").create(22050)
    with pytest.raises(ValueError):
        VadFactory("energy")
    assert VadFactory("webrtc").create(8000).sample_rate == 8000


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_energy_gate_skips_silence_without_changing_speech_decisions(shared_audio, rate):
    gated, ungated = VadFactory("silero", batched=False), VadFactory("silero", batched=False, energy_floor_dbfs=None)
    for name in ["goforward.wav", "cards-003.wav", "librivox-0880.wav"]:
        pcm = padded(shared_audio, name, rate)
        g_runner = gated.create(rate)
        g = await events_of(g_runner, pcm, rate // 50)
        u = await events_of(ungated.create(rate), pcm, rate // 50)
        assert g_runner.chunks_skipped > 0  # the padding's silence was never scored
        assert [type(e) for e in g] == [type(e) for e in u]
        chunk = 512 if rate == 16000 else 256
        for a, b in zip(g, u):
            sa = a.onset_sample if isinstance(a, VadStart) else a.offset_sample
            sb = b.onset_sample if isinstance(b, VadStart) else b.offset_sample
            assert abs(sa - sb) <= chunk
