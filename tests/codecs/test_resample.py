"""Streaming resampler: chunking invariance, passband, stopband, images, reset and delay.

Tone measurements use integer-Hz sines and a 1 s steady-state output segment, so every tone
and every alias / image falls exactly on an FFT bin (no window, no leakage).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from gateway.codecs.resample import Resampler, design_filter, resample
from tests.conftest import load_wav

RATES = (8000, 16000, 22050, 24000, 48000)
PAIRS = list(itertools.permutations(RATES, 2))
DOWN_PAIRS = [(a, b) for a, b in PAIRS if b < a]
UP_PAIRS = [(a, b) for a, b in PAIRS if b > a]
PAIR_IDS = [f"{a}-{b}" for a, b in PAIRS]

PASSBAND_DB = 0.1  # allowed deviation up to 0.85 x the lower Nyquist (3.4 kHz at 8 kHz)
STOPBAND_DB = -60.0  # required attenuation beyond the lower Nyquist


@pytest.fixture(scope="module")
def speech(shared_audio) -> dict[int, np.ndarray]:
    """About 2.5 s of real speech at every rate (8 kHz: a real 8 kHz recording)."""
    wide, sr = load_wav(shared_audio / "speech" / "librivox-0870.wav")
    narrow, sr8 = load_wav(shared_audio / "voicemail" / "vm-intro.wav")
    assert (sr, sr8) == (16000, 8000)
    out = {8000: narrow[: 8000 * 5 // 2], 16000: wide[: 16000 * 5 // 2]}
    for rate in (22050, 24000, 48000):
        out[rate] = resample(out[16000], 16000, rate)
    return out


def random_chunks(x: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Splits ``x`` into chunks of random sizes: single samples first, then 0 .. 1,200."""
    sizes = [1] * 300 + [0, 0, 2, 3] + list(rng.integers(0, 1200, size=x.size // 100))
    chunks, i = [], 0
    for k in itertools.cycle(sizes):
        if i >= x.size:
            return chunks
        chunks.append(x[i : i + int(k)])
        i += int(k)


def steady_segment(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Resamples 1.5 s and returns the 1 s of output from 0.25 s (filter fully loaded)."""
    y = Resampler(in_rate, out_rate).process(x)
    start = out_rate // 4
    return y[start : start + out_rate]


def tones(freqs, rate: int, *, seconds: float = 1.5, amp: float = 1.0) -> np.ndarray:
    n = np.arange(int(rate * seconds))
    phases = np.random.default_rng(7).uniform(0, 2 * np.pi, len(freqs))
    return sum(amp * np.sin(2 * np.pi * f * n / rate + ph) for f, ph in zip(freqs, phases))


def bin_amplitudes(seg: np.ndarray) -> np.ndarray:
    """Amplitude per 1 Hz bin of a 1 s segment."""
    return np.abs(np.fft.rfft(seg)) * 2 / seg.size


# --- (a) chunking invariance ------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), PAIRS, ids=PAIR_IDS)
def test_any_chunking_equals_one_shot_int16(a, b, speech):
    x = speech[a]
    one_shot = Resampler(a, b).process(x)
    assert one_shot.dtype == np.int16
    r = Resampler(a, b)
    chunks = random_chunks(x, np.random.default_rng(a * 7 + b))
    streamed = np.concatenate([r.process(c) for c in chunks])
    np.testing.assert_array_equal(streamed, one_shot)
    assert abs(one_shot.size - x.size * b / a) < r.taps  # only the warm-up is missing


@pytest.mark.parametrize(("a", "b"), [(8000, 16000), (24000, 8000), (22050, 8000), (16000, 24000)])
def test_any_chunking_equals_one_shot_float32(a, b, speech):
    x = (speech[a] / 32768).astype(np.float32)
    one_shot = Resampler(a, b).process(x)
    assert one_shot.dtype == np.float32
    r = Resampler(a, b)
    streamed = np.concatenate([r.process(c) for c in random_chunks(x, np.random.default_rng(1))])
    np.testing.assert_array_equal(streamed, one_shot)


def test_twenty_ms_frames_equal_one_shot(speech):
    x = speech[24000]
    r = Resampler(24000, 8000)
    frames = [r.process(x[i : i + 480]) for i in range(0, x.size, 480)]
    assert {f.size for f in frames[1:-1]} == {160}  # steady 20 ms in, 20 ms out
    np.testing.assert_array_equal(np.concatenate(frames), Resampler(24000, 8000).process(x))


# --- (b) passband, (c) stopband and images ------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), PAIRS, ids=PAIR_IDS)
def test_passband_flat_within_0_1_db(a, b):
    # Up to 0.85 x the lower Nyquist: 3,400 Hz whenever one side is 8 kHz.
    edge = int(0.85 * min(a, b) / 2)
    freqs = list(range(100, edge, 100)) + [edge]
    amp = 0.5 / len(freqs)
    gains = bin_amplitudes(steady_segment(tones(freqs, a, amp=amp), a, b))[freqs] / amp
    worst = np.max(np.abs(20 * np.log10(gains)))
    assert worst < PASSBAND_DB, f"{a}->{b}: passband deviation {worst:.4f} dB"


def alias_groups(freqs: list[int], out_rate: int) -> list[list[int]]:
    """Partitions tones so that no two in a group alias onto the same output bin."""
    groups: list[tuple[set[int], list[int]]] = []
    for f in freqs:
        alias = abs(f - out_rate * round(f / out_rate))
        for taken, group in groups:
            if alias not in taken:
                taken.add(alias)
                group.append(f)
                break
        else:
            groups.append(({alias}, [f]))
    return [g for _, g in groups]


@pytest.mark.parametrize(("a", "b"), DOWN_PAIRS, ids=[f"{a}-{b}" for a, b in DOWN_PAIRS])
def test_stopband_at_least_60_db_down(a, b):
    # Every tone from just above the new Nyquist to the old one (4.05-7.95 kHz for 16k->8k).
    freqs = list(range(b // 2 + 50, a // 2, 100))
    worst = -np.inf
    for group in alias_groups(freqs, b):
        amp = 0.5 / len(group)
        amps = bin_amplitudes(steady_segment(tones(group, a, amp=amp), a, b))
        aliases = [abs(f - b * round(f / b)) for f in group]
        worst = max(worst, 20 * np.log10(amps[aliases].max() / amp))
    assert worst <= STOPBAND_DB, f"{a}->{b}: stopband only {worst:.1f} dB"


@pytest.mark.parametrize(("a", "b"), UP_PAIRS, ids=[f"{a}-{b}" for a, b in UP_PAIRS])
@pytest.mark.parametrize("fraction", [0.0125, 0.25, 0.5, 0.75, 0.85])
def test_upsampling_images_at_least_60_db_down(a, b, fraction):
    # A tone in the input band (e.g. 100-3,400 Hz from 8 kHz) leaves no energy above a / 2.
    f = int(fraction * a / 2)
    spectrum = np.abs(np.fft.rfft(steady_segment(tones([f], a), a, b))) ** 2
    image_db = 10 * np.log10(spectrum[math.ceil(a / 2) :].sum() / spectrum.sum())
    assert image_db <= STOPBAND_DB, f"{a}->{b} @ {f} Hz: images at {image_db:.1f} dB"


# --- (d) reset, (e) delay -----------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), [(8000, 16000), (24000, 8000), (22050, 8000), (16000, 24000)])
def test_reset_matches_a_fresh_resampler(a, b, speech):
    x = speech[a]
    r = Resampler(a, b)
    r.process(x[: a // 3 + 7])  # mid-stream, with a non-trivial phase
    r.reset()
    second = x[a // 2 :]
    np.testing.assert_array_equal(r.process(second), Resampler(a, b).process(second))
    r.process(x[:5])
    r.reset()
    assert r.flush().size == 0


@pytest.mark.parametrize(("a", "b"), PAIRS, ids=PAIR_IDS)
def test_group_delay_is_the_stated_whole_number_of_output_samples(a, b):
    # y[n] ~ ideal[n - delay]: fit the output phase of slow sines (period > 2 x delay).
    r = Resampler(a, b)
    assert isinstance(r.delay, int) and r.delay == design_filter(a, b).delay
    assert r.delay / b < 0.0035  # about 3.3 ms whatever the pair
    for f in (100, 170):
        n_in = np.arange(a)
        y = r.process(np.sin(2 * np.pi * f * n_in / a + 0.3))
        r.reset()
        n = np.arange(y.size)[b // 4 : 3 * b // 4]
        w = 2 * np.pi * f / b
        (s, c), *_ = np.linalg.lstsq(
            np.stack([np.sin(w * n), np.cos(w * n)], axis=1), y[n], rcond=None
        )
        measured = ((0.3 - np.arctan2(c, s)) / w) % (b / f)
        assert measured == pytest.approx(r.delay, abs=0.01), f"{a}->{b} @ {f} Hz"


# --- flush, one-shot helper, identity and errors ------------------------------------------------


@pytest.mark.parametrize(("a", "b"), [(8000, 16000), (48000, 8000), (22050, 16000), (24000, 16000)])
def test_flush_and_one_shot_lengths(a, b, speech):
    x = speech[a][: a // 2 + 3]
    r = Resampler(a, b)
    total = np.concatenate([r.process(x[:100]), r.process(x[100:]), r.flush()])
    assert total.size == r.delay + math.ceil(x.size * b / a)
    aligned = resample(x, a, b)
    np.testing.assert_array_equal(aligned, total[r.delay :])
    # flush() reset the stream: the next output is a fresh one.
    np.testing.assert_array_equal(r.process(x), Resampler(a, b).process(x))


def test_round_trip_through_16k_preserves_telephone_speech(speech):
    x = speech[8000]
    back = resample(resample(x, 8000, 16000), 16000, 8000)
    assert back.shape == x.shape
    # Compare within the 3.4 kHz telephone band, where the filters are flat.
    fx, fb = np.fft.rfft(x.astype(float)), np.fft.rfft(back.astype(float))
    band = np.fft.rfftfreq(x.size, 1 / 8000) < 3400
    err = np.sum(np.abs(fx[band] - fb[band]) ** 2) / np.sum(np.abs(fx[band]) ** 2)
    assert 10 * np.log10(err) < -50


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.float64])
def test_empty_and_single_sample_chunks(dtype):
    r = Resampler(8000, 24000)
    assert r.process(np.zeros(0, dtype=dtype)).dtype == dtype
    outs = [r.process(np.ones(1, dtype=dtype)) for _ in range(10)]
    assert [o.size for o in outs] == [3] * 10 and all(o.dtype == dtype for o in outs)


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_identity_rate_returns_a_copy(dtype):
    x = np.arange(10, dtype=dtype)
    r = Resampler(16000, 16000)
    y = r.process(x)
    assert y is not x and y.dtype == dtype and r.delay == 0
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(resample(x, 16000, 16000), x)


def test_int16_output_is_clipped_not_wrapped():
    # A full-scale 200 Hz square wave: band-limiting it overshoots (Gibbs) past int16.
    x = np.tile(np.repeat(np.array([32767, -32768], dtype=np.int16), 40), 20)
    y = Resampler(16000, 24000).process(x)
    assert y.max() == 32767 and y.min() == -32768


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (np.zeros(4, dtype=np.int32), TypeError),
        (np.zeros((2, 2), dtype=np.int16), ValueError),
    ],
)
def test_process_rejects_bad_input(bad, error):
    with pytest.raises(error):
        Resampler(8000, 16000).process(bad)


def test_process_rejects_dtype_change_until_reset():
    r = Resampler(8000, 16000)
    r.process(np.zeros(4, dtype=np.int16))
    with pytest.raises(TypeError, match="reset"):
        r.process(np.zeros(4, dtype=np.float32))
    r.reset()
    assert r.process(np.zeros(4, dtype=np.float32)).dtype == np.float32


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((0, 8000), {}),
        ((8000, -1), {}),
        ((8000.0, 16000), {}),
        ((8000, 16000), {"passband": 1.0}),
        ((8000, 16000), {"passband": 0.9, "stopband": 0.8}),
        ((8000, 16000), {"attenuation_db": 10.0}),
    ],
)
def test_invalid_designs_raise(args, kwargs):
    with pytest.raises(ValueError):
        Resampler(*args, **kwargs)


def test_quality_parameters_are_keyword_only():
    with pytest.raises(TypeError):
        Resampler(8000, 16000, 0.85)  # type: ignore[misc]
    assert Resampler(8000, 16000, attenuation_db=80.0).taps > Resampler(8000, 16000).taps
