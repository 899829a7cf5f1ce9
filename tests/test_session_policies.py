"""Call policies: the timer policy on its own (table-driven), then policies plugged into a
CallSession on the virtual clock of :mod:`tests.test_session`: actions at start, on VAD events
and on ticks, and the agent-audio gate (hold until released, drop). Also the close codes."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from gateway.carriers.twilio import TwilioAdapter
from gateway.llm import base as llm
from gateway.session import (
    AudioGate,
    CallHooks,
    CallPolicy,
    CallSession,
    EndCall,
    Note,
    Policy,
    ReleaseAudio,
    Say,
    TimerPolicy,
)
from gateway.session.common import CallEnded
from gateway.session.finish import close_code
from gateway.simulator.dialects import TwilioCaller
from gateway.vadrun import VadEnd, VadStart
from tests.test_session import QUIET, FakeBridge, MemoryTransport, ScriptedVad, VirtualClock, run

HANGUP = CallPolicy(max_duration_s=60, inactivity_timeout_s=10)
PROMPT = CallPolicy(max_duration_s=60, inactivity_timeout_s=10, inactivity_action="prompt", inactivity_prompt="Hi?")


@pytest.mark.parametrize(
    ("policy", "ticks", "expected"),
    [
        (HANGUP, [(5, 0)], []),  # 5 s idle of 10
        (HANGUP, [(10, 0)], [EndCall("inactivity")]),
        (HANGUP, [(12, 3)], []),  # active at 3 s: 9 s idle
        (HANGUP, [(60, 59)], [EndCall("max_duration")]),  # the duration limit comes first
        (PROMPT, [(10, 0)], [Note("inactivity_prompt"), Say("Hi?", or_else=EndCall("inactivity"))]),
        (PROMPT, [(10, 0), (19, 0)], []),  # the prompt restarts the count
        (PROMPT, [(10, 0), (20, 0)], [EndCall("inactivity")]),  # prompted once only
        (PROMPT, [(10, 0), (25, 18)], []),  # activity after the prompt counts
    ],
)
def test_timer_policy(policy: CallPolicy, ticks: list[tuple[float, float]], expected: list) -> None:
    timer = TimerPolicy(policy, started_at=100.0)
    actions: list = []
    for now, last in ticks:
        actions = list(timer.on_tick(100.0 + now, 100.0 + last))
    assert actions == expected


class SentAt(MemoryTransport):
    """Also records the clock time (s) of every frame sent."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self.clock = clock
        self.times: list[tuple[float, str]] = []

    async def send(self, frame) -> None:
        await super().send(frame)
        self.times.append((self.clock.t, orjson.loads(frame)["event"]))


def policy_session(bridge: FakeBridge, *policies: Policy, policy: CallPolicy = QUIET):
    clock = VirtualClock()
    transport = SentAt(clock)
    vad = ScriptedVad()
    session = CallSession(
        call_id="call_policy", adapter=TwilioAdapter(), transport=transport, bridge_factory=lambda cfg: bridge,
        config=llm.AgentConfig(), policy=policy, vad=lambda rate: vad, hooks=CallHooks(), clock=clock,
        policies=policies,
    )  # fmt: skip
    dialect = TwilioCaller()
    for frame in dialect.opening({}):
        transport.inbox.put_nowait(frame)
    return session, clock, transport, vad, dialect


class Hold(Policy):
    """Holds agent audio until ``release_s`` on the clock, then lets it play."""

    gates_audio = True

    def __init__(self, release_s: float) -> None:
        self.release_s = release_s
        self.asked: list[str] = []
        self.released = False

    def on_agent_audio(self, item_id: str, now_ms: float) -> AudioGate:
        self.asked.append(item_id)
        return AudioGate.ALLOW if self.released else AudioGate.HOLD

    def on_tick(self, now_s: float, last_activity_s: float):
        if not self.released and now_s >= self.release_s:
            self.released = True
            return (Note("released", {"atS": now_s}), ReleaseAudio())
        if now_s >= 3.0:
            return (EndCall("test_done"),)
        return ()


async def test_held_agent_audio_plays_only_once_released_and_in_order() -> None:
    bridge = FakeBridge()
    hold = Hold(release_s=1.0)
    session, clock, transport, *_ = policy_session(bridge, hold)
    bridge.queue.put_nowait(llm.AudioOut("item_1", b"\x00" * 800))  # 100 ms of μ-law
    bridge.queue.put_nowait(llm.AudioOut("item_1", b"\x7f" * 800))
    outcome = await run(session, clock)
    assert outcome.end_reason == "test_done"
    media = [(t, f) for (t, kind), f in zip(transport.times, transport.sent, strict=True) if kind == "media"]
    assert len(media) == 10 and hold.asked == ["item_1", "item_1"]
    assert 1.0 <= media[0][0] < 1.1  # nothing before the release
    payloads = [orjson.loads(f)["media"]["payload"] for _, f in media]
    assert payloads[0] == payloads[4] != payloads[5] == payloads[9]  # the first chunk first
    assert [e["kind"] for e in outcome.events].count("released") == 1
    assert outcome.metrics["framesOut"] == 10


