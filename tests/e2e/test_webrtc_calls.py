"""End to end: WebRTC calls through the real gateway on loopback, a Python aiortc peer as the browser.

Everything is real: uvicorn, the offer route, aiortc on both sides (ICE host candidates on
127.0.0.1, DTLS, SRTP, SCTP), Opus both ways, the call session with Silero VAD, the local agent
(pocketsphinx, Piper), the playout ledger acknowledged from the outbound track, the SQLite
record and the two-channel recording. The peer is :class:`gateway.simulator.webrtc_caller.WebRtcCaller`.
"""

from __future__ import annotations

import asyncio
import time
import wave

import httpx
import numpy as np
import pytest

from gateway.simulator.caller import SimulatedCaller, WaitForAgent, Say
from gateway.simulator.dialects import TwilioCaller
from gateway.simulator.run import to_rate
from gateway.simulator.webrtc_caller import OfferRefused, WebRtcCaller
from tests.conftest import load_wav

pytestmark = pytest.mark.slow

GREETING = "Hello, thanks for calling. How can I help you today?"
LONG_GREETING = ("Hello and welcome. This is a long greeting so that you have plenty of time to talk over me, "
                 "which is exactly what this test is about. Thank you for your patience.")


def line(shared_audio, rel: str, rate: int = 16000) -> np.ndarray:
    pcm, r = load_wav(shared_audio / rel)
    return to_rate(pcm, r, rate)


def words(rec: dict, role: str) -> list[str]:
    return " ".join(t["text"] for t in rec["transcript"] if t["role"] == role).split()


async def webrtc_call(gw, **body) -> tuple[dict, WebRtcCaller]:
    call = await gw.create_inline_call(connectionType="webrtc", **body)
    peer = WebRtcCaller(call["offerUrl"])
    await peer.connect()
    return call, peer


async def test_webrtc_call_is_understood_answered_and_recorded(gateway, shared_audio):
    gw = await gateway()
    call, peer = await webrtc_call(gw)
    try:
        await peer.wait_for_agent(timeout_s=20, quiet_s=1.0)  # the greeting
        await peer.say(line(shared_audio, "speech/cards-003.wav"))
        await peer.wait_for_agent(timeout_s=20, quiet_s=1.0)  # the reply
        peer.channel.send("{not json")  # a malformed page message: counted, the call goes on
        peer.send({"type": "wave"})  # an unknown one: counted as unhandled
        peer.send({"type": "dtmf", "digit": "5"})
        await peer.wait_for_message("event", kind="dtmf", timeout_s=5)
        await peer.hangup()
        ended = await peer.wait_for_message("ended", timeout_s=10)
    finally:
        await peer.close()
    rec = await gw.call_record(call["callId"])
    assert rec["status"] == "completed" and rec["endReason"] == "carrier_stop", rec
    assert ended == {"type": "ended", "status": "completed", "endReason": "carrier_stop"}
    assert "clubs" in words(rec, "user"), rec["transcript"]
    agent = [t["text"] for t in rec["transcript"] if t["role"] == "agent"]
    assert agent[0] == GREETING and any("clubs" in t for t in agent[1:]), agent
    # the data channel carried the transcript as the record has it, and the agent's states
    sent = {m["index"]: m for m in peer.of_type("transcript")}
    assert [sent[i]["text"] for i in sorted(sent)] == [t["text"] for t in rec["transcript"]]
    states = [m["state"] for m in peer.of_type("state")]
    assert states[0] == "listening" and "speaking" in states and "thinking" in states, states
    kinds = {m["kind"] for m in peer.of_type("event")}
    assert {"started", "caller_speech_start", "caller_speech_end", "ended"} <= kinds, kinds
    # the recording: caller left, agent right, at the session's 16 kHz
    with wave.open(rec["recording"]["path"], "rb") as w:
        assert (w.getnchannels(), w.getframerate()) == (2, 16000)
        stereo = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    assert np.abs(stereo[:, 0]).max() > 1000 and np.abs(stereo[:, 1]).max() > 1000
    assert rec["metrics"]["marksAcked"] > 5 and rec["metrics"]["framesIn"] > 100
    assert rec["metrics"]["protocolErrors"] == {"malformed_json": 1}, rec["metrics"]
    assert rec["metrics"]["unhandledEvents"] == {"page:wave": 1}, rec["metrics"]
    assert [e["data"] for e in rec["events"] if e["kind"] == "dtmf"] == [{"digit": "5"}]


