"""Barge-in modes on a real session (virtual clock): pause-then-commit resumes a short burst
with no ``clear`` and nothing lost, commits a long utterance at what played before the pause,
and ends a pause safely on every other path; ``immediate`` is unchanged, ``off`` never barges in.

The carrier plays what it is sent back to back from its arrival and acknowledges each mark when
the audio before it has played; the caller's voice is a tone (speech) or μ-law silence, heard
by the session's own VAD runner over an energy scorer (per frame, and on the media engine).
"""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import orjson
import pytest

from gateway.audio.vad import VadGate, VoiceDetector
from gateway.carriers.twilio import TwilioAdapter
from gateway.codecs.transcode import encode
from gateway.engine import MediaEngine
from gateway.formats import PCMU_8K, Encoding
from gateway.llm import base as llm
from gateway.session import CallHooks, CallPolicy, CallSession
from gateway.session.bargein import TRANSITIONS, BargeInConfig, BargeInStateError, PauseGate, PauseInput, PauseState
from gateway.session.policies import MuteCaller, Policy, StopAgentAudio
from gateway.simulator.dialects import TwilioCaller
from gateway.vadrun import DirectVad, VadEnd, VadFactory, VadStart
from tests.engine.test_engine_vad import frames_of, speech
from tests.test_session import FakeBridge, MemoryTransport, ScriptedVad, VirtualClock

FRAME = 160  # 20 ms of 8 kHz μ-law
REPLY_FRAMES = 100  # a 2 s reply
_t = np.arange(FRAME) / 8000.0
_NOISE = np.random.default_rng(7).normal(0, 32768 * 10 ** (-60 / 20), FRAME)  # line noise, -60 dBFS
VOICE = encode(np.rint(8000 * np.sin(2 * np.pi * 440 * _t) + _NOISE).astype(np.int16), Encoding.PCMU)
SILENCE = encode(np.rint(_NOISE).astype(np.int16), Encoding.PCMU)
#: The caller's frames arrive every 20 ms, each the 20 ms before its arrival: voiced from 600 ms
#: on, the voice begins at 580 ms on the call's clock.
ONSET = 580


class EnergyScorer:
    """Speech (1.0) when a 20 ms frame's mean magnitude is above 1,000, else 0.0."""

    sample_rate = 8000
    frame_samples = FRAME

    def score(self, frame: np.ndarray) -> float:
        return 1.0 if float(np.abs(frame.astype(np.int32)).mean()) > 1000 else 0.0

    def reset(self) -> None:
        pass


def energy_vad() -> DirectVad:
    gate = VadGate(8000, min_speech_ms=160, min_silence_ms=600)
    return DirectVad(VoiceDetector(EnergyScorer(), gate), barge_in_min_speech_ms=96)


