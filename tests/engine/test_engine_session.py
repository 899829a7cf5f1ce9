"""A real call session on the media engine: the same turns and model audio as per frame, the
caller's last words recorded however the call ends, and the lane always leaves the engine."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gateway.carriers.twilio import TwilioAdapter
from gateway.engine import MediaEngine
from gateway.formats import PCMU_8K
from gateway.llm import base as llm
from gateway.session import CallHooks, CallPolicy, CallSession
from gateway.simulator.dialects import TwilioCaller
from gateway.vadrun import VadFactory
from tests.engine.test_engine_vad import call_audio, frames_of
from tests.test_session import FakeBridge, MemoryTransport

QUIET = CallPolicy(max_duration_s=3000, inactivity_timeout_s=10_000, recording_enabled=True)


class Recorder:
    path = "memory.wav"

    def __init__(self) -> None:
        self.caller_samples = 0
        self.starts: list[int] = []

    def caller(self, pcm, at_sample: int) -> None:
        self.starts.append(at_sample)
        self.caller_samples += pcm.size

    def agent(self, pcm, at_sample: int) -> None:
        pass

    def close(self):
        return None


def session_for(engine: MediaEngine | None, frames: list[bytes], *, stop: bool = True):
    bridge, transport, recorder = FakeBridge(), MemoryTransport(), Recorder()
    factory = VadFactory("silero", batched=engine is None)
    session = CallSession(
        call_id="call_engine", adapter=TwilioAdapter(), transport=transport, bridge_factory=lambda cfg: bridge,
        config=llm.AgentConfig(turn_mode="gateway"), policy=QUIET, engine=engine,
        vad=lambda rate: factory.create(VadFactory.rate_for(rate)),
        hooks=CallHooks(open_recorder=lambda rate: recorder), model_chunk_ms=100,
    )  # fmt: skip
    dialect = TwilioCaller()
    for frame in dialect.opening({}):
        transport.inbox.put_nowait(frame)
    for f in frames:
        transport.inbox.put_nowait(dialect.media(f))
    if stop:
        transport.inbox.put_nowait(dialect.stop())
    return session, bridge, recorder


def speech() -> list[bytes]:
    return frames_of(call_audio(1, 8000, 2.5), 8000, PCMU_8K)


def turn_calls(bridge: FakeBridge) -> list:
    return [c[0] for c in bridge.calls if c[0] in ("speech_started", "end_of_turn")]


async def test_a_call_on_the_engine_gets_the_turns_and_audio_it_gets_per_frame():
    frames = speech()
    got = {}
    for mode in ("frame", "tick"):
        engine = MediaEngine() if mode == "tick" else None
        session, bridge, recorder = session_for(engine, frames)
        outcome = await asyncio.wait_for(session.run(), 20)
        assert (outcome.status, outcome.end_reason) == ("completed", "carrier_stop")
        audio = sum(c[1] for c in bridge.calls if c[0] == "audio")
        got[mode] = (turn_calls(bridge), audio, recorder.caller_samples,
                     [e["data"]["onsetMs"] for e in outcome.events if e["kind"] == "caller_speech_start"])
        if engine is not None:
            assert engine.lanes == 0 and engine.ticks >= 1
            assert outcome.metrics["vadFallbackTicks"] == 0
    assert got["tick"][0] == got["frame"][0] and "end_of_turn" in got["tick"][0]
    assert got["tick"][1] == got["frame"][1]  # every byte of caller audio reached the model
    assert got["tick"][2] == got["frame"][2] == len(frames) * 160  # and the recording
    assert len(got["tick"][3]) == len(got["frame"][3])


@pytest.mark.parametrize("ending", ["request_end", "cancel"])
async def test_the_caller_s_last_words_are_recorded_and_the_lane_leaves_however_the_call_ends(ending):
    engine = MediaEngine(tick_ms=40)  # long ticks: frames are still queued when the call ends
    frames = speech()[:30]
    session, bridge, recorder = session_for(engine, frames, stop=False)
    task = asyncio.create_task(session.run())
    while session.stats.frames_in < len(frames):
        await asyncio.sleep(0.001)
    assert engine.lanes == 1
    if ending == "request_end":
        session.request_end("shutdown")
        outcome = await asyncio.wait_for(task, 10)
        assert outcome.end_reason == "shutdown"
    else:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert engine.lanes == 0
    assert recorder.caller_samples == len(frames) * 160
    assert np.all(np.diff(recorder.starts) > 0)  # in order, nothing twice
