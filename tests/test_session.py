"""CallSession on a virtual clock: timers, failures, barge-in ordering. No real sleeping.

The carrier is an in-memory transport fed with Twilio's documented messages; the model is a
scripted fake bridge; VAD events are injected. Time moves only when every task is waiting.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator

import orjson
import pytest

from gateway.carriers.twilio import TwilioAdapter
from gateway.formats import L16_16K, PCMU_8K, AudioFormat
from gateway.llm import base as llm
from gateway.session import CallHooks, CallPolicy, CallSession
from gateway.simulator.dialects import TwilioCaller
from gateway.vadrun import VadEnd, VadStart


class VirtualClock:
    """A clock whose sleeps resolve in deadline order once the event loop is idle."""

    def __init__(self) -> None:
        self.t = 0.0
        self._sleepers: list = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.t + max(0.0, seconds), next(self._seq), fut))
        await fut

    async def drive(self, limit_s: float = 10_000.0) -> None:
        while self.t < limit_s:
            for _ in range(20):
                await asyncio.sleep(0)
            while self._sleepers and self._sleepers[0][2].done():
                heapq.heappop(self._sleepers)
            if not self._sleepers:
                continue
            deadline, _, fut = heapq.heappop(self._sleepers)
            self.t = max(self.t, deadline)
            fut.set_result(None)


class MemoryTransport:
    """The carrier side in memory: frames in through a queue, frames out to a list."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.sent: list = []
        self.closed: tuple[int, str] | None = None

    async def receive(self):
        return await self.inbox.get()

    async def send(self, frame) -> None:
        self.sent.append(frame)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)

    def events_sent(self) -> list[str]:
        return [orjson.loads(f)["event"] for f in self.sent if isinstance(f, str)]


class ScriptedVad:
    """A VAD runner whose events the test injects: ``pending`` now, or ``script`` per frame."""

    sample_rate = 8000

    def __init__(self) -> None:
        self.pending: list = []
        self.script: list[list] = []
        self.barge_mode: list[bool] = []

    def agent_speaking(self, speaking: bool) -> None:
        self.barge_mode.append(speaking)

    async def process(self, pcm):
        if self.script:
            return self.script.pop(0)
        out, self.pending = self.pending, []
        return out


class FakeBridge(llm.ModelBridge):
    """A model that records what the session asks of it and emits what the test pushes."""

    name = "fake"

    def __init__(self, *, fail_start: llm.BridgeFailed | None = None, say_ok: bool = True) -> None:
        self.input_format = L16_16K
        self.output_format = PCMU_8K
        self.queue: asyncio.Queue = asyncio.Queue()
        self.calls: list[tuple] = []
        self.fail_start = fail_start
        self.say_ok = say_ok

    async def start(self, config, carrier_format: AudioFormat) -> None:
        self.calls.append(("start", carrier_format))
        if self.fail_start:
            raise self.fail_start

    async def send_audio(self, audio: bytes) -> None:
        self.calls.append(("audio", len(audio)))

    async def speech_started(self) -> None:
        self.calls.append(("speech_started",))

    async def end_of_turn(self) -> None:
        self.calls.append(("end_of_turn",))

    async def say(self, text: str) -> None:
        if not self.say_ok:
            raise NotImplementedError
        self.calls.append(("say", text))

    async def interrupt(self, item_id, heard_ms) -> None:
        self.calls.append(("interrupt", item_id, heard_ms))

    async def events(self) -> AsyncIterator[llm.BridgeEvent]:
        while True:
            event = await self.queue.get()
            if event is None:
                return
            yield event

    async def close(self) -> None:
        self.calls.append(("close",))


def make_session(bridge: FakeBridge, policy: CallPolicy, *, interruptible: bool = True):
    clock = VirtualClock()
    transport = MemoryTransport()
    vad = ScriptedVad()
    finished = []

    async def on_finished(outcome):
        finished.append(outcome)

    session = CallSession(
        call_id="call_test",
        adapter=TwilioAdapter(),
        transport=transport,
        bridge_factory=lambda cfg: bridge,
        config=llm.AgentConfig(interruptible=interruptible),
        policy=policy,
        vad=lambda carrier_rate: vad,
        hooks=CallHooks(on_finished=on_finished),
        clock=clock,
    )
    dialect = TwilioCaller()
    for frame in dialect.opening({"k": "v"}):
        transport.inbox.put_nowait(frame)
    return session, clock, transport, vad, dialect, finished


