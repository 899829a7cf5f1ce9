"""The Gemini Live bridge against a loopback server speaking BidiGenerateContent.

The model speaks real recordings (24 kHz PCM in ``inlineData`` parts); every client message the
server receives is validated with ``LiveClientMessage`` and every server message it sends with
``LiveServerMessage``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx
import numpy as np
import pytest

from gateway.formats import L16_16K, L16_24K, PCMU_8K
from gateway.llm.base import AgentConfig, AudioOut, BridgeError, BridgeFailed, Interrupted, ResponseDone, Transcript
from gateway.llm.gemini_live import GeminiLiveBridge
from tests.llm.conformance import check_gemini_client_message, check_gemini_server_message
from tests.llm.fake_servers import GEMINI_PATH, Collector, FakeLiveServer, speech, transcript_of

pytestmark = pytest.mark.usefixtures("shared_audio")

AGENT = AgentConfig(model="gemini:test", voice="Puck", greeting="Hello?", interruptible=True)


def conforms(srv: FakeLiveServer) -> None:
    assert srv.received
    for m in srv.received:
        check_gemini_client_message(m)
    for m in srv.sent:
        check_gemini_server_message(m)


def caller(name: str) -> list[bytes]:
    pcm = speech(name, 16000).tobytes()
    return [pcm[i : i + 640] for i in range(0, len(pcm), 640)]  # 20 ms frames


async def send_turn(bridge: GeminiLiveBridge, frames: list[bytes]) -> None:
    await bridge.speech_started()
    for f in frames:
        await bridge.send_audio(f)
    await bridge.end_of_turn()


async def test_full_call_with_barge_in_cuts_the_agent_transcript():
    reply = "speech/librivox-0880"
    async with FakeLiveServer(replies=["caller/hello", reply], user_transcripts=["Could we move it?"], pace_s=0.003) as srv:
        bridge = GeminiLiveBridge("gemini-live-test", "test", url=srv.url)
        await bridge.start(AGENT, PCMU_8K)
        assert (bridge.input_format, bridge.output_format) == (L16_16K, L16_24K)
        setup = srv.setups[0]["setup"]
        assert setup["realtimeInputConfig"]["automaticActivityDetection"] == {"disabled": True}
        async with Collector(bridge) as c:
            await c.wait_for(lambda: c.of(ResponseDone))
            [greet] = c.items()
            assert np.array_equal(np.frombuffer(c.audio(greet), "<i2"), speech("caller/hello", 24000))
            frames = caller("caller/reschedule")
            await send_turn(bridge, frames)
            await c.wait_for(lambda: len(c.items()) == 2 and len(c.audio(c.items()[1])) >= 48 * 1200)
            turn = c.items()[1]
            # Barge-in: our VAD hears the caller (activityStart), the model stops; the caller
            # heard 900 ms of the turn.
            await bridge.speech_started()
            await bridge.interrupt(turn, 900)
            await c.wait_for(lambda: c.of(Interrupted))
            received_ms = len(c.audio(turn)) / 48
            await send_turn(bridge, caller("caller/goodbye"))
            await c.wait_for(lambda: len(c.of(ResponseDone)) == 3)
            assert c.of(ResponseDone)[1] == ResponseDone(turn, "cancelled")
        assert bytes(srv.session.audio) == b"".join(frames) + b"".join(caller("caller/goodbye"))
        transcripts = c.of(Transcript)
        assert transcripts[0] == Transcript("agent", "Hello?", greet)
        assert transcripts[1] == Transcript("user", "Could we move it?")
        cut = transcripts[2]
        full = " ".join(transcript_of(reply).split())
        assert cut.item_id == turn and cut.text.endswith("…")
        assert full.startswith(cut.text[:-1])
        # Proportional to 900 ms of what was received (transcription runs with the audio).
        words_said = len(re.findall(r"\S+", full))
        assert len(cut.text.split()) <= words_said * 900 / received_ms + 1
        assert srv.greetings == 1
        conforms(srv)


async def test_go_away_resumes_with_latest_handle_without_losing_caller_audio():
    async with FakeLiveServer(replies=["caller/hello", "caller/confirm"], user_transcripts=["Thursday?"]) as srv:
        bridge = GeminiLiveBridge("gemini-live-test", "test", url=srv.url)
        await bridge.start(AGENT, L16_16K)
        async with Collector(bridge) as c:
            await c.wait_for(lambda: c.of(ResponseDone))
            handle = list(srv.handles)[-1]  # issued after the greeting's turnComplete
            await c.wait_for(lambda: bridge.protocol.handle == handle)
            frames = caller("caller/reschedule")
            half = len(frames) // 2
            await bridge.speech_started()
            for f in frames[:half]:
                await bridge.send_audio(f)
            await srv.wait_for(lambda: len(srv.session.audio) == sum(map(len, frames[:half])))
            await srv.go_away("5s")
            for f in frames[half:]:  # sent while the bridge moves to a new connection
                await bridge.send_audio(f)
            await srv.wait_for(lambda: srv.connections == 2 and srv._conn is not None)
            await bridge.end_of_turn()
            await c.wait_for(lambda: len(c.of(ResponseDone)) == 2)
            reply_turn = c.of(ResponseDone)[1].response_id
            assert np.array_equal(np.frombuffer(c.audio(reply_turn), "<i2"), speech("caller/confirm", 24000))
            assert not c.of(BridgeError)
        assert srv.setups[1]["setup"]["sessionResumption"] == {"handle": handle}
        # The resumed session holds every byte of the caller's turn, once, in order.
        assert bytes(srv.session.audio) == b"".join(frames)
        assert srv.greetings == 1 and sum("clientContent" in m for m in srv.received) == 1
        assert bridge.reconnects == 1
        conforms(srv)


async def test_abnormal_close_resumes_too():
    async with FakeLiveServer(replies=["caller/hello", "caller/goodbye"]) as srv:
        bridge = GeminiLiveBridge("gemini-live-test", "test", url=srv.url, backoff_s=(0.0,))
        await bridge.start(AGENT, L16_16K)
        async with Collector(bridge) as c:
            await c.wait_for(lambda: c.of(ResponseDone) and bridge.protocol.handle is not None)
            frames = caller("caller/goodbye")
            await bridge.speech_started()
            for f in frames[:20]:
                await bridge.send_audio(f)
            await srv.wait_for(lambda: len(srv.session.audio) == 20 * 640)
            srv.drop()
            for f in frames[20:]:
                await bridge.send_audio(f)
            await srv.wait_for(lambda: srv.connections == 2 and srv._conn is not None)
            await bridge.end_of_turn()
            await c.wait_for(lambda: len(c.of(ResponseDone)) == 2)
        assert bytes(srv.session.audio) == b"".join(frames)
        assert srv.greetings == 1 and not c.of(BridgeError)
        conforms(srv)


async def test_drop_before_any_handle_is_fatal_model_disconnected():
    async with FakeLiveServer() as srv:
        bridge = GeminiLiveBridge("gemini-live-test", "test", url=srv.url)
        await bridge.start(AgentConfig(first_speaker="user"), L16_16K)
        async with Collector(bridge) as c:
            srv.drop()
            await c.wait_for(lambda: c.finished)
        [err] = c.of(BridgeError)
        assert err.code == "model_disconnected" and err.fatal


@pytest.mark.parametrize("mode", ["close_frame", "http_401"])
async def test_rejected_key_is_model_auth_and_never_leaks(mode, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "AIza-wrong-key-0123456789"
    kwargs: dict[str, Any] = {"reject_status": 401} if mode == "http_401" else {}
    async with FakeLiveServer(api_key="right", **kwargs) as srv:
        bridge = GeminiLiveBridge("gemini-live-test", secret, url=srv.url)
        with pytest.raises(BridgeFailed) as info:
            await bridge.start(AGENT, L16_16K)
        assert info.value.code == "model_auth"
        assert secret not in str(info.value) and secret not in repr(bridge)
        ours = [r.getMessage() for r in caplog.records if not r.name.startswith("tests.")]
        assert not [m for m in ours if secret in m]


async def test_tool_call_is_forwarded_and_answered():
    posted: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        posted.append(json_body(request))
        return httpx.Response(200, json={"status": "shipped"})

    tool = {"name": "lookup", "url": "https://tools.example/lookup", "parameters": {"type": "object"}}
    async with FakeLiveServer(replies=["caller/hello", "caller/confirm"], tool_calls=[("lookup", {"order_id": "A1"})]) as srv:
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        bridge = GeminiLiveBridge("gemini-live-test", "test", url=srv.url, tool_client=client)
        await bridge.start(AgentConfig(tools=(tool,), greeting="Hi"), L16_16K)
        async with Collector(bridge) as c:
            await c.wait_for(lambda: c.of(ResponseDone))
            await send_turn(bridge, caller("caller/hello"))
            await c.wait_for(lambda: len(c.of(ResponseDone)) == 2)
        assert posted == [{"order_id": "A1"}]
        [resp] = srv.tool_responses
        assert resp["functionResponses"][0]["response"] == {"output": {"status": "shipped"}}
        conforms(srv)


def json_body(request: httpx.Request) -> Any:
    import json

    return json.loads(request.content)


# ------------------------------------------------------------------- parity with google-genai


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


_FREE = {"parametersJsonSchema", "response", "args"}


def camelize(value: Any) -> Any:
    if isinstance(value, dict):
        return {_camel(k): (v if _camel(k) in _FREE else camelize(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [camelize(v) for v in value]
    return value


async def test_setup_and_handshake_match_the_google_genai_sdk(monkeypatch):
    import google.genai.live as glive
    from google import genai
    from google.genai import types

    real_connect = glive.ws_connect

    def plain_ws(uri: str, **kwargs: Any) -> Any:  # the SDK insists on wss://; loopback is ws://
        kwargs.pop("ssl", None)
        return real_connect(uri.replace("wss://", "ws://", 1), **kwargs)

    monkeypatch.setattr(glive, "ws_connect", plain_ws)
    tool = {"name": "lookup", "description": "Look up", "url": "https://t.example/x",
            "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}  # fmt: skip
    cfg = AgentConfig(system_prompt="Be brief.", voice="Kore", first_speaker="user", tools=(tool,), temperature=0.3)
    sdk_cfg = types.LiveConnectConfig(
        response_modalities=["AUDIO"],
        temperature=0.3,
        speech_config=types.SpeechConfig(voice_config=types.VoiceConfig(prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name="Kore"))),
        system_instruction=types.Content(parts=[types.Part(text="Be brief.")]),
        realtime_input_config=types.RealtimeInputConfig(
            automatic_activity_detection=types.AutomaticActivityDetection(disabled=True),
            activity_handling=types.ActivityHandling.NO_INTERRUPTION,
        ),
        session_resumption=types.SessionResumptionConfig(),
        context_window_compression=types.ContextWindowCompressionConfig(sliding_window=types.SlidingWindow()),
        input_audio_transcription=types.AudioTranscriptionConfig(),
        output_audio_transcription=types.AudioTranscriptionConfig(),
        tools=[types.Tool(function_declarations=[types.FunctionDeclaration(
            name="lookup", description="Look up", parameters_json_schema=tool["parameters"])])],
    )  # fmt: skip
    async with FakeLiveServer() as srv:
        client = genai.Client(api_key="test", http_options=types.HttpOptions(base_url=f"http://127.0.0.1:{srv.port}", api_version="v1beta"))
        async with client.aio.live.connect(model="gemini-live-test", config=sdk_cfg):
            pass
        bridge = GeminiLiveBridge("gemini-live-test", "test", url=srv.url)
        await bridge.start(cfg, L16_16K)
        await bridge.close()
        (sdk_path, sdk_headers), (path, headers) = srv.handshakes
        assert path == sdk_path == GEMINI_PATH
        assert headers["x-goog-api-key"] == sdk_headers["x-goog-api-key"] == "test"
        sdk_setup, ours = srv.setups
        assert ours == camelize(ours)  # we send the API's camelCase names throughout
        assert camelize(sdk_setup) == ours
        check_gemini_client_message(ours)


async def test_audio_out_is_real_speech_at_24k_and_no_audio_after_close():
    async with FakeLiveServer(replies=["speech/cards-003"]) as srv:
        bridge = GeminiLiveBridge("gemini-live-test", "test", url=srv.url)
        await bridge.start(AgentConfig(greeting="Hi"), L16_16K)
        async with Collector(bridge) as c:
            await c.wait_for(lambda: c.of(ResponseDone))
        pcm = np.frombuffer(c.audio(), "<i2")
        assert np.array_equal(pcm, speech("speech/cards-003", 24000))
        assert all(isinstance(e, (AudioOut, ResponseDone, Transcript)) for e in c.events)
        await bridge.send_audio(b"\x00" * 640)  # after close: ignored, no error


async def test_say_speaks_an_arbitrary_line_and_is_not_replayed():
    async with FakeLiveServer(replies=["caller/hello", "speech/cards-004"]) as srv:
        bridge = GeminiLiveBridge("gemini-live-test", "test", url=srv.url)
        await bridge.start(AGENT, L16_16K)
        async with Collector(bridge) as c:
            await c.wait_for(lambda: len(c.of(ResponseDone)) == 1)
            await bridge.say("Are you still there?")
            await c.wait_for(lambda: len(c.of(ResponseDone)) == 2)
        prompts = [m["clientContent"]["turns"][0]["parts"][0]["text"] for m in srv.received if "clientContent" in m]
        assert len(prompts) == 2 and "Are you still there?" in prompts[1]
        conforms(srv)


@pytest.mark.parametrize(("verdict", "heard"), [("backchannel", "silence"), ("turn", "voice")])
async def test_server_turns_with_gateway_barge_in_hold_a_paused_callers_audio(verdict, heard):
    # Automatic activity detection on an interruptible call: Gemini's detector must not cut the
    # reply; while a gateway pause is pending the caller's audio waits for its verdict.
    async with FakeLiveServer(replies=["speech/cards-003"]) as srv:
        bridge = GeminiLiveBridge("gemini-live-test", "test", url=srv.url)
        await bridge.start(AgentConfig(greeting="", turn_mode="server_vad", interruptible=True), L16_16K)
        ric = srv.setups[0]["setup"]["realtimeInputConfig"]
        assert ric == {"automaticActivityDetection": {"disabled": False}, "activityHandling": "NO_INTERRUPTION"}
        before, during, after = caller("caller/hello")[:3], caller("caller/hello")[3:15], caller("caller/hello")[15:18]
        for f in before:
            await bridge.send_audio(f)
        await bridge.turn_verdict("pending")
        for f in during:
            await bridge.send_audio(f)
        await srv.wait_for(lambda: len(srv.session.audio) >= 3 * 640)
        assert bytes(srv.session.audio) == b"".join(before)  # held while the pause is undecided
        await bridge.turn_verdict(verdict)
        for f in after:
            await bridge.send_audio(f)
        expected = b"".join(during) if heard == "voice" else bytes(len(b"".join(during)))
        await srv.wait_for(lambda: len(srv.session.audio) >= 18 * 640)
        assert bytes(srv.session.audio) == b"".join(before) + expected + b"".join(after)
        await bridge.close()
    conforms(srv)
