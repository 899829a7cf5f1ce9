"""Session rollover and reconnect of the OpenAI Realtime bridge against the loopback server.

The fake server ends each session at its own limit (``session_expired``, as OpenAI does at 60
minutes) and logs every session apart, so the tests see what each new session was told: its
``session.update``, the conversation items carrying the earlier turns, and every byte of caller
audio. The bridge runs with a 2 s limit and a 0.5 s margin (real time) or with a virtual clock.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.formats import PCMU_8K
from gateway.llm.base import AgentConfig, BridgeError, ResponseDone, SessionRenewed, SpeechStarted, Transcript
from gateway.llm.common import cut_heard_text
from gateway.llm.openai_history import CONTINUING_NOTE
from gateway.llm.openai_realtime import OpenAIRealtimeBridge, openai_backend
from tests.llm.conformance import check_openai_client_event
from tests.llm.fake_openai import SessionLog
from tests.llm.fake_servers import Collector, FakeRealtimeServer, Reply, Say, transcript_of
from tests.llm.test_openai_bridge import AGENT, ulaw_chunks

pytestmark = [pytest.mark.usefixtures("shared_audio"), pytest.mark.timeout(60)]

LIMIT_S, MARGIN_S = 2.0, 0.5
LONG = "speech/librivox-0870"  # 7.1 s


def bridge_for(srv: FakeRealtimeServer, **kw) -> OpenAIRealtimeBridge:
    kw.setdefault("session_limit_s", LIMIT_S)
    kw.setdefault("session_limit_margin_s", MARGIN_S)
    return OpenAIRealtimeBridge(openai_backend("gpt-realtime", url=srv.url), "test", poll_s=0.02, **kw)


def carried_items(log: SessionLog) -> list[tuple[str, str]]:
    """The conversation items a session got before any caller audio: (role, text)."""
    out = []
    for msg in log.received[1:]:
        if msg["type"] != "conversation.item.create":
            break
        item = msg["item"]
        out.append(("agent" if item["role"] == "assistant" else "user", item["content"][0]["text"]))
    return out


async def wait_until(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def talk(bridge: OpenAIRealtimeBridge, seconds: float, sent: list[bytes]) -> None:
    """Real-time caller: 20 ms μ-law frames of real speech; every 1.5 s a 0.3 s turn."""
    frames = ulaw_chunks("caller/reschedule")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i in range(int(seconds / 0.02)):
        phase = round((i * 0.02) % 1.5, 3)
        if phase == 0.5:
            await bridge.speech_started()
        frame = frames[i % len(frames)]
        sent.append(frame)
        await bridge.send_audio(frame)
        if phase == 0.8:
            await bridge.end_of_turn()
        await asyncio.sleep(max(0.0, t0 + (i + 1) * 0.02 - loop.time()))


async def test_a_call_spanning_several_session_limits_rolls_over_between_turns():
    turns = [f"This is caller turn number {n}." for n in range(1, 6)]
    async with FakeRealtimeServer(
        replies=[Reply([Say("caller/hello", "Hello, how can I help?")])],
        user_transcripts=list(turns),
        pace_s=0.02,
        session_limit_s=LIMIT_S,
    ) as srv:
        bridge = bridge_for(srv)
        await bridge.start(AGENT, PCMU_8K)
        sent: list[bytes] = []
        async with Collector(bridge) as c:
            await talk(bridge, 4.5, sent)  # three caller turns
            await c.wait_for(lambda: len(c.of(Transcript)) == 1 + 2 * 3)
    sessions = srv.sessions
    renewals = [i for i, e in enumerate(c.events) if isinstance(e, SessionRenewed)]
    print(f"sessions={len(sessions)} gaps_ms={[c.events[i].gap_ms for i in renewals]}")
    assert len(sessions) >= 3 and srv.expired == 0  # always ahead of the server's limit
    assert len(renewals) == len(sessions) - 1 and not c.of(BridgeError)
    assert {c.events[i].reason for i in renewals} == {"rollover"}
    # No switch while a response was streaming; no caller audio lost or doubled.
    assert not any(s.response_active_at_close for s in sessions[:-1])
    assert b"".join(bytes(s.input_audio) for s in sessions) == b"".join(sent)
    for k, i in enumerate(renewals, start=1):
        log = sessions[k]
        assert log.received[0]["type"] == "session.update"
        assert log.received[0]["session"]["instructions"].endswith(CONTINUING_NOTE)
        # Everything the call heard so far, in order, and nothing else.
        before = [(t.role, t.text) for t in c.events[:i] if isinstance(t, Transcript)]
        assert carried_items(log) == before and before[0] == ("agent", "Hello, how can I help?")
        # No second greeting: every response of a later session answers a caller turn.
        assert len(log.of_type("response.create")) == len(log.of_type("input_audio_buffer.commit"))
    assert srv.responses_started == 1 + len(srv.of_type("input_audio_buffer.commit"))
    for msg in srv.received:
        check_openai_client_event(msg)


async def test_barge_in_text_is_carried_cut_and_a_late_barge_in_recuts_it():
    now = [0.0]
    reply = "Sure, let me check that for you right away."
    async with FakeRealtimeServer(
        replies=[Reply([Say(LONG)], hold_open=True), Reply([Say("caller/hello", reply)])],
        user_transcripts=["Sorry, what was that?"],
    ) as srv:
        bridge = bridge_for(srv, clock=lambda: now[0], session_limit_s=3600.0, session_limit_margin_s=30.0)
        await bridge.start(AGENT, PCMU_8K)
        async with Collector(bridge) as c:
            await c.wait_for(lambda: len(c.audio()) >= 8 * 1500)
            greet = c.items()[0]
            await bridge.interrupt(greet, 640)
            for frame in ulaw_chunks("caller/reschedule")[:20]:
                await bridge.send_audio(frame)
            await bridge.end_of_turn()
            await c.wait_for(lambda: len(c.of(Transcript)) == 3)
            answer = c.items()[-1]
            now[0] = 3600 - 30 - 300 + 1  # the 5-minute window: idle, so at once
            await c.wait_for(lambda: c.of(SessionRenewed))
            await srv.wait_for(lambda: len(srv.sessions[-1].of_type("conversation.item.create")) == 3)
            second = srv.sessions[1]
            # What the model had said when the cancel stopped it, cut to the 640 ms heard.
            said = next(e for e in srv.sent if e["type"] == "response.done")["response"]["output"][0]
            cut = cut_heard_text(said["content"][0]["transcript"], 640, srv.item_ms[greet])
            assert cut.endswith("…") and transcript_of(LONG).startswith(cut[:-1])
            assert carried_items(second) == [("agent", cut), ("user", "Sorry, what was that?"), ("agent", reply)]
            # The answer was still playing at the switch; the caller talks over it.
            n = len(second.received)
            await bridge.interrupt(answer, 300)
            await srv.wait_for(lambda: len(second.of_type("conversation.item.create")) == 4)
        types = [m["type"] for m in second.received[n:]]
        assert types == ["response.cancel", "conversation.item.delete", "conversation.item.create"]
        ids = [m["item"]["id"] for m in second.of_type("conversation.item.create")]
        recut = second.received[-1]
        assert second.received[n + 1]["item_id"] == ids[2] and recut["previous_item_id"] == ids[1]
        expected = cut_heard_text(reply, 300, srv.item_ms[answer])
        assert recut["item"]["content"] == [{"type": "output_text", "text": expected}] and expected.endswith("…")
        assert not second.of_type("response.create")
        for msg in srv.received:
            check_openai_client_event(msg)


async def test_at_the_deadline_the_switch_is_forced_and_the_caller_turn_replayed():
    now = [0.0]
    async with FakeRealtimeServer(user_transcripts=["I would like to reschedule."]) as srv:
        bridge = bridge_for(srv, clock=lambda: now[0], session_limit_s=3600.0, session_limit_margin_s=30.0)
        await bridge.start(AgentConfig(first_speaker="user"), PCMU_8K)
        frames = ulaw_chunks("caller/reschedule")
        async with Collector(bridge) as c:
            now[0] = 3600 - 30 - 200  # in the window, but the caller is talking
            await bridge.speech_started()
            for frame in frames[:30]:
                await bridge.send_audio(frame)
            await asyncio.sleep(0.1)
            assert len(srv.sessions) == 1
            now[0] = 3600 - 30  # the deadline: switch now, mid-turn
            await c.wait_for(lambda: c.of(SessionRenewed))
            for frame in frames[30:60]:
                await bridge.send_audio(frame)
            await bridge.end_of_turn()
            await c.wait_for(lambda: len(c.of(ResponseDone)) >= 2)
        first, second = srv.sessions
        assert bytes(first.input_audio) == b"".join(frames[:30])
        assert bytes(second.input_audio) == b"".join(frames[:60])  # the whole turn, once
        assert [m["type"] for m in second.received if m["type"] != "input_audio_buffer.append"] == [
            "session.update", "input_audio_buffer.commit", "response.create"
        ]  # fmt: skip
        assert c.of(Transcript)[0] == Transcript("user", "I would like to reschedule.", c.of(Transcript)[0].item_id)


async def test_an_unexpected_close_mid_call_reconnects_and_the_call_goes_on():
    async with FakeRealtimeServer(
        replies=[Reply([Say("caller/hello", "Hello?")]), Reply([Say("speech/cards-002")])],
        user_transcripts=["Can I book a table?"],
    ) as srv:
        bridge = bridge_for(srv, session_limit_s=3600.0, session_limit_margin_s=30.0)
        await bridge.start(AGENT, PCMU_8K)
        frames = ulaw_chunks("caller/reschedule")
        async with Collector(bridge) as c:
            await c.wait_for(lambda: len(c.of(Transcript)) == 1)
            await bridge.speech_started()
            for frame in frames[:20]:
                await bridge.send_audio(frame)
            await srv.wait_for(lambda: len(srv.sessions[0].input_audio) == 20 * 160)
            srv.reopen_delay_s = 0.3
            srv.drop()  # TCP cut, no close frame, mid-turn
            await wait_until(lambda: len(srv.handshakes) == 2)
            for frame in frames[20:40]:  # while the new session opens: held
                await bridge.send_audio(frame)
            await c.wait_for(lambda: c.of(SessionRenewed))
            for frame in frames[40:60]:
                await bridge.send_audio(frame)
            await bridge.end_of_turn()
            await c.wait_for(lambda: len(c.of(Transcript)) == 3)
        [renewed] = c.of(SessionRenewed)
        assert renewed.reason == "reconnect" and renewed.attempts == 1 and renewed.gap_ms >= 300
        assert not c.of(BridgeError)
        second = srv.sessions[1]
        assert carried_items(second) == [("agent", "Hello?")]
        types = [m["type"] for m in second.received if m["type"] != "input_audio_buffer.append"]
        assert types == ["session.update", "conversation.item.create", "input_audio_buffer.commit", "response.create"]
        assert bytes(second.input_audio) == b"".join(frames[:60])  # the turn replayed, nothing lost
        assert [t.text for t in c.of(Transcript)][1:] == ["Can I book a table?", transcript_of("speech/cards-002")]
        answer = c.items()[-1]  # the new session's answer reached the call, byte for byte
        assert c.audio(answer) == srv.item_audio[answer] and len(c.items()) == 2
        for msg in srv.received:
            check_openai_client_event(msg)


async def test_a_refused_key_on_reconnect_ends_the_call_model_auth():
    async with FakeRealtimeServer() as srv:
        bridge = bridge_for(srv, session_limit_s=3600.0, session_limit_margin_s=30.0)
        await bridge.start(AgentConfig(first_speaker="user"), PCMU_8K)
        async with Collector(bridge) as c:
            srv.api_key = "rotated"
            srv.drop()
            await c.wait_for(lambda: c.finished)
        [err] = c.of(BridgeError)
        assert err.code == "model_auth" and err.fatal and "401" in err.message
        assert len(srv.handshakes) == 2  # no retry: a refused key does not get better
        assert not c.of(SessionRenewed)


async def test_audio_held_while_reconnecting_is_bounded():
    async with FakeRealtimeServer() as srv:
        bridge = bridge_for(srv, session_limit_s=3600.0, session_limit_margin_s=30.0, hold_limit_bytes=160 * 10)
        await bridge.start(AgentConfig(first_speaker="user"), PCMU_8K)
        frames = ulaw_chunks("caller/reschedule")
        async with Collector(bridge) as c:
            srv.reopen_delay_s = 0.3
            srv.drop()
            await wait_until(lambda: len(srv.handshakes) == 2)
            for frame in frames[:25]:  # 500 ms while the new session opens; 200 ms fit
                await bridge.send_audio(frame)
            await c.wait_for(lambda: c.of(SessionRenewed))
            await bridge.send_audio(frames[25])
            await srv.wait_for(lambda: len(srv.sessions[1].input_audio) == 11 * 160)
        assert bytes(srv.sessions[1].input_audio) == b"".join(frames[:10]) + frames[25]
        assert bridge.dropped_bytes == 15 * 160


async def test_a_margin_as_long_as_the_limit_does_not_renew_the_session_in_a_loop():
    now = [0.0]
    async with FakeRealtimeServer() as srv:
        bridge = bridge_for(srv, clock=lambda: now[0], session_limit_s=10.0, session_limit_margin_s=10.0)
        await bridge.start(AgentConfig(first_speaker="user"), PCMU_8K)
        async with Collector(bridge) as c:
            await asyncio.sleep(0.1)
            assert len(srv.sessions) == 1  # the deadline is half the limit, not 0
            now[0] = 5.0
            await c.wait_for(lambda: c.of(SessionRenewed))
            await asyncio.sleep(0.1)
            assert len(srv.sessions) == 2


async def test_with_server_turn_detection_the_switch_waits_for_the_server_to_end_the_turn():
    now = [0.0]
    cfg = AgentConfig(first_speaker="user", turn_mode="server_vad", interruptible=True)
    async with FakeRealtimeServer(server_vad=True, user_transcripts=["I would like to reschedule."]) as srv:
        bridge = bridge_for(srv, clock=lambda: now[0], session_limit_s=3600.0, session_limit_margin_s=30.0)
        await bridge.start(cfg, PCMU_8K)
        frames = ulaw_chunks("caller/reschedule")
        async with Collector(bridge) as c:
            for frame in frames[:40]:  # the server's VAD hears the caller start
                await bridge.send_audio(frame)
            await srv.wait_for(lambda: srv.vad_events)
            await c.wait_for(lambda: c.of(SpeechStarted))
            now[0] = 3600 - 30 - 200  # in the window, but the caller is talking
            await asyncio.sleep(0.1)
            assert len(srv.sessions) == 1 and bridge.protocol.caller_speaking
            for frame in frames[40:] + [b"\xff" * 160] * 40:  # the rest, then 800 ms of silence
                await bridge.send_audio(frame)
            await c.wait_for(lambda: c.of(SessionRenewed))  # after speech_stopped and the reply
            await srv.wait_for(lambda: len(srv.sessions[-1].of_type("conversation.item.create")) == 2)
        first, second = srv.sessions
        assert [e for e, _ in srv.vad_events] == ["speech_started", "speech_stopped"]
        assert not first.response_active_at_close and first.commits == []  # the server committed
        assert carried_items(second) == [("user", "I would like to reschedule."), ("agent", transcript_of("speech/cards-001"))]
        assert second.received[0]["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
