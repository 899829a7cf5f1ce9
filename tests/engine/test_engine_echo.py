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
from gateway.vadrun import VadFactory, VadStart
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


def test_refused_frames_move_the_clock_at_once_and_never_reanchor_it():
    """Frames the audio budget refused are real time: the frames after them are placed where
    they played, at once, not after a window of drift (which would put the echo outside a
    narrowed filter's span for up to 2 s)."""
    clock = CallerClock(RATE)
    clock.skip(FRAME)  # refused before any frame was placed: the first arrival places it anyway
    assert [clock.place(FRAME, 20.0 * (k + 2)) for k in range(100)][0] == FRAME
    clock.skip(2 * FRAME)  # frames 101 and 102 refused
    got = [clock.place(FRAME, 20.0 * (k + 1)) for k in range(103, 400)]
    assert got == [FRAME * k for k in range(103, 400)] and clock.reanchors == 0 and clock.gaps == 1
    # per tick: two frames admitted and queued, one refused, one more queued; a tick joins them
    clock = CallerClock(RATE)
    clock.place(FRAME, 20.0)
    clock.skip(FRAME, queued=2 * FRAME)
    assert clock.place(3 * FRAME, 100.0) == 2 * FRAME  # the joined block ends where it arrived
    assert [clock.place(FRAME, 20.0 * k) for k in range(6, 300)] == [FRAME * (k - 1) for k in range(6, 300)]
    assert clock.reanchors == 0


async def test_a_session_s_refused_frame_keeps_the_echo_clock_on_real_time():
    """Over the session: a 2.2 s message (over the budget's 2 s: refused and dropped) in the
    middle of the agent's audio moves the echo clock by its samples; the next frames are placed
    where they played (no re-anchor) and the echo keeps being cancelled."""
    from tests.test_session_echo import EchoLine, echo_call
    from tests.test_session import VirtualClock

    class Dropping(EchoLine):
        async def run(self) -> None:
            big = range(150, 260)  # frames 150..259 (3.0–5.2 s) sent as one message at 5.2 s
            for k in range(self.frames):
                await self.clock.sleep(max(0.0, (k + 1) * FRAME / RATE - self.clock.now()))
                if k in big and k != big[-1]:
                    continue
                pcm = np.concatenate([self.leg(j) for j in big]) if k == big[-1] else self.leg(k)
                self.inbox.put_nowait(self.dialect.media(ulaw_encode(pcm)))
            self.inbox.put_nowait(self.dialect.stop())

    for engine in (False, True):
        clock = VirtualClock()
        line = Dropping(clock, 6.6, delay_ms=120, erl_db=15, noise_dbfs=-50)
        outcome, _, session = await echo_call(line, clock, engine=engine, agent=talk(0, 6.0, level_db=-2))
        st = session._echo
        assert abs(st.clock.origin + st.clock._counted - line.frames * FRAME) <= FRAME, engine  # the end, on time
        assert st.clock.gaps == 1 and st.clock.reanchors == 0, engine
        assert outcome.metrics["echo"]["delayMs"] == pytest.approx(120, abs=2.0)


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
    assert stage.metrics() == {"delayMs": None, "erlDb": None, "confidence": 0.0, "erleDb": None, "cancelledMs": 0,
                               "vetoedChunks": 0}
    off = EchoStage(RATE, cancel=False)
    off.reference(talk(0, 1.0), 0)
    assert off.metrics() == {"delayMs": None, "erlDb": None, "confidence": 0.0}


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


def _double_talk_call(i: int, seconds: float):
    """Call ``i``: agent speech from 0.5 s, its echo (delay, return loss per call), line noise, and
    the caller speaking over the agent for 1.5 s from 3 s on."""
    played, messages = _playing(seconds, i)
    caller = np.zeros(int(seconds * RATE), np.int16)
    words = talk(i + 3, 1.5, level_db=-4)
    caller[3 * RATE : 3 * RATE + words.size] = words[: max(0, caller.size - 3 * RATE)]
    delay, erl, noise = CASES[i % len(CASES)]
    return messages, ulaw_encode(echo_leg(played, delay, erl, noise, over=caller, seed=i))


