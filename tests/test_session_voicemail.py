"""VoicemailPolicy driven through a CallSession on the virtual clock with generated audio.

The callee's audio is a generated opening from ``tests/audio/fixtures/amd`` (espeak-ng / Piper
greetings, tones and noise made by ``tests/audio/make_amd_fixtures.py``; never the shared
recordings), μ-law encoded and fed in 20 ms Twilio media frames paced on the virtual clock; the
model is a fake bridge whose audio the test schedules. What is checked is what the carrier got
(media, clear) and when, what the bridge was asked, and the outcome.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import orjson
import pytest

from gateway.audio.amd import AmdConfig
from gateway.audio.tones import tone
from gateway.carriers.twilio import TwilioAdapter
from gateway.codecs.g711 import ulaw_encode
from gateway.llm import base as llm
from gateway.session import CallHooks, CallSession, VoicemailConfig, VoicemailPolicy
from gateway.session.policies import AudioGate, EndAfterPlayout, EndCall, MuteCaller, Note, Say, StopAgentAudio
from gateway.simulator.dialects import TwilioCaller
from gateway.simulator.run import load_wav
from tests.test_session import QUIET, FakeBridge, ScriptedVad, VirtualClock, run
from tests.test_session_policies import SentAt

FIXTURES = Path(__file__).parent / "audio" / "fixtures" / "amd"
GREETING = b"\x55" * 8000  # 1 s of agent audio (μ-law, not silence)
MESSAGE = b"\x33" * 12000  # 1.5 s: the left message


def opening(name: str) -> np.ndarray:
    pcm, rate = load_wav(FIXTURES / name)
    assert rate == 8000
    return pcm


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(8000 * seconds), dtype=np.int16)


class TimedCalls(list):
    """The bridge's call log, with the clock time of each call."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self.clock = clock
        self.times: list[float] = []

    def append(self, item) -> None:
        super().append(item)
        self.times.append(self.clock.t)

    def at(self, name: str) -> list[float]:
        return [t for t, call in zip(self.times, self, strict=True) if call[0] == name]


class Model(FakeBridge):
    """Speaks ``MESSAGE`` as item ``msg`` when asked to say a line."""

    def __init__(self, clock: VirtualClock, *, say_ok: bool = True) -> None:
        super().__init__(say_ok=say_ok)
        self.calls = TimedCalls(clock)

    async def say(self, text: str) -> None:
        await super().say(text)
        for i in range(0, len(MESSAGE), 1600):
            self.queue.put_nowait(llm.AudioOut("msg", MESSAGE[i:i + 1600]))
        self.queue.put_nowait(llm.ResponseDone("msg"))


