"""The echo stage on the media engine: the caller leg on the reference's sample clock, the echo
path estimated per call (delay, return loss) whatever the ticks hold, the record's
``metrics.echo``.

Agent and caller voices are the recordings in ``../shared/audio/speech`` (8 kHz); the echo is
the agent's audio as it played, delayed and attenuated, under line noise, through μ-law.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from gateway.codecs.g711 import ulaw_decode, ulaw_encode
from gateway.engine import MediaEngine
from gateway.engine.echo import CallerClock, EchoStage
from gateway.formats import PCMU_8K
from gateway.simulator.noise import LineNoise
from gateway.simulator.run import to_rate
from gateway.vadrun import VadFactory
from tests.conftest import SHARED_AUDIO, load_wav

RATE = 8000
FRAME = 160
VOICES = ["cards-001.wav", "librivox-0880.wav", "cards-003.wav", "goforward.wav", "librivox-0870.wav",
          "cards-004.wav"]  # fmt: skip


@functools.cache
def voice(name: str) -> np.ndarray:
    pcm, rate = load_wav(SHARED_AUDIO / "speech" / name)
    return to_rate(pcm, rate, RATE).astype(np.float64)


def talk(first: int, seconds: float, level_db: float = 0.0) -> np.ndarray:
    """Recordings from ``first`` on with 300 ms pauses, cut to ``seconds``, int16 (``level_db``
    applied)."""
    parts, n, i = [], 0, first
    while n < seconds * RATE:
        parts += [voice(VOICES[i % len(VOICES)]), np.zeros(RATE * 3 // 10)]
        n += parts[-2].size + parts[-1].size
        i += 1
    x = np.concatenate(parts)[: int(seconds * RATE)] * 10 ** (level_db / 20)
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def echo_leg(played: np.ndarray, delay_ms: float, erl_db: float | None, noise_dbfs: float, *,
             over: np.ndarray | None = None, seed: int = 1) -> np.ndarray:
    """The caller leg of a line that returns ``played`` ``delay_ms`` later, ``erl_db`` down
    (``None``: no echo), under line noise (+ the caller's own ``over``), through μ-law: int16."""
    leg = LineNoise(RATE, level_dbfs=noise_dbfs, seed=seed).next(played.size).astype(np.float64)
    if erl_db is not None:
        d = int(round(delay_ms * RATE / 1000))
        leg[d:] += played[: played.size - d].astype(np.float64) * 10 ** (-erl_db / 20)
    if over is not None:
        leg[: over.size] += over[: leg.size]
    return ulaw_decode(ulaw_encode(np.clip(np.rint(leg), -32768, 32767).astype(np.int16)))


def test_caller_clock_counts_samples_through_jitter():
    clock = CallerClock(RATE)
    rng = np.random.default_rng(3)
    got = [clock.place(FRAME, 20.0 * (k + 1) + rng.uniform(0, 60)) for k in range(500)]
    first = got[0]
    assert got == [first + FRAME * k for k in range(500)]  # jitter never moves the count
    assert abs(first) <= 60 * RATE // 1000 and clock.reanchors <= 1


def test_caller_clock_reanchors_after_lost_frames_and_a_late_first_frame():
    clock = CallerClock(RATE)
    assert clock.place(FRAME, 20.0 + 80.0) == 80 * 8  # the first frame was 80 ms late
    got = [clock.place(FRAME, 20.0 * (k + 1)) for k in range(1, 300)]  # then on time
    assert got[-1] == FRAME * 299 and clock.reanchors == 1  # moved back within one window
    lost = 25  # 500 ms of frames never arrived
    got = [clock.place(FRAME, 20.0 * (k + 1 + lost)) for k in range(300, 600)]
    assert got[-1] == FRAME * (599 + lost) and clock.reanchors == 2


CASES = [(40, 12, -55), (120, 25, -50), (200, 35, -50), (120, 25, -45), (80, 20, -60)]


def _playing(seconds: float, first: int) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """What played (agent speech from 0.5 s on) and the messages it played in (100 ms each, at
    their play positions), as the playout gives them to the stage."""
    played = np.zeros(int(seconds * RATE), np.int16)
    speech = talk(first, seconds - 0.5, level_db=-2)
    played[RATE // 2 : RATE // 2 + speech.size] = speech
    step = RATE // 10
    messages = [(p, played[p : p + step]) for p in range(RATE // 2, played.size, step)]
    return played, messages


def _on_engine(cases, seconds: float, seed: int):
    """Every case a lane of one engine; ticks hold 0–3 frames of a call, each frame arriving at
    its end plus 0–15 ms of jitter; the reference 100 ms ahead of play, as the playout sends it."""
    engine = MediaEngine(scheduled=False)
    factory = VadFactory("webrtc")
    rng = np.random.default_rng(seed)
    calls = []
    for i, (delay, erl, noise) in enumerate(cases):
        played, messages = _playing(seconds, i)
        leg = ulaw_encode(echo_leg(played, delay, erl, noise, seed=i))
        stage = EchoStage(RATE)
        lane = engine.attach(PCMU_8K, factory.create(RATE), PCMU_8K, echo=stage)
        calls.append({"lane": lane, "stage": stage, "messages": messages, "leg": leg, "sent": 0})
    frames = int(seconds * 50)
    for tick in range(2 * frames + 10):
        now_ms = tick * 10.0
        for c in calls:
            while c["messages"] and c["messages"][0][0] <= (now_ms + 100) * RATE / 1000:
                at, pcm = c["messages"].pop(0)
                c["stage"].reference(pcm, at)
            for _ in range(int(rng.integers(0, 4))):
                k = c["sent"]
                if k >= frames or 20.0 * (k + 1) > now_ms:
                    break
                arrival = max(20.0 * (k + 1), now_ms - rng.uniform(0, 15)) if k else 20.0
                c["lane"].submit(c["leg"][k * FRAME : (k + 1) * FRAME], arrival, False)
                c["sent"] += 1
        engine.run_tick()
        for c in calls:
            for r in c["lane"].unread():
                assert r.error is None
    return engine, calls


def test_the_engine_estimates_each_call_s_echo_path():
    engine, calls = _on_engine(CASES, 10.0, seed=1)
    assert engine.stage_ns["echo"] > 0
    for (delay, erl, _), c in zip(CASES, calls):
        assert c["sent"] == 500
        e = c["stage"].estimator.estimate
        assert e is not None, (delay, erl)
        assert abs(e.delay_ms - delay) <= 2.0, (delay, erl, e)
        assert abs(e.erl_db - erl) <= 3.0, (delay, erl, e)
        m = c["stage"].metrics()
        assert m["delayMs"] == pytest.approx(e.delay_ms, abs=0.05) and m["erlDb"] == pytest.approx(e.erl_db, abs=0.05)


def test_the_estimate_does_not_depend_on_how_ticks_split_the_frames():
    case = [CASES[1]]
    _, a = _on_engine(case, 6.0, seed=2)
    _, b = _on_engine(case, 6.0, seed=7)
    alone = EchoStage(RATE)  # frame by frame, as the per-frame caller path feeds it
    played, messages = _playing(6.0, 0)
    leg = echo_leg(played, *case[0], seed=0)
    for k in range(300):
        while messages and messages[0][0] <= (k * FRAME + RATE // 10):  # 100 ms ahead of play
            alone.reference(*messages.pop(0)[::-1])
        alone.caller(leg[k * FRAME : (k + 1) * FRAME], 20.0 * (k + 1))
    assert alone.estimator.estimate is not None
    assert a[0]["stage"].estimator.estimate == b[0]["stage"].estimator.estimate == alone.estimator.estimate


def test_no_agent_audio_no_metrics_and_a_clear_before_playing_counts_as_none():
    stage = EchoStage(RATE)
    leg = echo_leg(np.zeros(RATE * 3, np.int16), 0, None, -50)
    for k in range(150):
        stage.caller(leg[k * FRAME : (k + 1) * FRAME], 20.0 * (k + 1))
    assert stage.metrics() is None
    stage.reference(talk(0, 1.0), RATE * 3)  # sent ahead, then cleared before it played
    stage.truncate(RATE * 3)
    assert stage.metrics() is None
    stage.reference(talk(0, 1.0), RATE * 4)
    stage.truncate(RATE * 4 + 800)  # 100 ms of it played
    assert stage.metrics() == {"delayMs": None, "erlDb": None, "confidence": 0.0}


def test_the_caller_leg_skips_the_estimator_far_from_agent_audio():
    stage = EchoStage(RATE)
    calls = []
    est = stage.estimator

    def caller(pcm, at):
        calls.append(at)
        est._next = at if est._next is None else est._next

    est.caller = caller  # type: ignore[method-assign]
    silence = np.zeros(FRAME, np.int16)
    for k in range(100):  # 2 s before any agent audio
        stage.caller(silence, 20.0 * (k + 1))
    assert calls == []
    stage.reference(talk(0, 1.0), 100 * FRAME + RATE)  # agent audio from 3 s on
    for k in range(100, 400):
        stage.caller(silence, 20.0 * (k + 1))
    first, last = calls[0], calls[-1]
    assert RATE * 3 - first <= stage.estimator._b + FRAME  # one block ahead of the agent audio
    tail = stage.estimator._d + stage.estimator._b  # and the echo tail after it
    assert RATE * 4 + tail - FRAME <= last < RATE * 4 + tail
