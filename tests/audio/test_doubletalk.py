"""Double-talk gate: echo alone rarely passes, caller speech over the agent passes at once.

Mixes as in ``tests/audio/test_aec.py`` (shared speech, μ-law, line noise), through the echo
canceller (with the echo path estimator's delay, as the session wires it), judged per Silero
chunk (256 samples at 8 kHz) as the VAD would ask.
"""

from __future__ import annotations

import numpy as np
import pytest

from gateway.audio.aec import AecOut, EchoCanceller
from gateway.audio.doubletalk import DoubleTalkGate
from gateway.audio.echo import EchoPathEstimator
from tests.audio.test_aec import mix, path, talk, voices  # noqa: F401  (voices: the fixture)

RATE = 8000
FRAME = 160
CHUNK = 256


def judge(ref: np.ndarray, leg: np.ndarray, gate: DoubleTalkGate | None = None):
    """Runs canceller + estimator + gate over the call; returns the per-chunk decisions."""
    aec, est = EchoCanceller(RATE), EchoPathEstimator(RATE)
    gate = gate or DoubleTalkGate(RATE)
    ref16 = np.clip(np.round(ref), -32768, 32767).astype(np.int16)
    out = []
    for o in range(0, ref.size, FRAME):
        aec.reference(ref16[o:o + FRAME], o)
        est.reference(ref16[o:o + FRAME], o)
        est.caller(leg[o:o + FRAME], o)
        if est.estimate is not None:  # as the echo stage hands it on: the delay and the return loss
            aec.set_delay(est.estimate.delay_ms)
            gate.set_erl(est.estimate.erl_db)
        gate.feed(aec.process(leg[o:o + FRAME], o), o)
        while (len(out) + 1) * CHUNK <= o + FRAME:
            j = len(out)
            out.append(gate.decide(j * CHUNK, (j + 1) * CHUNK))
    return out


def runs_of(allowed: list[bool], n: int = 3) -> int:
    """How many times ``n`` chunks in a row were allowed (the VAD's 96 ms confirmation)."""
    return sum(all(allowed[j:j + n]) for j in range(len(allowed) - n + 1))


# Tuned on 72 generated calls (echo 12–45 dB down, delays 40–200 ms, noise −60…−40 dBFS,
# agent −22…−16 dBFS): 0 runs of three allowed echo-only chunks at margin 6 / noise 6 dB.
@pytest.mark.parametrize(("delay_ms", "erl_db", "noise_dbfs", "dispersive"), [
    (40, 12, -60, True), (200, 12, -50, False), (120, 20, -55, True), (160, 30, -45, False),
])
def test_echo_alone_rarely_passes(voices, delay_ms, erl_db, noise_dbfs, dispersive):
    ref = talk(voices, 1, 8.0, -18)
    leg, _, _ = mix(ref, path(delay_ms, erl_db, dispersive), noise_dbfs, seed=delay_ms)
    got = judge(ref, leg)
    agent = [d for d in got if d.agent]
    assert len(agent) > 0.8 * len(got)
    allowed = [d.allowed for d in agent]
    assert sum(allowed) <= 0.02 * len(allowed)
    assert runs_of([d.allowed and d.agent for d in got]) == 0


@pytest.mark.parametrize(("onset_s", "caller_dbfs", "erl_db"), [
    (4.0, -25, 12), (4.5, -30, 20), (5.0, -15, 12), (1.0, -20, 15), (3.0, -30, 30),
])
def test_caller_over_the_agent_passes_within_two_chunks(voices, onset_s, caller_dbfs, erl_db):
    ref = talk(voices, 0, 7.0, -18)
    caller = talk(voices, 8, 7.0, caller_dbfs)
    caller[: int(onset_s * RATE)] = 0.0
    onset = int(np.nonzero(np.abs(caller) > 30)[0][0])
    leg, _, _ = mix(ref, path(120, erl_db, True), -55, over=caller)
    got = judge(ref, leg)
    first = onset // CHUNK
    allowed = [d.allowed for d in got]
    assert any(allowed[first:first + 3]), [(d.residual_dbfs, d.echo_left_dbfs) for d in got[first:first + 3]]
    talking = [j for j in range(first, len(got)) if np.mean(caller[j * CHUNK:(j + 1) * CHUNK] ** 2) > 1000.0 ** 2]
    assert sum(allowed[j] for j in talking) >= 0.8 * len(talking)
    assert runs_of(allowed[first:first + 8]) >= 1  # a barge-in can be confirmed within 350 ms


def test_no_agent_audio_always_allows():
    gate = DoubleTalkGate(RATE)
    rng = np.random.default_rng(0)
    for k in range(50):
        pcm = (rng.standard_normal(FRAME) * 30).astype(np.int16)
        gate.feed(AecOut(pcm, np.zeros(FRAME, np.float32), 1.0, False, False), k * FRAME)
    d = gate.decide(10 * CHUNK, 11 * CHUNK)
    assert d.allowed and not d.agent
    assert -62 < d.floor_dbfs < -55  # 30 RMS ≈ −61 dBFS; the floor is the quietest frame
    assert gate.allows(0, 0) and gate.decide(5, 5).allowed
    assert not gate.decide(10**6, 10**6 + CHUNK).agent  # nothing fed there: no agent audio


