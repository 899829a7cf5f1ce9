"""OpenAI-Realtime-shaped backends through the whole gateway (issue #3's end-to-end gaps).

As in :mod:`tests.e2e.test_realtime_bridges` (whose helpers these tests import): the real app on
loopback, a fake model server speaking the wire protocol with real recorded speech, a simulated
carrier caller that streams real speech in real time and measures what it played.

- OpenAI with the model's own turn detection (``server_vad`` / ``semantic_vad``): the fake
  server runs an energy VAD over the audio it receives (``FakeRealtimeServer(server_vad=True)``)
  and commits turns; the gateway owns barge-in, so the server is asked neither to interrupt nor
  to answer on its own: its ``speech_started`` over the agent's reply is no barge-in, the
  gateway's VAD cuts the reply (the truncate lands on what the caller heard) and the gateway
  asks for the answer to each committed turn (:mod:`tests.e2e.test_server_turns_bargein`: the
  same with pause-then-commit and a backchannel).
- Azure OpenAI (``azure:<deployment>``): ``api-key`` header, ``/openai/v1/realtime?model=…``.
- xAI (``xai:<model>``): top-level voice / turn_detection, L16 at 8 kHz for an 8 kHz carrier
  with no resampling, barge-in silenced locally (no cancel, no truncate).
- Per-agent secret references: the key reaches the model's handshake from the environment
  variable the agent names, and nowhere else (API answers, logs, the database).
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import numpy as np
import pytest

from gateway.codecs.transcode import decode
from gateway.formats import L16_8K, PCMU_8K, Encoding
from gateway.llm.openai_backends import azure_backend
from gateway.simulator.caller import SimulatedCaller, WaitForAgent
from tests.e2e.test_realtime_bridges import (
    FRAME_MS,
    GREETING,
    KEY,
    LONG_REPLY,
    Call,
    TwilioMouth,
    check_openai_barge_in,
    conforms_openai,
    find_played,
    place_call,
    played_ms,
    resample,
    script_barge_in,
)
from tests.llm.conformance import check_openai_client_event
from tests.llm.fake_servers import FakeRealtimeServer, Reply, transcript_of
from tests.llm.fake_servers import Say as ModelSays

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_audio"), pytest.mark.timeout(60)]

THIRD = "speech/cards-002"  # the model's answer to the caller's interruption (server VAD)


def client_types(srv: FakeRealtimeServer) -> list[str]:
    """Client event types the server received, appends left out."""
    return [m["type"] for m in srv.received if m["type"] != "input_audio_buffer.append"]


def barge_in_replies(*, third: bool = False) -> dict[str, Any]:
    """Fake server arguments: greeting, a long reply the caller talks over (and an answer)."""
    replies = [Reply([ModelSays(GREETING)]), Reply([ModelSays(LONG_REPLY)])]
    if third:
        replies.append(Reply([ModelSays(THIRD)]))
    return {
        "replies": replies,
        "user_transcripts": ["Hello?", transcript_of("caller/interrupt")],
        "pace_s": 0.05,  # twice real time: the reply is still streaming at barge-in
    }


# ------------------------------------------------------------------- OpenAI, model's turns


@pytest.mark.parametrize("turn_mode", ["server_vad", "semantic_vad"])
async def test_openai_model_turn_detection_barge_in_truncates_at_heard_ms(gateway, turn_mode):
    # Which detector hears the caller first is set up, one each way: with server_vad the
    # gateway's own barge-in confirmation is slowed (400 ms of speech) and the model's
    # speech_started comes first: it must not cut the reply, the gateway's VAD does, later; with
    # semantic_vad the model's detector is slowed (200 ms of speech, still short of the caller's
    # 280 ms "hello") and the gateway's quickened (40 ms): the gateway's VAD cuts first, and the
    # model's speech_started that follows must not barge in again.
    model_first = turn_mode == "server_vad"
    srv = FakeRealtimeServer(
        api_key=KEY, server_vad=True, vad_start_ms=60 if model_first else 200, **barge_in_replies(third=True)
    )
    async with srv:
        gw = await gateway(
            openai_realtime_url=srv.url, openai_api_key=KEY, barge_in_min_speech_ms=400 if model_first else 40
        )
        script = [*script_barge_in(8000), WaitForAgent(timeout_s=10, quiet_ms=300)]
        call = await place_call(
            gw, TwilioMouth(), script, model="openai:gpt-realtime", interruptible=True, turnMode=turn_mode
        )
    rec, report = call.record, call.report
    assert rec["status"] == "completed" and rec["endReason"] == "carrier_stop", rec["error"]
    assert not call.events("model_error")
    # The session asks for the model's turn detection, never replying nor interrupting on its own.
    assert srv.session["audio"]["input"]["turn_detection"] == {
        "type": turn_mode, "create_response": False, "interrupt_response": False,
    }  # fmt: skip
    assert srv.session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    # The gateway never ends a turn itself: no commit; the server's VAD committed both caller
    # turns and the gateway asked for each answer (and the greeting).
    types = client_types(srv)
    assert "input_audio_buffer.commit" not in types
    assert types.count("response.create") == 3 and srv.responses_started == 3
    assert [kind for kind, _ in srv.vad_events] == ["speech_started", "speech_stopped"] * 2
    # The gateway's VAD still heard the caller (it ends turns in gateway mode only).
    assert len(call.events("caller_speech_end")) >= 2
    # Barge-in: one clear; cancel then truncate of the reply at what the caller heard.
    greet_item, reply_item, third_item = list(srv.item_ms)
    assert report.clears == 1
    [barge] = call.events("barge_in")
    assert barge["source"] == "vad"  # with server_vad the model's VAD heard it first, and cut nothing
    assert barge["itemId"] == reply_item
    cut = types.index("conversation.item.truncate")
    assert types[cut - 1] == "response.cancel"
    [truncate] = srv.of_type("conversation.item.truncate")
    end_ms = truncate["audio_end_ms"]
    assert type(end_ms) is int and truncate["item_id"] == reply_item and truncate["content_index"] == 0
    assert srv.truncated == {reply_item: end_ms} and not srv.deleted
    played = played_ms(report, PCMU_8K, srv.item_audio[reply_item])
    assert end_ms == barge["heardMs"]
    assert abs(end_ms - played) <= FRAME_MS, (end_ms, played)
    assert 300 <= played < srv.item_ms[reply_item]
    # The server stopped its reply on the gateway's cancel (never on its own VAD).
    assert any(e["type"] == "response.done" and e["response"]["status"] == "cancelled" for e in srv.sent)
    # The reply the server's VAD started after the interruption was heard whole.
    _, frames = find_played(report, PCMU_8K, srv.item_audio[third_item])
    assert frames == len(srv.item_audio[third_item]) // 160
    # Transcripts in conversation order, the interrupted reply cut to what was heard.
    texts = [(t["role"], t["text"]) for t in rec["transcript"]]
    assert texts[:2] == [("agent", transcript_of(GREETING)), ("user", "Hello?")]
    said, full = texts[2][1].rstrip("…").split(), transcript_of(LONG_REPLY).split()
    assert texts[2][0] == "agent" and 0 < len(said) < len(full) and full[: len(said)] == said
    assert rec["transcript"][2]["interrupted"] is True and rec["transcript"][2]["heardMs"] == end_ms
    assert texts[3:] == [("user", transcript_of("caller/interrupt")), ("agent", transcript_of(THIRD))]
    # Spans: the caller's turns from the gateway's VAD (its end of speech comes after the model's
    # turn detection answered, so no response time is measured here), the cut reply ends where
    # it was heard.
    turns = rec["transcript"]
    assert [t["speaker"] for t in turns] == ["agent", "caller", "agent", "caller", "agent"]
    spans = [(t["speaker"], t["atMs"], t["startMs"], t["endMs"], t["latencyMs"]) for t in turns]
    assert all(t["startMs"] is not None and t["endMs"] is not None and t["startMs"] < t["endMs"] for t in turns), spans
    assert turns[2]["endMs"] - turns[2]["startMs"] == end_ms
    conforms_openai(srv)
    print(f"barge-in {call.created['callId']} ({turn_mode}, {barge['source']}): "
          f"truncate audio_end_ms={end_ms} heard_ms={barge['heardMs']} played_ms={played}")  # fmt: skip


# ------------------------------------------------------------------------- Azure OpenAI


async def test_azure_deployment_api_key_header_and_barge_in(gateway):
    az_key = "az-e2e-" + secrets.token_hex(8)
    srv = FakeRealtimeServer(api_key=az_key, auth="api-key", path="/openai/v1/realtime", **barge_in_replies())
    async with srv:
        gw = await gateway(
            azure_openai_endpoint=f"http://127.0.0.1:{srv.port}", azure_openai_api_key=az_key, openai_api_key=""
        )
        call = await place_call(
            gw, TwilioMouth(), script_barge_in(8000), model="azure:my-realtime-deployment", interruptible=True
        )
    # The handshake: Azure's path and deployment query, the api-key header, no bearer.
    [(path, headers)] = srv.handshakes
    assert path == "/openai/v1/realtime?model=my-realtime-deployment"
    assert headers["api-key"] == az_key and "authorization" not in headers
    assert "openai-beta" not in headers
    # G.711 passthrough both ways, as with OpenAI.
    assert srv.session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    got = bytes(srv.input_audio)
    assert call.sent.startswith(got) and len(call.sent) - len(got) <= 160
    check_openai_barge_in(call, srv, PCMU_8K, bytes, exact_from=0)
    assert az_key not in str(call.record)


@pytest.mark.parametrize("endpoint", [
    "https://res.openai.azure.com",
    "https://res.openai.azure.com/",
    "https://res.openai.azure.com/openai/v1/",  # the base URL Azure shows for OpenAI clients
    "wss://res.openai.azure.com/openai/v1/realtime",
])  # fmt: skip
def test_azure_endpoint_forms_all_reach_the_v1_realtime_path(endpoint):
    url = azure_backend("dep", endpoint=endpoint).url
    assert url == "wss://res.openai.azure.com/openai/v1/realtime?model=dep"


# ----------------------------------------------------------------------------------- xAI


def to_l16(mulaw: bytes) -> bytes:
    return decode(mulaw, Encoding.PCMU).astype("<i2").tobytes()


async def test_xai_top_level_session_8k_pcm_without_resampling_and_local_barge_in(gateway):
    x_key = "xai-e2e-" + secrets.token_hex(8)
    srv = FakeRealtimeServer(api_key=x_key, **barge_in_replies())
    async with srv:
        gw = await gateway(xai_realtime_url=srv.url, xai_api_key=x_key, openai_api_key="")
        call = await place_call(
            gw, TwilioMouth(), script_barge_in(8000), model="xai:grok-voice", interruptible=True, voice="ara"
        )
    rec, report = call.record, call.report
    assert rec["status"] == "completed" and rec["endReason"] == "carrier_stop", rec["error"]
    assert not call.events("model_error")
    [(path, headers)] = srv.handshakes
    assert path == "/v1/realtime?model=grok-voice" and headers["authorization"] == f"Bearer {x_key}"
    # xAI's session shape: voice and turn_detection on top (manual turns: the gateway's VAD),
    # L16 at the carrier's 8 kHz both ways.
    session = srv.session
    assert session["voice"] == "Ara" and "turn_detection" in session and session["turn_detection"] is None
    pcm8k = {"type": "audio/pcm", "rate": 8000}
    assert session["audio"] == {"input": {"format": pcm8k}, "output": {"format": pcm8k}}
    assert "type" not in session and "output_modalities" not in session
    # What the model received is the caller's μ-law decoded to L16, sample for sample: no
    # resampler on the way (at most the last 20 ms frame was still buffered at hang-up).
    got, sent = bytes(srv.input_audio), to_l16(call.sent)
    assert len(got) % 2 == 0 and sent.startswith(got) and len(sent) - len(got) <= 320
    # The caller hears the model's 8 kHz L16 only μ-law encoded: bit-exact, greeting whole.
    greet_item, reply_item = list(srv.item_ms)[:2]
    greeting = resample(srv.item_audio[greet_item], L16_8K, PCMU_8K, aligned=False)
    _, frames = find_played(report, PCMU_8K, greeting)
    assert frames == len(greeting) // 160
    # Barge-in: the carrier is cleared and the rest of the reply silenced locally; xAI has no
    # cancel nor truncate, so none is sent (the server streams the reply to its end).
    assert report.clears == 1
    [barge] = call.events("barge_in")
    assert barge["source"] == "vad" and barge["itemId"] == reply_item
    types = client_types(srv)
    assert not {"response.cancel", "conversation.item.truncate", "conversation.item.delete"} & set(types)
    assert not any(e["type"] == "response.done" and e["response"]["status"] == "cancelled" for e in srv.sent)
    reply = resample(srv.item_audio[reply_item], L16_8K, PCMU_8K, aligned=False)
    played = played_ms(report, PCMU_8K, reply)
    assert abs(barge["heardMs"] - played) <= FRAME_MS, (barge["heardMs"], played)
    assert 300 <= played < srv.item_ms[reply_item]
    # Manual turns: the gateway committed the caller's turns (the greeting came as an item).
    assert types[:3] == ["session.update", "conversation.item.create", "response.create"]
    assert types.count("input_audio_buffer.commit") >= 1
    texts = [(t["role"], t["text"]) for t in rec["transcript"]]
    assert texts[:2] == [("agent", transcript_of(GREETING)), ("user", "Hello?")]
    said, full = texts[2][1].rstrip("…").split(), transcript_of(LONG_REPLY).split()
    assert texts[2][0] == "agent" and 0 < len(said) < len(full) and full[: len(said)] == said
    for msg in srv.received:
        if msg["type"] != "session.update":  # xAI's own session schema: checked above
            check_openai_client_event(msg)
    print(f"barge-in {call.created['callId']} (xai, no truncate): heard_ms={barge['heardMs']} played_ms={played}")


# ------------------------------------------------------------------ secret references


async def test_agent_secret_ref_reaches_the_handshake_and_nothing_else(gateway, monkeypatch, caplog):
    value = "sk-secretref-" + secrets.token_hex(12)
    monkeypatch.setenv("GATEWAY_SECRET_DEFAULT_OPENAI", value)
    caplog.set_level(logging.DEBUG)
    srv = FakeRealtimeServer(api_key=value, replies=[Reply([ModelSays(GREETING)])])
    async with srv:
        gw = await gateway(openai_realtime_url=srv.url, openai_api_key="")
        assert not gw.settings.openai_api_key.get_secret_value()
        async with gw.client() as c:
            r = await c.post("/agents", json={
                "name": "secret-ref agent", "systemPrompt": "You are a test agent.", "voice": "marin",
                "language": "en-US", "greeting": "Hello.", "model": "openai:gpt-realtime",
                "secretRefs": {"openai_api_key": "GATEWAY_SECRET_DEFAULT_OPENAI"},
            })  # fmt: skip
            assert r.status_code == 201, r.text
            agent = r.json()
            created = await c.post("/calls/create", json={"agentId": agent["id"], "connectionType": "twilio"})
            assert created.status_code == 201, created.text
            call_id = created.json()["callId"]
            dialect = TwilioMouth()
            report = await SimulatedCaller(created.json()["streamUrl"], dialect, hangup_quiet_ms=0).run(
                [WaitForAgent(timeout_s=10, quiet_ms=300)]
            )
            record = await gw.call_record(call_id)
            agent_text = (await c.get(f"/agents/{agent['id']}")).text
            call_text = (await c.get(f"/calls/{call_id}")).text
    call = Call(record, report, b"".join(dialect.sent), created.json())
    # The key came from the agent's reference, as a bearer token on the model's handshake.
    [(_, headers)] = srv.handshakes
    assert headers["authorization"] == f"Bearer {value}"
    assert record["status"] == "completed" and not call.events("model_error"), record["error"]
    assert [t["text"] for t in record["transcript"]] == [transcript_of(GREETING)]
    _, frames = find_played(report, PCMU_8K, srv.item_audio[list(srv.item_ms)[0]])
    assert frames > 0
    # Only the reference is stored and returned; the value is nowhere.
    assert agent["secretRefs"] == {"openai_api_key": "GATEWAY_SECRET_DEFAULT_OPENAI"}
    assert record["config"]["secretRefs"] == {"openai_api_key": "GATEWAY_SECRET_DEFAULT_OPENAI"}
    assert value not in agent_text and value not in call_text and value not in str(record)
    gateway_logs = [r for r in caplog.records if not r.name.startswith("tests.")]
    # websockets' DEBUG handshake dump went through the wire logger, the header blanked.
    handshake = [r.args for r in gateway_logs if r.name == "gateway.llm.wire" and isinstance(r.args, tuple)
                 and len(r.args) == 2 and str(r.args[0]).lower() == "authorization"]  # fmt: skip
    assert handshake == [("Authorization", "***")]
    for r in gateway_logs:
        assert value not in r.getMessage() and value not in str(r.exc_text or ""), (r.name, r.getMessage())
    db = gw.settings.database_url.removeprefix("sqlite:///")
    for path in {db, db + "-wal", db + "-journal"}:
        try:
            data = open(path, "rb").read()
        except FileNotFoundError:
            continue
        assert value.encode() not in data, path
    assert np.asarray(report.heard).any()
