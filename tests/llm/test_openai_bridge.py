"""The OpenAI Realtime bridge against a loopback server speaking the real wire protocol.

The model's audio is real recorded speech streamed as deltas; every client event the server
receives is validated with the SDK's concrete class (strict), every server event it sends with
the SDK's server union.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import numpy as np
import openai
import pytest

from gateway.formats import L16_8K, L16_16K, L16_24K, PCMU_8K
from gateway.llm.base import (
    AgentConfig,
    AudioOut,
    BridgeError,
    BridgeFailed,
    ResponseDone,
    SessionRenewed,
    Transcript,
)
from gateway.llm.openai_realtime import OpenAIRealtimeBridge, azure_backend, compat_backend, openai_backend, xai_backend
from tests.llm.conformance import check_openai_client_event, check_openai_server_event
from tests.llm.fake_servers import Collector, FakeRealtimeServer, Reply, Say, speech, transcript_of

pytestmark = pytest.mark.usefixtures("shared_audio")

AGENT = AgentConfig(model="openai:gpt-realtime", voice="marin", greeting="Hello?", interruptible=True)


def responses(c: Collector) -> list[ResponseDone]:
    """Response-level ResponseDone events (item-level ones carry the item id)."""
    return [e for e in c.of(ResponseDone) if e.response_id.startswith("resp_")]


def conforms(srv: FakeRealtimeServer) -> None:
    assert srv.received, "the server got nothing"
    for msg in srv.received:
        check_openai_client_event(msg)
    for ev in srv.sent:
        check_openai_server_event(ev)


def ulaw_chunks(name: str, ms: int = 20) -> list[bytes]:
    from gateway.codecs.g711 import ulaw_encode

    data = ulaw_encode(speech(name, 8000))
    step = 8 * ms
    return [data[i : i + step] for i in range(0, len(data), step)]


async def test_full_call_g711_passthrough_with_barge_in():
    answer = "speech/librivox-0870"
    async with FakeRealtimeServer(
        replies=[Reply([Say("caller/hello", "Hello?")]), Reply([Say(answer)], hold_open=True)],
        user_transcripts=[transcript_of("caller/reschedule")],
        pace_s=0.002,
    ) as srv:
        bridge = OpenAIRealtimeBridge(openai_backend("gpt-realtime", url=srv.url), "test")
        await bridge.start(AGENT, PCMU_8K)
        assert bridge.input_format == bridge.output_format == PCMU_8K
        assert srv.session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
        assert srv.session["audio"]["input"]["turn_detection"] is None
        async with Collector(bridge) as c:
            # The greeting arrives as AudioOut: the recording, byte for byte.
            await c.wait_for(lambda: c.of(ResponseDone))
            [greet] = c.items()
            assert c.audio(greet) == srv.item_audio[greet] and len(c.audio(greet)) > 4000

            # Caller audio (real speech, μ-law 20 ms frames), then our VAD ends the turn.
            frames = ulaw_chunks("caller/reschedule")
            for frame in frames:
                await bridge.send_audio(frame)
            await bridge.end_of_turn()
            await srv.wait_for(lambda: srv.responses_started == 2)
            assert bytes(srv.input_audio) == b"".join(frames)

            # The reply streams; the caller barges in after hearing 640 ms of it.
            await c.wait_for(lambda: len(c.items()) == 2 and len(c.audio(c.items()[1])) >= 8 * 1500)
            answer_item = c.items()[1]
            mark = len(c.events)
            n_before = len(srv.received)
            await bridge.interrupt(answer_item, 640)
            await srv.wait_for(lambda: answer_item in srv.truncated)
            types = [m["type"] for m in srv.received[n_before:]]
            assert types[:2] == ["response.cancel", "conversation.item.truncate"]
            assert srv.truncated[answer_item] == 640
            await c.wait_for(lambda: len(responses(c)) == 2)
            assert responses(c)[1].status == "cancelled"
            assert ResponseDone(answer_item, "cancelled") in c.of(ResponseDone)
            assert not [e for e in c.events[mark:] if isinstance(e, AudioOut)]
            assert not c.of(BridgeError)
        transcripts = c.of(Transcript)
        assert transcripts[:2] == [
            Transcript("agent", "Hello?", greet),
            Transcript("user", transcript_of("caller/reschedule"), transcripts[1].item_id),
        ]
        cut = transcripts[2]
        assert cut.role == "agent" and cut.item_id == answer_item and cut.text.endswith("…")
        assert transcript_of(answer).startswith(cut.text[:-1])
        conforms(srv)


async def test_l16_multi_item_reply_clamped_truncate_and_deletes():
    async with FakeRealtimeServer(
        replies=[Reply([Say("caller/hello", "Hello?"), Say("caller/goodbye")]), Reply([Say("speech/cards-002")])],
        user_transcripts=["yes"],
    ) as srv:
        bridge = OpenAIRealtimeBridge(openai_backend("gpt-realtime", url=srv.url), "test")
        await bridge.start(AGENT, L16_16K)
        assert bridge.input_format == bridge.output_format == L16_24K
        assert srv.session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
        async with Collector(bridge) as c:
            await c.wait_for(lambda: c.of(ResponseDone))
            first, second = c.items()
            assert np.array_equal(np.frombuffer(c.audio(first), "<i2"), speech("caller/hello", 24000))
            # Barge-in after the whole reply arrived: heard_ms beyond what was received is
            # clamped; the later item, never heard, is deleted; cancel finds nothing (normal).
            await bridge.interrupt(first, 10**6)
            await srv.wait_for(lambda: second in srv.deleted)
            assert srv.truncated == {first: srv.item_ms[first]}
            assert srv.of_type("response.cancel")

            # Next turn; the caller interrupts before hearing anything: delete.
            pcm = speech("caller/confirm", 24000).tobytes()
            for i in range(0, len(pcm), 960):
                await bridge.send_audio(pcm[i : i + 960])
            await bridge.end_of_turn()
            await c.wait_for(lambda: len(responses(c)) == 2)
            third = c.items()[2]
            await bridge.interrupt(third, 0)
            await srv.wait_for(lambda: third in srv.deleted)
            assert third not in srv.truncated
            assert not c.of(BridgeError)  # response_cancel_not_active is swallowed
        conforms(srv)


async def test_openai_sdk_and_bridge_use_the_same_handshake():
    async with FakeRealtimeServer(replies=[]) as srv:
        client = openai.AsyncOpenAI(api_key="test", websocket_base_url=srv.base_url)
        async with client.realtime.connect(model="gpt-realtime") as conn:
            await conn.session.update(session={"type": "realtime", "instructions": "hi"})
            first = await conn.recv()
            assert first.type == "session.created"
            await srv.wait_for(lambda: srv.of_type("session.update"))
        sdk_path, sdk_headers = srv.handshakes[-1]
        bridge = OpenAIRealtimeBridge(openai_backend("gpt-realtime", url=srv.url), "test")
        await bridge.start(AgentConfig(first_speaker="user"), L16_16K)
        await bridge.close()
        path, headers = srv.handshakes[-1]
        assert path == sdk_path == "/v1/realtime?model=gpt-realtime"
        assert headers["authorization"] == sdk_headers["authorization"] == "Bearer test"
        assert "openai-beta" not in headers
        conforms(srv)


async def test_azure_handshake_uses_api_key_header_and_openai_v1_path():
    async with FakeRealtimeServer(api_key="az-secret", auth="api-key", path="/openai/v1/realtime") as srv:
        backend = azure_backend("my-deployment", endpoint=f"http://127.0.0.1:{srv.port}")
        bridge = OpenAIRealtimeBridge(backend, "az-secret")
        await bridge.start(AgentConfig(first_speaker="user"), PCMU_8K)
        await bridge.close()
        path, headers = srv.handshakes[-1]
        assert path == "/openai/v1/realtime?model=my-deployment"
        assert headers["api-key"] == "az-secret" and "authorization" not in headers
        assert bridge.name == "azure"


async def test_compatible_server_beta_names_and_no_truncate_is_best_effort():
    async with FakeRealtimeServer(beta_names=True, truncate=False, replies=[Reply([Say("caller/hello")])]) as srv:
        backend = compat_backend("local-model", base_url=srv.base_url)
        bridge = OpenAIRealtimeBridge(backend, "test")
        await bridge.start(AGENT, L16_16K)
        async with Collector(bridge) as c:
            await c.wait_for(lambda: c.of(ResponseDone))
            [item] = c.items()
            assert np.array_equal(np.frombuffer(c.audio(item), "<i2"), speech("caller/hello", 24000))
            await bridge.interrupt(item, 200)
            await c.wait_for(lambda: c.of(BridgeError))
            [err] = c.of(BridgeError)
            assert not err.fatal and "truncate" in err.message
            assert bridge.protocol.supports_truncate is False
            n = len(srv.of_type("conversation.item.truncate"))
            await bridge.interrupt(item, 100)
            await srv.wait_for(lambda: len(srv.of_type("response.cancel")) == 2)
            assert len(srv.of_type("conversation.item.truncate")) == n
        assert any(e["type"] == "response.output_audio.delta" for e in srv.sent)  # sent as beta names
        conforms(srv)


async def test_rejected_key_is_model_auth_and_never_leaks(caplog):
    caplog.set_level(logging.DEBUG)
    secret = "sk-wrong-0123456789abcdef"
    async with FakeRealtimeServer(api_key="right") as srv:
        bridge = OpenAIRealtimeBridge(openai_backend("gpt-realtime", url=srv.url), secret)
        with pytest.raises(BridgeFailed) as info:
            await bridge.start(AGENT, PCMU_8K)
        assert info.value.code == "model_auth"
        assert secret not in str(info.value) and secret not in repr(info.value)
        assert secret not in repr(bridge)
        ours = [r.getMessage() for r in caplog.records if not r.name.startswith("tests.")]
        assert any("Authorization" in m for m in ours)  # the handshake was logged…
        assert not [m for m in ours if secret in m]  # …without the key


async def test_connection_refused_is_model_connect():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    bridge = OpenAIRealtimeBridge(openai_backend("gpt-realtime", url=f"ws://127.0.0.1:{port}/v1/realtime"), "k")
    with pytest.raises(BridgeFailed) as info:
        await bridge.start(AGENT, PCMU_8K)
    assert info.value.code == "model_connect"


async def test_server_error_events_become_bridge_errors():
    async with FakeRealtimeServer() as srv:
        bridge = OpenAIRealtimeBridge(openai_backend("gpt-realtime", url=srv.url), "test")
        await bridge.start(AgentConfig(first_speaker="user"), PCMU_8K)
        async with Collector(bridge) as c:
            await srv.error("The server had an error", "server_error", type_="server_error")
            await c.wait_for(lambda: c.of(BridgeError))
            assert not c.of(BridgeError)[0].fatal
            # A session the server ends early (session_expired) is renewed, not the call ended.
            await srv.error("Your session hit the maximum duration of 60 minutes.", "session_expired")
            await c.wait_for(lambda: c.of(SessionRenewed))
            assert c.of(SessionRenewed)[0].reason == "rollover" and len(srv.sessions) == 2
            assert len(c.of(BridgeError)) == 1 and not c.finished


async def test_dropped_connection_that_cannot_be_reopened_is_fatal_model_disconnected():
    async with FakeRealtimeServer() as srv:
        bridge = OpenAIRealtimeBridge(
            openai_backend("gpt-realtime", url=srv.url), "test", max_reconnects=3, backoff_s=(0.0, 0.01)
        )
        await bridge.start(AgentConfig(first_speaker="user"), PCMU_8K)
        async with Collector(bridge) as c:
            srv.refuse_status = 503
            srv.drop()
            await c.wait_for(lambda: c.finished)
        [err] = c.of(BridgeError)
        assert err.code == "model_disconnected" and err.fatal and "503" in err.message
        assert len(srv.handshakes) == 1 + 3  # the first session, then three bounded attempts
        assert not c.of(SessionRenewed)


async def test_session_rolls_over_between_turns_before_the_60_minute_limit():
    now = [1000.0]
    async with FakeRealtimeServer(replies=[Reply([Say("caller/hello", "Hello?")], hold_open=True)]) as srv:
        bridge = OpenAIRealtimeBridge(
            openai_backend("gpt-realtime", url=srv.url), "test", clock=lambda: now[0], poll_s=0.02
        )
        await bridge.start(AGENT, PCMU_8K)
        async with Collector(bridge) as c:
            await c.wait_for(lambda: c.items())  # the greeting streams, then holds its response
            now[0] += 3600 - 30 - 300 + 1  # inside the 5-minute window: waits for a pause
            await asyncio.sleep(0.1)
            assert len(srv.sessions) == 1 and not c.of(SessionRenewed)
            await bridge.interrupt(c.items()[0], 10**6)  # the response ends (cancelled)
            await c.wait_for(lambda: c.of(SessionRenewed))
            assert len(srv.sessions) == 2 and not c.of(BridgeError)
            # The new session's clock starts again: no further switch.
            now[0] += 3000
            await asyncio.sleep(0.1)
            assert len(srv.sessions) == 2
        first, second = srv.sessions
        assert first.closed and len(first.of_type("response.create")) == 1  # the greeting
        assert not second.of_type("response.create")  # no second greeting
        [update] = second.of_type("session.update")
        assert "Do not greet the caller again" in update["session"]["instructions"]
        [carried] = second.of_type("conversation.item.create")
        assert carried["item"]["role"] == "assistant"
        assert carried["item"]["content"] == [{"type": "output_text", "text": "Hello?"}]
        conforms(srv)


async def test_xai_call_at_8k_with_top_level_voice_and_local_barge_in():
    async with FakeRealtimeServer(replies=[Reply([Say("caller/hello", "Hello?")])]) as srv:
        bridge = OpenAIRealtimeBridge(xai_backend("grok-voice", url=srv.url), "test")
        await bridge.start(AgentConfig(voice="eve", greeting="Hello?"), PCMU_8K)
        assert bridge.input_format == bridge.output_format == L16_8K
        assert srv.session["voice"] == "Eve" and srv.session["turn_detection"] is None
        assert srv.session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 8000}
        async with Collector(bridge) as c:
            await c.wait_for(lambda: c.of(ResponseDone))
            [item] = c.items()
            assert np.array_equal(np.frombuffer(c.audio(item), "<i2"), speech("caller/hello", 8000))
            n = len(srv.received)
            await bridge.interrupt(item, 100)  # nothing documented to send: silenced locally
            pcm = speech("caller/goodbye", 8000).tobytes()
            await bridge.send_audio(pcm)
            await bridge.end_of_turn()
            await srv.wait_for(lambda: srv.responses_started == 2)
            assert [m["type"] for m in srv.received[n:]] == ["input_audio_buffer.append", "input_audio_buffer.commit", "response.create"]
        assert [m["type"] for m in srv.received[:3]] == ["session.update", "conversation.item.create", "response.create"]
        for msg in srv.received:
            if msg["type"] != "session.update":  # xAI's own session schema: checked above
                check_openai_client_event(msg)
        for ev in srv.sent:
            if ev["type"] != "session.updated":  # echoes xAI's session shape
                check_openai_server_event(ev)


async def test_say_speaks_an_arbitrary_line():
    async with FakeRealtimeServer(replies=[Reply([Say("caller/hello")]), Reply([Say("speech/cards-004")])]) as srv:
        bridge = OpenAIRealtimeBridge(openai_backend("gpt-realtime", url=srv.url), "test")
        await bridge.start(AGENT, PCMU_8K)
        async with Collector(bridge) as c:
            await c.wait_for(lambda: len(responses(c)) == 1)
            await bridge.say("Are you still there?")
            await c.wait_for(lambda: len(responses(c)) == 2)
            assert len(c.items()) == 2
        [_, prompt] = srv.of_type("response.create")
        assert "Are you still there?" in prompt["response"]["instructions"]
        conforms(srv)