class Call:
    """A session with a voicemail policy, its callee audio and the agent's scheduled audio."""

    def __init__(self, voicemail: VoicemailConfig, callee: np.ndarray, *, close_after_s: float | None = None,
                 say_ok: bool = True) -> None:  # fmt: skip
        self.clock = VirtualClock()
        self.transport = SentAt(self.clock)
        self.bridge = Model(self.clock, say_ok=say_ok)
        self.session = CallSession(
            call_id="call_vm", adapter=TwilioAdapter(), transport=self.transport,
            bridge_factory=lambda cfg: self.bridge, config=llm.AgentConfig(), policy=QUIET,
            vad=lambda rate: ScriptedVad(), hooks=CallHooks(), clock=self.clock, voicemail=voicemail,
        )  # fmt: skip
        self.dialect = TwilioCaller()
        for frame in self.dialect.opening({}):
            self.transport.inbox.put_nowait(frame)
        self.callee = callee
        self.close_after_s = close_after_s
        self.agent: list[tuple[float, object]] = []
        self.tasks: list[asyncio.Task] = []

    def say_at(self, t: float, item_id: str, audio: bytes = GREETING) -> None:
        self.agent += [(t, llm.AudioOut(item_id, audio)), (t, llm.ResponseDone(item_id))]

    async def _feed(self) -> None:
        payload = ulaw_encode(self.callee)
        for i in range(0, len(payload) - 159, 160):
            await self.clock.sleep(0.02)
            self.transport.inbox.put_nowait(self.dialect.media(payload[i:i + 160]))
        if self.close_after_s is not None:
            await self.clock.sleep(max(0.0, self.close_after_s - self.clock.t))
            self.transport.inbox.put_nowait(None)

    async def _speak(self) -> None:
        for t, event in sorted(self.agent, key=lambda x: x[0]):
            await self.clock.sleep(max(0.0, t - self.clock.t))
            self.bridge.queue.put_nowait(event)

    async def run(self):
        self.tasks = [asyncio.create_task(self._feed()), asyncio.create_task(self._speak())]
        try:
            return await run(self.session, self.clock)
        finally:
            for task in self.tasks:
                task.cancel()

    def sent(self, kind: str) -> list[tuple[float, dict]]:
        """(clock time, message) of every frame of ``kind`` the carrier got."""
        return [(t, orjson.loads(f)) for (t, k), f in zip(self.transport.times, self.transport.sent, strict=True)
                if k == kind]  # fmt: skip

    def media_of(self, byte: int) -> list[float]:
        """Clock times of the media frames carrying agent audio made of ``byte``."""
        import base64

        want = base64.b64encode(bytes([byte]) * 160).decode()
        return [t for t, m in self.sent("media") if m["media"]["payload"] == want]


def kinds(outcome) -> list[str]:
    return [e["kind"] for e in outcome.events]


def amd_events(outcome) -> list[dict]:
    return [e["data"] for e in outcome.events if e["kind"] == "amd"]


def event_data(outcome, kind: str) -> list[dict]:
    return [e["data"] for e in outcome.events if e["kind"] == kind]


async def test_a_person_hears_the_held_greeting_right_after_the_verdict_and_the_call_goes_on() -> None:
    call = Call(VoicemailConfig(hold_greeting_ms=3000), np.concatenate([opening("human-hello-us.wav"), silence(7)]),
                close_after_s=9.0)  # fmt: skip
    call.say_at(0.2, "item_1")  # the agent's first words, made while the callee says "Hello?"
    outcome = await call.run()
    assert (outcome.status, outcome.end_reason) == ("completed", "carrier_closed")
    vm = outcome.voicemail
    assert vm["verdict"] == "human" and vm["action"] == "released"
    decided_s = vm["decidedMs"] / 1000
    assert 1.2 < decided_s < 2.5  # "Hello?" ends at 0.87 s; 800 ms of silence decide
    greeting = call.media_of(0x55)
    assert len(greeting) == 50  # all of it, once
    assert decided_s <= greeting[0] <= decided_s + 0.1 < 3.0  # at the verdict, before the hold bound
    assert "agent_stopped" not in kinds(outcome) and "clear" not in call.transport.events_sent()
    assert [e["verdict"] for e in amd_events(outcome)] == ["human"]
    assert call.session._listeners == []  # the revise window passed: the detector is no longer fed
    assert call.session.voicemail is not None and not call.session.voicemail.listening


async def test_a_machine_with_a_beep_and_hangup_ends_as_voicemail_without_a_word_of_agent_audio() -> None:
    call = Call(VoicemailConfig(action="hangup", hold_greeting_ms=4000), opening("machine-chris-short.wav"))
    call.say_at(0.2, "item_1")
    outcome = await call.run()
    assert (outcome.status, outcome.end_reason) == ("voicemail", "voicemail_hangup")
    assert call.sent("media") == [] and outcome.metrics["framesOut"] == 0
    vm = outcome.voicemail
    assert vm["verdict"] == "machine_end_beep" and vm["action"] == "hung_up"
    assert abs(vm["beepEndMs"] - 2886) <= 40  # the fixture's beep ends at 2.886 s (±1 frame, +20 ms)
    assert vm["decidedMs"] - vm["beepEndMs"] <= 250
    assert any(c.startswith("beep=") for c in vm["cues"])
    assert call.transport.closed is not None and call.transport.closed[0] == 1000
    assert call.clock.t < 3.4  # ended at the verdict, not by a timer
    (stop,) = event_data(outcome, "agent_stopped")
    assert stop["dropped"] == 1 and ("interrupt", "item_1", 0) in call.bridge.calls  # the model forgets it


