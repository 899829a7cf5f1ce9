"""REST API: auth, agents, calls (stream URL + instructions), call records."""

from __future__ import annotations

import re
import wave
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from gateway.carriers.instructions import instruction_document
from gateway.store import CallRecorder, CallStatus, Store

AGENT = {
    "name": "Front desk",
    "systemPrompt": "You answer the phone for a dental clinic.",
    "voice": "joe",
    "language": "en-US",
    "greeting": "Hello, Smile Dental, how can I help?",
}
INLINE = {k: v for k, v in AGENT.items() if k != "name"}
STREAM = re.compile(r"^(wss?)://([^/]+)/stream/(\w+)/(call_[0-9a-f]+)/([A-Za-z0-9_-]{43})$")


def _iso(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


# -- auth ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/agents"), ("GET", "/agents"), ("GET", "/agents/agt_x"), ("POST", "/calls/create"),
     ("POST", "/calls/inline"), ("GET", "/calls/call_x"), ("GET", "/calls/call_x/recording")],
)  # fmt: skip
async def test_missing_or_wrong_key_is_401(anon: httpx.AsyncClient, method: str, path: str) -> None:
    r = await anon.request(method, path, json=AGENT)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert "X-API-Key" in r.json()["error"]["message"]
    r = await anon.request(method, path, json=AGENT, headers={"X-API-Key": "gw_wrong"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


async def test_revoked_key_is_401(client: httpx.AsyncClient, store: Store) -> None:
    assert (await client.get("/agents/agt_x")).status_code == 404
    for k in store.list_api_keys():
        store.revoke_api_key(k.id)
    assert (await client.get("/agents/agt_x")).status_code == 401


async def test_health_and_openapi_need_no_key(anon: httpx.AsyncClient) -> None:
    r = await anon.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert (await anon.head("/health")).status_code == 200
    r = await anon.get("/openapi.json")
    assert r.status_code == 200 and r.json()["openapi"] == "3.1.0"


async def test_key_never_logged(client: httpx.AsyncClient, api_key: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    await client.post("/agents", json=AGENT)
    await client.get("/agents/agt_x", headers={"X-API-Key": "gw_wrong_key_value"})
    assert api_key not in caplog.text and "gw_wrong_key_value" not in caplog.text


# -- agents -------------------------------------------------------------------------------------


async def test_create_and_get_agent(client: httpx.AsyncClient) -> None:
    r = await client.post("/agents", json=AGENT)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"].startswith("agt_") and r.headers["location"] == f"/agents/{body['id']}"
    assert {k: body[k] for k in AGENT} == AGENT
    assert body | {"id": None, "createdAt": None} == {
        **AGENT, "id": None, "createdAt": None, "model": "local", "temperature": 0.0,
        "firstSpeaker": "agent", "interruptible": False, "turnMode": "gateway", "maxDuration": 3000,
        "inactivityTimeout": 30, "inactivityAction": "hangup", "recordingEnabled": True, "tools": [],
        "secretRefs": {}, "bargeInMode": None, "bargeInCommitMs": 400,
    }  # fmt: skip
    assert _iso(body["createdAt"]).tzinfo is not None
    r2 = await client.get(f"/agents/{body['id']}")
    assert r2.status_code == 200 and r2.json() == body


async def test_agent_with_all_fields(client: httpx.AsyncClient, store: Store) -> None:
    tool = {"name": "book", "description": "Book a slot", "url": "https://tools.example.com/book",
            "parameters": {"type": "object", "properties": {"day": {"type": "string"}}},
            "timeoutS": 5, "secret": "booking"}  # fmt: skip
    payload = {**AGENT, "model": "openai:gpt-realtime", "temperature": 0.7, "firstSpeaker": "user",
               "interruptible": True, "turnMode": "semantic_vad", "maxDuration": 600,
               "inactivityTimeout": 45, "inactivityAction": "prompt", "recordingEnabled": False,
               "tools": [tool], "bargeInMode": "pause_then_commit", "bargeInCommitMs": 300}  # fmt: skip
    r = await client.post("/agents", json=payload)
    assert r.status_code == 201, r.text
    rec = store.get_agent(r.json()["id"])
    cfg = rec.call_config()
    assert (cfg.model, cfg.temperature, cfg.first_speaker, cfg.interruptible, cfg.turn_mode) == (
        "openai:gpt-realtime", 0.7, "user", True, "semantic_vad")  # fmt: skip
    assert (cfg.max_duration_s, cfg.inactivity_timeout_s, cfg.inactivity_action, cfg.recording_enabled) == (
        600, 45, "prompt", False)  # fmt: skip
    assert (cfg.barge_in_mode, cfg.barge_in_commit_ms) == ("pause_then_commit", 300)
    assert (r.json()["bargeInMode"], r.json()["bargeInCommitMs"]) == ("pause_then_commit", 300)
    assert cfg.tools[0]["timeout_s"] == 5 and cfg.tools[0]["secret"] == "booking"
    assert cfg.tools[0]["url"] == "https://tools.example.com/book"
    # the tool declarations are usable by the model layer as stored
    from gateway.llm.tools import parse_tools

    assert parse_tools(cfg.tools, {"booking": "t0k"})[0].bearer == "t0k"


async def test_unknown_agent_is_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/agents/agt_missing")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found" and "agt_missing" in r.json()["error"]["message"]


async def test_list_agents_oldest_first_of_the_keys_tenant_only(client: httpx.AsyncClient, store: Store) -> None:
    assert (await client.get("/agents")).json() == {"data": []}
    first = (await client.post("/agents", json=AGENT)).json()
    second = (await client.post("/agents", json={**AGENT, "name": "Night desk"})).json()
    acme_key, _ = store.create_api_key("acme's", tenant="acme")
    (await client.post("/agents", json={**AGENT, "name": "Acme"}, headers={"X-API-Key": acme_key})).raise_for_status()
    r = await client.get("/agents")
    assert r.status_code == 200 and r.json() == {"data": [first, second]}
    acme = (await client.get("/agents", headers={"X-API-Key": acme_key})).json()["data"]
    assert [a["name"] for a in acme] == ["Acme"]


# -- calls --------------------------------------------------------------------------------------


async def test_create_call_from_agent(client: httpx.AsyncClient, store: Store) -> None:
    agent = (await client.post("/agents", json={**AGENT, "maxDuration": 900})).json()
    before = datetime.now(timezone.utc)
    r = await client.post("/calls/create", json={"agentId": agent["id"]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"callId", "streamUrl", "streamUrlExpiresAt", "connectionType", "instructions", "offerUrl",
                         "iceServers"}
    assert body["connectionType"] == "twilio" and body["offerUrl"] is None and body["iceServers"] is None
    m = STREAM.match(body["streamUrl"])
    assert m, body["streamUrl"]
    scheme, host, carrier, call_id, token = m.groups()
    assert (scheme, host, carrier, call_id) == ("wss", "gw.example.com", "twilio", body["callId"])
    assert "?" not in body["streamUrl"]
    expires = _iso(body["streamUrlExpiresAt"])
    assert body["streamUrlExpiresAt"].endswith("Z") or body["streamUrlExpiresAt"].endswith("+00:00")
    assert timedelta(seconds=590) < expires - before < timedelta(seconds=610)
    assert body["instructions"]["contentType"] == "application/xml"
    assert f'<Connect><Stream url="{body["streamUrl"]}"/></Connect>' in body["instructions"]["body"]
    # the token in the URL is the call's stream token, and the agent config was snapshotted
    call = store.check_stream_token(call_id, token)
    assert call.status is CallStatus.QUEUED and call.agent_id == agent["id"]
    assert call.call_config().max_duration_s == 900


async def test_create_call_unknown_agent_is_404(client: httpx.AsyncClient) -> None:
    r = await client.post("/calls/create", json={"agentId": "agt_missing"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("carrier", ["twilio", "telnyx", "plivo", "vonage", "exotel", "raw"])
async def test_inline_call_each_carrier(client: httpx.AsyncClient, store: Store, carrier: str) -> None:
    r = await client.post("/calls/inline", json={**INLINE, "connectionType": carrier, "temperature": 0.2})
    assert r.status_code == 201, r.text
    body = r.json()
    m = STREAM.match(body["streamUrl"])
    assert m and m.group(3) == carrier and body["connectionType"] == carrier
    if carrier == "raw":
        assert body["instructions"] is None
    else:
        assert body["instructions"]["body"].count(body["streamUrl"]) == 1
    call = store.get_call(body["callId"])
    assert call.agent_id is None and call.connection_type == carrier
    assert call.call_config().temperature == 0.2 and call.call_config().greeting == INLINE["greeting"]


async def test_stream_url_base(make_client: Any, api_key: str, settings: Any) -> None:
    h = {"X-API-Key": api_key}
    async with make_client(base_url="http://localhost:8080") as c:
        url = (await c.post("/calls/inline", json=INLINE, headers=h)).json()["streamUrl"]
        assert url.startswith("ws://localhost:8080/stream/twilio/call_")
    public = settings.model_copy(update={"public_url": "https://voice.example.com/gw/"})
    async with make_client(settings_=public, base_url="http://10.0.0.5:8080") as c:
        url = (await c.post("/calls/inline", json=INLINE, headers=h)).json()["streamUrl"]
        assert url.startswith("wss://voice.example.com/gw/stream/twilio/call_")
    plain = settings.model_copy(update={"public_url": "http://voice.internal"})
    async with make_client(settings_=plain) as c:
        url = (await c.post("/calls/inline", json=INLINE, headers=h)).json()["streamUrl"]
        assert url.startswith("ws://voice.internal/stream/")


@pytest.mark.parametrize("carrier", ["twilio", "telnyx", "plivo", "vonage", "exotel", "raw"])
async def test_real_instruction_documents(make_client: Any, api_key: str, carrier: str) -> None:
    # instruction_document=None: the API's default, gateway.carriers.instructions
    async with make_client(instruction_document=None) as c:
        r = await c.post("/calls/inline", json={**INLINE, "connectionType": carrier},
                         headers={"X-API-Key": api_key})  # fmt: skip
    assert r.status_code == 201, r.text
    body = r.json()
    doc = body["instructions"]
    expected = instruction_document(carrier, body["streamUrl"])
    assert doc == (None if expected is None else {"contentType": expected[0], "body": expected[1]})
    if carrier in ("exotel", "raw"):
        assert doc is None
        return
    assert body["streamUrl"] in doc["body"]
    if carrier == "twilio":
        assert "xml" in doc["contentType"]
        twiml = re.sub(r"\s+", "", doc["body"])
        assert f'<Response><Connect><Streamurl="{body["streamUrl"]}"' in twiml
    elif carrier == "vonage":
        assert doc["contentType"] == "application/json"


async def test_on_call_created_hook(make_client: Any, api_key: str) -> None:
    seen: list[str] = []

    async def hook(call: Any) -> None:
        seen.append(call.id)

    async with make_client(on_call_created=hook) as c:
        r = await c.post("/calls/inline", json=INLINE, headers={"X-API-Key": api_key})
    assert seen == [r.json()["callId"]]


async def test_get_call_after_finalise(client: httpx.AsyncClient, store: Store) -> None:
    created = (await client.post("/calls/inline", json={**INLINE, "connectionType": "telnyx"})).json()
    call_id = created["callId"]

    r = await client.get(f"/calls/{call_id}")
    assert r.status_code == 200
    q = r.json()
    assert q["status"] == "queued" and q["startedAt"] is None and q["transcript"] == [] and not q["live"]
    assert q["config"]["greeting"] == INLINE["greeting"] and q["config"]["maxDuration"] == 3000
    assert (q["config"]["bargeInMode"], q["config"]["bargeInCommitMs"]) == (None, 400)  # the operator's default

    store.mark_call_started(call_id, carrier_call_id="v3:abc", stream_id="s1", from_="+15550100", to="+15550199")
    store.finalise_call(
        call_id, status="completed", end_reason="caller_hangup", duration_ms=42_000,
        transcript=[
            {"role": "agent", "text": INLINE["greeting"], "at_ms": 200},
            {"role": "user", "text": "I'd like to book a cleaning", "at_ms": 3100, "start_ms": 1500, "end_ms": 2900},
            {"role": "agent", "text": "Sure, which day", "at_ms": 5200, "interrupted": True, "heard_ms": 700,
             "start_ms": 3320, "end_ms": 4020, "latency_ms": 420},
        ],
        events=[{"kind": "barge_in", "at_ms": 5900, "data": {"heard_ms": 700}}],
        metrics={"turn_latency_ms_p50": 420},
    )  # fmt: skip
    r = await client.get(f"/calls/{call_id}")
    body = r.json()
    assert body["status"] == "completed" and body["endReason"] == "caller_hangup"
    assert body["durationMs"] == 42_000 and body["error"] is None and body["live"] is False
    assert body["connectionType"] == "telnyx" and body["direction"] == "inbound"
    assert (body["from"], body["to"], body["carrierCallId"], body["streamId"]) == (
        "+15550100", "+15550199", "v3:abc", "s1")  # fmt: skip
    assert _iso(body["createdAt"]) <= _iso(body["startedAt"]) <= _iso(body["endedAt"])
    unmeasured = {"startMs": None, "endMs": None, "latencyMs": None}
    assert body["transcript"] == [
        {"role": "agent", "speaker": "agent", "text": INLINE["greeting"], "atMs": 200, "interrupted": False,
         "heardMs": None, **unmeasured},
        {"role": "user", "speaker": "caller", "text": "I'd like to book a cleaning", "atMs": 3100,
         "interrupted": False, "heardMs": None, **unmeasured, "startMs": 1500, "endMs": 2900},
        {"role": "agent", "speaker": "agent", "text": "Sure, which day", "atMs": 5200, "interrupted": True,
         "heardMs": 700, "startMs": 3320, "endMs": 4020, "latencyMs": 420},
    ]
    assert body["latency"] == {"turns": [{"turn": 2, "ms": 420}], "responseP50Ms": 420, "responseMaxMs": 420,
                               "bargeInMs": []}  # fmt: skip
    assert body["events"] == [{"kind": "barge_in", "atMs": 5900, "data": {"heard_ms": 700}}]
    assert body["metrics"] == {"turn_latency_ms_p50": 420} and body["recording"] is None


async def test_get_failed_call_shows_error(client: httpx.AsyncClient, store: Store) -> None:
    call_id = (await client.post("/calls/inline", json=INLINE)).json()["callId"]
    store.mark_call_started(call_id)
    store.finalise_call(call_id, status="failed", end_reason="model_error", duration_ms=900,
                        error_code="model_auth", error_message="invalid key")  # fmt: skip
    body = (await client.get(f"/calls/{call_id}")).json()
    assert body["status"] == "failed" and body["error"] == {"code": "model_auth", "message": "invalid key"}


async def test_live_view_overlay(make_client: Any, api_key: str, store: Store) -> None:
    live: dict[str, dict[str, Any]] = {}
    h = {"X-API-Key": api_key}
    async with make_client(live_view=live.get) as c:
        call_id = (await c.post("/calls/inline", json=INLINE, headers=h)).json()["callId"]
        store.mark_call_started(call_id)
        live[call_id] = {
            "transcript": [{"role": "agent", "text": "Hello", "at_ms": 100}],
            "events": [{"kind": "dtmf", "at_ms": 900, "data": {"digit": "1"}}],
            "duration_ms": 1500,
        }
        body = (await c.get(f"/calls/{call_id}", headers=h)).json()
        assert body["live"] is True and body["status"] == "in_progress" and body["durationMs"] == 1500
        assert body["transcript"][0]["text"] == "Hello" and body["events"][0]["kind"] == "dtmf"
        # once final, the stored record wins even if the live view still answers
        store.finalise_call(call_id, status="completed", end_reason="caller_hangup", duration_ms=2000)
        body = (await c.get(f"/calls/{call_id}", headers=h)).json()
        assert body["live"] is False and body["transcript"] == [] and body["durationMs"] == 2000


async def test_unknown_call_is_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/calls/call_missing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_recording_download(client: httpx.AsyncClient, store: Store, settings: Any) -> None:
    call_id = (await client.post("/calls/inline", json=INLINE)).json()["callId"]
    assert (await client.get(f"/calls/{call_id}/recording")).status_code == 404
    path = Path(settings.recordings_dir) / f"{call_id}.wav"
    with CallRecorder(path) as rec:
        rec.caller(np.full(800, 11, dtype=np.int16), 0)
        rec.agent(np.full(800, 22, dtype=np.int16), 400)
    store.mark_call_started(call_id)
    store.finalise_call(call_id, status="completed", end_reason="x", duration_ms=150, recording_path=path)
    body = (await client.get(f"/calls/{call_id}")).json()
    assert body["recording"] == {"status": "completed", "path": str(path), "error": None,
                                 "url": f"https://gw.example.com/calls/{call_id}/recording"}
    r = await client.get(f"/calls/{call_id}/recording")
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    out = path.parent / "downloaded.wav"
    out.write_bytes(r.content)
    with wave.open(str(out), "rb") as w:
        assert w.getnchannels() == 2 and w.getnframes() == 1200


async def test_unknown_path_and_method_use_error_shape(client: httpx.AsyncClient) -> None:
    r = await client.get("/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await client.delete("/agents/agt_x")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
