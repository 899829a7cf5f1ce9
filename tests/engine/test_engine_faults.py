"""The engine's tick on the event loop, and its faults: a failed Silero run falls back to the cheap
VAD for that round (counted, no call fails), one lane's bug is that lane's error alone."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import gateway.engine.engine as engine_module
from gateway.engine import MediaEngine
from gateway.formats import PCMU_8K
from gateway.vadrun import VadFactory, VadStart
from tests.engine.test_engine_vad import call_audio, frames_of


def speech_frames(i: int = 2) -> list[bytes]:
    return frames_of(call_audio(i, 8000, 2.0), 8000, PCMU_8K)


def run_all(engine: MediaEngine, lanes, frames) -> list[list]:
    results = [[] for _ in lanes]
    for f in frames:
        for lane in lanes:
            lane.submit(f, 0.0, False)
        engine.run_tick()
        for i, lane in enumerate(lanes):
            while lane._outbox:
                results[i].append(lane._outbox.popleft())
    return results


def test_a_failed_silero_run_scores_that_round_with_the_cheap_vad(monkeypatch):
    engine = MediaEngine(scheduled=False)
    factory = VadFactory("silero", batched=False, pregate="off")
    lanes = [engine.attach(PCMU_8K, factory.create(8000), PCMU_8K) for _ in range(3)]
    real, failing = engine_module.score_blocks, {"left": 1000}

    def broken(streams, blocks):
        if failing["left"]:
            failing["left"] -= 1
            raise RuntimeError("onnxruntime: out of memory")
        return real(streams, blocks)

    monkeypatch.setattr(engine_module, "score_blocks", broken)
    results = run_all(engine, lanes, speech_frames())
    assert engine.fallback_ticks > 0 and all(lane.fallback_ticks == engine.fallback_ticks for lane in lanes)
    for rs in results:
        assert all(r.error is None for r in rs)
        assert any(r.fallback for r in rs)
        assert any(isinstance(e, VadStart) for r in rs for e in r.vad)  # the cheap VAD still hears speech
    # Silero's state was never touched by the failed runs: no chunk counted as scored.
    assert all(lane.vad.detector.scorer.stream.chunks_scored == 0 for lane in lanes)
    failing["left"] = 0  # recovered: Silero scores again, no more fallbacks
    before = engine.fallback_ticks
    run_all(engine, lanes, speech_frames(3))
    assert engine.fallback_ticks == before
    assert all(lane.vad.detector.scorer.stream.chunks_scored > 0 for lane in lanes)


def test_one_lanes_bug_is_its_own_error_and_the_others_go_on():
    engine = MediaEngine(scheduled=False)
    factory = VadFactory("silero", batched=False)

    def hear_broken(pcm, at_ms):
        raise ZeroDivisionError("a policy bug")

    heard = []
    good = engine.attach(PCMU_8K, factory.create(8000), PCMU_8K, hear=lambda pcm, at: heard.append(pcm.size) or [])
    bad_hear = engine.attach(PCMU_8K, factory.create(8000), PCMU_8K, hear=hear_broken)
    bad_vad = engine.attach(PCMU_8K, factory.create(8000), PCMU_8K)
    bad_vad.vad.plan = lambda chunk, power=None: (_ for _ in ()).throw(ValueError("a VAD bug"))
    results = run_all(engine, [good, bad_hear, bad_vad], speech_frames())
    assert all(r.error is None for r in results[0])
    assert any(isinstance(e, VadStart) for r in results[0] for e in r.vad)
    assert sum(heard) == 160 * len(results[0])
    assert all(isinstance(r.error, ZeroDivisionError) for r in results[1])
    assert any(isinstance(r.error, ValueError) for r in results[2])


async def test_the_tick_runs_on_the_loop_and_results_arrive_in_order():
    engine = MediaEngine(tick_ms=10)
    lane = engine.attach(PCMU_8K, VadFactory("webrtc").create(8000), PCMU_8K)
    frames = speech_frames()[:20]
    got: list = []

    async def read():
        async for r in lane.results():
            got.append(r)

    reader = asyncio.create_task(read())
    for k, f in enumerate(frames):
        lane.submit(f, k * 20.0, False)
        await asyncio.sleep(0.02)
    assert len(got) >= 10  # one result per tick that had audio (about one per 20 ms frame)
    lane.submit(frames[0], 400.0, False)
    lane.drain()  # processed at once, not at the next tick
    assert lane.queued_bytes == 0
    lane.close()
    await asyncio.wait_for(reader, 1)  # the results end after close
    assert b"".join(r.model_audio for r in got) == b"".join(frames) + frames[0]
    assert [r.start_sample for r in got] == sorted(r.start_sample for r in got)
    assert got[-1].at_ms == 400.0
    assert engine.lanes == 0 and engine.ticks >= len(got)


def test_tick_setting_is_bounded():
    with pytest.raises(ValueError, match="tick_ms"):
        MediaEngine(tick_ms=2)
    assert np.isclose(MediaEngine(tick_ms=20).tick_ms, 20)


def test_a_session_wakes_once_per_model_message_or_at_once_for_something_to_act_on():
    engine = MediaEngine(scheduled=False)
    quiet = engine.attach(PCMU_8K, VadFactory("webrtc").create(8000), PCMU_8K)
    acting = engine.attach(PCMU_8K, VadFactory("webrtc").create(8000), PCMU_8K, hear=lambda pcm, at: ["note"])
    quiet.wake_bytes = acting.wake_bytes = 800  # 100 ms of μ-law
    for k in range(5):
        for lane in (quiet, acting):
            lane.submit(b"\xff" * 160, k * 20.0, False)
        engine.run_tick()
        assert quiet._ready.is_set() is (k == 4)  # the fifth 20 ms frame completes a message
        assert acting._ready.is_set()  # listener actions: at once
    assert len(quiet._outbox) == 5  # nothing was lost in between, in order
    assert [r.start_sample for r in quiet._outbox] == [0, 160, 320, 480, 640]