async def test_leave_message_waits_for_the_beep_then_speaks_and_ends_after_the_message() -> None:
    vm_config = VoicemailConfig(action="leave_message", message="Hi, this is Acme, call us back.", hold_greeting_ms=2000)
    call = Call(vm_config, np.concatenate([opening("machine-jenny-beep.wav"), silence(5)]))
    call.say_at(0.2, "item_1")  # held past the bound (the greeting goes on, no pause), then cut
    call.say_at(6.5, "item_2")  # a reply to the greeting while it plays: dropped
    outcome = await call.run()
    assert (outcome.status, outcome.end_reason) == ("voicemail", "voicemail_message_left")
    verdicts = [e["verdict"] for e in amd_events(outcome)]
    assert verdicts == ["machine", "machine_end_beep"]
    vm = outcome.voicemail
    assert vm["action"] == "message_left" and abs(vm["beepEndMs"] - 7962) <= 40
    beep_end_s = vm["beepEndMs"] / 1000
    assert call.media_of(0x55) == []  # never talked over the greeting
    assert [e["dropped"] for e in event_data(outcome, "agent_stopped")] == [1, 1]  # item_1 held, item_2 dropped
    message = call.media_of(0x33)
    assert len(message) == 75  # the whole message
    assert beep_end_s <= message[0] <= beep_end_s + 0.3  # only after the beep
    (say_t,) = call.bridge.calls.at("say")
    assert say_t >= beep_end_s and ("say", vm_config.message) in call.bridge.calls
    assert message[-1] <= call.clock.t <= message[-1] + 0.6  # ended once the message had played
    machine_s = amd_events(outcome)[0]["decidedMs"] / 1000
    assert [t for t in call.bridge.calls.at("audio") if machine_s + 0.1 < t] == []  # muted: the model heard no more
    assert kinds(outcome).count("caller_muted") == 1


async def test_a_greeting_held_when_the_beep_comes_is_dropped_and_only_the_message_plays() -> None:
    call = Call(VoicemailConfig(action="leave_message", message="Call back.", hold_greeting_ms=4000),
                np.concatenate([opening("machine-chris-short.wav"), silence(4)]))  # fmt: skip
    call.say_at(0.2, "item_1")  # held until the beep's verdict, then cut
    outcome = await call.run()
    assert outcome.end_reason == "voicemail_message_left"
    assert call.media_of(0x55) == [] and len(call.media_of(0x33)) == 75
    assert call.media_of(0x33)[0] >= outcome.voicemail["beepEndMs"] / 1000
    assert outcome.voicemail["verdict"] == "machine_end_beep"


async def test_leave_message_with_a_bridge_that_cannot_speak_hangs_up() -> None:
    call = Call(VoicemailConfig(action="leave_message", message="Call back.", hold_greeting_ms=4000),
                opening("machine-chris-short.wav"), say_ok=False)  # fmt: skip
    outcome = await call.run()
    assert (outcome.status, outcome.end_reason) == ("voicemail", "voicemail_hangup")
    assert outcome.voicemail["action"] == "hung_up"