async def run(session, clock) -> object:
    driver = asyncio.create_task(clock.drive())
    try:
        return await asyncio.wait_for(session.run(), 10)
    finally:
        driver.cancel()


QUIET = CallPolicy(max_duration_s=3000, inactivity_timeout_s=10_000)


async def test_max_duration_ends_the_call_and_finalises_it():
    bridge = FakeBridge()
    session, clock, transport, *_, finished = make_session(bridge, CallPolicy(max_duration_s=60, inactivity_timeout_s=1000))
    outcome = await run(session, clock)
    assert (outcome.status, outcome.end_reason) == ("completed", "max_duration")
    assert 60 <= clock.t < 61
    assert finished == [outcome] and transport.closed[0] == 1000
    assert ("close",) in bridge.calls


async def test_inactivity_hangs_up():
    session, clock, *_ = make_session(FakeBridge(), CallPolicy(inactivity_timeout_s=10))
    outcome = await run(session, clock)
    assert outcome.end_reason == "inactivity" and 10 <= clock.t < 11


async def test_inactivity_prompt_asks_once_then_hangs_up():
    bridge = FakeBridge()
    session, clock, *_ = make_session(bridge, CallPolicy(inactivity_timeout_s=10, inactivity_action="prompt"))
    outcome = await run(session, clock)
    assert ("say", "Are you still there?") in bridge.calls
    assert outcome.end_reason == "inactivity" and 20 <= clock.t < 21
    assert [e["kind"] for e in outcome.events].count("inactivity_prompt") == 1


async def test_inactivity_prompt_falls_back_to_hangup_when_the_model_cannot_say():
    session, clock, *_ = make_session(FakeBridge(say_ok=False), CallPolicy(inactivity_timeout_s=10, inactivity_action="prompt"))
    outcome = await run(session, clock)
    assert outcome.end_reason == "inactivity" and 10 <= clock.t < 11


async def test_bridge_failing_at_start_fails_the_call_with_its_code():
    bridge = FakeBridge(fail_start=llm.BridgeFailed("model_auth", "key rejected"))
    session, clock, transport, *_ = make_session(bridge, QUIET)
    outcome = await run(session, clock)
    assert (outcome.status, outcome.error_code) == ("failed", "model_auth")
    assert transport.closed[0] == 1011
    assert not any(f for f in transport.sent if isinstance(f, str) and '"media"' in f)  # silence


async def test_fatal_model_error_and_model_close_fail_the_call():
    bridge = FakeBridge()
    session, clock, *_ = make_session(bridge, QUIET)
    bridge.queue.put_nowait(llm.BridgeError("rate_limited", "slow down", fatal=False))
    bridge.queue.put_nowait(llm.BridgeError("server_error", "boom", fatal=True))
    outcome = await run(session, clock)
    assert (outcome.status, outcome.end_reason, outcome.error_code) == ("failed", "model_error", "server_error")
    assert [e["data"]["code"] for e in outcome.events if e["kind"] == "model_error"] == ["rate_limited", "server_error"]

    bridge = FakeBridge()
    session, clock, *_ = make_session(bridge, QUIET)
    bridge.queue.put_nowait(None)
    outcome = await run(session, clock)
    assert (outcome.status, outcome.error_code) == ("failed", "model_closed")