@pytest.mark.solo  # a latency on the real clock: run alone (make test)
async def test_barge_in_stops_the_agent_audio_at_the_peer_within_300_ms(gateway, shared_audio):
    gw = await gateway()
    call, peer = await webrtc_call(gw, interruptible=True, greeting=LONG_GREETING)
    try:
        await peer.wait_for(lambda: len(peer.audible()) >= 75, timeout_s=20)  # 1.5 s of the greeting heard
        spoken = await peer.say(line(shared_audio, "caller/interrupt.wav"))
        await peer.wait_for_agent(timeout_s=20, quiet_s=1.0, since=spoken.ended_at)  # the reply
        await peer.hangup()
        await peer.wait_for_message("ended", timeout_s=10)
    finally:
        await peer.close()
    rec = await gw.call_record(call["callId"])
    stop = peer.agent_stop_after(spoken.onset_at)
    assert stop is not None
    stop_ms = (stop - spoken.onset_at) * 1000
    print(f"barge-in: agent audio stopped at the peer {stop_ms:.0f} ms after the caller's speech onset; "
          f"onset → clear at the gateway {rec['metrics']['bargeInReactionMs']} ms")
    assert stop_ms <= 300, stop_ms
    barge = [e for e in rec["events"] if e["kind"] == "barge_in"]
    assert barge, rec["events"]
    # what the gateway says the caller heard is what reached the peer (marks from the track's frames)
    first = peer.audible()[0]
    # (frames of agent audio: not the track's digital-silence filler, which Opus decodes to exact
    # zeros, sent when the agent's audio ran short: seen once as 283 ms more "received" than heard)
    received_ms = 20 * sum(1 for t, rms in peer.frames if first <= t <= stop and rms > 0.0)
    heard_ms = barge[0]["data"]["heardMs"]
    print(f"barge-in: heardMs {heard_ms}, received at the peer {received_ms} ms")
    assert abs(heard_ms - received_ms) <= 120, (heard_ms, received_ms)
    greeting = next(t for t in rec["transcript"] if t["role"] == "agent")
    assert greeting["interrupted"] is True and greeting["heardMs"] == heard_ms
    kept, full = greeting["text"].split(), LONG_GREETING.split()
    assert 0 < len(kept) < len(full) and kept == full[: len(kept)]
    states = [m["state"] for m in peer.of_type("state")]
    assert "interrupted" in states and states[states.index("interrupted") + 1] == "listening", states
    cut = [m for m in peer.of_type("transcript") if m["index"] == rec["transcript"].index(greeting)]
    assert cut[-1]["interrupted"] is True and cut[-1]["heardMs"] == heard_ms and cut[-1]["text"] == greeting["text"]
    assert {"barge_in", "caller_speech_start"} <= {m["kind"] for m in peer.of_type("event")}


async def test_a_webrtc_call_and_a_twilio_call_of_one_recording_give_the_same_words(gateway, shared_audio):
    """Both paths hear the recording's reference words. (The Twilio path is 8 kHz μ-law and the
    WebRTC one wideband Opus at 16 kHz, so on most recordings pocketsphinx does better over
    WebRTC: "go forward ten meters" over WebRTC, "go forward and meters" over Twilio. This one
    both hear right.)"""
    gw = await gateway()
    recording = "speech/cards-003.wav"  # "seven of clubs"
    call, peer = await webrtc_call(gw, firstSpeaker="user")
    try:
        await peer.say(line(shared_audio, recording))
        await peer.wait_for_agent(timeout_s=20, quiet_s=1.0)
        await peer.hangup()
        await peer.wait_for_message("ended", timeout_s=10)
    finally:
        await peer.close()
    twilio = await gw.create_inline_call(connectionType="twilio", firstSpeaker="user")
    await SimulatedCaller(twilio["streamUrl"], TwilioCaller()).run([
        Say(line(shared_audio, recording, 8000), "seven of clubs"),
        WaitForAgent(timeout_s=20, quiet_ms=1000),
    ])
    over_webrtc, over_twilio = await gw.call_record(call["callId"]), await gw.call_record(twilio["callId"])
    assert over_webrtc["status"] == over_twilio["status"] == "completed"
    reference = (shared_audio / recording.replace(".wav", ".txt")).read_text().split()
    assert words(over_webrtc, "user") == reference, over_webrtc["transcript"]
    assert words(over_twilio, "user") == words(over_webrtc, "user"), (over_webrtc["transcript"], over_twilio["transcript"])
    assert words(over_webrtc, "agent") == words(over_twilio, "agent")  # the same agent answered the same


async def post_offer(url: str, body) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        if isinstance(body, (bytes, str)):
            return await client.post(url, content=body, headers={"content-type": "application/json"})
        return await client.post(url, json=body)