class SlowModel(Model):
    """Takes ``delay_s`` of the call's clock to take a line (forever with ``None``), then
    speaks ``seconds`` of message audio."""

    def __init__(self, clock: VirtualClock, delay_s: float | None, seconds: float = 1.5) -> None:
        super().__init__(clock)
        self.clock, self.delay_s, self.seconds = clock, delay_s, seconds

    async def say(self, text: str) -> None:
        self.calls.append(("say", text))
        if self.delay_s is None:
            await asyncio.Event().wait()  # a model that never answers
        await self.clock.sleep(self.delay_s)
        audio = b"\x33" * int(8000 * self.seconds)
        for i in range(0, len(audio), 1600):
            self.queue.put_nowait(llm.AudioOut("msg", audio[i:i + 1600]))
        self.queue.put_nowait(llm.ResponseDone("msg"))


async def test_leave_message_with_a_bridge_whose_say_hangs_hangs_up_after_the_say_timeout() -> None:
    from gateway.session.call import SAY_TIMEOUT_S

    call = Call(VoicemailConfig(action="leave_message", message="Call back.", hold_greeting_ms=4000),
                np.concatenate([opening("machine-chris-short.wav"), silence(30)]))  # fmt: skip
    call.bridge = SlowModel(call.clock, None)
    outcome = await call.run()
    assert (outcome.status, outcome.end_reason) == ("voicemail", "voicemail_hangup")
    assert outcome.voicemail["action"] == "hung_up"
    (say_t,) = call.bridge.calls.at("say")
    assert say_t + SAY_TIMEOUT_S <= call.clock.t < say_t + SAY_TIMEOUT_S + 0.1
    assert event_data(outcome, "say_timeout") == [{"timeoutS": SAY_TIMEOUT_S}]


async def test_the_message_limit_runs_from_before_the_say() -> None:
    vm_config = VoicemailConfig(action="leave_message", message="Call back.", hold_greeting_ms=4000)
    call = Call(vm_config, np.concatenate([opening("machine-chris-short.wav"), silence(40)]))
    call.bridge = SlowModel(call.clock, 4.0, seconds=30.0)  # slow to take the line, then a long message
    outcome = await call.run()
    limit_s = VoicemailPolicy(vm_config)._limit_s
    (say_t,) = call.bridge.calls.at("say")
    assert outcome.end_reason == "voicemail_message_left"
    assert event_data(outcome, "end_after_playout") == [{"reason": "voicemail_message_left", "byLimit": True}]
    assert say_t + limit_s <= call.clock.t <= say_t + limit_s + 0.3  # not 4 s later
    assert call.media_of(0x33)[0] >= say_t + 4.0


async def test_the_hold_is_bounded_when_no_verdict_comes() -> None:
    call = Call(VoicemailConfig(hold_greeting_ms=1000), silence(3), close_after_s=3.5)  # nobody speaks
    call.say_at(0.1, "item_1")
    outcome = await call.run()
    greeting = call.media_of(0x55)
    assert len(greeting) == 50 and 1.0 <= greeting[0] < 1.1  # released at the bound, by the audio clock
    assert outcome.voicemail["verdict"] is None and outcome.voicemail["action"] == "released"
    assert event_data(outcome, "greeting_released") == [{"why": "hold_bound"}]


async def test_a_bound_passing_while_the_callee_speaks_releases_at_their_pause() -> None:
    callee = np.concatenate([opening("human-business-2.wav"), silence(3)])  # speech 0.4-4.96 s
    call = Call(VoicemailConfig(hold_greeting_ms=3000), callee, close_after_s=len(callee) / 8000 + 0.5)
    call.say_at(0.2, "item_1")
    outcome = await call.run()
    (released,) = event_data(outcome, "greeting_released")
    assert released == {"why": "callee_pause"}
    greeting = call.media_of(0x55)
    assert len(greeting) == 50 and 4.96 + 0.4 <= greeting[0] < 4.96 + 0.7  # at the pause, not at 3 s
    vm = outcome.voicemail
    assert vm["verdict"] == "human" and vm["decidedMs"] / 1000 > greeting[0]  # before the verdict
    assert outcome.end_reason == "carrier_closed"