async def test_stop_and_dtmf_and_turns():
    bridge = FakeBridge()
    session, clock, transport, vad, dialect, _ = make_session(bridge, QUIET)
    vad.script = [[], [VadStart(0, 160.0)], [VadEnd(100)]]
    for _ in range(3):
        transport.inbox.put_nowait(dialect.media(b"\xff" * 160))
    transport.inbox.put_nowait(dialect.dtmf("5"))
    transport.inbox.put_nowait(dialect.stop())
    outcome = await run(session, clock)
    assert (outcome.status, outcome.end_reason) == ("completed", "carrier_stop")
    assert ("speech_started",) in bridge.calls and ("end_of_turn",) in bridge.calls
    # Caller audio reaches the model in 40 ms messages (16 kHz L16: 1,280 bytes), and what is
    # buffered is flushed before each turn event: the first 20 ms (short by the resampler's
    # group delay) and the second frame before speech_started, the third before end_of_turn.
    calls = [c for c in bridge.calls if c[0] in ("audio", "speech_started", "end_of_turn")]
    assert calls == [("audio", 534 + 640), ("speech_started",), ("audio", 640), ("end_of_turn",)]
    assert any(e["kind"] == "dtmf" and e["data"]["digit"] == "5" for e in outcome.events)


async def test_barge_in_sends_clear_before_interrupting_the_model_and_drops_stale_audio():
    bridge = FakeBridge()
    session, clock, transport, vad, dialect, _ = make_session(bridge, QUIET)
    bridge.queue.put_nowait(llm.Transcript("agent", "one two three four five six seven eight nine ten", "item_1"))
    bridge.queue.put_nowait(llm.AudioOut("item_1", b"\x00" * 8000))  # 1 s of μ-law

    async def caller():
        # Let 400 ms play, acknowledging each mark when the audio before it has played.
        acked = set()
        while clock.t < 0.4:
            await asyncio.sleep(0)
            played_frames = 0
            for f in transport.sent:
                msg = orjson.loads(f)
                if msg["event"] == "media":
                    played_frames += 1
                elif msg["event"] == "mark" and msg["mark"]["name"] not in acked:
                    if played_frames * 0.02 <= clock.t:
                        acked.add(msg["mark"]["name"])
                        transport.inbox.put_nowait(dialect.mark_played(msg["mark"]["name"]))
            await clock.sleep(0.02)
        vad.pending = [VadStart(0, 200.0)]
        transport.inbox.put_nowait(dialect.media(b"\xff" * 160))
        await clock.sleep(0.01)
        bridge.queue.put_nowait(llm.AudioOut("item_1", b"\x00" * 1600))  # late audio of the cut item
        await clock.sleep(1.0)
        transport.inbox.put_nowait(dialect.stop())

    asyncio.get_running_loop().create_task(caller())
    outcome = await run(session, clock)
    events = transport.events_sent()
    clear_at = events.index("clear")
    assert "media" in events[:clear_at] and "media" not in events[clear_at:]  # stopped at once
    interrupt = next(c for c in bridge.calls if c[0] == "interrupt")
    # Marks every 100 ms: 400 ms acknowledged, then interpolated by clock up to the next mark.
    assert interrupt[1] == "item_1" and 400 <= interrupt[2] <= 460
    barge = next(e for e in outcome.events if e["kind"] == "barge_in")
    assert barge["data"]["heardMs"] == interrupt[2]
    turn = next(t for t in outcome.transcript if t["role"] == "agent")
    assert turn["interrupted"] and turn["heard_ms"] == interrupt[2]
    assert turn["text"] == "one two three four"  # 400-460 ms of 1 s heard: 4 of its 10 words
    assert outcome.metrics["bargeIns"] == 1
    assert vad.barge_mode[0] is True  # the shorter barge-in confirmation while the agent spoke


async def test_not_interruptible_calls_keep_playing():
    bridge = FakeBridge()
    session, clock, transport, vad, dialect, _ = make_session(bridge, QUIET, interruptible=False)
    bridge.queue.put_nowait(llm.AudioOut("item_1", b"\x00" * 8000))

    async def caller():
        await clock.sleep(0.2)
        vad.pending = [VadStart(0, 200.0)]
        transport.inbox.put_nowait(dialect.media(b"\xff" * 160))
        await clock.sleep(1.5)
        transport.inbox.put_nowait(dialect.stop())

    asyncio.get_running_loop().create_task(caller())
    outcome = await run(session, clock)
    assert "clear" not in transport.events_sent()
    assert not any(c[0] == "interrupt" for c in bridge.calls)
    assert transport.events_sent().count("media") == 50  # all of the 1 s reply, 20 ms frames


