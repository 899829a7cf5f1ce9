"""Echo-path estimation: delay and return loss of the agent's echo on the caller leg.

Agent and caller voices are the recordings in ``../shared/audio/speech`` (8 kHz); the echo is
the agent's audio delayed and attenuated, under line noise, through a μ-law round trip.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from gateway.audio.echo import EchoEstimate, EchoPathEstimator, to_metrics
from gateway.codecs.g711 import ulaw_decode, ulaw_encode
from gateway.engine.echo import ESTIMATOR_DUTY
from gateway.simulator.echo import EchoPath
from gateway.simulator.noise import LineNoise
from gateway.simulator.run import to_rate
from tests.conftest import load_wav

RATE = 8000
FRAME = 160  # 20 ms


@pytest.fixture(scope="module")
def voices(shared_audio) -> list[np.ndarray]:
    """Every speech recording, float64 at 8 kHz."""
    out = []
    for path in sorted((shared_audio / "speech").glob("*.wav")):
        pcm, rate = load_wav(path)
        out.append(to_rate(pcm, rate, RATE).astype(np.float64))
    assert len(out) >= 8
    return out


def talk(voices: list[np.ndarray], first: int, seconds: float) -> np.ndarray:
    """Recordings from ``first`` on, 300 ms pauses between them, cut to ``seconds``."""
    parts, n, i = [], 0, first
    while n < seconds * RATE:
        parts += [voices[i % len(voices)], np.zeros(RATE * 3 // 10)]
        n += parts[-2].size + parts[-1].size
        i += 1
    return np.concatenate(parts)[: int(seconds * RATE)]


def line(ref: np.ndarray, delay_ms: float, erl_db: float | None, noise_dbfs: float, *,
         over: np.ndarray | None = None, seed: int = 1) -> np.ndarray:
    """The caller leg: ``ref``'s echo (``erl_db`` down, ``None`` = none) + noise (+ ``over``),
    through μ-law, int16."""
    leg = LineNoise(RATE, level_dbfs=noise_dbfs, seed=seed).next(ref.size)
    if erl_db is not None:
        d = int(round(delay_ms * RATE / 1000))
        leg[d:] += ref[: ref.size - d] * 10 ** (-erl_db / 20)
    if over is not None:
        leg += over
    return ulaw_decode(ulaw_encode(np.clip(np.round(leg), -32768, 32767).astype(np.int16)))


def feed(est: EchoPathEstimator, ref: np.ndarray, leg: np.ndarray, chunk: int = FRAME, *,
         lead: int = 0, start: int = 0) -> None:
    """Both legs in ``chunk``-sample pieces, the reference ``lead`` samples ahead."""
    ref16 = np.clip(np.round(ref), -32768, 32767).astype(np.int16)
    for o in range(0, ref.size, chunk):
        est.reference(ref16[o:o + chunk], start + o)
        if o >= lead:
            p = o - lead
            est.caller(leg[p:p + chunk], start + p)
    for p in range(max(0, ref.size - lead), ref.size, chunk):
        est.caller(leg[p:p + chunk], start + p)


GRID = [(d, e, n) for d in (40, 120, 200) for e, n in ((12, -60), (25, -55), (35, -50), (45, -45))]
GRID += [(120, 45, -60), (40, 12, -45), (200, 35, -45), (120, 25, -45)]


@pytest.mark.parametrize(("delay_ms", "erl_db", "noise_dbfs"), GRID)
def test_delay_and_erl_through_mulaw_and_noise(voices, delay_ms, erl_db, noise_dbfs):
    ref = talk(voices, 0, 10.0)
    est = EchoPathEstimator(RATE)
    feed(est, ref, line(ref, delay_ms, erl_db, noise_dbfs))
    e = est.estimate
    assert e is not None
    assert abs(e.delay_ms - delay_ms) <= 1000 / RATE  # ±1 sample
    assert abs(e.erl_db - erl_db) <= 2.0
    assert 0.5 <= e.confidence <= 1.0
    assert e.updated_at_sample <= ref.size


@pytest.mark.parametrize("response", ["hybrid", "room"])
@pytest.mark.parametrize(("erl_db", "noise_dbfs"), [(12, -60), (25, -45), (35, -45)])
def test_erl_of_a_dispersive_echo_path(voices, response, erl_db, noise_dbfs):
    """A line hybrid's taps alternate in sign over a correlated reference: a one-tap gain at the
    peak read its echo 6–7 dB too quiet (the double-talk rule's prior then let it through);
    the fit over the path's taps reads the loss the echo achieved within ±1.5 dB."""
    ref = talk(voices, 0, 10.0)
    path = EchoPath(RATE, return_loss_db=erl_db, delay_ms=120, response=response)
    path.push(ref)
    echo = path.pull(ref.size)
    true_db = 10 * np.log10(np.sum(ref ** 2) / np.sum(echo ** 2))
    est = EchoPathEstimator(RATE)
    feed(est, ref, line(ref, 0, None, noise_dbfs, over=echo))
    e = est.estimate
    assert e is not None and abs(e.delay_ms - 120) <= 1.0
    assert abs(e.erl_db - true_db) <= 1.5, (e.erl_db, true_db)


def test_none_until_enough_agent_audio(voices):
    ref = talk(voices, 0, 10.0)
    leg = line(ref, 120, 25, -55)
    est = EchoPathEstimator(RATE, min_active_ms=1500)
    feed(est, ref[: RATE], leg[: RATE])
    assert est.estimate is None
    feed(est, ref[RATE:], leg[RATE:], start=RATE)
    assert est.estimate is not None and abs(est.estimate.delay_ms - 120) <= 0.125


@pytest.mark.parametrize("noise_dbfs", [-60, -45])
def test_no_echo_gives_no_estimate_and_a_bound(voices, noise_dbfs):
    ref = talk(voices, 0, 10.0)
    est = EchoPathEstimator(RATE)
    feed(est, ref, line(ref, 0, None, noise_dbfs))
    assert est.estimate is None
    bound = est.erl_lower_bound_db
    assert bound is not None and bound >= 20.0
    m = to_metrics(est.estimate, erl_lower_bound_db=bound)
    assert m == {"delayMs": None, "erlDb": None, "confidence": 0.0, "erlMinDb": round(bound, 1)}


@pytest.mark.parametrize("first", [1, 6, 11, 16])
def test_caller_speech_without_echo_never_estimates_at_any_time(voices, first):
    ref = talk(voices, first, 10.0)
    leg = line(ref, 0, None, -55, over=talk(voices, first + 5, 10.0) * 0.8, seed=first)
    est = EchoPathEstimator(RATE)
    ref16 = np.round(ref).astype(np.int16)
    for o in range(0, ref.size, FRAME):
        est.reference(ref16[o:o + FRAME], o)
        est.caller(leg[o:o + FRAME], o)
        assert est.estimate is None, o


def test_truncated_reference_reads_as_silence(voices):
    ref = talk(voices, 0, 10.0)
    leg = line(ref, 120, 25, -55)
    est = EchoPathEstimator(RATE)
    ref16 = np.round(ref).astype(np.int16)
    est.reference(ref16[: 2 * RATE], 0)  # 2 s sent ahead; only the first 1.2 s played
    est.truncate_reference(RATE * 12 // 10)
    assert np.all(est._ref.read(RATE * 12 // 10, 2 * RATE) == 0.0)
    assert np.array_equal(est._ref.read(0, 100), ref16[:100].astype(float))
    est.caller(leg[: 2 * RATE], 0)
    for o in range(2 * RATE, ref.size, FRAME):  # later audio plays again from 2 s on
        est.reference(ref16[o:o + FRAME], o)
        est.caller(leg[o:o + FRAME], o)
    played = ref.copy()
    played[RATE * 12 // 10:2 * RATE] = 0.0
    twin = EchoPathEstimator(RATE)
    feed(twin, played, leg, 800)
    assert est.estimate is not None and est.estimate == twin.estimate


def test_reference_silence_never_estimates():
    noise = LineNoise(RATE, level_dbfs=-45, seed=3)
    est = EchoPathEstimator(RATE)
    for k in range(500):
        est.caller(noise.frame(FRAME), k * FRAME)
    assert est.estimate is None and est.erl_lower_bound_db is None


def test_caller_speech_over_the_echo_keeps_the_estimate(voices):
    ref = talk(voices, 0, 16.0)
    caller = talk(voices, 9, 16.0) * 0.8
    caller[: 8 * RATE] = 0.0  # the caller talks over the agent for the last 8 s
    est = EchoPathEstimator(RATE)
    half = 8 * RATE
    leg = line(ref, 120, 25, -55, over=caller)
    feed(est, ref[:half], leg[:half])
    before = est.estimate
    assert before is not None
    feed(est, ref[half:], leg[half:], start=half)
    after = est.estimate
    assert after is not None and after.updated_at_sample > before.updated_at_sample
    assert after.delay_ms == before.delay_ms == 120.0
    assert abs(after.erl_db - 25.0) <= 2.0


def test_double_talk_from_the_start(voices):
    ref = talk(voices, 0, 14.0)
    caller = talk(voices, 9, 14.0) * 0.8
    est = EchoPathEstimator(RATE)
    feed(est, ref, line(ref, 200, 25, -55, over=caller))
    e = est.estimate
    assert e is not None and abs(e.delay_ms - 200) <= 0.125 and abs(e.erl_db - 25) <= 2.0


def test_follows_a_change_of_echo_path(voices):
    ref = talk(voices, 0, 40.0)
    cut = 12 * RATE
    leg = np.concatenate([line(ref[:cut], 40, 25, -55), line(ref, 200, 35, -55, seed=2)[cut:]])
    est = EchoPathEstimator(RATE)
    feed(est, ref, leg)
    e = est.estimate
    assert e is not None and e.delay_ms == 200.0 and abs(e.erl_db - 35) <= 2.0


def test_chunking_and_reference_lead_do_not_change_the_estimate(voices):
    ref = talk(voices, 2, 10.0)
    leg = line(ref, 120, 35, -50)
    got = []
    for chunk, lead in ((FRAME, 0), (800, 0), (FRAME, 800), (3333, 0)):
        est = EchoPathEstimator(RATE)
        feed(est, ref, leg, chunk, lead=lead, start=4000)
        got.append(est.estimate)
    assert all(g is not None for g in got)
    for g in got[1:]:
        assert g.delay_ms == got[0].delay_ms
        assert g.erl_db == pytest.approx(got[0].erl_db, abs=1e-6)
        assert g.updated_at_sample == got[0].updated_at_sample


def test_ten_minutes_in_frames_stay_bounded_and_cheap(voices):
    ref = np.tile(talk(voices, 0, 20.0), 30)  # 10 minutes
    leg = line(ref, 120, 25, -55)
    est = EchoPathEstimator(RATE)
    arrays = {k: v.nbytes for k, v in vars(est).items() if isinstance(v, np.ndarray)}
    rings = (est._ref._buf.nbytes, est._cal._buf.nbytes)
    t = time.perf_counter()
    feed(est, ref, leg)
    per_frame_us = (time.perf_counter() - t) / (ref.size / FRAME) * 1e6
    assert {k: v.nbytes for k, v in vars(est).items() if isinstance(v, np.ndarray)} == arrays
    assert (est._ref._buf.nbytes, est._cal._buf.nbytes) == rings
    assert sum(rings) + sum(arrays.values()) < 1_000_000
    assert est.estimate is not None and est.estimate.delay_ms == 120.0
    assert per_frame_us < 150.0  # ~20 µs measured (two legs, 8 kHz); loose for a shared CI box


def test_to_metrics_and_validation():
    e = EchoEstimate(delay_ms=120.125, erl_db=24.96, confidence=0.91234, updated_at_sample=8000)
    assert to_metrics(e) == {"delayMs": 120.1, "erlDb": 25.0, "confidence": 0.912}
    assert to_metrics(None) == {"delayMs": None, "erlDb": None, "confidence": 0.0}
    with pytest.raises(ValueError):
        EchoPathEstimator(0)
    with pytest.raises(ValueError):
        EchoPathEstimator(RATE, max_delay_ms=0)


def test_sixteen_khz(voices):
    ref = to_rate(np.clip(talk(voices, 0, 8.0), -32768, 32767).astype(np.int16), RATE, 16000).astype(float)
    d = int(0.08 * 16000)
    leg = LineNoise(16000, level_dbfs=-55, seed=1).next(ref.size)
    leg[d:] += ref[: ref.size - d] * 10 ** (-30 / 20)
    leg16 = np.clip(np.round(leg), -32768, 32767).astype(np.int16)
    est = EchoPathEstimator(16000)
    for o in range(0, ref.size, 320):
        est.reference(ref[o:o + 320].astype(np.int16), o)
        est.caller(leg16[o:o + 320], o)
    e = est.estimate
    assert e is not None and abs(e.delay_ms - 80.0) <= 1000 / 16000 and abs(e.erl_db - 30) <= 2.0


@pytest.mark.parametrize(("delay_ms", "erl_db", "noise_dbfs"), [(40, 12, -60), (120, 25, -55), (200, 35, -50)])
def test_a_duty_cycle_after_the_first_estimate_keeps_it_and_analyses_a_quarter(voices, delay_ms, erl_db,
                                                                                noise_dbfs):
    """duty_every=4: the same first estimate (same blocks until then), a quarter of the blocks
    analysed after it, the delay exact and the ERL within ±2 dB after 20 s as without it."""
    ref = talk(voices, 1, 20.0)
    leg = line(ref, delay_ms, erl_db, noise_dbfs)
    full, duty = EchoPathEstimator(RATE), EchoPathEstimator(RATE, duty_every=4)
    firsts, at = [], []
    for est in (full, duty):
        ref16 = np.clip(np.round(ref), -32768, 32767).astype(np.int16)
        first = None
        for o in range(0, ref.size, FRAME):
            est.reference(ref16[o:o + FRAME], o)
            est.caller(leg[o:o + FRAME], o)
            if first is None and est.estimate is not None:
                first = est.estimate
                at.append(est._blocks)
        firsts.append(first)
    assert firsts[0] is not None and firsts[0] == firsts[1] and at[0] == at[1]
    assert duty._seen == full._seen == full._blocks
    assert duty._blocks - at[0] == full._blocks // 4 - at[0] // 4  # after it: the multiples of 4 only
    for e in (full.estimate, duty.estimate):
        assert e.delay_ms == delay_ms and abs(e.erl_db - erl_db) <= 2.0
    assert abs(full.estimate.erl_db - duty.estimate.erl_db) <= 1.0


@pytest.mark.parametrize("duty", [4, ESTIMATOR_DUTY])
def test_a_duty_cycle_still_follows_a_change_of_echo_path(voices, duty):
    """Also at the echo stage's duty cycle (an analysed block every 5 s of agent audio)."""
    ref = talk(voices, 0, 40.0)
    cut = 12 * RATE
    leg = np.concatenate([line(ref[:cut], 40, 25, -55), line(ref, 200, 35, -55, seed=2)[cut:]])
    est = EchoPathEstimator(RATE, duty_every=duty)
    feed(est, ref, leg)
    e = est.estimate
    assert e is not None and e.delay_ms == 200.0 and abs(e.erl_db - 35) <= 2.0


def test_audio_must_be_int16_and_the_rings_hold_it_as_given():
    est = EchoPathEstimator(RATE)
    with pytest.raises(TypeError):
        est.reference(np.zeros(FRAME), 0)
    with pytest.raises(TypeError):
        est.caller(np.zeros(FRAME, np.float32), 0)
    pcm = np.array([-32768, -1, 0, 1, 32767] * 32, np.int16)
    est.reference(pcm, 0)
    est.caller(pcm[::-1].copy(), 0)
    assert est._ref.read(0, pcm.size).dtype == np.float64
    assert np.array_equal(est._ref.read(0, pcm.size), pcm.astype(np.float64))
    assert np.array_equal(est._cal.read(0, pcm.size), pcm[::-1].astype(np.float64))