def reply() -> bytes:
    """The agent's reply, quiet (μ-law bytes 0xF0–0xFE: under 0.5 % of full scale) and each
    frame distinct (frame ``k``: two bytes from ``k``, repeated), to check the order it played in."""
    return b"".join(bytes([0xF0 + k % 15, 0xF0 + k // 15]) * (FRAME // 2) for k in range(REPLY_FRAMES))


class Carrier:
    """Plays the session's media back to back from its arrival; acknowledges each mark when
    the audio before it has played; a ``clear`` drops what has not played."""

    def __init__(self, transport: MemoryTransport, dialect: TwilioCaller) -> None:
        self.transport, self.dialect = transport, dialect
        self.seen = 0
        self.play_end = 0.0
        self.frames: list[tuple[float, bytes]] = []  # (play start ms, 20 ms payload)
        self.marks: list[tuple[float, str]] = []
        self.clears: list[float] = []

    def step(self, now: float) -> None:
        for raw in self.transport.sent[self.seen:]:
            msg = orjson.loads(raw)
            if msg["event"] == "media":
                payload = base64.b64decode(msg["media"]["payload"])
                start = max(now, self.play_end)
                for k in range(len(payload) // FRAME):
                    self.frames.append((start + 20 * k, payload[k * FRAME:(k + 1) * FRAME]))
                self.play_end = start + 20 * (len(payload) // FRAME)
            elif msg["event"] == "mark":
                self.marks.append((self.play_end, msg["mark"]["name"]))
            elif msg["event"] == "clear":
                self.clears.append(now)
                self.frames = [f for f in self.frames if f[0] < now]
                self.play_end = now
                for _, name in self.marks:  # Twilio echoes every pending mark on a clear
                    self.transport.inbox.put_nowait(self.dialect.mark_played(name))
                self.marks = []
        self.seen = len(self.transport.sent)
        for end, name in [m for m in self.marks if m[0] <= now]:
            self.marks.remove((end, name))
            self.transport.inbox.put_nowait(self.dialect.mark_played(name))

    def played(self) -> list[bytes]:
        return [p for _, p in self.frames]

    def gaps(self) -> list[tuple[float, float]]:
        """Idle stretches between consecutive played frames (start, ms)."""
        out = []
        for (a, _), (b, _) in zip(self.frames, self.frames[1:]):
            if b - a > 20.001:
                out.append((a + 20, b - a - 20))
        return out


def make(mode: str, *, interruptible: bool = True, vad=None, engine: MediaEngine | None = None,
         commit_ms: float = 400.0, policies=()):
    clock, transport, bridge = VirtualClock(), MemoryTransport(), FakeBridge()
    vad = vad if vad is not None else energy_vad()
    session = CallSession(
        call_id="call_barge", adapter=TwilioAdapter(), transport=transport, bridge_factory=lambda cfg: bridge,
        config=llm.AgentConfig(interruptible=interruptible),
        policy=CallPolicy(inactivity_timeout_s=10_000, barge_in_mode=mode, barge_in_commit_ms=commit_ms),
        vad=lambda rate: vad, hooks=CallHooks(), clock=clock, engine=engine, policies=policies,
    )  # fmt: skip
    dialect = TwilioCaller()
    for frame in dialect.opening({}):
        transport.inbox.put_nowait(frame)
    return session, clock, transport, bridge, dialect


async def drive(session, clock, transport, bridge, dialect, *, speak: tuple[float, float], until_ms: float = 3500,
                engine: MediaEngine | None = None, at: dict | None = None, voice: list[bytes] | None = None,
                first: bytes | None = None):
    """Run the call: the reply queued at 0, the caller voiced from ``speak[0]`` for ``speak[1]``
    ms (silent otherwise; ``voice``: these frames from ``speak[0]`` instead of the tone, then
    silence), ``at``: {ms: coroutine function} run once at that time; then stop. ``first``:
    only this much of the reply is queued at 0, and it does not end (``at`` sends the rest)."""
    carrier = Carrier(transport, dialect)
    bridge.queue.put_nowait(llm.Transcript("agent", "one two three four five six seven eight nine ten", "item_1"))
    bridge.queue.put_nowait(llm.AudioOut("item_1", reply() if first is None else first))
    if first is None:
        bridge.queue.put_nowait(llm.ResponseDone("item_1"))
    pending = dict(at or {})

    async def caller():
        step = 0
        while clock.t * 1000 < until_ms:
            now = clock.t * 1000
            carrier.step(now)
            for when in [w for w in pending if w <= now]:
                await pending.pop(when)()
            if step % 4 == 0:
                k = int((now - speak[0]) // 20)
                if voice is not None:
                    frame = voice[k] if 0 <= k < len(voice) else SILENCE
                else:
                    frame = VOICE if speak[0] <= now < speak[0] + speak[1] else SILENCE
                transport.inbox.put_nowait(dialect.media(frame))
                if engine is not None:
                    for _ in range(5):
                        await asyncio.sleep(0)
                    engine.run_tick()
            step += 1
            await clock.sleep(0.005)
        transport.inbox.put_nowait(dialect.stop())

    driver = asyncio.create_task(clock.drive())
    task = asyncio.get_running_loop().create_task(caller())
    try:
        outcome = await asyncio.wait_for(session.run(), 20)
    finally:
        driver.cancel()
        task.cancel()
    return outcome, carrier


def kinds(outcome) -> list[str]:
    return [e["kind"] for e in outcome.events if e["kind"].startswith("barge_in")]


def event(outcome, kind: str) -> dict:
    return next(e for e in outcome.events if e["kind"] == kind)


@pytest.mark.parametrize("ticked", [False, True], ids=["per_frame", "engine"])
async def test_a_short_burst_pauses_then_resumes_with_no_clear_and_nothing_lost(ticked):
    engine = MediaEngine(scheduled=False) if ticked else None
    session, clock, transport, bridge, dialect = make("pause_then_commit", engine=engine)
    outcome, carrier = await drive(session, clock, transport, bridge, dialect, speak=(600, 250), engine=engine)
    assert kinds(outcome) == ["barge_in_paused", "barge_in_resumed"]
    assert "clear" not in transport.events_sent() and not carrier.clears
    assert not any(c[0] == "interrupt" for c in bridge.calls)
    resumed = event(outcome, "barge_in_resumed")["data"]
    assert resumed["reason"] == "short" and 240 <= resumed["voicedMs"] < 400
    paused_at = event(outcome, "barge_in_paused")["at_ms"]
    assert ONSET + 96 <= paused_at <= ONSET + 96 + 60  # onset → pause: the VAD's confirmation (+ a tick)
    # The caller heard the whole reply, in order, each frame once; the only gap is the pause's.
    assert carrier.played() == [reply()[k * FRAME:(k + 1) * FRAME] for k in range(REPLY_FRAMES)]
    gaps = carrier.gaps()
    assert len(gaps) == 1 and paused_at < gaps[0][0] <= paused_at + 120  # after the lead played out
    assert 0 < gaps[0][1] <= resumed["pausedMs"]
    m = outcome.metrics
    assert (m["bargeIns"], m["bargeInPauses"], m["bargeInResumes"], m["bargeInCommits"]) == (0, 1, 1, 0)
    turn = next(t for t in outcome.transcript if t["role"] == "agent")
    assert not turn["interrupted"]


@pytest.mark.parametrize("ticked", [False, True], ids=["per_frame", "engine"])
async def test_a_long_utterance_commits_with_clear_and_truncates_at_what_played_before_the_pause(ticked):
    engine = MediaEngine(scheduled=False) if ticked else None
    session, clock, transport, bridge, dialect = make("pause_then_commit", engine=engine)
    outcome, carrier = await drive(session, clock, transport, bridge, dialect, speak=(600, 1500), engine=engine)
    assert kinds(outcome) == ["barge_in_paused", "barge_in"]
    paused_at, barge = event(outcome, "barge_in_paused")["at_ms"], event(outcome, "barge_in")
    assert ONSET + 400 <= barge["at_ms"] <= ONSET + 400 + 60  # committed once voiced 400 ms
    events = transport.events_sent()
    clear_at = events.index("clear")
    assert "media" not in events[clear_at:]
    sent_before_pause = sum(
        len(base64.b64decode(orjson.loads(f)["media"]["payload"])) // FRAME
        for f in transport.sent[:clear_at] if orjson.loads(f)["event"] == "media"
    ) * 20  # nothing was sent while paused
    interrupt = next(c for c in bridge.calls if c[0] == "interrupt")
    assert interrupt == ("interrupt", "item_1", sent_before_pause)
    assert barge["data"]["heardMs"] == sent_before_pause and barge["data"]["source"] == "vad"
    assert barge["data"]["voicedMs"] >= 400 and barge["data"]["pausedMs"] == barge["at_ms"] - paused_at
    assert len(carrier.played()) * 20 == sent_before_pause  # the carrier played what it held, no more
    m = outcome.metrics
    assert (m["bargeIns"], m["bargeInPauses"], m["bargeInResumes"], m["bargeInCommits"]) == (1, 1, 0, 1)
    turn = next(t for t in outcome.transcript if t["role"] == "agent")
    assert turn["interrupted"] and turn["heard_ms"] == sent_before_pause


async def test_immediate_mode_is_unchanged():
    session, clock, transport, bridge, dialect = make("immediate")
    outcome, carrier = await drive(session, clock, transport, bridge, dialect, speak=(600, 250))
    assert kinds(outcome) == ["barge_in"]
    barge = event(outcome, "barge_in")
    assert ONSET + 96 <= barge["at_ms"] <= ONSET + 96 + 30 and set(barge["data"]) == {"source", "itemId", "heardMs"}
    interrupt = next(c for c in bridge.calls if c[0] == "interrupt")
    assert interrupt[1] == "item_1" and interrupt[2] == barge["data"]["heardMs"]
    assert carrier.clears and outcome.metrics["bargeInPauses"] == 0 and outcome.metrics["bargeIns"] == 1


@pytest.mark.parametrize(("mode", "interruptible"), [("off", True), ("pause_then_commit", False)])
async def test_off_never_barges_in_on_our_vad_nor_the_model_s(mode, interruptible):
    session, clock, transport, bridge, dialect = make(mode, interruptible=interruptible)

    async def model_cuts_itself():
        bridge.queue.put_nowait(llm.Interrupted())

    outcome, carrier = await drive(session, clock, transport, bridge, dialect, speak=(600, 1500),
                                   at={1000: model_cuts_itself})  # fmt: skip
    assert kinds(outcome) == [] and not carrier.clears
    assert not any(c[0] == "interrupt" for c in bridge.calls)
    assert len(carrier.played()) == REPLY_FRAMES


class At(Policy):
    """Does ``actions`` once the call's clock passes ``at_s``."""

    def __init__(self, at_s: float, *actions) -> None:
        self.at_s, self.actions, self.done = at_s, list(actions), False

    def on_tick(self, now: float, last_activity: float):
        if self.done or now < self.at_s:
            return []
        self.done = True
        return self.actions


async def test_a_policy_stop_while_paused_ends_the_pause():
    session, clock, transport, bridge, dialect = make(
        "pause_then_commit", commit_ms=3000, policies=[At(1.0, StopAgentAudio("test"))])
    outcome, carrier = await drive(session, clock, transport, bridge, dialect, speak=(600, 1500))
    assert kinds(outcome) == ["barge_in_paused"]
    assert any(e["kind"] == "agent_stopped" for e in outcome.events) and carrier.clears
    assert not session._agent.paused and not session.ledger.paused
    m = outcome.metrics
    assert (m["bargeIns"], m["bargeInPauses"], m["bargeInResumes"], m["bargeInCommits"]) == (0, 1, 0, 0)


async def test_muting_the_caller_while_paused_resumes():
    session, clock, transport, bridge, dialect = make(
        "pause_then_commit", commit_ms=3000, policies=[At(1.0, MuteCaller(True))])
    outcome, carrier = await drive(session, clock, transport, bridge, dialect, speak=(600, 1500))
    assert kinds(outcome) == ["barge_in_paused", "barge_in_resumed"]
    assert event(outcome, "barge_in_resumed")["data"]["reason"] == "muted"
    assert not carrier.clears and len(carrier.played()) == REPLY_FRAMES


async def test_the_model_cutting_itself_while_paused_commits_without_telling_it():
    session, clock, transport, bridge, dialect = make("pause_then_commit", commit_ms=3000)

    async def model_cuts_itself():
        bridge.queue.put_nowait(llm.Interrupted())

    outcome, carrier = await drive(session, clock, transport, bridge, dialect, speak=(600, 1500),
                                   at={1000: model_cuts_itself})  # fmt: skip
    assert kinds(outcome) == ["barge_in_paused", "barge_in"]
    assert event(outcome, "barge_in")["data"]["source"] == "model" and carrier.clears
    assert not any(c[0] == "interrupt" for c in bridge.calls)
    assert outcome.metrics["bargeInCommits"] == 1


async def test_the_call_ending_while_paused_finalises_the_record():
    session, clock, transport, bridge, dialect = make("pause_then_commit", commit_ms=3000)
    outcome, carrier = await drive(session, clock, transport, bridge, dialect, speak=(600, 3000), until_ms=1200)
    assert (outcome.status, outcome.end_reason) == ("completed", "carrier_stop")
    assert kinds(outcome) == ["barge_in_paused"] and outcome.metrics["bargeInPauses"] == 1
    assert not carrier.clears


async def test_a_reply_that_played_out_while_paused_is_not_cut():
    """The pause came at the reply's very end (only the carrier's lead left): the commit finds
    nothing to cut, so the pause just ends (``played_out``) with no clear and no interrupt."""
    session, clock, transport, bridge, dialect = make("pause_then_commit")
    outcome, carrier = await drive(session, clock, transport, bridge, dialect, speak=(1910, 1000))
    assert kinds(outcome) == ["barge_in_paused", "barge_in_resumed"]
    assert event(outcome, "barge_in_resumed")["data"]["reason"] == "played_out"
    assert not carrier.clears and not any(c[0] == "interrupt" for c in bridge.calls)
    assert len(carrier.played()) == REPLY_FRAMES


@pytest.mark.parametrize(("end_after_ms", "expected"), [(200, "barge_in_resumed"), (None, "barge_in")])
async def test_a_vad_that_cannot_tell_voiced_time_decides_on_its_end_of_speech_or_the_clock(end_after_ms, expected):
    """A runner without ``voicing()``: voiced from the onset until its end of speech."""
    vad = ScriptedVad()
    session, clock, transport, bridge, dialect = make("pause_then_commit", vad=vad)

    async def start():
        vad.pending = [VadStart(0, 100.0)]

    async def end():
        vad.pending = [VadEnd(1600)]

    at = {600: start}
    if end_after_ms is not None:
        at[600 + end_after_ms] = end
    outcome, carrier = await drive(session, clock, transport, bridge, dialect, speak=(0, 0), at=at)
    assert kinds(outcome) == ["barge_in_paused", expected]
    if expected == "barge_in":  # 400 ms from the onset (500 ms on the call's clock)
        assert 900 <= event(outcome, "barge_in")["at_ms"] <= 930
    else:
        assert not carrier.clears and len(carrier.played()) == REPLY_FRAMES


def test_barge_in_settings_are_checked():
    with pytest.raises(ValueError, match="barge-in mode"):
        BargeInConfig("sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="commit_ms"):
        BargeInConfig("pause_then_commit", commit_ms=10)
    assert not BargeInConfig("off").enabled and BargeInConfig().mode == "immediate"


def recorded_speech(first_frame: int, frames: int) -> list[bytes]:
    """``frames`` 20 ms μ-law frames of a real recording (cards-003: speech from about frame 5
    to frame 75), from ``first_frame``."""
    return frames_of(speech("cards-003.wav", 8000), 8000, PCMU_8K)[first_frame:first_frame + frames]


@pytest.mark.parametrize("kind", ["silero", "webrtc"])
async def test_recorded_speech_on_the_engine_a_word_resumes_and_a_sentence_commits(kind):
    """The session's own VAD (Silero or WebRTC, the barge-in confirmation of the operator's
    default) on the media engine, over a real recording: 240 ms of it pauses and resumes; 1.2 s
    commits at 400 ms of voice."""
    factory = VadFactory(kind, barge_in_min_speech_ms=96, batched=False, pregate="off")
    got = {}
    for label, voice in (("word", recorded_speech(14, 12)), ("sentence", recorded_speech(8, 60))):
        engine = MediaEngine(scheduled=False)
        session, clock, transport, bridge, dialect = make("pause_then_commit", engine=engine,
                                                          vad=factory.create(8000))  # fmt: skip
        outcome, carrier = await drive(session, clock, transport, bridge, dialect, speak=(600, 0), engine=engine,
                                       voice=voice)  # fmt: skip
        got[label] = (kinds(outcome), len(carrier.clears), carrier.played())
        if label == "sentence":
            barge = event(outcome, "barge_in")
            onset = event(outcome, "barge_in_paused")["data"]["onsetMs"]  # where the VAD found it
            assert 400 <= barge["data"]["voicedMs"] < 500 and 398 <= barge["at_ms"] - onset <= 520  # whole ms
    assert got["word"][:2] == (["barge_in_paused", "barge_in_resumed"], 0)
    assert got["word"][2] == [reply()[k * FRAME:(k + 1) * FRAME] for k in range(REPLY_FRAMES)]
    assert got["sentence"][:2] == (["barge_in_paused", "barge_in"], 1)


async def test_a_pause_no_caller_audio_decides_resumes_after_its_grace():
    """The carrier stops sending the caller's audio mid-pause: nothing can decide it, so it
    resumes (``timeout``) once commit + resume gap + grace have passed."""
    session, clock, transport, bridge, dialect = make("pause_then_commit")
    carrier = Carrier(transport, dialect)
    bridge.queue.put_nowait(llm.AudioOut("item_1", reply()))

    async def caller():
        while clock.t < 4.5:
            carrier.step(clock.t * 1000)
            if clock.t < 0.78 and round(clock.t * 1000) % 20 == 0:  # voiced from 600 ms, then nothing
                transport.inbox.put_nowait(dialect.media(VOICE if clock.t >= 0.6 else SILENCE))
            await clock.sleep(0.005)
        transport.inbox.put_nowait(dialect.stop())

    driver = asyncio.create_task(clock.drive())
    task = asyncio.create_task(caller())
    try:
        outcome = await asyncio.wait_for(session.run(), 20)
    finally:
        driver.cancel()
        task.cancel()
    assert kinds(outcome) == ["barge_in_paused", "barge_in_resumed"]
    resumed = event(outcome, "barge_in_resumed")
    assert resumed["data"]["reason"] == "timeout" and 1600 <= resumed["data"]["pausedMs"] <= 1600 + 260
    assert not carrier.clears and len(carrier.played()) == REPLY_FRAMES


@pytest.mark.parametrize("ticked", [False, True], ids=["per_frame", "engine"])
async def test_more_speech_soon_after_a_resume_pauses_again_and_can_commit(ticked):
    """"Mm-hm… wait, stop": the second burst comes before the VAD's end of speech (600 ms), so
    the VAD confirms no new start; the voice itself pauses the agent again, and commits."""
    engine = MediaEngine(scheduled=False) if ticked else None
    session, clock, transport, bridge, dialect = make("pause_then_commit", engine=engine)
    voice = [VOICE] * 12 + [SILENCE] * 20 + [VOICE] * 40  # 240 ms, 400 ms of silence, 800 ms
    outcome, carrier = await drive(session, clock, transport, bridge, dialect, speak=(600, 0), engine=engine,
                                   voice=voice)  # fmt: skip
    assert kinds(outcome) == ["barge_in_paused", "barge_in_resumed", "barge_in_paused", "barge_in"]
    second = [e for e in outcome.events if e["kind"] == "barge_in_paused"][1]
    assert 600 + 640 <= second["at_ms"] <= 600 + 640 + 40  # at its first voiced frame (plus a tick)
    barge = event(outcome, "barge_in")
    assert barge["at_ms"] - second["at_ms"] >= 380 and carrier.clears
    assert [c for c in bridge.calls if c[0] == "interrupt"] == [("interrupt", "item_1", barge["data"]["heardMs"])]
    caller_starts = [e for e in outcome.events if e["kind"] == "caller_speech_start"]
    assert len(caller_starts) == 1  # one utterance for the VAD
    m = outcome.metrics
    assert (m["bargeIns"], m["bargeInPauses"], m["bargeInResumes"], m["bargeInCommits"]) == (1, 2, 1, 1)


# -- the decision alone -------------------------------------------------------------------------

GATE_CASES = [  # (progress [(voiced_to, heard_to)], verdict) from an onset at 1,000 ms, paused voiced to 1,100
    ("still voiced, under the threshold", [(1200, 1200), (1300, 1320)], None),
    ("voiced 400 ms: commit", [(1200, 1200), (1400, 1400)], PauseInput.COMMIT),
    ("200 ms unvoiced after 250 ms: resume", [(1250, 1250), (1250, 1449)], None),
    ("200 ms unvoiced after 250 ms: resume", [(1250, 1250), (1250, 1450)], PauseInput.RESUME),
    ("a short stop inside a word is bridged", [(1200, 1350), (1390, 1390)], None),
    ("voice coming back late commits on the span", [(1200, 1390), (1410, 1410)], PauseInput.COMMIT),
]  # fmt: skip


@pytest.mark.parametrize(("label", "progress", "verdict"), GATE_CASES, ids=[c[0] for c in GATE_CASES])
def test_the_pause_gate_decides_on_voiced_time(label, progress, verdict):
    gate = PauseGate(400.0, 200.0)
    assert gate.pause(1000.0, 1100.0) and gate.state is PauseState.PAUSED
    got = None
    for voiced_to, heard_to in progress:
        got = gate.hear(voiced_to, heard_to)
    assert got is verdict


def test_the_pause_gate_s_transitions_are_explicit():
    gate = PauseGate()
    assert gate.hear(5000.0, 5000.0) is None and gate.speech_ended() is None  # not paused: no verdict
    with pytest.raises(BargeInStateError):
        gate.end(PauseInput.RESUME)  # nothing to end
    assert gate.pause(0.0, 100.0) and not gate.pause(50.0, 150.0)  # a second candidate keeps the first onset
    assert gate.onset_ms == 0.0 and gate.voiced_ms == 150.0
    assert gate.speech_ended() is PauseInput.RESUME  # 150 ms of voice when the VAD ended it
    with pytest.raises(BargeInStateError):
        gate.end(PauseInput.CANDIDATE)
    gate.end(PauseInput.ABANDON)
    assert gate.state is PauseState.IDLE and gate.voiced_ms == 0.0
    assert set(TRANSITIONS) == {(PauseState.IDLE, PauseInput.CANDIDATE)} | {
        (PauseState.PAUSED, i) for i in PauseInput}


async def test_a_muted_caller_s_voice_after_a_short_resume_does_not_pause_again():
    session, clock, transport, bridge, dialect = make("pause_then_commit", policies=[At(1.1, MuteCaller(True))])
    voice = [VOICE] * 12 + [SILENCE] * 25 + [VOICE] * 40  # 240 ms; more voice from 1,340 ms, muted by then
    outcome, carrier = await drive(session, clock, transport, bridge, dialect, speak=(600, 0), voice=voice)
    assert kinds(outcome) == ["barge_in_paused", "barge_in_resumed"]
    assert not carrier.clears and len(carrier.played()) == REPLY_FRAMES
