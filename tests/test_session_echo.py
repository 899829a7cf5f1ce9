"""A call whose caller leg carries the agent's own audio back as echo, on a virtual clock.

The carrier here plays what the session sends the way a carrier does (each message from when it
arrives or when the previous one ends, sample by sample), and its caller leg is that played
audio's echo (``delay_ms`` later, ``erl_db`` down), line noise and optionally the caller's own
speech (recordings from ``../shared/audio/speech``), through μ-law, one 20 ms frame delivered
when its audio ends. Per frame and on the media engine.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gateway.carriers.twilio import TwilioAdapter
from gateway.codecs.g711 import ulaw_decode, ulaw_encode
from gateway.engine import MediaEngine
from gateway.llm import base as llm
from gateway.session import CallPolicy, CallSession
from gateway.simulator.dialects import TwilioCaller
from gateway.simulator.noise import LineNoise
from gateway.vadrun import VadFactory
from tests.engine.test_engine_echo import talk
from tests.test_session import FakeBridge, VirtualClock

RATE = 8000
FRAME = 160
QUIET = CallPolicy(max_duration_s=3000, inactivity_timeout_s=10_000, recording_enabled=False)


class EchoLine:
    """The carrier and the caller's end of the line, as the session's transport.

    Args:
        clock: the call's virtual clock (the session's ``t0`` is 0 on it).
        seconds: caller audio sent before the carrier's ``stop``.
        delay_ms, erl_db: the echo path (``erl_db`` ``None``: no echo).
        noise_dbfs: line noise under everything.
        caller: the caller's own speech (int16 at 8 kHz) and where it starts (s).
    """

    def __init__(self, clock: VirtualClock, seconds: float, *, delay_ms: float, erl_db: float | None,
                 noise_dbfs: float = -50.0, caller: tuple[np.ndarray, float] | None = None) -> None:
        self.clock, self.dialect = clock, TwilioCaller()
        n = int(seconds * RATE)
        self.frames = n // FRAME
        self.played = np.zeros(n + RATE, np.float64)
        self.play_end = 0
        self.gain = 0.0 if erl_db is None else 10 ** (-erl_db / 20)
        self.delay = int(round(delay_ms * RATE / 1000))
        self.noise = LineNoise(RATE, level_dbfs=noise_dbfs, seed=5).next(n).astype(np.float64)
        if caller is not None:
            pcm, at_s = caller
            at = int(at_s * RATE)
            self.noise[at : at + pcm.size] += pcm[: n - at]
        self.inbox: asyncio.Queue = asyncio.Queue()
        for frame in self.dialect.opening({}):
            self.inbox.put_nowait(frame)
        self.marks: list[tuple[int, str]] = []
        self.clears = 0
        self.closed: tuple[int, str] | None = None

    async def receive(self):
        return await self.inbox.get()

    async def send(self, frame) -> None:
        now = int(round(self.clock.now() * RATE))
        for msg in self.dialect.parse(frame):
            if msg.kind == "media":
                pcm = ulaw_decode(msg.audio).astype(np.float64)
                at = max(now, self.play_end)
                self.played[at : at + pcm.size] = pcm[: max(0, self.played.size - at)]
                self.play_end = at + pcm.size
            elif msg.kind == "mark":
                self.marks.append((max(now, self.play_end), msg.name))
            elif msg.kind == "clear":
                self.clears += 1
                self.played[now:] = 0.0
                self.play_end = now
                for _, name in self.marks:  # Twilio echoes every pending mark on clear
                    self.inbox.put_nowait(self.dialect.mark_played(name))
                self.marks.clear()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)

    def leg(self, k: int) -> np.ndarray:
        """Caller frame ``k`` (samples ``[k B, (k + 1) B)``): the echo of what played, the noise
        and the caller, through μ-law."""
        s = slice(k * FRAME, (k + 1) * FRAME)
        lo = k * FRAME - self.delay
        echo = self.played[max(lo, 0) : lo + FRAME] if lo + FRAME > 0 else np.zeros(0)
        x = self.noise[s].copy()
        x[FRAME - echo.size :] += self.gain * echo
        return np.clip(np.rint(x), -32768, 32767).astype(np.int16)

    async def run(self) -> None:
        """One caller frame every 20 ms, sent when its audio ends; marks acknowledged as they play."""
        for k in range(self.frames):
            await self.clock.sleep(max(0.0, (k + 1) * FRAME / RATE - self.clock.now()))
            now = int(round(self.clock.now() * RATE))
            while self.marks and self.marks[0][0] <= now:
                self.inbox.put_nowait(self.dialect.mark_played(self.marks.pop(0)[1]))
            self.inbox.put_nowait(self.dialect.media(ulaw_encode(self.leg(k))))
        self.inbox.put_nowait(self.dialect.stop())


async def echo_call(line: EchoLine, clock: VirtualClock, *, engine: bool, agent: np.ndarray, agent_at_s: float = 0.5,
                    interruptible: bool = False, vad="webrtc", **session_kw):
    """Run one call on ``line``: the model says ``agent`` (int16 8 kHz, μ-law) at ``agent_at_s``;
    ``vad``: a :class:`VadFactory` kind or a runner factory (carrier rate -> runner)."""
    bridge = FakeBridge()
    if isinstance(vad, str):
        factory = VadFactory(vad, batched=False)
        vad = lambda rate: factory.create(VadFactory.rate_for(rate))  # noqa: E731
    media = MediaEngine(scheduled=False) if engine else None
    session = CallSession(
        call_id="call_echo", adapter=TwilioAdapter(), transport=line, bridge_factory=lambda cfg: bridge,
        config=llm.AgentConfig(interruptible=interruptible), policy=QUIET, clock=clock, engine=media, vad=vad,
        **session_kw,
    )  # fmt: skip

    async def model() -> None:
        await clock.sleep(agent_at_s)
        bridge.queue.put_nowait(llm.AudioOut("item_1", ulaw_encode(agent)))
        bridge.queue.put_nowait(llm.ResponseDone("item_1"))

    async def ticks() -> None:
        while True:
            await clock.sleep(0.01)
            media.run_tick()

    helpers = [asyncio.create_task(t) for t in (clock.drive(), line.run(), model())]
    if media is not None:
        helpers.append(asyncio.create_task(ticks()))
    try:
        outcome = await asyncio.wait_for(session.run(), 60)
    finally:
        for task in helpers:
            task.cancel()
    return outcome, bridge, session


@pytest.mark.parametrize("engine", [False, True], ids=["per_frame", "per_tick"])
async def test_metrics_echo_gives_the_line_s_delay_and_return_loss(engine):
    clock = VirtualClock()
    line = EchoLine(clock, 10.0, delay_ms=120, erl_db=25, noise_dbfs=-50)
    outcome, _, _ = await echo_call(line, clock, engine=engine, agent=talk(0, 9.0, level_db=-2))
    assert outcome.end_reason == "carrier_stop"
    echo = outcome.metrics["echo"]
    assert echo["delayMs"] == pytest.approx(120, abs=2.0), echo
    assert echo["erlDb"] == pytest.approx(25, abs=3.0), echo
    assert echo["confidence"] >= 0.45


async def test_no_agent_audio_no_metrics_echo():
    clock = VirtualClock()
    line = EchoLine(clock, 2.0, delay_ms=120, erl_db=25)
    outcome, _, _ = await echo_call(line, clock, engine=True, agent=talk(0, 1.0), agent_at_s=5.0)
    assert outcome.end_reason == "carrier_stop"
    assert "echo" not in outcome.metrics


def speech_events(outcome) -> list[float]:
    return [e["data"]["onsetMs"] for e in outcome.events if e["kind"] == "caller_speech_start"]


@pytest.mark.parametrize("engine", [False, True], ids=["per_frame", "per_tick"])
@pytest.mark.parametrize("erl_db", [25, 15])
async def test_the_agent_s_echo_never_barges_in_and_the_caller_over_it_does(engine, erl_db):
    agent = talk(0, 9.0)
    clock = VirtualClock()
    line = EchoLine(clock, 8.0, delay_ms=120, erl_db=erl_db, noise_dbfs=-50)
    outcome, _, session = await echo_call(line, clock, engine=engine, agent=agent, interruptible=True, vad="silero")
    assert outcome.metrics["bargeIns"] == 0 and line.clears == 0
    assert speech_events(outcome) == []
    echo = outcome.metrics["echo"]
    assert echo["vetoedChunks"] > 0 and echo["cancelledMs"] > 5000
    if erl_db == 15:  # at 25 dB the echo never stands 10 dB above this line's noise: no ERLE to measure
        assert echo["erleDb"] >= 6.0, echo
    # the same line with the caller speaking over the agent from 4 s on
    clock = VirtualClock()
    caller = talk(3, 2.0, level_db=-3)
    line = EchoLine(clock, 8.0, delay_ms=120, erl_db=erl_db, noise_dbfs=-50, caller=(caller, 4.0))
    outcome, bridge, _ = await echo_call(line, clock, engine=engine, agent=agent, interruptible=True, vad="silero")
    assert outcome.metrics["bargeIns"] == 1 and line.clears == 1
    onset = speech_events(outcome)[0]
    voiced = np.flatnonzero(np.abs(caller.astype(np.int32)) > 1000)[0] * 1000 / RATE + 4000  # the voice's start
    assert voiced - 100 <= onset <= voiced + 300, (onset, voiced)
    assert any(c[0] == "interrupt" for c in bridge.calls)


async def test_without_cancelling_the_same_echo_barges_in_and_the_vad_hears_the_raw_leg():
    clock = VirtualClock()
    line = EchoLine(clock, 6.0, delay_ms=120, erl_db=15, noise_dbfs=-50)
    heard: list[np.ndarray] = []
    factory = VadFactory("silero", batched=False)

    def vad(rate: int):
        runner = factory.create(VadFactory.rate_for(rate))
        take = runner.take
        runner.take = lambda pcm: (heard.append(pcm.copy()), take(pcm))[1]
        return runner

    outcome, _, session = await echo_call(line, clock, engine=True, agent=talk(0, 9.0), interruptible=True,
                                          echo_cancel=False, vad=vad)  # fmt: skip
    assert outcome.metrics["bargeIns"] >= 1  # what the canceller is for
    assert session._echo is not None and session._echo.canceller is None
    assert set(outcome.metrics["echo"]) == {"delayMs", "erlDb", "confidence", "erlMinDb"}
    leg = np.concatenate([ulaw_decode(ulaw_encode(line.leg(k))) for k in range(line.frames)])
    got = np.concatenate(heard)
    assert np.array_equal(got, leg[: got.size]) and got.size == leg.size  # exactly the caller leg