def test_prior_before_adaptation_and_set_erl():
    """Before the canceller adapts, the echo is bounded by the reference level and a return
    loss: 12 dB by default, the estimator's once known."""
    n = FRAME
    res = np.full(n, 1000, np.int16)  # −30 dBFS on the caller leg
    out = AecOut(res, np.zeros(n, np.float32), 1.0, False, True, ref_power=3000.0 ** 2)  # ref −21 dBFS
    gate = DoubleTalkGate(RATE)
    gate.floor = 10.0 ** 2
    gate.feed(out, 0)
    assert not gate.allows(0, n)  # −30 is not above −21 − 12 + 6 = −27
    gate.set_erl(25.0)
    gate.feed(out, n)
    assert gate.allows(n, 2 * n)  # −30 is above −21 − 25 + 6 = −40
    gate.set_erl(None)
    assert gate.prior_gain == pytest.approx(10 ** (-1.2))


def test_adapted_uses_the_leak():
    n = FRAME
    echo = np.full(n, 2000.0, np.float32)
    gate = DoubleTalkGate(RATE, margin_db=6.0)
    gate.floor = 1.0
    gate.feed(AecOut(np.full(n, 300, np.int16), echo, 0.01, True, True, 5000.0 ** 2), 0)
    d = gate.decide(0, n)  # left = 0.01 · 2000² → −44.3 dBFS; residual −40.8: within 6 dB → refused
    assert d.agent and not d.allowed and d.echo_left_dbfs == pytest.approx(-44.3, abs=0.1)
    gate.feed(AecOut(np.full(n, 700, np.int16), echo, 0.01, True, True, 5000.0 ** 2), n)
    assert gate.allows(n, 2 * n)  # −33.4 dBFS: 10.9 dB above


def test_the_rule_holds_over_the_echo_tail():
    """A VAD keeps calling speech for a while after what it last heard (Silero's state): residual
    echo the rule refused, then the line's noise once the agent stops. Within the hangover after
    agent audio a span must stand above the noise floor; speech does, the floor does not."""
    n = FRAME
    gate = DoubleTalkGate(RATE, hangover_ms=300.0)
    rng = np.random.default_rng(0)
    noise = lambda: (rng.standard_normal(n) * 40).astype(np.int16)  # noqa: E731  ≈ −58 dBFS
    for k in range(20):  # agent audio: the canceller active
        gate.feed(AecOut(noise(), np.zeros(n, np.float32), 0.01, True, True, 3000.0 ** 2), k * n)
    for k in range(20, 60):  # the agent stopped: no agent audio in the spans
        gate.feed(AecOut(noise(), np.zeros(n, np.float32), 1.0, False, False), k * n)
    after = 20 * n
    assert gate.decide(after, after + CHUNK).agent  # 0–32 ms after: the rule still applies ...
    assert not gate.allows(after, after + CHUNK)  # ... and the noise floor is refused
    late = after + int(0.3 * RATE)
    assert gate.allows(late, late + CHUNK) and not gate.decide(late, late + CHUNK).agent
    g2 = DoubleTalkGate(RATE, hangover_ms=300.0)  # speech (−24 dBFS) right after agent audio passes
    for k in range(20):
        g2.feed(AecOut(noise(), np.zeros(n, np.float32), 0.01, True, True, 3000.0 ** 2), k * n)
    g2.feed(AecOut((rng.standard_normal(n) * 2000).astype(np.int16), np.zeros(n, np.float32), 1.0, False, False),
            20 * n)
    assert g2.allows(20 * n, 21 * n)


def test_an_adapted_canceller_is_trusted_only_so_far_once_the_loss_is_known():
    """Once the echo path's return loss is known, the echo left is never predicted below the
    prior's echo less the assured enhancement (9 dB): a canceller that calls itself adapted
    while it still leaves most of the echo (its first qualification; a path that moved) does
    not let that echo count as speech. Before the loss is known, the leak alone."""
    n = FRAME
    echo = np.full(n, 100.0, np.float32)  # the canceller's own estimate: small
    res = np.full(n, 700, np.int16)  # −33.4 dBFS left on the leg
    out = AecOut(res, echo, 0.01, True, True, 10000.0 ** 2)  # the loudest reference −10.3 dBFS
    gate = DoubleTalkGate(RATE, assured_erle_db=9.0)
    gate.floor = 1.0
    gate.feed(out, 0)
    assert gate.allows(0, n)  # leak · y² = −70 dBFS: "far above the echo left"
    gate.set_erl(15.0)  # the echo ≤ −25.3 dBFS; assured at most 9 dB below: −34.3, +6 dB margin
    gate.feed(out, n)
    d = gate.decide(n, 2 * n)
    assert not d.allowed and d.echo_left_dbfs == pytest.approx(-10.3 - 15 - 9, abs=0.1)
    gate.set_erl(None)
    gate.feed(out, 2 * n)
    assert gate.allows(2 * n, 3 * n)
    off = DoubleTalkGate(RATE, assured_erle_db=None)
    off.floor = 1.0
    off.set_erl(15.0)
    off.feed(out, 0)
    assert off.allows(0, n)