async def test_the_hold_is_bounded_even_if_the_carrier_sends_no_audio() -> None:
    call = Call(VoicemailConfig(hold_greeting_ms=1000), silence(0), close_after_s=2.0)
    call.say_at(0.1, "item_1")
    outcome = await call.run()
    greeting = call.media_of(0x55)
    assert len(greeting) == 50 and 1.0 <= greeting[0] <= 1.0 + 0.26  # by the tick
    assert outcome.end_reason == "carrier_closed"


async def test_speaking_at_once_then_a_machine_stops_the_agent_at_once() -> None:
    long_greeting = b"\x55" * 8000 * 8  # 8 s: still playing when the machine is found
    vm_config = VoicemailConfig(action="leave_message", message="Please call back.", hold_greeting_ms=0)
    call = Call(vm_config, np.concatenate([opening("machine-jenny-beep.wav"), silence(5)]))
    call.say_at(0.1, "item_1", long_greeting)
    outcome = await call.run()
    machine = amd_events(outcome)[0]
    assert machine["verdict"] == "machine"
    clears = [t for t, _ in call.sent("clear")]
    stop_s = clears[0]
    assert abs(stop_s - machine["decidedMs"] / 1000) < 0.1  # cleared at the verdict
    greeting = call.media_of(0x55)
    assert greeting[0] < 0.2 and max(greeting) <= stop_s  # spoke at once, nothing after the clear
    assert [t for t in call.media_of(0x33) if t < outcome.voicemail["beepEndMs"] / 1000] == []
    (stop, *_) = event_data(outcome, "agent_stopped")
    assert stop["reason"] == "voicemail_machine" and stop["itemId"] == "item_1"
    interrupts = [c for c in call.bridge.calls if c[0] == "interrupt"]
    assert interrupts[0][1] == "item_1"
    assert outcome.metrics["bargeIns"] == 0  # a stop is not a barge-in
    assert outcome.end_reason == "voicemail_message_left"


def _with_beep(pcm: np.ndarray, at_s: float, total_s: float) -> np.ndarray:
    out = np.concatenate([pcm, silence(total_s - len(pcm) / 8000)])
    beep = tone(1000.0, 300.0, 8000, level_dbfs=-12.0)
    i = int(at_s * 8000)
    out[i:i + beep.size] = beep
    return out


async def test_a_beep_soon_after_a_human_verdict_revises_it() -> None:
    call = Call(VoicemailConfig(hold_greeting_ms=2000), _with_beep(opening("human-hello-us.wav"), 2.5, 6.0))
    call.say_at(0.2, "item_1", GREETING * 3)
    outcome = await call.run()
    assert [e["verdict"] for e in amd_events(outcome)] == ["human", "machine_end_beep"]
    assert (outcome.status, outcome.end_reason) == ("voicemail", "voicemail_hangup")
    assert call.media_of(0x55)  # the agent had begun to speak to the "person"


async def test_never_hangs_up_on_a_person_after_the_revise_window() -> None:
    revise_s = AmdConfig().revise_ms / 1000
    callee = _with_beep(opening("human-hello-us.wav"), 1.7 + revise_s + 1.0, 10.0)
    call = Call(VoicemailConfig(hold_greeting_ms=2000), callee, close_after_s=10.5)
    outcome = await call.run()
    assert (outcome.status, outcome.end_reason) == ("completed", "carrier_closed")
    assert [e["verdict"] for e in amd_events(outcome)] == ["human"]


async def test_a_machine_phrase_after_a_human_verdict_never_hangs_up() -> None:
    call = Call(VoicemailConfig(hold_greeting_ms=2000), np.concatenate([opening("human-hello-us.wav"), silence(4)]),
                close_after_s=7.0)  # fmt: skip
    call.say_at(0.2, "item_1")
    receptionist = llm.Transcript("user", "She's not available right now, can I take a message?")
    call.agent.append((3.0, receptionist))  # ~1.3 s after the human verdict
    outcome = await call.run()
    assert (outcome.status, outcome.end_reason) == ("completed", "carrier_closed")
    assert [e["verdict"] for e in amd_events(outcome)] == ["human"]
    assert 1.5 < outcome.voicemail["decidedMs"] / 1000 < 2.0
    assert "agent_stopped" not in kinds(outcome) and "clear" not in call.transport.events_sent()
    assert len(call.media_of(0x55)) == 50