async def test_an_item_that_ended_while_held_plays_to_its_padded_last_frame() -> None:
    bridge = FakeBridge()
    session, clock, transport, *_ = policy_session(bridge, Hold(release_s=1.0))
    bridge.queue.put_nowait(llm.AudioOut("item_1", b"\x00" * 850))  # 5 frames and 50 bytes
    bridge.queue.put_nowait(llm.ResponseDone("item_1"))  # while its audio is held
    outcome = await run(session, clock)
    assert outcome.metrics["framesOut"] == 6  # the last, partial frame padded and sent
    assert transport.events_sent().count("mark") >= 1  # the item's end is marked


class DropAll(Policy):
    gates_audio = True

    def on_agent_audio(self, item_id: str, now_ms: float) -> AudioGate:
        return AudioGate.DROP


async def test_dropped_agent_audio_never_plays() -> None:
    bridge = FakeBridge()
    session, clock, transport, _, dialect = policy_session(bridge, DropAll(), Hold(release_s=0.5))
    bridge.queue.put_nowait(llm.AudioOut("item_1", b"\x00" * 800))
    outcome = await run(session, clock)
    assert outcome.end_reason == "test_done"  # the strictest answer wins, even once released
    assert "media" not in transport.events_sent() and outcome.metrics["framesOut"] == 0


class EndOnSpeech(Policy):
    """Notes its start, and ends the call (``failed``) when the caller stops speaking."""

    def __init__(self) -> None:
        self.seen: list = []

    def on_started(self, now_s: float):
        return (Note("policy_started"),)

    def on_vad(self, event, now_ms: float):
        self.seen.append(type(event).__name__)
        if isinstance(event, VadEnd):
            return (EndCall("policy_end", "failed", "policy", "caller spoke"),)
        return ()


async def test_a_policy_acts_on_start_and_on_vad_events() -> None:
    bridge = FakeBridge()
    policy = EndOnSpeech()
    session, clock, transport, vad, dialect = policy_session(bridge, policy)
    vad.script = [[VadStart(0, 100.0)], [VadEnd(100)]]
    for _ in range(2):
        transport.inbox.put_nowait(dialect.media(b"\xff" * 160))
    outcome = await run(session, clock)
    assert (outcome.status, outcome.end_reason, outcome.error_code) == ("failed", "policy_end", "policy")
    assert policy.seen == ["VadStart", "VadEnd"]
    kinds = [e["kind"] for e in outcome.events]
    assert kinds.index("policy_started") < kinds.index("caller_speech_start")
    assert ("end_of_turn",) in bridge.calls  # the session's own handling came first


async def test_a_start_the_adapter_refuses_is_closed_as_a_policy_violation() -> None:
    session, clock, transport, *_ = policy_session(FakeBridge())
    start = orjson.loads(_last(transport))
    start["start"]["mediaFormat"]["sampleRate"] = 7999
    transport.inbox.put_nowait(orjson.dumps(start).decode())
    outcome = await run(session, clock)
    assert (outcome.status, outcome.end_reason, outcome.error_code) == ("failed", "bad_start", "bad_start")
    assert transport.closed is not None and transport.closed[0] == 1008


def _last(transport: MemoryTransport) -> str:
    """Take the opening's frames off the inbox; put all but the last (``start``) back."""
    frames = []
    while not transport.inbox.empty():
        frames.append(transport.inbox.get_nowait())
    for frame in frames[:-1]:
        transport.inbox.put_nowait(frame)
    return frames[-1]


@pytest.mark.parametrize(
    ("ended", "requested", "code"),
    [
        (CallEnded("carrier_stop"), False, 1000),
        (CallEnded("max_duration"), False, 1000),
        (CallEnded("model_error", "failed", "server_error"), False, 1011),
        (CallEnded("internal_error", "failed", "internal_error"), False, 1011),
        (CallEnded("bad_start", "failed", "bad_start"), False, 1008),
        (CallEnded("shutdown"), True, 1001),
        (CallEnded("shutdown", "failed", "no_start"), True, 1001),
    ],
)
def test_close_codes(ended: CallEnded, requested: bool, code: int) -> None:
    assert close_code(ended, requested=requested) == code


def test_the_session_package_keeps_its_public_names() -> None:
    import gateway.session as session

    assert {"CallSession", "CallPolicy", "CallHooks", "CallOutcome", "Transport"} <= set(session.__all__)
    assert all(hasattr(session, name) for name in session.__all__)
    assert asyncio.iscoroutinefunction(CallSession.run)
