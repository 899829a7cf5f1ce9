"""The pause's verdict is the same however often the session reads the VAD's progress (per
frame, per tick, or one tick result holding seconds after a stall)."""

from __future__ import annotations

import pytest

from gateway.session.bargein import PauseGate, PauseInput

GAP, COMMIT = 200.0, 400.0


def progress(voiced: list[tuple[float, float]], until_ms: float):
    """20 ms VAD progress steps: (voiced_to, scored_to, runs so far) with ``voiced`` runs (ms)."""
    steps = []
    for end in range(20, int(until_ms) + 1, 20):
        runs = tuple((s, min(e, end)) for s, e in voiced if s < end)
        voiced_to = max((e for _, e in runs), default=0.0)
        steps.append((voiced_to, float(end), runs))
    return steps


def verdict(voiced, every: int, until_ms: float = 1200.0, with_runs: bool = True):
    gate = PauseGate(COMMIT, GAP)
    gate.pause(0.0, 100.0)  # the VAD confirmed the speech 100 ms in
    for i, (v, h, runs) in enumerate(progress(voiced, until_ms)):
        if (i + 1) % every == 0:
            out = gate.hear(v, h, runs if with_runs else ())
            if out is not None:
                return out
    return None


@pytest.mark.parametrize("every", [1, 2, 3, 7, 13, 60])
def test_a_gap_that_closed_between_two_readings_still_resumes(every):
    voiced = [(0.0, 260.0), (480.0, 640.0)]  # a 220 ms gap inside the first 400 ms of voice
    assert verdict(voiced, every) is PauseInput.RESUME


@pytest.mark.parametrize("every", [1, 2, 3, 7, 13, 60])
def test_voice_with_short_gaps_commits_at_any_reading_rate(every):
    voiced = [(0.0, 180.0), (300.0, 520.0), (600.0, 900.0)]  # gaps of 120 and 80 ms
    assert verdict(voiced, every) is PauseInput.COMMIT


def test_without_runs_a_coarse_reading_misses_the_gap():
    """What the runs are for: read once per 260 ms, voiced_to alone hides the closed gap."""
    voiced = [(0.0, 260.0), (480.0, 640.0)]
    assert verdict(voiced, 13, with_runs=False) is PauseInput.COMMIT
    assert verdict(voiced, 1, with_runs=False) is PauseInput.RESUME


async def test_the_runner_reports_its_voiced_runs_on_real_speech(shared_audio):
    import numpy as np

    from gateway.vadrun import VOICED_RUNS_KEPT, VadFactory
    from tests.conftest import load_wav
    from gateway.codecs.resample import resample

    pcm, rate = load_wav(shared_audio / "speech/librivox-0880.wav")
    pcm = resample(pcm, rate, 8000)
    runner = VadFactory("silero", batched=False).create(8000)
    seen = []
    for i in range(0, pcm.size - 160, 160):
        await runner.process(np.ascontiguousarray(pcm[i:i + 160]))
        seen.append(runner.voicing())
    last = seen[-1]
    assert 1 < len(last.runs) <= VOICED_RUNS_KEPT
    assert all(s < e for s, e in last.runs) and all(a[1] < b[0] for a, b in zip(last.runs, last.runs[1:]))
    assert last.runs[-1][1] == last.voiced_to <= last.scored_to
    assert all(v.voiced_to == (v.runs[-1][1] if v.runs else 0) for v in seen)