async def test_a_beep_after_the_callee_answered_the_agent_never_hangs_up() -> None:
    callee = _with_beep(opening("human-hello-us.wav"), 4.2, 7.0)  # "Hello?" 0.4-0.87 s; human ~1.7 s
    answer = opening("human-yeah-f3.wav")[:9600]  # "Yeah?" 0.4-0.8 s of its 1.2 s
    callee[int(2.6 * 8000):int(2.6 * 8000) + answer.size] = answer  # after the agent's 1 s greeting
    call = Call(VoicemailConfig(hold_greeting_ms=2000), callee, close_after_s=7.5)
    call.say_at(0.2, "item_1")
    outcome = await call.run()
    assert (outcome.status, outcome.end_reason) == ("completed", "carrier_closed")
    verdicts = amd_events(outcome)
    assert [e["verdict"] for e in verdicts] == ["human", "machine_end_beep"]  # recorded only
    assert verdicts[1]["decidedMs"] - verdicts[0]["decidedMs"] < AmdConfig().revise_ms
    assert "agent_stopped" not in kinds(outcome) and "clear" not in call.transport.events_sent()


def test_after_human_only_a_beep_before_the_callee_answers_acts() -> None:
    from gateway.audio.amd import AmdEvent, Verdict

    policy = VoicemailPolicy(VoicemailConfig(hold_greeting_ms=0))
    policy.on_started(0.0)
    policy._verdict(AmdEvent(Verdict.HUMAN, 1500.0))
    phrase = AmdEvent(Verdict.MACHINE, 2800.0, ("phrase=not available",))
    assert [type(a) for a in policy._verdict(phrase)] == [Note] and policy.phase == "human"
    assert policy.on_agent_audio("item_1", 2900.0) is AudioGate.ALLOW
    policy.runner.detector._sp.words += 1  # the callee began a word after the agent spoke
    beep = AmdEvent(Verdict.MACHINE_END_BEEP, 3500.0, beep_end_ms=3400.0, final=True)
    assert [type(a) for a in policy._verdict(beep)] == [Note] and policy.action == "none"


async def test_a_machine_phrase_in_the_callee_transcript_decides() -> None:
    call = Call(VoicemailConfig(hold_greeting_ms=3000), silence(4), close_after_s=5.0)
    call.say_at(0.1, "item_1")
    call.agent.append((1.0, llm.Transcript("user", "Sorry, I can't take your call, please leave a message.")))
    outcome = await call.run()
    assert (outcome.status, outcome.end_reason) == ("voicemail", "voicemail_hangup")
    assert outcome.voicemail["verdict"] == "machine" and "phrase=" in outcome.voicemail["cues"][-1]
    assert call.sent("media") == []


async def test_a_screening_assistant_is_answered_not_hung_up_on() -> None:
    call = Call(VoicemailConfig(hold_greeting_ms=3000), silence(4), close_after_s=5.0)
    call.say_at(0.1, "item_1")
    call.agent.append((1.0, llm.Transcript("user", "Hi, this call is being screened. Please say your name.")))
    outcome = await call.run()
    assert (outcome.status, outcome.end_reason) == ("completed", "carrier_closed")
    assert outcome.voicemail["verdict"] == "screening" and outcome.voicemail["action"] == "released"
    greeting = call.media_of(0x55)
    assert len(greeting) == 50 and 1.0 <= greeting[0] < 1.1