def test_validation():
    with pytest.raises(ValueError):
        DoubleTalkGate(0)
    with pytest.raises(ValueError):
        DoubleTalkGate(RATE, history_ms=0)
    with pytest.raises(ValueError):
        DoubleTalkGate(RATE, hangover_ms=-1.0)


def _floors(pcm: np.ndarray, cuts: list[int], at: int = 0) -> dict[int, float]:
    """The gate's floor after every piece of ``pcm`` cut at ``cuts``, keyed by the piece's end."""
    gate, out, edges = DoubleTalkGate(RATE), {}, [0, *cuts, pcm.size]
    for a, b in zip(edges, edges[1:]):
        gate.feed(AecOut(pcm[a:b], np.zeros(b - a, np.float32), 1.0, False, False), at + a)
        out[at + b] = gate.floor
    return out


def test_the_floor_moves_once_per_20_ms_block_however_the_residual_is_cut():
    """The floor takes each complete 20 ms block's mean power (blocks on multiples of 160
    samples of the count), never a piece's: small pieces of the same noise do not lower it."""
    rng = np.random.default_rng(3)
    level = np.repeat(rng.uniform(20, 400, 40), 200)  # the line's noise level changes every 25 ms
    pcm = (rng.standard_normal(level.size) * level).astype(np.int16)
    whole = _floors(pcm, list(range(160, pcm.size, 160)))
    for cuts in (list(range(80, pcm.size, 80)), list(range(100, pcm.size, 100)),
                 sorted(rng.choice(np.arange(1, pcm.size), 300, replace=False).tolist())):
        got = _floors(pcm, cuts)
        assert all(got[p] == whole[p] for p in got if p % 160 == 0)
        assert got[pcm.size] == whole[pcm.size]
    first = float(np.mean(pcm[:160].astype(np.float64) ** 2))
    assert _floors(pcm[:160], [40, 90])[160] == first  # one block: its mean power, not its quietest piece
    assert _floors(pcm[:159], [])[159] == 0.0  # an incomplete block moves nothing
    shifted = _floors(pcm[:260], [], at=100)  # off the grid: only [160, 320) is complete
    assert shifted[360] == float(np.mean(pcm[60:220].astype(np.float64) ** 2))
    gap = DoubleTalkGate(RATE)
    for a, b in ((0, 100), (120, 160)):  # a gap in the block: skipped
        gap.feed(AecOut(pcm[a:b], np.zeros(b - a, np.float32), 1.0, False, False), a)
    assert gap.floor == 0.0


def test_batched_feed_equals_feeding_each_output(voices):
    """feed_blocks over cancel_batch's arrays leaves every gate as feeding each call's AecOut in
    turn: the same floor, ring contents and verdicts (calls at different delays, one silent)."""
    from gateway.audio.aec import cancel_batch, cancel_many
    from gateway.audio.doubletalk import feed_blocks

    n, calls = 3 * RATE, 4
    refs = [talk(voices, k, 3.0, -20.0) for k in range(calls)]
    refs[3][:] = 0.0  # no agent audio: passed through
    legs = [mix(r, path(40 + 50 * k, 20.0, k % 2 == 1), -55.0, seed=k)[0] for k, r in enumerate(refs)]
    a = [EchoCanceller(RATE) for _ in range(calls)]
    b = [EchoCanceller(RATE) for _ in range(calls)]
    ga = [DoubleTalkGate(RATE) for _ in range(calls)]
    gb = [DoubleTalkGate(RATE) for _ in range(calls)]
    for o in range(0, n, FRAME):
        for k in range(calls):
            r16 = np.clip(np.round(refs[k][o:o + FRAME]), -32768, 32767).astype(np.int16)
            a[k].reference(r16, o)
            b[k].reference(r16, o)
        chunks = [leg[o:o + FRAME] for leg in legs]
        for g, out in zip(ga, cancel_many(a, chunks, [o] * calls)):
            g.feed(out, o)
        (blocks,), outs = cancel_batch(b, chunks, [o] * calls)
        assert outs == [None] * calls and blocks.rows == list(range(calls))
        feed_blocks([gb[j] for j in blocks.rows], blocks, [o] * calls)
    assert blocks.active.tolist() == [True, True, True, False]
    for x, y in zip(ga, gb):
        assert x.floor == y.floor and x._ring.end == y._ring.end
        assert np.array_equal(x._ring._buf, y._ring._buf)
        for c in range(0, n - CHUNK, 997):
            assert x.decide(c, c + CHUNK) == y.decide(c, c + CHUNK)
