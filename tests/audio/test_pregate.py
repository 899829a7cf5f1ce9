"""The pre-gate alone: its noise-floor tracker, hangovers, warm-up chunks and checks."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.audio.amd_runner import phone_path, resample
from gateway.audio.pregate import PreGate, chunk_power_dbfs
from tests.conftest import load_wav

N = 256  # 32 ms at 8 kHz


def noise_chunks(level_dbfs: float, k: int, seed: int = 0) -> np.ndarray:
    """``k`` chunks of white noise at ``level_dbfs`` RMS, int16 ``[k, 256]``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(k * N) * 32768 * 10 ** (level_dbfs / 20)
    return np.round(x).astype(np.int16).reshape(k, N)


def masks(gate: PreGate, chunks: np.ndarray, **kw) -> list[bool]:
    """Plan chunk by chunk (as 20 ms carrier frames give them) and collect the mask."""
    return [bool(gate.plan(c[None], **kw).mask[0]) for c in chunks]


def test_chunk_power_is_dbfs():
    sq = np.tile(np.array([32767, -32767], np.int16), N // 2)[None]
    assert chunk_power_dbfs(sq)[0] == pytest.approx(0.0, abs=0.01)
    assert chunk_power_dbfs(noise_chunks(-50.0, 40)).mean() == pytest.approx(-50.0, abs=0.3)
    assert chunk_power_dbfs(np.zeros((2, N), np.int16)).tolist() == [-200.0, -200.0]


def test_floor_drops_at_once_and_rises_at_its_rate():
    gate = PreGate(8000, rise_db_per_s=3.0)
    gate.plan(noise_chunks(-40.0, 50))
    assert gate.floor_dbfs == pytest.approx(-41.0, abs=1.0)  # the minimum of chunk powers
    gate.plan(noise_chunks(-60.0, 1, seed=1))
    assert gate.floor_dbfs == pytest.approx(-60.0, abs=1.0)  # at once
    # A louder line: the floor climbs 3 dB/s (31.25 chunks a second) towards it.
    gate.plan(noise_chunks(-40.0, 125, seed=2))  # 4 s
    assert gate.floor_dbfs == pytest.approx(-60.0 + 12.0, abs=1.0)
    gate.plan(noise_chunks(-40.0, 125, seed=3))
    assert gate.floor_dbfs == pytest.approx(-41.0, abs=1.0)  # caught up, then held by the minima
    assert PreGate(8000, min_floor_dbfs=-70).plan(np.zeros((5, N), np.int16)).mask.tolist() == [False] * 5


def test_after_a_noise_step_the_gate_skips_the_new_noise_once_the_floor_has_caught_up():
    gate = PreGate(8000)
    quiet = masks(gate, noise_chunks(-60.0, 100))
    assert sum(quiet) <= 9  # the first chunk and its hangover, before the floor is known
    loud = masks(gate, noise_chunks(-40.0, 400, seed=1))
    # 20 dB at 3 dB/s: ~6.7 s, minus the 9 dB margin: scored for ~3.7 s (116 chunks) + hangover.
    assert 90 <= sum(loud) <= 140
    assert not any(loud[200:])


def test_hangover_around_speech_and_warm_up_chunks_before_it(shared_audio):
    pcm, rate = load_wav(shared_audio / "speech" / "goforward.wav")
    speech = phone_path(resample(pcm, rate, 8000), 8000)
    speech = speech[: speech.size // N * N].reshape(-1, N)
    quiet = noise_chunks(-55.0, 40)
    gate = PreGate(8000, pre_chunks=4, post_chunks=6)
    masks(gate, quiet)
    onset = next(i for i, p in enumerate(chunk_power_dbfs(speech)) if p >= gate.floor_dbfs + 9.0)
    plans = [gate.plan(c[None]) for c in speech[: onset + 1]]
    warm = [len(p.warm) for p in plans]
    assert warm[onset] == 4 and sum(warm) == 4  # the 4 skipped chunks before the onset, once
    np.testing.assert_array_equal(plans[onset].warm, speech[onset - 4 : onset] if onset >= 4
                                  else np.concatenate((quiet, speech[:onset]))[-4:])
    assert plans[onset].mask[0]
    after = masks(gate, noise_chunks(-55.0, 20, seed=4))
    assert after[:6] == [True] * 6 and not any(after[6:])  # post hangover, then skipped


def test_a_block_of_chunks_gets_its_pre_hangover_inside_it():
    gate = PreGate(8000, pre_chunks=3, post_chunks=2)
    gate.plan(noise_chunks(-60.0, 30))
    block = noise_chunks(-60.0, 10, seed=1)
    block[6] = noise_chunks(-20.0, 1, seed=2)[0]
    plan = gate.plan(block)
    assert plan.mask.tolist() == [False, False, False, True, True, True, True, True, True, False]
    assert len(plan.warm) == 0  # the chunks before the onset are in this block: scored for real


def test_hold_scores_everything_and_still_tracks():
    gate = PreGate(8000)
    gate.plan(noise_chunks(-50.0, 30))
    plan = gate.plan(noise_chunks(-50.0, 5, seed=1), hold=True)
    assert plan.mask.all() and gate.floor_dbfs == pytest.approx(-51.0, abs=1.0)
    assert gate.chunks_seen == 35 and gate.chunks_skipped == 30 - 9


def test_webrtc_mode_flags_speech_not_noise(shared_audio):
    pcm, rate = load_wav(shared_audio / "speech" / "goforward.wav")
    speech = phone_path(resample(pcm, rate, 8000), 8000)
    speech = speech[: speech.size // N * N].reshape(-1, N)
    gate = PreGate(8000, "webrtc", open_dbfs=0.0, post_chunks=0, pre_chunks=0)
    assert not any(masks(gate, noise_chunks(-55.0, 60))[10:])  # once it has adapted to the line
    assert sum(masks(gate, speech)) > 0.3 * len(speech)


def test_arguments_are_checked():
    with pytest.raises(ValueError):
        PreGate(44100)
    with pytest.raises(ValueError):
        PreGate(8000, "loud")
    with pytest.raises(ValueError):
        PreGate(8000, pre_chunks=-1)
    with pytest.raises(ValueError):
        PreGate(8000).plan(np.zeros(N, np.int16))
    assert PreGate(16000).plan(np.zeros((0, 512), np.int16)).mask.shape == (0,)
