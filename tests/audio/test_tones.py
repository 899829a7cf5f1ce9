"""Tone / DTMF generation and the beep detector (gateway.audio.tones)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gateway.audio.tones import (
    DTMF_COLS_HZ,
    DTMF_KEYS,
    DTMF_ROWS_HZ,
    BeepDetector,
    dtmf_digit,
    dtmf_sequence,
    dual_tone,
    goertzel_power,
    tone,
)
from gateway.codecs.g711 import ulaw_decode, ulaw_encode
from gateway.simulator.run import load_wav

FIXTURES = Path(__file__).parent / "fixtures" / "amd"


def mulaw(x: np.ndarray) -> np.ndarray:
    return ulaw_decode(ulaw_encode(x))


def line_noise(kind: str, level_dbfs: float, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(n)
    if kind == "pink":
        spec = np.fft.rfft(w)
        spec[1:] /= np.sqrt(np.arange(1, spec.size))
        spec[0] = 0
        w = np.fft.irfft(spec, n)
    w /= np.sqrt(np.mean(w**2))
    return w * 32768 / np.sqrt(2) * 10 ** (level_dbfs / 20)


def phone(x: np.ndarray, noise: tuple[str, float] | None = None, seed: int = 0) -> np.ndarray:
    y = x.astype(np.float64)
    if noise:
        y = y + line_noise(*noise, y.size, seed)
    return mulaw(np.clip(np.round(y), -32768, 32767).astype(np.int16))


def beeps(x: np.ndarray, rate: int = 8000, **kw):
    d = BeepDetector(rate, **kw)
    n = d.frame_samples
    out = [b for i in range(0, x.size - n + 1, n) if (b := d.push(x[i:i + n])) is not None]
    return out


def silence(ms: float, rate: int = 8000) -> np.ndarray:
    return np.zeros(int(ms * rate / 1000), dtype=np.int16)


# --- generation -------------------------------------------------------------------------

def test_tone_has_its_length_level_and_frequency():
    x = tone(1000, 250, 8000, level_dbfs=-10, ramp_ms=0)
    assert x.dtype == np.int16 and x.size == 2000
    rms_dbfs = 10 * np.log10(np.mean(x.astype(float) ** 2) / (32768**2 / 2))
    assert rms_dbfs == pytest.approx(-10, abs=0.1)
    assert goertzel_power(x, 1000, 8000) > 0.99
    assert goertzel_power(x, 1200, 8000) < 0.01


def test_tone_rejects_bad_arguments():
    with pytest.raises(ValueError):
        tone(4000, 100, 8000)
    with pytest.raises(ValueError):
        tone(1000, -1, 8000)
    with pytest.raises(ValueError):
        tone(1000, 100, 8000, level_dbfs=3)
    with pytest.raises(ValueError):
        dual_tone((697, 1209), 100, 8000, levels_dbfs=(-10,))


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("key", list("".join(DTMF_KEYS)))
def test_dtmf_key_is_its_q23_pair(key, rate):
    r = next(i for i, row in enumerate(DTMF_KEYS) if key in row)
    c = DTMF_KEYS[r].index(key)
    x = dtmf_digit(key, rate, duration_ms=100)
    assert x.size == rate // 10
    low, high = goertzel_power(x, DTMF_ROWS_HZ[r], rate), goertzel_power(x, DTMF_COLS_HZ[c], rate)
    assert low + high > 0.95
    assert high / low == pytest.approx(10 ** (2 / 10), rel=0.1)   # +2 dB twist
    for f in (*DTMF_ROWS_HZ, *DTMF_COLS_HZ):
        if f not in (DTMF_ROWS_HZ[r], DTMF_COLS_HZ[c]):
            assert goertzel_power(x, f, rate) < 0.05


def test_dtmf_sequence_and_bad_key():
    x = dtmf_sequence("12#", 8000, on_ms=80, off_ms=50)
    assert x.size == 8 * (3 * 80 + 2 * 50)
    assert not x[640:1040].any()
    with pytest.raises(ValueError):
        dtmf_digit("X", 8000)
    with pytest.raises(ValueError):
        dtmf_digit("12", 8000)
    assert dtmf_sequence("", 8000).size == 0


# --- detection --------------------------------------------------------------------------

@pytest.mark.parametrize("noise", [None, ("white", -45), ("pink", -40), ("white", -35)])
@pytest.mark.parametrize("ms", [120, 250, 600])
@pytest.mark.parametrize("freq", [440, 700, 850, 1000, 1400, 2000])
def test_beep_found_with_its_end_and_frequency(freq, ms, noise):
    lead = 510  # not on a frame boundary
    x = phone(np.concatenate([silence(lead), tone(freq, ms, 8000, level_dbfs=-18), silence(500)]),
              noise, seed=freq + ms)
    found = beeps(x)
    assert len(found) == 1, found
    b = found[0]
    assert abs(b.end_ms - (lead + ms)) <= 20
    assert abs(b.start_ms - lead) <= 20
    assert b.freqs_hz[0] == pytest.approx(freq, rel=0.02)
    assert b.level_dbfs == pytest.approx(-18, abs=2.5)


def test_beep_at_16k_and_quiet_beep_in_quiet_line():
    x = np.concatenate([silence(300, 16000), tone(850, 200, 16000, level_dbfs=-18), silence(300, 16000)])
    assert [b.freqs_hz for b in beeps(x, 16000)] == [pytest.approx((850,), rel=0.02)]
    y = phone(np.concatenate([silence(300), tone(1000, 200, 8000, level_dbfs=-35), silence(300)]), ("white", -55))
    assert len(beeps(y)) == 1


def test_double_beep_is_one_beep_with_two_frequencies():
    x = phone(np.concatenate([silence(400), tone(700, 100, 8000), tone(1400, 100, 8000), silence(400)]))
    (b,) = beeps(x)
    assert b.freqs_hz == (pytest.approx(700, rel=0.02), pytest.approx(1400, rel=0.02))
    assert abs(b.end_ms - 600) <= 20


def test_two_beeps_close_together_are_joined_and_end_at_the_second():
    x = phone(np.concatenate([silence(400), tone(1000, 150, 8000), silence(80), tone(1000, 150, 8000), silence(400)]))
    (b,) = beeps(x)
    assert abs(b.end_ms - 780) <= 20


def test_beeps_far_apart_are_two():
    x = phone(np.concatenate([silence(400), tone(1000, 150, 8000), silence(400), tone(1000, 150, 8000), silence(400)]))
    assert len(beeps(x)) == 2


@pytest.mark.parametrize("x", [
    tone(1000, 80, 8000),                 # too short
    tone(300, 300, 8000),                 # below the band
    tone(2600, 300, 8000),                # above it
    tone(1000, 5000, 8000),               # a line tone, not a beep
    dual_tone((480, 620), 500, 8000),     # US busy: two tones at once
    dual_tone((350, 440), 1000, 8000),    # US dial tone
], ids=["short", "low", "high", "long", "busy", "dial"])
def test_no_beep_on_other_tones(x):
    assert beeps(phone(np.concatenate([silence(200), x, silence(400)]))) == []


@pytest.mark.parametrize("kind", ["white", "pink"])
@pytest.mark.parametrize("level", [-60, -50, -40, -35])
def test_no_beep_in_line_noise(kind, level):
    x = phone(silence(5000), (kind, level), seed=-level)
    d = BeepDetector()
    assert beeps(x) == []
    assert sum(d.frame_tone(x[i:i + 160]) is not None for i in range(0, x.size, 160)) == 0


@pytest.mark.parametrize("on_ms", [40, 100, 200])
def test_no_beep_on_dtmf(on_ms):
    """DTMF is two tones at once (not a narrow-band tone), however long it is held."""
    x = phone(dtmf_sequence("0123456789*#ABCD", 8000, on_ms=on_ms, off_ms=60), ("white", -50))
    assert beeps(x) == []


def test_no_beep_in_generated_speech():
    """No fixture without a beep (people, greetings, screening prompts, noise) holds one."""
    labels = json.loads((FIXTURES / "labels.json").read_text())
    speech = [e for e in labels if "beep_end_s" not in e]
    assert len(speech) >= 15
    for e in speech:
        pcm, rate = load_wav(FIXTURES / e["file"])
        assert rate == 8000
        assert beeps(pcm) == [], e["file"]


def test_frame_shape_and_bounds_are_checked():
    d = BeepDetector()
    with pytest.raises(ValueError):
        d.push(np.zeros(100, dtype=np.int16))
    with pytest.raises(ValueError):
        BeepDetector(8000, min_hz=2000, max_hz=400)
    with pytest.raises(ValueError):
        BeepDetector(8000, min_ms=0)


def test_reset_forgets_an_open_tone():
    d = BeepDetector()
    x = tone(1000, 200, 8000)
    for i in range(0, x.size, 160):
        d.push(x[i:i + 160])
    assert d.in_tone
    d.reset()
    assert not d.in_tone and d.frames == 0
    assert all(d.push(np.zeros(160, dtype=np.int16)) is None for _ in range(20))


def test_in_beep_only_for_a_beep_long_tone():
    d = BeepDetector()
    x = np.concatenate([tone(1000, 40, 8000), silence(60), tone(1000, 300, 8000)])
    states = []
    for i in range(0, x.size, 160):
        d.push(x[i:i + 160])
        states.append((d.tonal, d.in_tone, d.in_beep))
    assert states[2] == (False, True, False)       # after a 40 ms blip: a run is open, no beep yet
    assert states[-1] == (True, True, True)
    assert not any(b for t, _, b in states[:6] if not t)
