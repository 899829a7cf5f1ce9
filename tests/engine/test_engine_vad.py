"""The per-tick engine's VAD equals each call's own VAD: Silero scores within 1e-5 and the same
turn boundaries, for 1, 7 and 400 calls of real speech with line noise, calls joining and
leaving between ticks and ticks carrying 0–3 frames of a call (jitter)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from gateway.codecs.g711 import ulaw_encode
from gateway.codecs.transcode import Transcoder, decode, encode
from gateway.engine import MediaEngine
from gateway.formats import L16_16K, L16_24K, PCMA_8K, PCMU_8K, AudioFormat, Encoding

L16_48K = AudioFormat(Encoding.L16, 48000)
from gateway.simulator.run import to_rate
from gateway.vadrun import VadEnd, VadFactory, VadStart
from tests.conftest import SHARED_AUDIO, load_wav

FILES = ["goforward.wav", "cards-003.wav", "librivox-0880.wav", "cards-001.wav", "librivox-0870.wav"]


@functools.cache
def speech(name: str, rate: int) -> np.ndarray:
    pcm, r = load_wav(SHARED_AUDIO / "speech" / name)
    return to_rate(pcm, r, rate)


def call_audio(i: int, rate: int, seconds: float) -> np.ndarray:
    """Call ``i``: a stretch of a real recording (its own offset), silence around it, line noise."""
    x = speech(FILES[i % len(FILES)], rate)
    n = int(seconds * rate)
    start = (i * 7919 * rate // 1000) % max(1, x.size - n)
    body = x[start : start + n].astype(np.float64)
    lead = np.zeros(int(rate * (0.1 + 0.05 * (i % 5))))
    sig = np.concatenate([lead, body, np.zeros(rate // 2)])
    rng = np.random.default_rng(i)
    noise_dbfs = -60 + 15 * rng.random()
    sig += rng.normal(0, 32768 * 10 ** (noise_dbfs / 20), sig.size)
    return np.clip(np.rint(sig), -32768, 32767).astype(np.int16)


def frames_of(pcm: np.ndarray, rate: int, fmt) -> list[bytes]:
    n = rate // 50
    out = []
    for k in range(0, pcm.size - n + 1, n):
        f = pcm[k : k + n]
        out.append(ulaw_encode(f) if fmt is PCMU_8K else f.astype("<i2").tobytes())
    return out


def recording(runner) -> list:
    """Wrap ``runner.apply`` to keep the Silero score of every chunk it scored."""
    got: list = []
    apply = runner.apply

    def keep(plan, scores):
        if plan.scored:
            got.append(float(scores[-1]))
        return apply(plan, scores)

    runner.apply = keep
    return got


def boundaries(events) -> list[tuple[str, int]]:
    return [("start", e.onset_sample) if isinstance(e, VadStart) else ("end", e.offset_sample) for e in events]


@functools.cache
def reference_factory() -> VadFactory:
    return VadFactory("silero", batched=False)  # one model; each call's runner has its own stream


async def alone(frames: list[bytes], fmt, rate: int):
    runner = reference_factory().create(rate)
    scores = recording(runner)
    events = []
    for f in frames:
        events += await runner.process(decode(f, fmt.encoding))
    return np.array(scores), boundaries(events)


def collect(lane, events: list) -> None:
    while lane._outbox:
        r = lane._outbox.popleft()
        assert r.error is None and not r.fallback
        events += r.vad


def on_engine(calls: list[list[bytes]], fmts, rates, joins, leaves, seed: int = 0):
    """Every call's frames through one engine: call ``i`` joins at tick ``joins[i]``, leaves at
    ``leaves[i]`` (or after its last frame), and submits 0–3 frames per tick."""
    engine = MediaEngine(scheduled=False)
    factory = VadFactory("silero", batched=False)
    rng = np.random.default_rng(seed)
    lanes, scores, events, sent = {}, {}, {}, {}
    tick = 0
    while tick < max(joins) + 1 or lanes:
        for i in range(len(calls)):
            if joins[i] == tick:
                runner = factory.create(rates[i])
                scores[i], events[i], sent[i] = recording(runner), [], 0
                lanes[i] = engine.attach(fmts[i], runner, fmts[i])
        for i, lane in list(lanes.items()):
            if tick == leaves[i] or sent[i] == len(calls[i]):
                lane.drain()
                lane.close()
                collect(lane, events[i])
                del lanes[i]
                continue
            for f in calls[i][sent[i] : sent[i] + int(rng.integers(0, 4))]:
                lane.submit(f, tick * 10.0, False)
                sent[i] += 1
        engine.run_tick()
        for i, lane in lanes.items():
            collect(lane, events[i])
        tick += 1
    return engine, {i: np.array(s) for i, s in scores.items()}, events, sent


@pytest.mark.parametrize("n_calls", [1, 7, 400])
async def test_engine_scores_and_turns_equal_each_call_alone(n_calls):
    seconds = 3.0 if n_calls < 400 else 0.8
    fmts = [PCMU_8K if i % 3 else L16_16K for i in range(n_calls)]
    rates = [f.sample_rate for f in fmts]
    calls = [frames_of(call_audio(i, rates[i], seconds), rates[i], fmts[i]) for i in range(n_calls)]
    joins = [0 if i == 0 else (i * 13) % 40 for i in range(n_calls)]
    leaves = [None if i % 4 else joins[i] + 30 + i % 17 for i in range(n_calls)]
    engine, scores, events, sent = on_engine(calls, fmts, rates, joins, leaves, seed=n_calls)
    assert engine.ticks > 0 and engine.lanes == 0
    turns = 0
    for i in range(n_calls):
        want_scores, want_turns = await alone(calls[i][: sent[i]], fmts[i], rates[i])
        assert scores[i].shape == want_scores.shape, i
        np.testing.assert_allclose(scores[i], want_scores, atol=1e-5, rtol=0)
        got_turns = boundaries(events[i])
        assert got_turns == want_turns, i
        turns += len(got_turns)
    assert turns > 0  # real speech: there are turns to agree on
    if n_calls == 400:
        # one ONNX run per chunk round: far fewer runs than lanes ticked
        assert engine.lanes_ticked > 10 * engine.ticks


async def test_barge_mode_takes_the_shorter_confirmation_from_the_next_tick():
    frames = frames_of(call_audio(2, 8000, 3.0), 8000, PCMU_8K)
    got = {}
    for barge in (False, True):
        engine = MediaEngine(scheduled=False)
        lane = engine.attach(PCMU_8K, VadFactory("silero", batched=False, barge_in_min_speech_ms=64,
                                                 min_speech_ms=400).create(8000), PCMU_8K)
        events = []
        for f in frames:
            lane.submit(f, 0.0, barge)
            engine.run_tick()
            events += lane._outbox.popleft().vad
        got[barge] = [e for e in events if isinstance(e, VadStart)]
    assert got[True] and got[False]
    assert got[True][0].confirm_delay_ms < got[False][0].confirm_delay_ms


@pytest.mark.parametrize(("fmt", "model"), [(PCMU_8K, L16_16K), (PCMU_8K, L16_24K), (L16_24K, L16_16K),
                                            (PCMA_8K, PCMA_8K), (L16_48K, L16_24K)])
def test_model_audio_and_vad_input_equal_the_per_frame_transcoders(fmt, model):
    """Batched decode and resampling (lanes grouped by rate pair) give each call, byte for
    byte, what its own aligned transcoders give frame by frame; odd L16 bytes wait."""
    rate = fmt.sample_rate
    engine = MediaEngine(scheduled=False)
    factory = VadFactory("webrtc")
    n_calls = 5
    signals = [call_audio(i, rate, 1.0) for i in range(n_calls)]
    streams = [encode(s, fmt.encoding) for s in signals]
    lanes = [engine.attach(fmt, factory.create(VadFactory.rate_for(rate)), model) for _ in range(n_calls)]
    got_model, got_vad = [bytearray() for _ in lanes], [[] for _ in lanes]
    for lane, log in zip(lanes, got_vad):
        take = lane.vad.take
        lane.vad.take = lambda pcm, take=take, log=log: (log.append(pcm.copy()), take(pcm))[1]
    step = fmt.bytes_for_ms(20) + (1 if fmt.encoding is Encoding.L16 else 0)  # odd L16 splits
    for k in range(0, max(map(len, streams)), step):
        for i, lane in enumerate(lanes):
            if streams[i][k : k + step]:
                lane.submit(streams[i][k : k + step], 0.0, False)
        engine.run_tick()
        for i, lane in enumerate(lanes):
            while lane._outbox:
                r = lane._outbox.popleft()
                assert r.error is None
                got_model[i] += r.model_audio
    for i in range(n_calls):
        to_model = Transcoder(fmt, model, aligned=True)
        to_vad = Transcoder(fmt, AudioFormat(Encoding.L16, VadFactory.rate_for(rate)), aligned=True)
        want_model, want_vad = bytearray(), bytearray()
        for k in range(0, len(streams[i]), step):
            want_model += to_model.process(streams[i][k : k + step])
            want_vad += to_vad.process(streams[i][k : k + step])
        assert bytes(got_model[i]) == bytes(want_model), i
        assert np.concatenate(got_vad[i]).astype("<i2").tobytes() == bytes(want_vad), i
