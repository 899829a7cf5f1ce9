"""ControlPolicy (the app's hang-up and DTMF requests) and the actions behind it, through a
CallSession on the virtual clock: in-band DTMF checked by Goertzel energy at the ITU-T Q.23
pairs on what the carrier got, StopAgentAudio, EndAfterPlayout."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import orjson
import pytest

from gateway.audio.tones import DTMF_COLS_HZ, DTMF_ROWS_HZ, goertzel_power
from gateway.carriers.plivo import PlivoAdapter
from gateway.carriers.twilio import TwilioAdapter
from gateway.codecs.g711 import ulaw_decode
from gateway.formats import L16_24K, PCMU_8K
from gateway.llm import base as llm
from gateway.session import (
    CallHooks,
    CallSession,
    ControlBusy,
    ControlPolicy,
    EndAfterPlayout,
    EndCall,
    PlayDtmf,
    Policy,
    StopAgentAudio,
)
from gateway.session.agent import LOCAL_ITEMS_KEPT
from gateway.session.control import MAX_DTMF_BACKLOG_S, MAX_DTMF_DIGITS, MAX_KEPT_REQUESTS, MAX_PENDING
from gateway.simulator.dialects import PlivoCaller, TwilioCaller
from gateway.vadrun import VadStart
from tests.test_session import QUIET, FakeBridge, ScriptedVad, VirtualClock, run
from tests.test_session_policies import SentAt

PAIRS = {"1": (697.0, 1209.0), "#": (941.0, 1477.0), "5": (770.0, 1336.0), "D": (941.0, 1633.0)}


class Harness:
    def __init__(self, *policies: Policy, output_format=PCMU_8K, interruptible: bool = False,
                 adapter=None, dialect=None) -> None:  # fmt: skip
        self.clock = VirtualClock()
        self.transport = SentAt(self.clock)
        self.bridge = FakeBridge()
        self.bridge.output_format = output_format
        self.vad = ScriptedVad()
        self.session = CallSession(
            call_id="call_ctl", adapter=adapter or TwilioAdapter(), transport=self.transport,
            bridge_factory=lambda cfg: self.bridge, config=llm.AgentConfig(interruptible=interruptible),
            policy=QUIET, vad=lambda rate: self.vad, hooks=CallHooks(), clock=self.clock, policies=policies,
        )  # fmt: skip
        self.dialect = dialect or TwilioCaller()
        for frame in self.dialect.opening({}):
            self.transport.inbox.put_nowait(frame)
        self.steps: list[tuple[float, object]] = []

    def at(self, t: float, step) -> None:
        """At clock time ``t``: call ``step()``, or push a bridge event."""
        self.steps.append((t, step))

    async def _steps(self) -> None:
        for t, step in sorted(self.steps, key=lambda x: x[0]):
            await self.clock.sleep(max(0.0, t - self.clock.t))
            if callable(step):
                step()
            else:
                self.bridge.queue.put_nowait(step)

    async def run(self):
        task = asyncio.create_task(self._steps())
        try:
            return await run(self.session, self.clock)
        finally:
            task.cancel()

    def media(self) -> list[tuple[float, bytes]]:
        out = []
        for (t, kind), frame in zip(self.transport.times, self.transport.sent, strict=True):
            if kind == "media":
                out.append((t, base64.b64decode(orjson.loads(frame)["media"]["payload"])))
        return out


def energy_at(pcm: np.ndarray, rate: int, freqs: tuple[float, ...]) -> float:
    return sum(goertzel_power(pcm, f, rate) for f in freqs)


@pytest.mark.parametrize("output_format", [PCMU_8K, L16_24K], ids=["pcmu8k", "l16_24k"])
async def test_play_dtmf_sends_q23_tone_pairs_to_the_carrier(output_format) -> None:
    h = Harness(output_format=output_format)
    control = h.session.control
    h.at(0.5, lambda: control.play_dtmf("1#5d"))
    h.at(3.0, control.hang_up)
    outcome = await h.run()
    media = h.media()
    assert media and 0.5 <= media[0][0] < 0.52  # at once, not on the next tick
    pcm = ulaw_decode(b"".join(p for _, p in media)).astype(np.float64)
    assert len(pcm) >= 8 * (4 * 100 + 3 * 100)  # 4 tones of 100 ms, 3 gaps of 100 ms
    others = set(DTMF_ROWS_HZ + DTMF_COLS_HZ)
    for i, key in enumerate("1#5D"):
        tone = pcm[1600 * i + 100:1600 * i + 700]  # the middle 75 ms of the key's 100 ms
        pair = PAIRS[key]
        assert energy_at(tone, 8000, pair) > 0.85, key
        assert min(goertzel_power(tone, f, 8000) for f in pair) > 0.25, key  # both groups present
        assert energy_at(tone, 8000, tuple(others - set(pair))) < 0.03, key
        gap = pcm[1600 * i + 900:1600 * i + 1500]
        if i < 3:
            assert np.sqrt(np.mean(gap**2)) < 0.01 * np.sqrt(np.mean(tone**2)), key  # silence between keys
    (sent,) = [e["data"] for e in outcome.events if e["kind"] == "dtmf_sent"]
    assert sent["digits"] == "1#5D" and sent["source"] == "in-band" and sent["durationMs"] == 700
    assert (outcome.status, outcome.end_reason) == ("completed", "api_hangup")
    assert control.requests == [("play_dtmf", "1#5D"), ("hang_up", "api_hangup")]
    assert not any(c[0] == "interrupt" for c in h.bridge.calls)


async def test_hang_up_ends_the_call_at_once() -> None:
    h = Harness()
    h.at(1.234, lambda: h.session.control.hang_up("api_hangup"))
    outcome = await h.run()
    assert (outcome.status, outcome.end_reason) == ("completed", "api_hangup")
    assert 1.234 <= h.clock.t < 1.24  # not on the next 250 ms tick
    assert h.transport.closed == (1000, "api_hangup")


async def test_dtmf_is_queued_after_the_agent_audio_already_queued() -> None:
    h = Harness()
    h.at(0.1, llm.AudioOut("item_1", b"\x55" * 4000))  # 500 ms
    h.at(0.2, lambda: h.session.control.play_dtmf("1"))
    h.at(2.0, h.session.control.hang_up)
    await h.run()
    payloads = [p for _, p in h.media()]
    assert payloads[:25] == [b"\x55" * 160] * 25  # the agent first
    tone = ulaw_decode(b"".join(payloads[25:30])).astype(np.float64)
    assert energy_at(tone[100:700], 8000, PAIRS["1"]) > 0.85


async def test_a_barge_in_during_the_tones_interrupts_the_models_item_not_the_tones() -> None:
    h = Harness(interruptible=True)
    h.at(0.1, llm.AudioOut("item_1", b"\x55" * 1600))
    h.at(0.1, llm.ResponseDone("item_1"))
    h.at(0.2, lambda: h.session.control.play_dtmf("123456"))

    def caller_speaks() -> None:
        h.vad.pending = [VadStart(0, 60.0)]
        h.transport.inbox.put_nowait(h.dialect.media(b"\xff" * 160))

    h.at(0.6, caller_speaks)
    h.at(1.5, h.session.control.hang_up)
    outcome = await h.run()
    interrupts = [c for c in h.bridge.calls if c[0] == "interrupt"]
    assert len(interrupts) == 1 and interrupts[0][1] == "item_1"
    (barge,) = [e["data"] for e in outcome.events if e["kind"] == "barge_in"]
    assert barge["itemId"].startswith("dtmf_")  # the caller was hearing the tones
    assert max(t for t, _ in h.media()) <= 0.61


class Scripted(Policy):
    """Returns ``actions[t]`` on the first tick at or after clock time ``t``."""

    def __init__(self, actions: dict[float, tuple]) -> None:
        self.actions = dict(actions)

    def on_tick(self, now_s: float, last_activity_s: float):
        due = [t for t in self.actions if t <= now_s]
        return tuple(a for t in sorted(due) for a in self.actions.pop(t))


async def test_end_after_playout_waits_for_the_audio_queued_after_it() -> None:
    h = Harness(Scripted({0.5: (PlayDtmf("123"), EndAfterPlayout(EndCall("dtmf_done"), 10.0))}))
    outcome = await h.run()
    assert outcome.end_reason == "dtmf_done"
    media = h.media()
    assert len(media) == 25  # 500 ms of tones and gaps, every frame sent
    assert media[-1][0] + 0.02 <= h.clock.t <= media[-1][0] + 0.02 + 0.3  # played out, then the next tick
    (end,) = [e["data"] for e in outcome.events if e["kind"] == "end_after_playout"]
    assert end == {"reason": "dtmf_done", "byLimit": False}


async def test_end_after_playout_with_no_audio_ends_at_its_limit() -> None:
    h = Harness(Scripted({0.5: (EndAfterPlayout(EndCall("gave_up", status="voicemail"), 2.0),)}))
    outcome = await h.run()
    assert (outcome.status, outcome.end_reason) == ("voicemail", "gave_up")
    assert 2.5 <= h.clock.t <= 2.75
    assert [e["data"]["byLimit"] for e in outcome.events if e["kind"] == "end_after_playout"] == [True]
    assert h.transport.closed[0] == 1000


async def test_stop_agent_audio_clears_the_carrier_and_drops_the_rest_of_the_reply() -> None:
    h = Harness(Scripted({0.5: (StopAgentAudio("test"),), 1.5: (EndCall("test_done"),)}))
    h.at(0.1, llm.AudioOut("item_1", b"\x55" * 8000))  # 1 s
    h.at(0.7, llm.AudioOut("item_1", b"\x55" * 8000))  # more of the same reply, after the stop
    outcome = await h.run()
    media = h.media()
    clears = [t for t, kind in h.transport.times if kind == "clear"]
    assert clears and 0.5 <= clears[0] < 0.52
    assert media and max(t for t, _ in media) <= clears[0]  # nothing after the clear
    assert outcome.metrics["bargeIns"] == 0
    (stop,) = [e["data"] for e in outcome.events if e["kind"] == "agent_stopped"]
    assert stop["reason"] == "test" and stop["itemId"] == "item_1"
    assert [c[1] for c in h.bridge.calls if c[0] == "interrupt"] == ["item_1"]


def test_control_requests_are_checked_and_stop_after_a_hang_up() -> None:
    control = ControlPolicy()
    for bad in ("", "12x", "1" * 65):
        with pytest.raises(ValueError):
            control.play_dtmf(bad)
    with pytest.raises(ValueError):
        control.hang_up("")
    control.play_dtmf("*0#")
    control.hang_up("api_hangup")
    control.play_dtmf("1")  # after the hang-up: ignored
    control.hang_up("again")
    assert control.take() == (PlayDtmf("*0#"), EndCall("api_hangup"))
    assert control.on_tick(0.0, 0.0) == () and not control.pending


def test_pending_requests_are_capped_and_what_is_kept_is_bounded() -> None:
    control = ControlPolicy()  # no stream yet: nothing drains the queue
    for _ in range(MAX_PENDING):
        control.play_dtmf("1")
    with pytest.raises(ControlBusy):
        control.play_dtmf("2")
    assert issubclass(ControlBusy, RuntimeError)
    control.hang_up("api_hangup")  # a hang-up is always taken
    assert len(control.take()) == MAX_PENDING + 1 and control.take() == ()
    busy = ControlPolicy()
    for i in range(3 * MAX_KEPT_REQUESTS):
        busy.play_dtmf(str(i % 10))
        busy.take()  # drained as the session does
    assert busy.taken == 3 * MAX_KEPT_REQUESTS and len(busy.requests) == MAX_KEPT_REQUESTS
    assert busy.requests[-1] == ("play_dtmf", str((3 * MAX_KEPT_REQUESTS - 1) % 10))


def test_the_tones_asked_for_are_bounded_by_the_clock() -> None:
    clock = VirtualClock()
    control = ControlPolicy(clock)
    full = "1" * MAX_DTMF_DIGITS  # 12.8 s of tones
    fits = int(MAX_DTMF_BACKLOG_S // (0.2 * MAX_DTMF_DIGITS))
    for _ in range(fits):
        control.play_dtmf(full)
        control.take()  # carried out at once: the tones wait in the playout
    with pytest.raises(ControlBusy):
        control.play_dtmf(full)
    clock.t = 0.2 * MAX_DTMF_DIGITS  # one request's tones have played
    control.play_dtmf(full)
    assert control.taken == fits + 1


async def test_tone_items_remembered_are_bounded() -> None:
    h = Harness()
    control = h.session.control
    n = LOCAL_ITEMS_KEPT + 16
    for i in range(n):
        h.at(0.5 + 0.25 * i, lambda: control.play_dtmf("1"))
    h.at(0.5 + 0.25 * n + 0.5, control.hang_up)
    outcome = await h.run()
    assert sum(e["kind"] == "dtmf_sent" for e in outcome.events) == n
    local = h.session._agent._local
    assert len(local) == LOCAL_ITEMS_KEPT and local[-1] == f"dtmf_{n}"


async def test_dtmf_on_a_plivo_stream_is_the_carriers_senddtmf_message() -> None:
    h = Harness(adapter=PlivoAdapter(), dialect=PlivoCaller())
    control = h.session.control
    h.at(0.5, lambda: control.play_dtmf("1#5d"))
    h.at(1.0, control.hang_up)
    outcome = await h.run()
    sent = [orjson.loads(f) for f in h.transport.sent]
    assert {"event": "sendDTMF", "dtmf": "1#5D"} in sent
    assert not any(m["event"] == "playAudio" for m in sent)  # no in-band tones
    (at,) = [t for t, kind in h.transport.times if kind == "sendDTMF"]
    assert 0.5 <= at < 0.52  # at once
    (event,) = [e["data"] for e in outcome.events if e["kind"] == "dtmf_sent"]
    assert event == {"digits": "1#5D", "source": "stream"}
    twilio = Harness()
    twilio.at(0.5, lambda: twilio.session.control.play_dtmf("1"))
    twilio.at(1.0, twilio.session.control.hang_up)
    outcome = await twilio.run()
    assert twilio.media() and "sendDTMF" not in [k for _, k in twilio.transport.times]
    assert [e["data"]["source"] for e in outcome.events if e["kind"] == "dtmf_sent"] == ["in-band"]


def test_every_session_has_a_control() -> None:
    h = Harness()
    assert isinstance(h.session.control, ControlPolicy)
    mine = ControlPolicy()
    session = CallSession(
        call_id="c", adapter=TwilioAdapter(), transport=h.transport, bridge_factory=lambda cfg: h.bridge,
        config=llm.AgentConfig(), policy=QUIET, vad=lambda rate: h.vad, control=mine,
    )  # fmt: skip
    assert session.control is mine
