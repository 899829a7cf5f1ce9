"""Creating WebRTC calls: the offer URL (as streamUrl and offerUrl) and the iceServers of the settings."""

from __future__ import annotations

import re

from gateway.api.urls import offer_url
from pydantic import SecretStr

from gateway.config import Settings

AGENT = {"systemPrompt": "You are a test agent.", "voice": "joe", "language": "en-US", "greeting": "Hello."}
INLINE = {**AGENT, "connectionType": "webrtc"}
OFFER = re.compile(r"(https?)://([^/]+)/webrtc/(call_[0-9a-f]+)/([A-Za-z0-9_-]+)/offer")


async def test_inline_webrtc_call_gets_an_offer_url_and_no_ice_servers_by_default(client):
    r = await client.post("/calls/inline", json=INLINE)
    assert r.status_code == 201, r.text
    body = r.json()
    m = OFFER.fullmatch(body["offerUrl"])
    assert m and m.group(3) == body["callId"] and body["streamUrl"] == body["offerUrl"]
    assert body["connectionType"] == "webrtc" and body["instructions"] is None and body["iceServers"] == []


async def test_ice_servers_and_https_come_from_the_operators_settings(make_client, settings, api_key):
    configured = settings.model_copy(update={
        "public_url": "https://gw.example.com/voice", "webrtc_stun_urls": ["stun:stun.example.com:3478"],
        "webrtc_turn_urls": ["turn:turn.example.com:3478?transport=udp", "turns:turn.example.com:5349"],
        "webrtc_turn_username": "u", "webrtc_turn_credential": SecretStr("c"),
    })  # fmt: skip
    async with make_client(settings_=configured) as c:
        c.headers["X-API-Key"] = api_key
        agent = (await c.post("/agents", json={"name": "a", **AGENT})).json()
        r = await c.post("/calls/create", json={"agentId": agent["id"], "connectionType": "webrtc"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["offerUrl"].startswith(f"https://gw.example.com/voice/webrtc/{body['callId']}/")
    assert body["iceServers"] == [
        {"urls": ["stun:stun.example.com:3478"]},  # no username or credential keys for STUN
        {"urls": ["turn:turn.example.com:3478?transport=udp", "turns:turn.example.com:5349"], "username": "u",
         "credential": "c"},
    ]  # fmt: skip


def test_offer_url_needs_a_base():
    assert offer_url(Settings(_env_file=None, public_url="http://h:81"), None, "call_1", "t") == (
        "http://h:81/webrtc/call_1/t/offer")
    try:
        offer_url(Settings(_env_file=None, public_url=""), None, "call_1", "t")
    except ValueError:
        pass
    else:
        raise AssertionError("no base: ValueError")
