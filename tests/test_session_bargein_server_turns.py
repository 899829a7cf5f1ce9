"""Barge-in with the model's own turn detection (``server_vad``): the gateway's VAD still decides.

The model's ``SpeechStarted`` over agent audio is no barge-in (its VAD hears echo and
backchannels; it is told not to interrupt itself), unless the bridge says its model cuts
itself (``model_interrupts``); the bridge hears the gateway's verdict on each utterance
(``turn_verdict``): ``pending`` when a pause begins, then ``backchannel`` (a short resume) or
``turn`` (a commit, after its ``interrupt``), ``turn`` for speech over no agent audio, and
``unheard`` when the model's VAD starts over agent audio while the gateway's hears no caller.
"""

from __future__ import annotations

import pytest

from gateway.carriers.twilio import TwilioAdapter
from gateway.llm import base as llm
from gateway.session import CallHooks, CallPolicy, CallSession
from gateway.simulator.dialects import TwilioCaller
from tests.test_session import FakeBridge, MemoryTransport, VirtualClock
from tests.test_session_bargein import drive, energy_vad, kinds


class VerdictBridge(FakeBridge):
    """A fake model that also records the gateway's verdicts (in ``calls``)."""

    async def turn_verdict(self, verdict: llm.TurnVerdict) -> None:
        self.calls.append(("turn_verdict", verdict))


def make(mode: str, *, model_interrupts: bool = False):
    clock, transport, bridge = VirtualClock(), MemoryTransport(), VerdictBridge()
    bridge.model_interrupts = model_interrupts
    session = CallSession(
        call_id="call_server_turns", adapter=TwilioAdapter(), transport=transport, bridge_factory=lambda cfg: bridge,
        config=llm.AgentConfig(interruptible=True, turn_mode="server_vad"),
        policy=CallPolicy(inactivity_timeout_s=10_000, barge_in_mode=mode),
        vad=lambda rate: energy_vad(), hooks=CallHooks(), clock=clock,
    )  # fmt: skip
    dialect = TwilioCaller()
    for frame in dialect.opening({}):
        transport.inbox.put_nowait(frame)
    return session, clock, transport, bridge, dialect


def verdicts(bridge: VerdictBridge) -> list[str]:
    return [c[1] for c in bridge.calls if c[0] == "turn_verdict"]


def names(bridge: VerdictBridge) -> list[str]:
    return [c[0] for c in bridge.calls if c[0] not in ("audio", "start")]


async def test_a_backchannel_is_pending_then_backchannel_and_never_interrupts():
    session, clock, transport, bridge, dialect = make("pause_then_commit")
    outcome, carrier = await drive(session, clock, transport, bridge, dialect, speak=(600, 250))
    assert kinds(outcome) == ["barge_in_paused", "barge_in_resumed"]
    assert verdicts(bridge) == ["pending", "backchannel"]
    assert "interrupt" not in names(bridge) and not carrier.clears
    # Server turn mode: the gateway never starts nor ends the model's turns itself.
    assert "speech_started" not in names(bridge) and "end_of_turn" not in names(bridge)


async def test_a_commit_interrupts_then_tells_the_turn():
    session, clock, transport, bridge, dialect = make("pause_then_commit")
    outcome, carrier = await drive(session, clock, transport, bridge, dialect, speak=(600, 1500))
    assert "barge_in" in kinds(outcome) and len(carrier.clears) == 1
    assert verdicts(bridge) == ["pending", "turn"]
    calls = [c[:2] for c in bridge.calls]
    assert calls.index(("turn_verdict", "pending")) < calls.index(("interrupt", "item_1")) < calls.index(("turn_verdict", "turn"))


async def test_speech_with_no_agent_audio_is_a_turn():
    session, clock, transport, bridge, dialect = make("pause_then_commit")
    # The reply (2 s) has played out by 2.6 s: the caller then speaks over nothing.
    outcome, _carrier = await drive(session, clock, transport, bridge, dialect, speak=(2600, 400), until_ms=3600)
    assert kinds(outcome) == []
    assert verdicts(bridge) == ["turn"]


@pytest.mark.parametrize("mode", ["immediate", "pause_then_commit"])
async def test_the_models_speech_started_over_agent_audio_is_no_barge_in(mode):
    session, clock, transport, bridge, dialect = make(mode)

    async def model_hears_echo():
        bridge.queue.put_nowait(llm.SpeechStarted())

    outcome, carrier = await drive(session, clock, transport, bridge, dialect, speak=(10_000, 0),
                                   at={400: model_hears_echo})  # fmt: skip
    assert kinds(outcome) == [] and not carrier.clears
    assert "interrupt" not in names(bridge)
    assert verdicts(bridge) == ["unheard"]  # the gateway's VAD heard no caller: the model is told


async def test_a_model_that_cuts_itself_still_clears_the_carrier_on_its_speech_started():
    session, clock, transport, bridge, dialect = make("immediate", model_interrupts=True)

    async def model_cut_itself():
        bridge.queue.put_nowait(llm.SpeechStarted())

    outcome, carrier = await drive(session, clock, transport, bridge, dialect, speak=(10_000, 0),
                                   at={400: model_cut_itself})  # fmt: skip
    barge = [e for e in outcome.events if e["kind"] == "barge_in"]
    assert [b["data"]["source"] for b in barge] == ["model_vad"] and len(carrier.clears) == 1


async def test_the_models_speech_started_while_the_caller_speaks_is_no_unheard_verdict():
    session, clock, transport, bridge, dialect = make("immediate")

    async def model_hears_the_caller():
        bridge.queue.put_nowait(llm.SpeechStarted())

    # The caller speaks from 2.6 s (the reply played out at 2 s): the model's VAD hears it too.
    outcome, _carrier = await drive(session, clock, transport, bridge, dialect, speak=(2600, 600), until_ms=3800,
                                    at={2900: model_hears_the_caller})  # fmt: skip
    assert verdicts(bridge) == ["turn"]
