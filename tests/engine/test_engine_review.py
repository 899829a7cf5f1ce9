"""Regressions: an empty frame, a failing shared stage, one bad Silero stream, a failing last pass,
a stuck model, and the pre-gate's powers being the same numbers on every path."""

from __future__ import annotations

import asyncio

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import gateway.engine.engine as engine_module
from gateway.audio.pregate import PreGate, chunk_energy, power_dbfs_of
from gateway.engine import MediaEngine
from gateway.formats import PCMU_8K
from gateway.vadrun import VadFactory, VadStart
from tests.engine.test_engine_faults import run_all, speech_frames
from tests.engine.test_engine_session import Recorder, session_for


async def test_an_empty_frame_never_stalls_the_lane():
    engine = MediaEngine(tick_ms=10)
    lane = engine.attach(PCMU_8K, VadFactory("webrtc").create(8000), PCMU_8K)
    frames = speech_frames()[:12]
    lane.submit(b"", 0.0, False)  # a Twilio "payload": "" (or an empty binary frame)
    for k, f in enumerate(frames):
        lane.submit(f, k * 20.0, False)
        await asyncio.sleep(0.02)
    assert lane.queued_bytes < 2 * 160  # the ticks kept taking the audio
    got = b"".join(r.model_audio for r in lane.unread())
    assert frames[0] in got and len(got) >= 10 * 160
    lane.close()


def test_a_failing_shared_stage_costs_no_call(monkeypatch):
    engine = MediaEngine(scheduled=False)
    factory = VadFactory("silero", batched=False)
    lanes = [engine.attach(PCMU_8K, factory.create(8000), PCMU_8K) for _ in range(3)]

    def broken(_chunks):
        raise FloatingPointError("a numpy bug")

    monkeypatch.setattr(engine_module, "chunk_energy", broken)
    results = run_all(engine, lanes, speech_frames())
    for rs in results:
        assert all(r.error is None for r in rs)
        assert any(isinstance(e, VadStart) for r in rs for e in r.vad)


def test_one_bad_silero_stream_falls_back_alone(monkeypatch):
    engine = MediaEngine(scheduled=False)
    factory = VadFactory("silero", batched=False, pregate="off")
    lanes = [engine.attach(PCMU_8K, factory.create(8000), PCMU_8K) for _ in range(3)]
    bad = lanes[1].vad.detector.scorer.stream
    real = engine_module.score_blocks

    def score_blocks(streams, blocks):
        if any(s is bad for s in streams):
            raise RuntimeError("a corrupt state")
        return real(streams, blocks)

    monkeypatch.setattr(engine_module, "score_blocks", score_blocks)
    results = run_all(engine, lanes, speech_frames())
    assert lanes[1].fallback_ticks > 0 and any(r.fallback for r in results[1])
    assert all(r.error is None for rs in results for r in rs)
    for i in (0, 2):
        assert lanes[i].fallback_ticks == 0 and not any(r.fallback for r in results[i])
        assert lanes[i].vad.detector.scorer.stream.chunks_scored > 0
    assert engine.fallback_ticks > 0


async def test_a_failing_last_pass_still_finalises_the_call_and_frees_the_lane():
    engine = MediaEngine(tick_ms=40)
    session, _bridge, _recorder = session_for(engine, speech_frames()[:20], stop=False)
    finished = []

    async def on_finished(outcome):
        finished.append(outcome)

    session.hooks.on_finished = on_finished
    task = asyncio.create_task(session.run())
    while session.stats.frames_in < 20:
        await asyncio.sleep(0.001)

    def broken(lanes=None):
        raise MemoryError("no memory for the last pass")

    engine.run_tick = broken
    session.request_end("shutdown")
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.end_reason == "shutdown" and finished and engine.lanes == 0


class StuckBridgeSend:
    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def __call__(self, audio: bytes) -> None:
        await self.release.wait()


async def test_a_stuck_model_send_ends_the_call_instead_of_buffering_without_bound():
    from gateway.simulator.dialects import TwilioCaller

    engine = MediaEngine(tick_ms=10)
    frames = speech_frames()  # 2 s
    session, bridge, _recorder = session_for(engine, frames[:10], stop=False)
    bridge.send_audio = StuckBridgeSend()  # the first 100 ms message never leaves
    task = asyncio.create_task(session.run())
    await asyncio.sleep(0.1)
    for f in frames * 8:  # 16 s more (past MAX_UNREAD_MS), which the stuck caller task never takes
        session.transport.inbox.put_nowait(TwilioCaller().media(f))
    while session.stats.frames_in < 10 + 8 * len(frames):
        await asyncio.sleep(0.005)

    async def keep_talking():  # the carrier goes on sending while the ticks deliver the backlog
        while True:
            session.transport.inbox.put_nowait(TwilioCaller().media(frames[0]))
            await asyncio.sleep(0.02)

    talker = asyncio.create_task(keep_talking())
    try:
        outcome = await asyncio.wait_for(task, 10)
    finally:
        talker.cancel()
    assert (outcome.status, outcome.end_reason, outcome.error_code) == ("failed", "caller_stalled", "caller_stalled")
    assert engine.lanes == 0


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.sampled_from([256, 512]), level=st.sampled_from([0, 3, 30, 3000, 32767]))
def test_a_chunks_power_is_the_same_number_on_every_path(seed, size, level):
    """The engine's batched energies and a lone pre-gate's own computation give equal powers, so
    the gate decides alike (a chunk on the floor + margin boundary cannot flip)."""
    rng = np.random.default_rng(seed)
    chunks = (rng.normal(0, 1, (5, size)) * level).clip(-32768, 32767).astype(np.int16)
    batched = [power_dbfs_of(e, size) for e in chunk_energy(chunks).tolist()]
    for c, p in zip(chunks, batched):
        alone, given_p = PreGate(size * 125 // 4), PreGate(size * 125 // 4)
        assert alone._possible(c[None], None) == given_p._possible(c[None], [p])
        assert alone.floor_dbfs == given_p.floor_dbfs == max(p, alone.min_floor_dbfs)
