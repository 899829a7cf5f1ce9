"""Fewer messages: caller audio to the model and agent audio to the carrier in larger messages.

On a virtual clock, with a simulated carrier (the simulator's dialects, written from the
carriers' documentation) that plays what it receives in real time and echoes each mark once the
audio before it has played. Checked: the media messages each carrier gets (Vonage exact 20 ms
frames, Exotel its chunk, the others up to ``carrier_message_ms``), marks at message
boundaries, the pacing lead, heard-ms at a barge-in mid-message against what the carrier had
played, and caller audio flushed to the model before every turn event.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.carriers.registry import make_adapter
from gateway.config import Settings
from gateway.formats import PCMU_8K
from gateway.llm import base as llm
from gateway.session import CallHooks, CallSession
from gateway.session.playout import message_frames
from gateway.simulator.dialects import make_dialect
from gateway.vadrun import VadEnd, VadStart
from tests.test_session import QUIET, FakeBridge, ScriptedVad, VirtualClock, run

CARRIER_TICK_S = 0.005  # how often the simulated carrier looks at its playback


class PlayingCarrier:
    """A carrier socket in memory that plays media in real time on the virtual clock.

    Each media message plays from when it arrived or when the previous one ends, whichever is
    later; a mark is echoed once everything sent before it has played; ``clear`` drops what
    has not played (and echoes the pending marks, as Twilio does).
    """

    def __init__(self, clock: VirtualClock, dialect) -> None:
        self.clock, self.dialect = clock, dialect
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.closed = None
        self.media: list[tuple[float, float, int]] = []  # (arrival s, play start s, bytes)
        self.marks: list[tuple[str, int]] = []  # (name, index of the media message before it)
        self.clear_at: float | None = None
        self._play_until = 0.0
        self._pending: list[tuple[str, float]] = []  # mark name, play end of the audio before it
        self.leads_ms: list[float] = []  # audio held ahead of real time after each media message

    async def receive(self):
        return await self.inbox.get()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)

    async def send(self, frame) -> None:
        now = self.clock.t
        for msg in self.dialect.parse(frame):  # raises for a size the carrier refuses
            if msg.kind == "media":
                start = max(now, self._play_until)
                self._play_until = start + self.dialect.audio_format.ms_for_bytes(len(msg.audio)) / 1000
                self.media.append((now, start, len(msg.audio)))
                self.leads_ms.append((self._play_until - now) * 1000)
            elif msg.kind == "mark":
                self.marks.append((msg.name, len(self.media) - 1))
                self._pending.append((msg.name, max(now, self._play_until)))
            elif msg.kind == "clear":
                self.clear_at = now
                self._play_until = now
                for name, _ in self._pending:
                    self.inbox.put_nowait(self.dialect.mark_played(name))
                self._pending.clear()

    async def play(self) -> None:
        """Echo each mark once its audio has played (the carrier's side of the call)."""
        while True:
            await self.clock.sleep(CARRIER_TICK_S)
            while self._pending and self._pending[0][1] <= self.clock.t:
                name, _ = self._pending.pop(0)
                self.inbox.put_nowait(self.dialect.mark_played(name))

    def played_ms(self, at_s: float) -> float:
        """Agent audio the caller heard by ``at_s`` (ms)."""
        fmt = self.dialect.audio_format
        total = 0.0
        for _, start, size in self.media:
            total += min(max(0.0, at_s - start) * 1000, fmt.ms_for_bytes(size))
        return total


def carrier_session(carrier: str, bridge: FakeBridge, **kw):
    clock = VirtualClock()
    dialect = make_dialect(carrier)
    transport = PlayingCarrier(clock, dialect)
    vad = ScriptedVad()
    vad.sample_rate = 16000 if dialect.audio_format.sample_rate >= 16000 else 8000
    session = CallSession(
        call_id="call_messages", adapter=make_adapter(carrier), transport=transport, bridge_factory=lambda cfg: bridge,
        config=llm.AgentConfig(interruptible=True), policy=QUIET, vad=lambda rate: vad, hooks=CallHooks(), clock=clock,
        **kw,
    )  # fmt: skip
    for frame in dialect.opening({}):
        transport.inbox.put_nowait(frame)
    return session, clock, transport, vad, dialect


def caller_frame(dialect) -> bytes:
    fmt = dialect.audio_format
    return dialect.media(b"\xff" * fmt.bytes_for_ms(20) if fmt.encoding.value != "l16" else bytes(fmt.bytes_for_ms(20)))


def test_the_settings_default_to_100_ms_messages_within_their_ranges(monkeypatch):
    settings = Settings(_env_file=None)
    assert (settings.model_chunk_ms, settings.carrier_message_ms) == (100, 100)
    monkeypatch.setenv("GATEWAY_MODEL_CHUNK_MS", "60")
    monkeypatch.setenv("GATEWAY_CARRIER_MESSAGE_MS", "20")
    assert (Settings(_env_file=None).model_chunk_ms, Settings(_env_file=None).carrier_message_ms) == (60, 20)
    for name, bad in (("GATEWAY_MODEL_CHUNK_MS", "10"), ("GATEWAY_CARRIER_MESSAGE_MS", "501")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ValueError):
            Settings(_env_file=None)
        monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("carrier", "want_ms", "frames"),
    [("twilio", 100, 5), ("telnyx", 60, 3), ("plivo", 100, 5), ("raw", 100, 5), ("twilio", 20, 1),
     ("twilio", 90, 4), ("vonage", 100, 1), ("exotel", 100, 1)],
)  # fmt: skip
def test_the_adapter_says_which_message_sizes_it_takes(carrier, want_ms, frames):
    assert message_frames(make_adapter(carrier), want_ms) == frames