def _residual_run(n_calls: int, seconds: float, *, ticks: bool, seed: int = 0):
    """Every call's VAD input and VAD events, on one engine (0–3 frames per tick) or frame by
    frame through each stage alone; the reference 100 ms ahead of play in both."""
    factory = VadFactory("silero", batched=False)
    engine = MediaEngine(scheduled=False)
    rng = np.random.default_rng(seed)
    calls = []
    for i in range(n_calls):
        messages, leg = _double_talk_call(i, seconds)
        stage, runner = EchoStage(RATE), factory.create(RATE)
        heard: list = []
        take = runner.take
        runner.take = lambda pcm, take=take, heard=heard: (heard.append(pcm.copy()), take(pcm))[1]
        lane = engine.attach(PCMU_8K, runner, PCMU_8K, echo=stage) if ticks else stage.bind(runner)
        calls.append({"stage": stage, "runner": runner, "lane": lane, "messages": messages, "leg": leg,
                      "sent": 0, "heard": heard, "events": []})  # fmt: skip
    frames = int(seconds * 50)
    for tick in range(2 * frames + 10):
        now_ms = tick * 10.0
        for c in calls:
            while c["messages"] and c["messages"][0][0] <= (now_ms + 100) * RATE / 1000:
                c["stage"].reference(*c["messages"].pop(0)[::-1])
            for _ in range(int(rng.integers(0, 4)) if ticks else 1):
                k = c["sent"]
                if k >= frames or 20.0 * (k + 1) > now_ms:
                    break
                frame = c["leg"][k * FRAME : (k + 1) * FRAME]
                if ticks:
                    c["lane"].submit(frame, 20.0 * (k + 1), False)
                else:
                    pcm = c["stage"].caller(ulaw_decode(frame), 20.0 * (k + 1))
                    for chunk in c["runner"].take(pcm):
                        c["events"] += c["runner"].apply(plan := c["runner"].plan(chunk),
                                                         c["runner"].score_now(plan.block) if plan.scored else
                                                         np.zeros(0, np.float32))  # fmt: skip
                c["sent"] += 1
        if ticks:
            engine.run_tick()
            for c in calls:
                for r in c["lane"].unread():
                    assert r.error is None
                    c["events"] += r.vad
    return engine, calls


def test_the_residual_and_the_vad_s_decisions_do_not_depend_on_ticks():
    engine, on = _residual_run(7, 5.0, ticks=True, seed=4)
    _, alone = _residual_run(7, 5.0, ticks=False)
    starts = 0
    for i, (a, b) in enumerate(zip(on, alone)):
        assert a["sent"] == b["sent"] == 250
        got, want = np.concatenate(a["heard"]), np.concatenate(b["heard"])
        assert np.array_equal(got, want), i
        assert a["stage"].cancelled_samples == b["stage"].cancelled_samples > 3 * RATE, i
        # Silero's batched scores agree within 1e-5, so a score at the hysteresis threshold may be
        # asked about on one side only (vetoed or below the threshold: the same decision either way)
        assert abs(a["stage"].vetoed_chunks - b["stage"].vetoed_chunks) <= 2, i
        assert a["events"] == b["events"], i  # the same turn boundaries
        onsets = [e.onset_sample for e in a["events"] if isinstance(e, VadStart)]
        starts += len(onsets)
        assert all(o >= 3 * RATE - 800 for o in onsets), (i, onsets)  # the caller's words, not the echo
    assert starts >= 5  # the caller's words over the agent are heard on (nearly) every line
    assert engine.stage_ns["echo"] > 0


def test_the_canceller_runs_once_per_round_for_every_call_of_the_tick(monkeypatch):
    import gateway.engine.echo as echo_mod

    sizes: list[int] = []
    real = echo_mod.cancel_batch
    monkeypatch.setattr(echo_mod, "cancel_batch", lambda st, p, a: (sizes.append(len(st)), real(st, p, a))[1])
    engine, calls = _residual_run(7, 3.5, ticks=True, seed=1)
    assert max(sizes) == 7
    assert sum(sizes) <= 7 * 175  # each call's 20 ms piece in one run at most
    assert len(sizes) < sum(sizes) / 2  # batched: many calls per run


def test_off_passes_the_caller_leg_through_untouched():
    stage = EchoStage(RATE, cancel=False)
    played, messages = _playing(3.0, 0)
    leg = echo_leg(played, 120, 15, -50)
    for at, pcm in messages:
        stage.reference(pcm, at)
    for k in range(150):
        frame = leg[k * FRAME : (k + 1) * FRAME]
        assert stage.caller(frame, 20.0 * (k + 1)) is frame
    assert stage.canceller is None and stage.allows(0, 10**9)


def test_a_reanchor_restarts_the_canceller_s_grid_at_the_moved_position():
    stage = EchoStage(RATE)
    stage.reference(talk(0, 6.0), 0)
    seen: list[tuple[int, int]] = []
    aec = stage.canceller
    real = aec.process

    def process(pcm, at):
        seen.append((at, pcm.size))
        return real(pcm, at)

    import gateway.engine.echo as echo_mod

    batch = echo_mod.cancel_batch
    try:  # every chunk as its own AecOut (no batched blocks)
        echo_mod.cancel_batch = lambda st, p, a: ([], [process(x, y) for x, y in zip(p, a)])
        for k in range(260):  # 5.2 s of frames; 25 frames (500 ms) lost after the first second
            stage.caller(np.zeros(FRAME, np.int16), 20.0 * (k + 1 + (25 if k >= 50 else 0)))
    finally:
        echo_mod.cancel_batch = batch
    assert stage.clock.reanchors == 1
    assert all(n == FRAME for _, n in seen)  # whole 20 ms blocks, before and after the jump
    jumps = [b[0] - a[0] for a, b in zip(seen, seen[1:]) if b[0] - a[0] != FRAME]
    assert jumps == [FRAME + 25 * FRAME]  # the count moved once, by the frames lost


