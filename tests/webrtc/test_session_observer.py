"""The session's optional observer hook (a transport's ``observe``): events, turns, the end.

On the virtual-clock session of tests/test_session.py: a transport with ``observe`` hears every
journal event the record keeps, each transcript turn as it is added and as a barge-in cuts it,
and the end before it is closed; a transport without it changes nothing.
"""

from __future__ import annotations

import asyncio

import orjson

from gateway.llm import base as llm
from gateway.vadrun import VadStart
from tests.test_session import QUIET, FakeBridge, MemoryTransport, make_session, run


class ObservedTransport(MemoryTransport):
    def __init__(self) -> None:
        super().__init__()
        self.observed: list[tuple[str, dict]] = []

    def observe(self, kind: str, payload: dict) -> None:
        assert self.closed is None, "observed after close"
        self.observed.append((kind, {**payload, "turn": dict(payload["turn"])} if kind == "turn" else dict(payload)))


def observed_session(bridge: FakeBridge):
    session, clock, transport, vad, dialect, finished = make_session(bridge, QUIET)
    observed = ObservedTransport()
    while not transport.inbox.empty():  # the Twilio opening make_session queued
        observed.inbox.put_nowait(transport.inbox.get_nowait())
    # the hook is taken when the session is made: make it again on the observed transport
    fresh = type(session)(call_id="call_test", adapter=session.adapter, transport=observed,
                          bridge_factory=lambda cfg: bridge, config=session.config, policy=QUIET,
                          vad=lambda rate: vad, hooks=session.hooks, clock=clock)
    return fresh, clock, observed, vad, dialect


async def test_observer_hears_events_turns_their_cut_and_the_end():
    bridge = FakeBridge()
    session, clock, transport, vad, dialect = observed_session(bridge)
    bridge.queue.put_nowait(llm.Transcript("agent", "one two three four five six seven eight nine ten", "item_1"))
    bridge.queue.put_nowait(llm.AudioOut("item_1", b"\x00" * 8000))  # 1 s of μ-law

    async def caller():
        await clock.sleep(0.5)
        vad.pending = [VadStart(0, 200.0)]
        transport.inbox.put_nowait(dialect.media(b"\xff" * 160))
        await clock.sleep(0.5)
        transport.inbox.put_nowait(dialect.stop())

    asyncio.get_running_loop().create_task(caller())
    outcome = await run(session, clock)
    kinds = [k for k, _ in transport.observed]
    assert kinds[-1] == "ended" and transport.observed[-1][1] == {"status": "completed", "endReason": "carrier_stop"}
    events = [p for k, p in transport.observed if k == "event"]
    assert events == outcome.events  # every event the record keeps, in order, as it keeps them
    turns = [p for k, p in transport.observed if k == "turn"]
    assert {t["index"] for t in turns} == {0}
    assert turns[0]["turn"]["interrupted"] is False and turns[0]["turn"]["text"].startswith("one two")
    assert turns[-1]["turn"] == outcome.transcript[0] and outcome.transcript[0]["interrupted"] is True
    assert turns[-1]["turn"]["heard_ms"] is not None


async def test_a_transport_without_observe_is_left_alone():
    bridge = FakeBridge()
    session, clock, transport, vad, dialect, _ = make_session(bridge, QUIET)
    assert session.journal.on_event is None and session.turns.on_change is None
    transport.inbox.put_nowait(dialect.stop())
    outcome = await run(session, clock)
    assert outcome.end_reason == "carrier_stop"


async def test_events_past_the_journal_bound_still_reach_the_observer_as_moments():
    """The page's "thinking" follows the caller's 201st speech end: the record keeps 200."""
    session, clock, transport, vad, dialect = observed_session(FakeBridge())
    for _ in range(201):
        session._event("caller_speech_end")
    assert [k for k, _ in transport.observed] == ["event"] * 200 + ["moment"]
    assert transport.observed[-1][1]["kind"] == "caller_speech_end"
    assert len(session.events) == 200 and session.journal.dropped["caller_speech_end"] == 1


async def test_a_moment_moves_the_pages_agent_state_without_an_event_message():
    from gateway.webrtc.transport import WebRtcTransport

    transport = WebRtcTransport(pc=None)  # no channel yet: messages wait in its pending queue
    transport.observe("event", {"kind": "caller_speech_start", "at_ms": 1, "data": {}})
    transport.observe("moment", {"kind": "caller_speech_end", "at_ms": 2, "data": {}})
    sent = [orjson.loads(m) for m in transport._pending]
    assert [(m["type"], m.get("kind", m.get("state"))) for m in sent] == [
        ("event", "caller_speech_start"), ("state", "thinking")]  # fmt: skip


async def test_caller_audio_that_cannot_be_converted_ends_the_stream_instead_of_hanging_it():
    from gateway.webrtc.transport import WebRtcTransport

    class Track:
        kind = "audio"

        async def recv(self):
            return object()  # not an audio frame: the conversion raises

    transport = WebRtcTransport(pc=None)
    transport.remote_track(Track())
    transport.start()
    async with asyncio.timeout(2):
        assert orjson.loads(await transport.receive())["event"] == "start"
        assert orjson.loads(await transport.receive()) == {"event": "stop", "reason": "media_error"}
        assert await transport.receive() is None


async def test_a_message_the_channel_refuses_is_dropped_and_counted_even_at_its_open():
    from gateway.webrtc.transport import WebRtcTransport

    class Channel:
        label, readyState, bufferedAmount = "events", "connecting", 0

        def __init__(self) -> None:
            self.handlers: dict = {}
            self.sent: list[str] = []

        def on(self, event, handler) -> None:
            self.handlers[event] = handler

        def send(self, text: str) -> None:
            if len(text) > 65536:  # aiortc: over the peer's max-message-size
                raise ValueError("Data channel message too long")
            self.sent.append(text)

    transport, channel = WebRtcTransport(pc=None), Channel()
    transport.data_channel(channel)
    transport.observe("turn", {"index": 0, "turn": {"role": "agent", "text": "x" * 70_000, "at_ms": 1}})
    transport.observe("turn", {"index": 1, "turn": {"role": "agent", "text": "short", "at_ms": 2}})
    channel.readyState = "open"
    channel.handlers["open"]()  # as aiortc's emitter calls it: it must not raise
    assert [orjson.loads(m)["index"] for m in channel.sent] == [1] and transport.dropped["channel"] == 1
    transport.observe("turn", {"index": 2, "turn": {"role": "agent", "text": "y" * 70_000, "at_ms": 3}})
    assert transport.dropped["channel"] == 2


async def test_what_the_bounds_dropped_is_logged_once_at_close(caplog):
    import logging

    from gateway.webrtc.transport import MAX_PAGE_PENDING, WebRtcTransport

    class Pc:
        async def close(self) -> None:
            pass

    transport = WebRtcTransport(Pc(), label="webrtc-call_1")
    for _ in range(MAX_PAGE_PENDING + 3):  # the session reads none of them
        transport._page_message('{"type": "wave"}')
    with caplog.at_level(logging.INFO, logger="gateway.webrtc"):
        await transport.close()
        await transport.close()
    lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert lines == ["webrtc webrtc-call_1: dropped 0 caller audio chunks, 3 page messages, 0 messages to the page, "
                     "0 bytes of agent audio"]  # fmt: skip