async def test_outbound_track_media_is_not_fed_to_the_model():
    bridge = FakeBridge()
    session, clock, transport, vad, dialect, _ = make_session(bridge, QUIET)
    frame = orjson.loads(dialect.media(b"\xff" * 160))
    frame["media"]["track"] = "outbound"
    transport.inbox.put_nowait(orjson.dumps(frame).decode())
    for _ in range(3):
        transport.inbox.put_nowait(dialect.media(b"\xff" * 160))
    transport.inbox.put_nowait(dialect.stop())
    outcome = await run(session, clock)
    # Only the inbound frames reach the model: one message once 40 ms were buffered (the first
    # frame is short by the resampler's group delay).
    assert [c for c in bridge.calls if c[0] == "audio"] == [("audio", 534 + 640 + 640)]
    assert outcome.metrics["otherTrackFrames"] == 1 and outcome.metrics["framesIn"] == 3


async def test_an_agent_transcript_arriving_after_the_barge_in_is_flagged():
    bridge = FakeBridge()
    session, clock, transport, vad, dialect, _ = make_session(bridge, QUIET)
    bridge.queue.put_nowait(llm.AudioOut("item_9", b"\x00" * 4000))

    async def caller():
        await clock.sleep(0.2)
        vad.pending = [VadStart(0, 200.0)]
        transport.inbox.put_nowait(dialect.media(b"\xff" * 160))
        await clock.sleep(0.05)
        bridge.queue.put_nowait(llm.Transcript("agent", "the words heard…", "item_9"))
        await clock.sleep(0.5)
        transport.inbox.put_nowait(dialect.stop())

    asyncio.get_running_loop().create_task(caller())
    outcome = await run(session, clock)
    interrupt = next(c for c in bridge.calls if c[0] == "interrupt")
    (turn,) = [t for t in outcome.transcript if t["role"] == "agent"]
    assert turn["interrupted"] is True and turn["heard_ms"] == interrupt[2]
    assert turn["text"] == "the words heard…"  # already cut by the bridge: not cut twice


async def test_a_flood_of_dtmf_and_unknown_events_costs_counters_not_memory():
    """20,000 DTMF frames and 5,000 made-up event names: bounded events, counters and keys."""
    bridge = FakeBridge()
    session, clock, transport, vad, dialect, _ = make_session(bridge, QUIET)
    for i in range(20_000):
        transport.inbox.put_nowait(dialect.dtmf("5"))
    for i in range(5_000):
        transport.inbox.put_nowait(orjson.dumps({"event": f"made_up_{i}", "streamSid": "x"}).decode())
    for i in range(3_000):
        transport.inbox.put_nowait('{"event": "media", "media": {"payload": "%%%"}}')  # bad base64
    transport.inbox.put_nowait(dialect.stop())
    outcome = await run(session, clock)
    kinds = [e["kind"] for e in outcome.events]
    assert kinds.count("dtmf") == 200 and len(outcome.events) <= 1001
    assert kinds[-1] == "ended" and outcome.end_reason == "carrier_stop"
    assert outcome.metrics["eventsDropped"]["dtmf"] == 20_000 - 200
    unhandled = outcome.metrics["unhandledEvents"]
    assert len(unhandled) == 17 and unhandled["(other)"] == 5_000 - 16
    assert sum(outcome.metrics["protocolErrors"].values()) == 3_000
    assert kinds.count("protocol_error") == 20  # the rest are counted and summarised in the log
    assert len(orjson.dumps(outcome.events)) < 200_000


# ----------------------------------------------------------------------------- finalisation


class _CloseRaisesCancelled(FakeBridge):
    """A bridge whose close re-awaits a task that was cancelled with the call's tasks."""

    async def close(self) -> None:
        self.calls.append(("close",))
        raise asyncio.CancelledError