async def test_detection_off_costs_nothing_per_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.session.inbound as inbound_module

    def no_decode(*_):
        raise AssertionError("decoded a frame with no policy listening")

    monkeypatch.setattr(inbound_module, "decode", no_decode)
    call = Call(VoicemailConfig(detect=False), opening("human-hello-us.wav"), close_after_s=1.5)
    outcome = await call.run()
    assert outcome.end_reason == "carrier_closed" and outcome.voicemail is None
    assert outcome.metrics["framesIn"] > 50 and call.session.voicemail is None


def test_the_policy_alone_holds_drops_and_allows() -> None:
    policy = VoicemailPolicy(VoicemailConfig(action="leave_message", message="Hi.", hold_greeting_ms=500))
    policy.on_started(0.0)
    assert policy.on_agent_audio("a", 0) is AudioGate.HOLD
    actions = policy.on_caller_text("please leave a message after the tone", 100)
    assert [type(a) for a in actions[1:]] == [StopAgentAudio, MuteCaller]
    assert policy.on_agent_audio("b", 200) is AudioGate.DROP
    beep = tone(1000.0, 300.0, 8000, level_dbfs=-12.0)
    out = []
    for chunk in np.array_split(np.concatenate([beep, silence(0.3)]), 30):
        out += policy.on_caller_audio(chunk.astype(np.int16), 0)
    assert [type(a) for a in out][1:] == [StopAgentAudio, MuteCaller, EndAfterPlayout, Say]  # limit first
    assert out[-2].end == EndCall("voicemail_message_left", status="voicemail")
    assert policy.on_agent_audio("b", 900) is AudioGate.DROP  # cut before the message
    assert policy.on_agent_audio("msg", 900) is AudioGate.ALLOW
    assert not policy.listening


def test_a_machine_verdict_after_the_revise_window_is_only_recorded() -> None:
    from gateway.audio.amd import AmdEvent, Verdict

    policy = VoicemailPolicy(VoicemailConfig(hold_greeting_ms=0))
    policy.on_started(0.0)
    assert [type(a) for a in policy._verdict(AmdEvent(Verdict.HUMAN, 1500.0))] == [Note]
    late = 1500.0 + AmdConfig().revise_ms + 20
    actions = policy._verdict(AmdEvent(Verdict.MACHINE_END_BEEP, late, beep_end_ms=late - 100, final=True))
    assert [type(a) for a in actions] == [Note] and policy.action == "none"  # never hang up on a person
    soon = VoicemailPolicy(VoicemailConfig(hold_greeting_ms=0))
    soon._verdict(AmdEvent(Verdict.HUMAN, 1500.0))
    assert EndCall("voicemail_hangup", status="voicemail") in soon._verdict(AmdEvent(Verdict.MACHINE_END_BEEP, 3000.0))


def test_policy_at_other_carrier_rates() -> None:
    for rate in (16000, 24000):
        policy = VoicemailPolicy(VoicemailConfig(hold_greeting_ms=0), sample_rate=rate)
        assert policy.runner.detector.sample_rate in (8000, 16000)
        frame = np.zeros(rate // 50, dtype=np.int16)
        for _ in range(300):  # 6 s of silence: "unknown" after 5 s
            policy.on_caller_audio(frame, 0)
        assert [e.verdict.value for e in policy.events] == ["unknown"]


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        (None, None),
        ({}, VoicemailConfig()),
        ({"detect": True, "action": "leave_message", "message": "Hi", "hold_greeting_ms": 0},
         VoicemailConfig(action="leave_message", message="Hi", hold_greeting_ms=0)),
        ({"holdGreetingMs": 1500}, VoicemailConfig(hold_greeting_ms=1500)),
    ],
)
def test_config_from_mapping(mapping, expected) -> None:
    assert VoicemailConfig.from_mapping(mapping) == expected


@pytest.mark.parametrize("kwargs", [{"action": "beep"}, {"hold_greeting_ms": -1}, {"action": "leave_message"}])
def test_config_rejects(kwargs) -> None:
    with pytest.raises(ValueError):
        VoicemailConfig(**kwargs)
