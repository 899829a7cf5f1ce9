"""The simulated callers' line noise: real noise (not digital zero, which the energy gate skips),
quiet enough that the VAD hears no speech in it, through every dialect's codec."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gateway.codecs.transcode import decode, encode
from gateway.simulator.dialects import make_dialect
from gateway.simulator.noise import LineNoise, dbfs
from gateway.simulator.run import load_wav, to_rate
from gateway.vadrun import VadFactory, VadStart

DIALECTS = ("twilio", "telnyx", "plivo", "vonage", "exotel", "raw")


def through_codec(carrier: str, seconds: float, level: float, seed: int = 1) -> tuple[np.ndarray, int]:
    """``seconds`` of line noise as the caller of ``carrier`` sends it, decoded as the gateway does."""
    fmt = make_dialect(carrier).audio_format
    noise = LineNoise(fmt.sample_rate, level_dbfs=level, seed=seed)
    n = fmt.sample_rate // 50
    wire = b"".join(encode(noise.frame(n), fmt.encoding) for _ in range(int(seconds * 50)))
    return decode(wire, fmt.encoding), fmt.sample_rate


async def vad_run(pcm: np.ndarray, rate: int, vad: str):
    runner = VadFactory(vad, batched=False).create(VadFactory.rate_for(rate))
    if runner.sample_rate != rate:
        pcm = to_rate(pcm, rate, runner.sample_rate)
    frame = runner.sample_rate // 50
    events = []
    for i in range(0, pcm.size - frame + 1, frame):
        events += await runner.process(pcm[i : i + frame])
    return events, runner


@pytest.mark.parametrize("carrier", DIALECTS)
def test_noise_survives_each_codec_at_its_level_and_is_not_digital_zero(carrier):
    for level in (-58.0, -50.0):
        pcm, _ = through_codec(carrier, 1.0, level)
        assert np.count_nonzero(pcm) > 0.9 * pcm.size
        assert dbfs(pcm) == pytest.approx(level, abs=1.0)


def test_noise_has_a_downward_spectral_tilt():
    noise = LineNoise(8000, level_dbfs=-55.0, seed=3)
    pcm = np.concatenate([noise.frame(160) for _ in range(250)]).astype(np.float64)
    power = np.abs(np.fft.rfft(pcm)) ** 2
    k = power.size // 8
    assert 10 * np.log10(power[:k].mean() / power[-k:].mean()) > 5.0  # lows above highs
    assert dbfs(LineNoise(8000, level_dbfs=-55.0, tilt=0.0, seed=3).frame(8000)) == pytest.approx(-55.0, abs=0.3)


@pytest.mark.parametrize("carrier", ["twilio", "vonage"])  # 8 kHz μ-law and 16 kHz L16
@pytest.mark.parametrize("vad", ["silero", "webrtc"])
def test_the_vad_hears_no_speech_in_the_noise_and_the_pregate_learns_its_floor(carrier, vad):
    pcm, rate = through_codec(carrier, 6.0, -50.0)
    events, runner = asyncio.run(vad_run(pcm, rate, vad))
    assert not any(isinstance(e, VadStart) for e in events)
    if vad == "silero":
        # The pre-gate tracks this line's floor: Silero scores the first chunks (until the
        # hangover runs out), then the noise, like digital zero, is skipped.
        chunks = pcm.size // (rate // 1000 * 32)
        assert 0 < chunks - runner.chunks_skipped <= 12
        _, zero_runner = asyncio.run(vad_run(np.zeros_like(pcm), rate, vad))
        assert zero_runner.chunks_skipped > 0.9 * chunks


def test_speech_with_noise_under_it_is_still_speech(shared_audio):
    pcm, rate = load_wav(shared_audio / "speech" / "goforward.wav")
    pcm = to_rate(pcm, rate, 8000)
    noise = LineNoise(8000, level_dbfs=-50.0, seed=2)
    line = np.concatenate([noise.frame(4000), noise.under(pcm), noise.frame(8000)])
    events, _ = asyncio.run(vad_run(line, 8000, "silero"))
    assert any(isinstance(e, VadStart) for e in events)


def test_noise_refuses_speech_levels():
    with pytest.raises(ValueError):
        LineNoise(8000, level_dbfs=-10.0)
    with pytest.raises(ValueError):
        LineNoise(8000, tilt=1.0)
