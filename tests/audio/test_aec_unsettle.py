"""An unsettled echo canceller: the double-talk rule falls back on its prior for about a second.

Agent audio that resumes after a gap inside a run of it (the carrier ran dry) plays on the
carrier's own frame clock, up to a frame later than the ledger says; the learnt echo path may
no longer line up. Mixes as in ``tests/audio/test_aec.py``.
"""

from __future__ import annotations

import numpy as np

from gateway.audio import mdf
from gateway.audio.aec import UNSETTLE_BLOCKS, EchoCanceller
from gateway.engine.echo import EchoStage
from tests.audio.test_aec import mix, path, run, talk, voices  # noqa: F401  (voices: the fixture)

RATE = 8000
FRAME = 160


def _blocks_to_adapt(aec: EchoCanceller, ref16: np.ndarray, leg: np.ndarray, start: int) -> int:
    """20 ms blocks of agent audio from ``start`` until ``aec`` counts as adapted (or the audio ends)."""
    for k, o in enumerate(range(start, ref16.size, FRAME)):
        if aec.adapted:
            return k
        aec.reference(ref16[o:o + FRAME], o)
        aec.process(leg[o:o + FRAME], o)
    return 10**6


def test_unsettle_waits_about_a_second_more_and_keeps_the_weights(voices):
    ref = talk(voices, 0, 8.0, -20)
    leg, _, _ = mix(ref, path(120, 15, False), -55)
    ref16 = np.clip(np.round(ref), -32768, 32767).astype(np.int16)
    fresh = EchoCanceller(RATE)
    first = _blocks_to_adapt(fresh, ref16, leg, 0)
    assert first < 100  # the call's first qualification: well within 2 s
    aec = EchoCanceller(RATE)
    run(aec, ref[: 3 * RATE], leg[: 3 * RATE])
    assert aec.adapted
    weights = aec.W.copy()
    aec.unsettle()
    assert not aec.adapted and aec.leak == 1.0
    assert np.array_equal(aec.W, weights)  # what it learnt still cancels if the path did not move
    again = _blocks_to_adapt(aec, ref16, leg, 3 * RATE)
    assert UNSETTLE_BLOCKS <= again < 10**6


def test_a_gap_inside_a_run_of_agent_audio_unsettles_the_canceller(voices):
    ref = talk(voices, 0, 4.0, -20)
    ref16 = np.clip(np.round(ref), -32768, 32767).astype(np.int16)
    leg, _, _ = mix(ref, path(80, 15, False), -55)
    stage = EchoStage(RATE)
    for k, o in enumerate(range(0, 3 * RATE, FRAME)):
        stage.reference(ref16[o:o + FRAME], o)
        stage.caller(leg[o:o + FRAME], (k + 1) * 20.0)
    assert stage.canceller.adapted
    stage.reference(ref16[3 * RATE:3 * RATE + FRAME], 3 * RATE)  # contiguous: nothing changes
    assert stage.canceller.adapted
    stage.reference(ref16[3 * RATE + FRAME:3 * RATE + 2 * FRAME], 3 * RATE + 4 * FRAME)  # 60 ms dry
    assert not stage.canceller.adapted
    far = EchoStage(RATE)  # a new run after the echo tail is not a gap inside a run
    far.reference(ref16[:FRAME], 0)
    far.canceller._pool.V[far.canceller._slot, mdf.ADAPTED] = 1.0  # (marked adapted by hand)
    assert far.canceller.adapted
    far.reference(ref16[FRAME:2 * FRAME], 10 * RATE)
    assert far.canceller.adapted