async def test_offers_are_refused_with_the_stream_rules_and_bad_offers_with_422(gateway):
    from gateway.store import CallConfig

    gw = await gateway(max_calls=2)
    call = await gw.create_inline_call(connectionType="webrtc")
    url = call["offerUrl"]
    assert call["streamUrl"] == url and url.startswith("http://127.0.0.1:") and url.endswith("/offer")
    assert call["iceServers"] == [] and call["instructions"] is None
    base, token = url.removesuffix("/offer").rsplit("/", 1)
    offer = {"type": "offer", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"}

    async def refused(u: str, status: int, code: str) -> None:
        r = await post_offer(u, offer)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text

    await refused(f"{base}/not-the-token/offer", 401, "bad_token")
    await refused(url.replace(call["callId"], "call_doesnotexist"), 404, "unknown_call")
    twilio = await gw.create_inline_call(connectionType="twilio")
    twilio_token = twilio["streamUrl"].rsplit("/", 1)[1]
    await refused(f"{gw.http}/webrtc/{twilio['callId']}/{twilio_token}/offer", 400, "bad_carrier")
    rec, expired = gw.services.store.create_call(CallConfig(), "webrtc", ttl_s=0.05)
    await asyncio.sleep(0.1)
    await refused(f"{gw.http}/webrtc/{rec.id}/{expired}/offer", 410, "token_expired")
    # bad offers: 422 naming the field, and the token stays usable
    for body, field in [(b"{not json", "body"), ([1, 2], "body"), (b" " * 1_000_000, "body"), ({"sdp": "v=0"}, "type"),
                        ({"type": "answer", "sdp": "v=0"}, "type"), ({"type": "offer"}, "sdp"),
                        ({"type": "offer", "sdp": "hello"}, "sdp"),
                        ({"type": "offer", "sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"}, "sdp"),
                        (offer, "sdp")]:  # an audio m-line but no ICE or DTLS parameters: aiortc refuses it
        r = await post_offer(url, body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"]["fields"][0]["field"] == field, (body, r.text)
    assert (await gw.call_record(call["callId"], final=False))["status"] == "queued"
    peer = WebRtcCaller(url)
    try:
        await peer.connect()  # the one use
        await refused(url, 409, "not_connectable")  # a second offer for a streaming call
        other = gw.services.store.create_call(CallConfig(), "webrtc")
        busy = WebRtcCaller(f"{gw.http}/webrtc/{other[0].id}/{other[1]}/offer")
        await busy.connect()  # the second of max_calls=2
        rec3, token3 = gw.services.store.create_call(CallConfig(), "webrtc")
        r = await post_offer(f"{gw.http}/webrtc/{rec3.id}/{token3}/offer", offer)
        assert (r.status_code, r.json()["error"]["code"]) == (503, "at_capacity") and r.headers["retry-after"]
        await busy.close()
    finally:
        await peer.close()
    rec = await gw.call_record(call["callId"])
    assert rec["status"] == "completed" and rec["endReason"] == "carrier_stop", rec  # closing the peer: a hang-up
    await refused(url, 409, "not_connectable")  # ended: the URL is used up


async def test_closing_the_peer_connection_ends_the_call_as_a_hang_up(gateway):
    gw = await gateway()
    call, peer = await webrtc_call(gw)
    await peer.wait_for(lambda: bool(peer.audible()), timeout_s=20)
    t = time.monotonic()
    await peer.close()
    rec = await gw.call_record(call["callId"])
    assert time.monotonic() - t < 5
    assert (rec["status"], rec["endReason"]) == ("completed", "carrier_stop"), rec
    assert rec["transcript"][0]["role"] == "agent"


async def test_a_peer_that_never_connects_ends_the_call_with_a_clear_reason(gateway):
    from aiortc import RTCPeerConnection
    from gateway.webrtc.tracks import PacedTrack

    gw = await gateway(webrtc_connect_timeout_s=1)
    call = await gw.create_inline_call(connectionType="webrtc")
    pc = RTCPeerConnection()  # offers, takes the answer, never applies it: no ICE checks, no DTLS
    pc.addTrack(PacedTrack(16000, on_mark=lambda name: None))
    pc.createDataChannel("events")
    await pc.setLocalDescription(await pc.createOffer())
    r = await post_offer(call["offerUrl"], {"type": "offer", "sdp": pc.localDescription.sdp})
    assert r.status_code == 200 and r.json()["type"] == "answer" and "a=candidate" in r.json()["sdp"]
    try:
        rec = await gw.call_record(call["callId"])
    finally:
        await pc.close()
    assert (rec["status"], rec["endReason"]) == ("failed", "webrtc_connect_timeout"), rec
    assert rec["error"]["code"] == "no_start" and "1 s" in rec["error"]["message"], rec["error"]


async def test_shutdown_during_webrtc_calls_finalises_their_records(tmp_path, local_engines):
    from aiortc import RTCPeerConnection

    from gateway.config import Settings
    from gateway.simulator.demo import serve_in_background
    from gateway.webrtc.tracks import PacedTrack
    from tests.e2e.conftest import Gateway, free_port

    port = free_port()
    settings = Settings(host="127.0.0.1", port=port, public_url=f"http://127.0.0.1:{port}",
                        database_url=f"sqlite:///{tmp_path}/gw.db", recordings_dir=tmp_path / "recordings")
    server, task, app = await serve_in_background(settings, engines=local_engines, warm_up=False)
    store = app.state.services.store
    gw = Gateway(f"http://127.0.0.1:{port}", store.create_api_key("test")[0], app, settings)
    live, peer = await webrtc_call(gw)
    connecting = await gw.create_inline_call(connectionType="webrtc")
    pc = RTCPeerConnection()  # posts its offer, never applies the answer: still connecting at shutdown
    pc.addTrack(PacedTrack(16000, on_mark=lambda name: None))
    await pc.setLocalDescription(await pc.createOffer())
    assert (await post_offer(connecting["offerUrl"], {"type": "offer", "sdp": pc.localDescription.sdp})).status_code == 200
    try:
        await peer.wait_for(lambda: bool(peer.audible()), timeout_s=20)
        t = time.monotonic()
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        assert time.monotonic() - t < 15
        ended = await peer.wait_for_message("ended", timeout_s=5)
    finally:
        await peer.close()
        await pc.close()
    rec = store.get_call(live["callId"])
    assert (rec.status, rec.end_reason) == ("completed", "shutdown"), rec
    assert ended == {"type": "ended", "status": "completed", "endReason": "shutdown"}
    assert rec.recording_state == "completed" and rec.turns and any(e.kind == "ended" for e in rec.events), rec
    rec = store.get_call(connecting["callId"])
    assert (rec.status, rec.end_reason) == ("failed", "shutdown"), rec


async def test_an_offer_body_that_never_arrives_frees_the_calls_slot(gateway, monkeypatch):
    import gateway.webrtc.offer as offer_route

    monkeypatch.setattr(offer_route, "READ_S", 0.3)
    gw = await gateway()
    call = await gw.create_inline_call(connectionType="webrtc")
    url = httpx.URL(call["offerUrl"])
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:  # admitted, then one byte of the 1000 the request announces
        writer.write(f"POST {url.raw_path.decode()} HTTP/1.1\r\nHost: {url.host}\r\nContent-Type: application/json\r\n"
                     "Content-Length: 1000\r\n\r\n{".encode())
        await writer.drain()
        async with asyncio.timeout(5):
            status = await reader.readline()
    finally:
        writer.close()
    assert status.split()[1] == b"408", status
    assert call["callId"] not in gw.services.admitting
    r = await post_offer(call["offerUrl"], b"{not json")  # the slot is free and the token unused: a 422
    assert r.status_code == 422, r.text


async def test_a_client_gone_before_its_answer_leaves_a_final_record(gateway):
    """The page posts its offer and leaves (tab closed) before the answer: the call was claimed,
    the answer goes nowhere, no peer ever connects; the record ends failed with its reason."""
    from aiortc import RTCPeerConnection
    from gateway.webrtc.tracks import PacedTrack

    gw = await gateway(webrtc_connect_timeout_s=1)
    call = await gw.create_inline_call(connectionType="webrtc")
    pc = RTCPeerConnection()
    pc.addTrack(PacedTrack(16000, on_mark=lambda name: None))
    pc.createDataChannel("events")
    await pc.setLocalDescription(await pc.createOffer())
    await pc.close()
    body = httpx.Request("POST", call["offerUrl"], json={"type": "offer", "sdp": pc.localDescription.sdp})
    url = body.url
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(f"POST {url.raw_path.decode()} HTTP/1.1\r\nHost: {url.host}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body.content)}\r\n\r\n".encode() + body.content)
    await writer.drain()
    async with asyncio.timeout(5):  # the offer was read and is being answered
        while gw.services.webrtc is None or call["callId"] not in gw.services.webrtc.tasks.values():
            await asyncio.sleep(0.005)
    writer.close()  # gone before the answer
    rec = await gw.call_record(call["callId"])
    assert (rec["status"], rec["endReason"]) == ("failed", "webrtc_connect_timeout"), rec
    assert call["callId"] not in gw.services.admitting and call["callId"] not in gw.services.live
