"""Echo canceller: echo removed, the caller kept, batching exact, bounded, odd input refused.

Agent and caller voices are the recordings in ``../shared/audio/speech`` (8 kHz); the echo is
the agent's audio through a delay (and a short dispersive response), attenuated, under line
noise, through a μ-law round trip, as in ``tests/audio/test_echo.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from gateway.audio import mdf
from gateway.audio.aec import AecOut, EchoCanceller, cancel_many
from gateway.codecs.g711 import ulaw_decode, ulaw_encode
from gateway.simulator.noise import LineNoise
from gateway.simulator.run import to_rate
from tests.conftest import load_wav

RATE = 8000
FRAME = 160


@pytest.fixture(scope="session")
def voices(shared_audio) -> list[np.ndarray]:
    """The short speech recordings (not the 60 s conversation), float64 at 8 kHz; session-wide
    (``test_doubletalk`` uses it too)."""
    out = []
    for path in sorted((shared_audio / "speech").glob("*.wav")):
        if path.stat().st_size > 400_000:
            continue
        pcm, rate = load_wav(path)
        out.append(to_rate(pcm, rate, RATE).astype(np.float64))
    assert len(out) >= 8
    return out


def talk(voices, first: int, seconds: float, dbfs: float, rate: int = RATE) -> np.ndarray:
    parts, n, i = [], 0, first
    while n < seconds * RATE:
        parts += [voices[i % len(voices)], np.zeros(RATE * 3 // 10)]
        n += parts[-2].size + parts[-1].size
        i += 1
    x = np.concatenate(parts)[: int(seconds * RATE)]
    x = x * (32768 * 10 ** (dbfs / 20) / np.sqrt(np.mean(x[np.abs(x) > 0] ** 2)))
    if rate != RATE:
        x = to_rate(np.clip(x, -32768, 32767).astype(np.int16), RATE, rate).astype(np.float64)
    return x


def path(delay_ms: float, erl_db: float, dispersive: bool, rate: int = RATE) -> np.ndarray:
    d = int(round(delay_ms * rate / 1000))
    h = np.zeros(d + rate // 50)
    if dispersive:  # a hybrid-like response: a main tap, an undershoot, a 20 ms decaying tail
        t = np.arange(rate // 50)
        h[d:] = np.random.default_rng(d).standard_normal(t.size) * np.exp(-t / (t.size / 4))
        h[d] += 2.0
        h[d + 1] -= 1.0
    else:
        h[d] = 1.0
    return h / np.sqrt(np.sum(h ** 2)) * 10 ** (-erl_db / 20)


def mix(ref, h, noise_dbfs, over=None, seed=1, rate=RATE):
    """(caller leg int16 after μ-law, echo alone float, noise + over alone float)."""
    echo = np.convolve(ref, h)[: ref.size]
    rest = LineNoise(rate, level_dbfs=noise_dbfs, seed=seed).next(ref.size).astype(np.float64)
    if over is not None:
        rest = rest + over
    leg = np.clip(np.round(echo + rest), -32768, 32767).astype(np.int16)
    return ulaw_decode(ulaw_encode(leg)), echo, rest


def run(aec: EchoCanceller, ref: np.ndarray, leg: np.ndarray, frame: int = FRAME) -> tuple[np.ndarray, list[AecOut]]:
    ref16 = np.clip(np.round(ref), -32768, 32767).astype(np.int16)
    outs = []
    for o in range(0, ref.size, frame):
        aec.reference(ref16[o:o + frame], o)
        outs.append(aec.process(leg[o:o + frame], o))
    return np.concatenate([x.residual for x in outs]).astype(np.float64), outs


def erle(out, leg, echo, a: float, b: float, rate: int = RATE) -> float:
    s = slice(int(a * rate), int(b * rate))
    left = out[s] - (leg[s].astype(np.float64) - echo[s])
    return float(10 * np.log10(np.sum(echo[s] ** 2) / np.sum(left ** 2)))


# Measured (8 kHz, agent −20 dBFS, noise −55): with the delay given, 4–10 s, ERLE 20–27 dB
# at 12 dB ERL and 13–18 dB at 25 dB (noise-limited: the echo is 10 dB above the noise).
@pytest.mark.parametrize(("delay_ms", "erl_db", "dispersive", "floor_db"), [
    (40, 12, False, 16.0), (120, 12, True, 16.0), (200, 12, False, 16.0),
    (40, 25, True, 9.0), (200, 25, False, 9.0), (120, 18, True, 12.0),
])
def test_echo_removed_with_the_estimated_delay(voices, delay_ms, erl_db, dispersive, floor_db):
    ref = talk(voices, 0, 10.0, -20)
    leg, echo, _ = mix(ref, path(delay_ms, erl_db, dispersive), -55)
    aec = EchoCanceller(RATE)
    aec.set_delay(delay_ms)
    out, outs = run(aec, ref, leg)
    assert erle(out, leg, echo, 4, 10) >= floor_db
    assert outs[-1].adapted and sum(o.active for o in outs) > 0.7 * len(outs)  # pauses pass through


def test_echo_removed_without_a_delay(voices):
    """The 260 ms filter alone (before the estimator has a delay) converges too, more slowly."""
    ref = talk(voices, 0, 10.0, -20)
    leg, echo, _ = mix(ref, path(200, 12, True), -55)
    out, _ = run(EchoCanceller(RATE), ref, leg)
    assert erle(out, leg, echo, 6, 10) >= 14.0


def test_set_delay_keeps_what_was_learnt(voices):
    ref = talk(voices, 0, 8.0, -20)
    leg, echo, _ = mix(ref, path(120, 12, False), -55)
    aec = EchoCanceller(RATE)
    out1, _ = run(aec, ref[: 4 * RATE], leg[: 4 * RATE])
    before = erle(out1, leg, echo, 3, 4)
    aec.set_delay(120)
    assert aec.partitions == 3 and aec.bulk == 110 * RATE // 1000
    ref16 = np.clip(np.round(ref), -32768, 32767).astype(np.int16)
    out2 = []
    for o in range(4 * RATE, 5 * RATE, FRAME):
        aec.reference(ref16[o:o + FRAME], o)
        out2.append(aec.process(leg[o:o + FRAME], o).residual)
    after = erle(np.r_[out1, np.concatenate(out2)], leg, echo, 4, 5)
    assert before > 5.0 and after > before - 3.0  # no restart from zero
    aec.set_delay(None)
    assert aec.partitions == 13 and aec.bulk == 0


def test_caller_speech_survives_double_talk(voices):
    ref = talk(voices, 0, 10.0, -20)
    caller = talk(voices, 7, 10.0, -25)
    caller[: 5 * RATE] = 0.0
    leg, echo, rest = mix(ref, path(120, 12, True), -55, over=caller)
    aec = EchoCanceller(RATE)
    aec.set_delay(120)
    out, _ = run(aec, ref, leg)
    dt = slice(5 * RATE, 10 * RATE)
    err = out[dt] - rest[dt]
    sdr = 10 * np.log10(np.sum(caller[dt] ** 2) / np.sum(err ** 2))
    level = 10 * np.log10(np.sum(out[dt] ** 2) / np.sum(rest[dt] ** 2))
    assert sdr >= 14.0  # residual echo and distortion well under the caller (measured ~19 dB)
    assert abs(level) <= 1.0  # no suppression of the caller
    assert erle(out, leg, echo, 3, 5) >= 14.0


def test_pass_through_without_agent_audio():
    rng = np.random.default_rng(0)
    aec = EchoCanceller(RATE)
    x = (rng.standard_normal(RATE) * 300).astype(np.int16)
    for o in range(0, x.size, FRAME):
        out = aec.process(x[o:o + FRAME], o)
        assert np.array_equal(out.residual, x[o:o + FRAME]) and not out.active
        assert not out.echo.any() and out.ref_power == 0.0
    # agent audio 1 s later: active while it (and its tail) is in the filter's span, then off
    aec.reference((rng.standard_normal(RATE // 2) * 3000).astype(np.int16), 2 * RATE)
    got = [aec.process(x[:FRAME], o).active for o in range(RATE, 4 * RATE, FRAME)]
    on = [i for i, a in enumerate(got) if a]
    span = (aec.partitions + 1) * FRAME
    assert on[0] * FRAME + RATE == 2 * RATE - 0 * FRAME and (on[-1] + 1) * FRAME + RATE <= 2.5 * RATE + span


def test_batched_equals_per_call(voices):
    """Five calls with different paths, chunk sizes and delay settings: one pass == one by one."""
    specs = [(40, 12, False, 160, None), (120, 25, True, 80, 120), (200, 18, False, 240, 200),
             (60, 30, True, 160, None), (160, 12, True, 100, 160)]
    calls = []
    for i, (d, e, disp, chunk, known) in enumerate(specs):
        ref = talk(voices, i, 3.0, -20)
        leg, _, _ = mix(ref, path(d, e, disp), -50, seed=i)
        calls.append((np.clip(np.round(ref), -32768, 32767).astype(np.int16), leg, chunk, known))
    alone, together = [], [EchoCanceller(RATE) for _ in calls]
    for (ref, leg, chunk, known) in calls:
        a = EchoCanceller(RATE)
        if known:
            a.set_delay(known)
        res = []
        for o in range(0, ref.size, chunk):
            a.reference(ref[o:o + chunk], o)
            res.append(a.process(leg[o:o + chunk], o).residual)
        alone.append(np.concatenate(res))
    for a, (_, _, _, known) in zip(together, calls):
        if known:
            a.set_delay(known)
    got = [[] for _ in calls]
    step = 80  # every call advanced 10 ms per tick, in its own chunk size
    pos = [0] * len(calls)
    for t in range(0, calls[0][0].size + 10 * step, step):
        stages, pcms, ats = [], [], []
        for i, (ref, leg, chunk, _) in enumerate(calls):
            if pos[i] < ref.size and (pos[i] + chunk <= t + step or t + step >= ref.size):
                n = min(chunk, ref.size - pos[i])
                together[i].reference(ref[pos[i]:pos[i] + n], pos[i])
                stages.append(together[i])
                pcms.append(leg[pos[i]:pos[i] + n])
                ats.append(pos[i])
                pos[i] += n
        for k, out in enumerate(cancel_many(stages, pcms, ats)):
            got[together.index(stages[k])].append(out.residual)
    for i in range(len(calls)):
        mine = np.concatenate(got[i])
        assert mine.size == alone[i].size and np.array_equal(mine, alone[i]), i


def test_state_is_bounded_and_slots_return(voices):
    ref = np.tile(talk(voices, 0, 10.0, -20), 3)  # half a minute
    leg, _, _ = mix(ref, path(120, 18, True), -55)
    aec = EchoCanceller(RATE)
    aec.set_delay(120)
    sizes = (aec._ref._buf.nbytes, aec._cells.nbytes)
    run(aec, ref[: 2 * RATE], leg[: 2 * RATE])
    pool = aec._pool
    live, cap = pool.live, pool.cap
    ref16 = np.clip(np.round(ref), -32768, 32767).astype(np.int16)
    for o in range(2 * RATE, ref.size, 800):  # 100 ms chunks
        aec.reference(ref16[o:o + 800], o)
        aec.process(leg[o:o + 800], o)
    assert (aec._ref._buf.nbytes, aec._cells.nbytes) == sizes and sum(sizes) < 300_000
    assert (pool.live, pool.cap) == (live, cap)
    assert np.isfinite(aec.W).all()
    del aec
    assert pool.live == live - 1  # the slot went back when the canceller went away
    again = [EchoCanceller(RATE) for _ in range(3)]
    for a in again:
        a.set_delay(50)
    assert pool.cap == cap and pool.live == live + 2


def test_truncate_reference_forgets_unplayed_audio():
    rng = np.random.default_rng(1)
    aec = EchoCanceller(RATE)
    agent = (rng.standard_normal(2 * RATE) * 3000).astype(np.int16)
    aec.reference(agent, 0)  # 2 s sent ahead; only the first 0.5 s played
    aec.truncate_reference(RATE // 2)
    assert not aec._ref.read(RATE // 2, 2 * RATE).any()
    assert np.array_equal(aec._ref.read(0, 100), agent[:100].astype(np.float64))
    quiet = np.zeros(FRAME, np.int16)
    last_on = max(o for o in range(0, 2 * RATE, FRAME) if aec.process(quiet, o).active)
    assert last_on < RATE // 2 + (aec.partitions + 1) * FRAME  # active only while played audio is in span
    # later agent audio plays again
    aec.reference(agent[:FRAME], 2 * RATE)
    assert aec.process(quiet, 2 * RATE).active


def test_sixteen_khz(voices):
    rate = 16000
    ref = talk(voices, 0, 8.0, -20, rate)
    leg, echo, _ = mix(ref, path(80, 15, True, rate), -55, rate=rate)
    aec = EchoCanceller(rate)
    assert aec.block == 320
    aec.set_delay(80)
    out, _ = run(aec, ref, leg, 320)
    assert erle(out, leg, echo, 4, 8, rate) >= 12.0


def test_odd_input():
    aec = EchoCanceller(RATE)
    out = aec.process(np.zeros(0, np.int16), 0)
    assert out.residual.dtype == np.int16 and out.residual.size == 0 and out.echo.size == 0
    aec.reference(np.zeros(0, np.int16), 0)
    assert cancel_many([], [], []) == []
    with pytest.raises(TypeError, match="int16"):
        aec.process(np.zeros(160), 0)
    with pytest.raises(TypeError, match="int16"):
        aec.reference(np.zeros(160, np.float32), 0)
    with pytest.raises(ValueError):
        cancel_many([aec], [], [0])
    with pytest.raises(ValueError, match="twice"):
        cancel_many([aec, aec], [np.zeros(1, np.int16)] * 2, [0, 0])
    for bad in ({"sample_rate": 0}, {"tail_ms": 0}, {"block_ms": 0.1}, {"bulk_delay_ms": -1}):
        with pytest.raises(ValueError):
            EchoCanceller(**{"sample_rate": RATE, **bad})
    # a gap in the caller leg restarts the block grid; output stays the input's length
    x = np.full(100, 50, np.int16)
    assert aec.process(x, 1000).residual.size == 100 and aec.process(x, 5000).residual.size == 100
    assert isinstance(mdf.pool(RATE, FRAME, 13), mdf.Pool)


def test_a_moved_echo_path_counts_as_not_adapted(voices):
    """A new delay whose span misses the learnt echo: the filter is no longer 'adapted' (the
    double-talk gate goes back to its prior); one that keeps it stays adapted."""
    ref = talk(voices, 0, 4.0, -20)
    leg, _, _ = mix(ref, path(120, 12, False), -55)
    aec = EchoCanceller(RATE)
    run(aec, ref[: 2 * RATE], leg[: 2 * RATE])
    assert aec.adapted
    aec.set_delay(120)  # narrowing from the full span: still adapted, whatever its other taps held
    assert aec.adapted
    ref16 = np.clip(np.round(ref), -32768, 32767).astype(np.int16)
    for o in range(2 * RATE, ref.size, FRAME):
        aec.reference(ref16[o:o + FRAME], o)
        aec.process(leg[o:o + FRAME], o)
    assert aec.adapted and aec.leak < 0.5
    aec.set_delay(125)  # still covers 120 ms
    assert aec.adapted
    aec.set_delay(200)  # 190–250 ms: the echo at 120 ms is gone
    assert not aec.adapted and aec.leak == 1.0


def test_chunk_size_does_not_change_the_output(voices):
    """Whole 20 ms blocks (the all-array path) and 10 ms or ragged pieces give the same residual."""
    ref = talk(voices, 3, 3.0, -20)
    leg, _, _ = mix(ref, path(120, 15, True), -55)
    got = []
    for chunk in (160, 80, 230):
        aec = EchoCanceller(RATE)
        aec.set_delay(120)
        got.append(run(aec, ref, leg, chunk)[0])
    assert np.array_equal(got[0], got[1]) and np.array_equal(got[0], got[2])