@pytest.mark.parametrize("carrier", ["twilio", "telnyx", "plivo", "raw", "vonage", "exotel"])
async def test_each_carrier_gets_messages_it_accepts_with_marks_at_their_ends(carrier):
    bridge = FakeBridge()
    session, clock, transport, _, dialect = carrier_session(carrier, bridge, carrier_message_ms=100)
    bridge.queue.put_nowait(llm.AudioOut("item_1", b"\x00" * 8000))  # 1 s of μ-law (the model's format)
    bridge.queue.put_nowait(llm.ResponseDone("item_1"))

    async def caller():
        await clock.sleep(2.0)
        transport.inbox.put_nowait(dialect.stop() or None)

    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(transport.play()), loop.create_task(caller())]
    try:
        outcome = await run(session, clock)
    finally:
        for task in tasks:
            task.cancel()
    fmt = dialect.audio_format
    sizes = [fmt.ms_for_bytes(size) for _, _, size in transport.media]
    adapter_ms = {"vonage": 20, "exotel": 200}.get(carrier, 100)  # Exotel: 3.2 KB chunks of 8 kHz L16
    assert set(sizes) == {adapter_ms}, sizes
    assert sum(sizes) == 1000 and outcome.metrics["messagesOut"] == len(sizes)
    assert outcome.metrics["framesOut"] == 1000 // session.adapter.frame_ms  # frames, whatever the messages
    # Marks at message boundaries, every 100 ms (mark_every 5 frames) and at the item's end.
    marked = [index for _, index in transport.marks]
    every = {"vonage": 5, "exotel": 5}.get(carrier, 1)  # 5 frames between marks: 100 ms, 5 Exotel chunks
    assert marked == list(range(every - 1, len(sizes), every))
    assert outcome.metrics["marksAcked"] == len(marked)
    # The pacing lead: the carrier never ran dry while audio was queued (gapless playout).
    starts = [start for _, start, _ in transport.media]
    assert all(abs(b - a - adapter_ms / 1000) < 1e-9 for a, b in zip(starts, starts[1:], strict=False))


@pytest.mark.parametrize("message_ms", [20, 60, 100])
@pytest.mark.parametrize("barge_at_s", [0.43, 0.47, 0.51, 0.565])
async def test_a_barge_in_mid_message_reports_heard_ms_within_one_frame_of_what_played(message_ms, barge_at_s):
    bridge = FakeBridge()
    session, clock, transport, vad, dialect = carrier_session("twilio", bridge, carrier_message_ms=message_ms)
    bridge.queue.put_nowait(llm.AudioOut("item_1", b"\x00" * 16000))  # 2 s of μ-law

    async def caller():
        await clock.sleep(barge_at_s)
        vad.pending = [VadStart(0, 200.0)]
        transport.inbox.put_nowait(caller_frame(dialect))
        await clock.sleep(0.5)
        transport.inbox.put_nowait(dialect.stop())

    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(transport.play()), loop.create_task(caller())]
    try:
        outcome = await run(session, clock)
    finally:
        for task in tasks:
            task.cancel()
    assert {size for _, _, size in transport.media} == {PCMU_8K.bytes_for_ms(message_ms)}
    # The pacing lead: after each send (messages leaving at one instant) the carrier holds
    # more than lead_ms (80), at most lead_ms + one message.
    after = {at: lead for (at, _, _), lead in zip(transport.media, transport.leads_ms, strict=True)}
    held = list(after.values())
    assert len(held) > 3 and min(held) > 80 and max(held) <= 80 + message_ms + 1e-6, held
    interrupt = next(c for c in bridge.calls if c[0] == "interrupt")
    truth = transport.played_ms(transport.clear_at)
    assert interrupt[1] == "item_1" and abs(interrupt[2] - truth) <= 20, (interrupt[2], truth)
    barge = next(e for e in outcome.events if e["kind"] == "barge_in")
    assert barge["data"]["heardMs"] == interrupt[2]


async def test_caller_audio_is_flushed_before_every_turn_event_in_100_ms_messages():
    bridge = FakeBridge()
    bridge.input_format = PCMU_8K  # G.711 straight through: bytes in equal bytes out
    session, clock, transport, vad, dialect = carrier_session("twilio", bridge, model_chunk_ms=100)
    bridge.queue.put_nowait(llm.AudioOut("item_1", b"\x00" * 8000))  # agent audio playing: a barge-in
    # 13 frames: VadStart on the 3rd (a barge-in: agent audio plays), VadEnd on the 11th.
    vad.script = [[], [], [VadStart(0, 60.0)], *[[]] * 7, [VadEnd(100)], [], []]

    async def caller():
        await clock.sleep(0.2)
        for _ in range(13):
            transport.inbox.put_nowait(caller_frame(dialect))
            await clock.sleep(0.02)
        await clock.sleep(0.1)
        transport.inbox.put_nowait(dialect.stop())

    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(transport.play()), loop.create_task(caller())]
    try:
        await run(session, clock)
    finally:
        for task in tasks:
            task.cancel()
    calls = [c for c in bridge.calls if c[0] in ("audio", "speech_started", "end_of_turn", "interrupt")]
    # Everything fed before each turn event reached the model before it: frames 1-3 before the
    # barge-in (interrupt) and speech_started, 4-8 as one 100 ms message, 9-11 before
    # end_of_turn; the last two, still buffered at the carrier's stop, before the call ends.
    assert calls == [
        ("audio", 480), ("interrupt", "item_1", calls[1][2]), ("speech_started",),
        ("audio", 800), ("audio", 480), ("end_of_turn",), ("audio", 320),
    ]  # fmt: skip
