"""The WebRTC transport over real peer connections on loopback (aiortc both sides, no gateway).

A client peer (microphone track, ``events`` channel) offers; :func:`answer_offer` answers; the
transport then gives the session its frames (start, caller audio, mark acknowledgements,
``cleared``, page messages, stop) and sends agent audio and the page's messages.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np
import orjson
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from gateway.carriers.webrtc import mark_frame
from gateway.config import Settings
from gateway.simulator.run import to_rate
from gateway.webrtc.ice import LOOPBACK, include_loopback
from gateway.webrtc.peer import BadOffer, ConnectFailed, answer_offer
from gateway.webrtc.tracks import PacedTrack
from tests.conftest import load_wav


class Client:
    """The browser's side: a paced microphone, the events channel, what it hears and is told."""

    def __init__(self, *, audio: bool = True) -> None:
        self.pc = RTCPeerConnection()
        self.mic = PacedTrack(16000, on_mark=lambda name: None)
        if audio:
            self.pc.addTrack(self.mic)
        self.channel = self.pc.createDataChannel("events")
        self.messages: list[dict] = []
        self.loud_frames = 0
        self.channel.on("message", lambda m: self.messages.append(orjson.loads(m)))
        self.pc.on("track", lambda t: asyncio.ensure_future(self._hear(t)))

    async def _hear(self, track) -> None:
        from aiortc.mediastreams import MediaStreamError

        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if np.abs(frame.to_ndarray()).max() > 1000:
                self.loud_frames += 1

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp


async def next_frame(transport, kind: type, timeout_s: float = 3.0, skip_audio: bool = True):
    async with asyncio.timeout(timeout_s):
        while True:
            frame = await transport.receive()
            if frame is None or isinstance(frame, kind) or not (skip_audio and isinstance(frame, bytes)):
                return frame


@pytest.fixture
async def connected():
    client = Client()
    peer = await answer_offer(await client.offer(), Settings(), label="webrtc-test")
    await client.pc.setRemoteDescription(RTCSessionDescription(peer.answer, "answer"))
    transport = await peer.connected(5.0)
    yield client, transport
    await transport.close()
    await client.pc.close()


async def test_the_session_gets_start_then_the_callers_audio(connected, shared_audio):
    client, transport = connected
    assert orjson.loads(await transport.receive()) == {"event": "start", "streamId": "webrtc-test", "sampleRate": 16000}
    pcm, rate = load_wav(shared_audio / "speech/cards-003.wav")
    client.mic.push(to_rate(pcm, rate, 16000)[:16000].astype("<i2").tobytes())
    got = bytearray()
    async with asyncio.timeout(5):
        while len(got) < 32000 * 0.9:
            frame = await transport.receive()
            assert isinstance(frame, bytes) and len(frame) == 640
            got += frame
    assert np.abs(np.frombuffer(bytes(got), "<i2")).max() > 2000  # the speech came through Opus


async def test_agent_audio_marks_clear_and_the_page(connected):
    client, transport = connected
    await next_frame(transport, str)  # start
    async with asyncio.timeout(3):
        while client.channel.readyState != "open":
            await asyncio.sleep(0.01)
    tone = (8000 * np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000)).astype("<i2").tobytes()  # 1 s
    await transport.send(tone[:6400])  # 200 ms
    await transport.send(mark_frame("m1"))
    assert orjson.loads(await next_frame(transport, str)) == {"event": "mark", "name": "m1"}  # once emitted
    await transport.send(tone)
    await transport.send(mark_frame("m2"))
    await asyncio.sleep(0.1)
    await transport.send('{"event":"clear"}')
    assert transport.track.queued_ms == 0
    assert orjson.loads(await next_frame(transport, str)) == {"event": "mark", "name": "m2"}  # settled by the clear
    assert orjson.loads(await next_frame(transport, str)) == {"event": "cleared"}
    assert client.loud_frames >= 5
    transport.observe("event", {"kind": "barge_in", "at_ms": 5, "data": {"heardMs": 90}})
    transport.observe("turn", {"index": 0, "turn": {"role": "agent", "text": "hi", "at_ms": 1, "interrupted": True}})
    transport.observe("bogus", {})  # unknown kinds are ignored
    client.channel.send('{"type": "hangup"}')
    page = orjson.loads(await next_frame(transport, str))
    assert page == {"event": "page", "text": '{"type": "hangup"}'}
    await asyncio.sleep(0.1)
    types = [(m["type"], m.get("state")) for m in client.messages]
    assert types[0] == ("state", "listening")
    assert ("state", "speaking") in types and ("state", "interrupted") in types
    assert ("event", None) in types and ("transcript", None) in types


async def test_the_peer_closing_is_a_stop_then_none(connected):
    client, transport = connected
    await next_frame(transport, str)
    await client.pc.close()
    assert orjson.loads(await next_frame(transport, str, timeout_s=5)) == {"event": "stop", "reason": "peer_closed"}
    assert await transport.receive() is None


async def test_a_peer_that_never_connects_times_out_or_ends_at_shutdown():
    for closing, reason in ((None, "webrtc_connect_timeout"), (asyncio.Event(), "shutdown")):
        client = Client()
        peer = await answer_offer(await client.offer(), Settings())  # the answer is never applied
        if closing is not None:
            asyncio.get_running_loop().call_later(0.1, closing.set)
        with pytest.raises(ConnectFailed) as exc:
            await peer.connected(1.0 if closing is None else 30.0, closing)
        assert exc.value.end_reason == reason
        await peer.close()
        await client.pc.close()


async def test_offers_aiortc_cannot_use_are_bad_offers():
    client = Client(audio=False)  # no microphone: its audio m-line only receives
    client.pc.addTransceiver("audio", direction="recvonly")
    with pytest.raises(BadOffer) as exc:
        await answer_offer(await client.offer(), Settings())
    assert exc.value.field == "sdp" and "sendrecv" in exc.value.message
    with pytest.raises(BadOffer):
        await answer_offer("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", Settings())
    await client.pc.close()


def test_loopback_host_candidates_are_gathered():
    import aioice.ice

    include_loopback()
    include_loopback()  # idempotent
    assert aioice.ice.get_host_addresses(True, False).count(LOOPBACK) == 1
    assert LOOPBACK not in aioice.ice.get_host_addresses(False, True)


def test_the_gateway_imports_without_aiortc_or_av():
    code = "import sys, gateway.app; print(sorted(m for m in ('aiortc', 'av', 'aioice') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out