class _Stubborn:
    """An awaitable step that hangs and ignores cancellation until ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.cancels = 0

    async def hang(self) -> None:
        while not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancels += 1


async def test_a_cancelled_run_still_finalises_the_record_exactly_once():
    bridge = FakeBridge()
    session, clock, transport, vad, dialect, finished = make_session(bridge, QUIET)
    driver = asyncio.create_task(clock.drive())
    task = asyncio.create_task(session.run())
    try:
        while session.bridge is None or not bridge.calls:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        driver.cancel()
    assert len(finished) == 1
    outcome = finished[0]
    assert (outcome.status, outcome.end_reason, outcome.error_code) == ("failed", "cancelled", "cancelled")
    assert ("close",) in bridge.calls and transport.closed is not None
    assert outcome.events[-1]["kind"] == "ended"


async def test_a_cancellation_during_finalisation_does_not_stop_it_or_repeat_it():
    bridge = FakeBridge()
    session, clock, transport, vad, dialect, finished = make_session(bridge, QUIET)
    slow = asyncio.Event()
    hook = session.hooks.on_finished

    async def slow_hook(outcome):
        await slow.wait()
        await hook(outcome)

    session.hooks.on_finished = slow_hook
    transport.inbox.put_nowait(dialect.stop())
    driver = asyncio.create_task(clock.drive())
    task = asyncio.create_task(session.run())
    try:
        while transport.closed is None:
            await asyncio.sleep(0)
        task.cancel()  # while on_finished is running
        with pytest.raises(asyncio.CancelledError):
            await task
        slow.set()
        while not finished:
            await asyncio.sleep(0)
        assert await session._finish_once(None) is finished[0]  # already done: the same record
    finally:
        driver.cancel()
    assert len(finished) == 1 and finished[0].end_reason == "carrier_stop"


async def test_a_bridge_close_raising_cancelled_does_not_lose_the_record():
    bridge = _CloseRaisesCancelled()
    session, clock, transport, vad, dialect, finished = make_session(bridge, QUIET)
    transport.inbox.put_nowait(dialect.stop())
    outcome = await run(session, clock)
    assert finished == [outcome] and outcome.end_reason == "carrier_stop"
    assert transport.closed is not None


async def test_a_hanging_bridge_close_and_transport_close_are_abandoned_after_their_limits():
    from gateway.session.finish import BRIDGE_CLOSE_S, TRANSPORT_CLOSE_S

    bridge = FakeBridge()
    session, clock, transport, vad, dialect, finished = make_session(bridge, QUIET)
    stuck_bridge, stuck_transport = _Stubborn(), _Stubborn()
    bridge.close = stuck_bridge.hang  # type: ignore[method-assign]
    transport.close = lambda code=1000, reason="": stuck_transport.hang()  # type: ignore[method-assign]
    transport.inbox.put_nowait(dialect.stop())
    try:
        outcome = await run(session, clock)
    finally:
        stuck_bridge.release.set()
        stuck_transport.release.set()
    assert finished == [outcome] and outcome.end_reason == "carrier_stop"
    limits = BRIDGE_CLOSE_S + TRANSPORT_CLOSE_S
    assert limits <= clock.t < limits + 1  # each step waited its limit on the call's clock
    assert stuck_bridge.cancels == 1 and stuck_transport.cancels == 1  # cancelled, then left


async def test_a_barge_in_cuts_every_queued_reply_not_just_the_one_playing():
    """"Let me check…" then the answer, queued back to back: a barge-in during the first cuts
    both; the second was never heard, so it is not kept as said and its late audio never plays."""
    bridge = FakeBridge()
    session, clock, transport, vad, dialect, _ = make_session(bridge, QUIET)
    bridge.queue.put_nowait(llm.Transcript("agent", "let me check that for you", "item_a"))
    bridge.queue.put_nowait(llm.AudioOut("item_a", b"\x00" * 8000))  # 1 s of μ-law
    bridge.queue.put_nowait(llm.Transcript("agent", "your balance is forty two dollars", "item_b"))
    bridge.queue.put_nowait(llm.AudioOut("item_b", b"\x00" * 8000))

    async def caller():
        await clock.sleep(0.3)
        vad.pending = [VadStart(0, 100.0)]
        transport.inbox.put_nowait(dialect.media(b"\xff" * 160))
        await clock.sleep(0.01)
        bridge.queue.put_nowait(llm.AudioOut("item_b", b"\x00" * 1600))  # late audio of the cut reply
        await clock.sleep(1.0)
        transport.inbox.put_nowait(dialect.stop())

    asyncio.get_running_loop().create_task(caller())
    outcome = await run(session, clock)
    events = transport.events_sent()
    assert "media" not in events[events.index("clear"):]  # nothing of either reply after the clear
    a, b = (t for t in outcome.transcript if t["role"] == "agent")
    assert a["interrupted"] and 0 < a["heard_ms"] < 1000 and a["text"] != "let me check that for you"
    assert b["interrupted"] and b["heard_ms"] == 0 and b["text"] == ""
    assert [c for c in bridge.calls if c[0] == "interrupt"] == [("interrupt", "item_a", a["heard_ms"])]


async def test_audio_no_carrier_sends_is_dropped_and_counted_not_fed_to_the_vad():
    """One 4 s message, then 60 s of audio in an instant: the media path takes a bounded share."""
    bridge = FakeBridge()
    session, clock, transport, vad, dialect, _ = make_session(bridge, QUIET)
    fed = []
    original = vad.process

    async def counting(pcm):
        fed.append(len(pcm))
        return await original(pcm)

    vad.process = counting
    transport.inbox.put_nowait(dialect.media(b"\xff" * 8000 * 4))  # 4 s of 8 kHz μ-law in one message
    for _ in range(3000):  # 60 s of 20 ms frames, all at t = 0
        transport.inbox.put_nowait(dialect.media(b"\xff" * 160))
    transport.inbox.put_nowait(dialect.stop())
    outcome = await run(session, clock)
    errors = outcome.metrics["protocolErrors"]
    assert errors == {"audio_oversize": 1, "audio_too_fast": 3000 - 500}
    assert sum(fed) == 500 * 160  # the 10 s burst the budget allows, nothing more


class StallingTransport(MemoryTransport):
    """A carrier that stops reading: after ``ok`` frames every send waits for ever."""

    def __init__(self, ok: int) -> None:
        super().__init__()
        self.ok, self.blocked_at = ok, None
        self.clock = None

    async def send(self, frame) -> None:
        if len(self.sent) < self.ok:
            return await super().send(frame)
        self.blocked_at = self.clock.now()
        await asyncio.Event().wait()  # never set: the peer's TCP window stays full

    def send_pending_s(self) -> float:
        return 0.0 if self.blocked_at is None else self.clock.now() - self.blocked_at


async def test_a_carrier_that_stops_reading_ends_the_call_as_stalled():
    bridge = FakeBridge()
    session, clock, _, vad, dialect, finished = make_session(bridge, QUIET)
    transport = StallingTransport(ok=3)
    transport.clock = clock
    for frame in dialect.opening({}):
        transport.inbox.put_nowait(frame)
    session.transport = transport
    bridge.queue.put_nowait(llm.AudioOut("item_1", b"\x00" * 80_000))  # 10 s of agent audio
    outcome = await run(session, clock)
    assert (outcome.status, outcome.end_reason, outcome.error_code) == ("failed", "carrier_stalled", "carrier_stalled")
    assert 5.0 <= clock.t - transport.blocked_at < 5.5
    assert finished == [outcome]


async def test_a_timeout_inside_the_call_is_not_reported_as_a_start_timeout():
    class TimingOutBridge(FakeBridge):
        async def send_audio(self, audio: bytes) -> None:
            raise TimeoutError("a bug of ours, or a library's")

    session, clock, transport, vad, dialect, _ = make_session(TimingOutBridge(), QUIET)
    transport.inbox.put_nowait(dialect.media(b"\xff" * 160 * 5))
    outcome = await run(session, clock)
    assert (outcome.end_reason, outcome.error_code) == ("internal_error", "internal_error")


async def test_the_app_transport_says_how_long_a_send_has_waited():
    from gateway.app import StarletteTransport

    class SlowSocket:
        release = asyncio.Event()

        async def send_text(self, text: str) -> None:
            await self.release.wait()

    transport = StarletteTransport(SlowSocket())
    assert transport.send_pending_s() == 0.0
    task = asyncio.create_task(transport.send("frame"))
    await asyncio.sleep(0.05)
    assert 0.04 <= transport.send_pending_s() < 1.0
    SlowSocket.release.set()
    await task
    assert transport.send_pending_s() == 0.0