def test_a_16_khz_line_is_estimated_and_cancelled_on_the_engine():
    from gateway.formats import L16_16K

    rate, frame = 16000, 320
    agent = to_rate(talk(0, 8.0), RATE, rate).astype(np.int16)
    played = np.zeros(rate * 8, np.int16)
    played[rate // 2 :] = agent[: played.size - rate // 2]
    leg = LineNoise(rate, level_dbfs=-60, seed=2).next(played.size).astype(np.float64)
    d = int(0.080 * rate)
    leg[d:] += played[:-d] * 10 ** (-15 / 20)
    leg = np.clip(np.rint(leg), -32768, 32767).astype(np.int16)
    engine = MediaEngine(scheduled=False)
    stage = EchoStage(rate)
    runner = VadFactory("webrtc").create(rate)
    heard: list = []
    take = runner.take
    runner.take = lambda pcm: (heard.append(pcm.copy()), take(pcm))[1]
    lane = engine.attach(L16_16K, runner, L16_16K, echo=stage)
    messages = [(p, played[p : p + rate // 10]) for p in range(rate // 2, played.size, rate // 10)]
    for k in range(played.size // frame):
        while messages and messages[0][0] <= k * frame + rate // 10:
            stage.reference(*messages.pop(0)[::-1])
        lane.submit(leg[k * frame : (k + 1) * frame].astype("<i2").tobytes(), 20.0 * (k + 1), False)
        if k % 2:
            engine.run_tick()
    engine.run_tick()
    m = stage.metrics()
    assert m["delayMs"] == pytest.approx(80, abs=2.0) and m["erlDb"] == pytest.approx(15, abs=3.0), m
    res = np.concatenate(heard).astype(np.float64)[4 * rate :]
    raw = leg[4 * rate : 4 * rate + res.size].astype(np.float64)
    assert 10 * np.log10(np.dot(raw, raw) / np.dot(res, res)) >= 10.0  # the echo is cancelled


def _split_run(split, seconds: float = 5.0, i: int = 1):
    """Call ``i`` through one stage with the caller leg cut by ``split(pos)`` (samples per
    piece), the reference 100 ms ahead of each piece's end: the residual, the gate's verdict on
    every 256-sample chunk, the floor after every 20 ms of the VAD's count, the stage."""
    messages, leg = _double_talk_call(i, seconds)
    pcm = ulaw_decode(leg)
    st = EchoStage(RATE)
    out, floors, pos = [], {}, 0
    while pos < pcm.size:
        k = min(split(pos), pcm.size - pos)
        end_ms = (pos + k) * 1000 / RATE
        while messages and messages[0][0] <= (end_ms + 100) * RATE / 1000:
            at, ref = messages.pop(0)
            st.reference(ref, at)
        out.append(st.caller(pcm[pos : pos + k], end_ms))
        pos += k
        if pos % 160 == 0:
            floors[pos] = st.gate.floor
    verdicts = [st.gate.allows(s, s + 256) for s in range(0, pcm.size - 256, 256)]
    return np.concatenate(out), verdicts, floors, st


def test_the_residual_the_verdicts_and_the_floor_do_not_depend_on_how_the_leg_is_split():
    """A new delay estimate reaches the canceller at its next block, and the gate's floor moves
    once per 20 ms block, however the caller leg was cut (whole frames, halves, ragged pieces)."""
    rng = np.random.default_rng(5)
    ragged = rng.integers(1, 500, 1000)
    base_res, base_v, base_f, base = _split_run(lambda pos: 160)
    assert base.estimator.estimate is not None and base.canceller.partitions == 3  # it narrowed
    assert not all(base_v) and any(base_v)  # echo vetoed, the caller over it allowed
    splits = [lambda pos, n=n: n for n in (80, 100, 240, 320, 480)]
    splits.append(lambda pos: int(ragged[pos % ragged.size]))
    for j, split in enumerate(splits):
        res, v, floors, st = _split_run(split)
        assert np.array_equal(res, base_res)
        assert v == base_v
        assert st.gate.floor == base.gate.floor
        assert all(floors[p] == base_f[p] for p in floors)  # the floor at every 20 ms both saw
        assert j == len(splits) - 1 or len(floors) >= 40
